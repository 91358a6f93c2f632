//! [`Prefetch`]: a source polled on a thread of its own, one batch ahead of the job.
//!
//! A job's step is poll → decode → query → encode → write, one after the other. Reading (a
//! consumer's poll and the copy of the payloads into a batch, or a file's reads and line
//! splitting) is a large part of it, and needs nothing from the rest: while the job works on
//! batch N, this source's thread already reads batch N + 1, so a second core does the
//! reading. Every input of every job is read this way, bounded (`execute`) or continuous,
//! except with eager micro-batches (the low-latency profile: a hand-over between threads only
//! adds to their latency).
//!
//! The job sees the same batches, in the same order, with the same reset partitions, problems
//! and assigned partitions (each delivered with the batch whose poll found them; a poll that
//! read nothing is handed over too when it found any of those). One batch is read ahead
//! (read, or being read), never more: the thread polls again only once the job has taken the
//! batch before. A batch read ahead but never taken (the job stopped, a LIMIT was reached) is
//! simply dropped: the job's positions count only the batches it processed. The source is
//! positioned (`seek`) before its first poll.
//!
//! While the thread reads, the job never waits on the source itself:
//! - **commits** are handed to the thread, which makes them before its next poll, or at once
//!   while it waits for the job to take a batch (a paused job's too), and at the latest when
//!   the job lets the source go;
//! - **partition progress and lag** are asked of the thread: while it waits for the job it
//!   answers at once (and the job waits for the answer), while it polls it answers after the
//!   poll (and the job takes the last answer, about a second old: it asks once a second).
//!
//! **Consumer group rebalances.** Partitions are taken from a member inside a poll, which now
//! runs while the job still works on the batch before. So the revoke waits (at most
//! [`REVOKE_WAIT`]) until the job has finished every batch it was given (it asks for the next,
//! or says it is idle: a paused job), and commits the positions the job asked to commit by
//! then, before the partitions go ([`Source::before_revoke`]): their next owner starts after
//! what this member processed, as it did when the job polled between batches itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::record::{RecordBatchCollector, SourceBatch};
use crate::source::{PartitionProgress, Positions, Source};
use crate::{ConnectorError, Result};

/// The shortest wait of the reading thread's polls.
const MIN_READ_WAIT: Duration = Duration::from_millis(10);

/// The longest the job waits for the reading thread's answer on partition progress and lag.
const PROGRESS_WAIT: Duration = Duration::from_millis(50);

/// The longest wait of the reading thread's polls: the job, when it lets the source go, waits
/// for a poll in progress to end. (A micro-batch that does not fill closes after this long at
/// the latest, even with a longer flush interval.)
const MAX_READ_WAIT: Duration = Duration::from_secs(1);

/// The longest a rebalance waits for the job to finish the batches it was given.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// What one poll of the inner source gave, with what it found on the way.
struct Polled {
    batch: Result<Option<SourceBatch>>,
    reset: Vec<i32>,
    errors: Vec<String>,
    assigned: Option<Vec<i32>>,
}

/// The size and wait of the polls the job asks for; the reading thread polls with the latest.
#[derive(Default)]
struct Request {
    max_records: AtomicUsize,
    max_wait_us: AtomicU64,
}

/// What the job and the reading thread share.
#[derive(Default)]
struct Shared {
    /// A poll the thread handed over and the job has not taken yet.
    slot: Option<Polled>,
    /// The thread has returned (the source ended or failed, or the thread panicked).
    reader_gone: bool,
    /// Polls the thread has handed over.
    handed: u64,
    /// Polls the job has finished: all it had taken when it last asked for the next (or said
    /// it was idle).
    finished: u64,
    /// Positions the job asked to commit that are not committed yet.
    to_commit: Positions,
    /// The last commit failed: the next try comes with the next poll or the job's next
    /// commit, not at once (a member cut off from its group gets back only by polling).
    commit_failed: bool,
    /// The job asked for partition progress and lag since the thread last answered.
    progress_asked: bool,
    progress: Vec<PartitionProgress>,
    lag: Option<i64>,
    /// Answers given so far, the last one when.
    answers: u64,
    answered_at: Option<Instant>,
    /// The job lets the source go: nothing is to wait for it any more.
    stopping: bool,
    /// The thread waits for the job to take a batch (it answers at once meanwhile).
    waiting: bool,
}

#[derive(Default)]
struct Handoff {
    shared: Mutex<Shared>,
    changed: Condvar,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(
        &self,
        shared: MutexGuard<'a, Shared>,
        at_most: Duration,
    ) -> MutexGuard<'a, Shared> {
        self.changed
            .wait_timeout(shared, at_most)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Tells the other side something changed.
    fn changed(&self) {
        self.changed.notify_all();
    }

    /// A rebalance is about to take partitions: waits until the job has finished every batch
    /// handed over (or lets go, or [`REVOKE_WAIT`] passes), then gives the positions it asked
    /// to commit. They stay to be committed as usual too (for the partitions not revoked).
    fn finish_and_give_positions(&self) -> Positions {
        let deadline = Instant::now() + REVOKE_WAIT;
        let mut shared = self.lock();
        while shared.finished < shared.handed && !shared.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "a rebalance waited {} s for the job to finish its batch; the partitions \
                     go with what the job asked to commit so far (the rest is read again)",
                    REVOKE_WAIT.as_secs()
                );
                break;
            }
            shared = self.wait(shared, left);
        }
        shared.to_commit.clone()
    }
}

/// Marks the reading thread gone when it returns or panics.
struct Gone(Arc<Handoff>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.lock().reader_gone = true;
        self.0.changed();
    }
}

/// Commits what the job asked to commit (on the reading thread, or after it): a failure is
/// logged and the positions kept for the next try, unless newer ones came meanwhile.
fn commit_asked(source: &mut dyn Source, handoff: &Handoff, description: &str) {
    let positions = std::mem::take(&mut handoff.lock().to_commit);
    if positions.is_empty() {
        return;
    }
    let failed = source.commit(&positions).err();
    let mut shared = handoff.lock();
    shared.commit_failed = failed.is_some();
    if let Some(e) = failed {
        tracing::warn!(
            "could not commit the offsets of {description} (retried with the next commit): {e}"
        );
        for (partition, offset) in positions {
            shared.to_commit.entry(partition).or_insert(offset);
        }
    }
}

/// Answers the job's question for partition progress and lag, if it asked one: one round of
/// broker calls (the lag is the progress's when there is one).
fn answer_progress(source: &dyn Source, handoff: &Handoff) {
    if !std::mem::take(&mut handoff.lock().progress_asked) {
        return;
    }
    let progress = source.partition_progress();
    let lag = match progress.is_empty() {
        true => source.lag(),
        false => Some(progress.iter().map(|p| (p.total - p.read).max(0)).sum()),
    };
    let mut shared = handoff.lock();
    shared.progress = progress;
    shared.lag = lag;
    shared.answers += 1;
    shared.answered_at = Some(Instant::now());
    drop(shared);
    handoff.changed();
}

/// The reading thread's loop (see [`Prefetch::start`]).
fn read(inner: &Mutex<Box<dyn Source>>, request: &Request, handoff: &Handoff, description: &str) {
    let source = || inner.lock().unwrap_or_else(|p| p.into_inner());
    let mut handed_assignment = None;
    loop {
        // Until the job has taken the last batch: one batch read ahead, never more (a batch
        // may be up to `MAX_BATCH_BYTES`). Meanwhile, what the job asks is done at once.
        let mut shared = handoff.lock();
        loop {
            if shared.stopping {
                return;
            }
            if (!shared.to_commit.is_empty() && !shared.commit_failed) || shared.progress_asked {
                drop(shared);
                let mut source = source();
                commit_asked(&mut **source, handoff, description);
                answer_progress(&**source, handoff);
                drop(source);
                shared = handoff.lock();
                continue;
            }
            if shared.slot.is_none() {
                shared.waiting = false;
                break;
            }
            shared.waiting = true;
            shared = handoff.wait(shared, Duration::from_secs(1));
        }
        drop(shared);
        let max_records = request.max_records.load(Ordering::Relaxed);
        // At least a few milliseconds: the job may ask for polls without a wait (its second
        // input), and this thread must not spin on an idle source.
        let max_wait = Duration::from_micros(request.max_wait_us.load(Ordering::Relaxed))
            .clamp(MIN_READ_WAIT, MAX_READ_WAIT);
        let polled = {
            let mut source = source();
            commit_asked(&mut **source, handoff, description);
            let batch = source.poll_batch(max_records, max_wait);
            let polled = Polled {
                batch,
                reset: source.take_reset_partitions(),
                errors: source.take_errors(),
                assigned: source.assigned_partitions(),
            };
            answer_progress(&**source, handoff);
            polled
        };
        let last = !matches!(polled.batch, Ok(Some(_)));
        // A poll that read nothing is handed over only for what it found (the job's own
        // wait runs out meanwhile and gives it an empty batch).
        let empty = matches!(&polled.batch, Ok(Some(b)) if b.is_empty())
            && polled.reset.is_empty()
            && polled.errors.is_empty()
            && polled.assigned == handed_assignment;
        if empty {
            continue;
        }
        handed_assignment.clone_from(&polled.assigned);
        {
            let mut shared = handoff.lock();
            shared.slot = Some(polled);
            shared.handed += 1;
        }
        handoff.changed();
        if last {
            return;
        }
    }
}

/// A source read one batch ahead on a thread of its own (see the module documentation).
pub struct Prefetch {
    inner: Arc<Mutex<Box<dyn Source>>>,
    description: String,
    bounded: bool,
    positions_only_in_checkpoints: bool,
    request: Arc<Request>,
    handoff: Arc<Handoff>,
    reader: Option<JoinHandle<()>>,
    /// Polls the job has taken.
    taken: u64,
    assigned: Option<Vec<i32>>,
    reset: Vec<i32>,
    errors: Vec<String>,
    ended: bool,
}

impl Prefetch {
    /// Reads `source` ahead once the job polls it first.
    pub fn new(source: Box<dyn Source>) -> Self {
        Self {
            description: source.describe(),
            bounded: source.is_bounded(),
            positions_only_in_checkpoints: source.positions_only_in_checkpoints(),
            assigned: source.assigned_partitions(),
            inner: Arc::new(Mutex::new(source)),
            request: Arc::new(Request::default()),
            handoff: Arc::new(Handoff::default()),
            reader: None,
            taken: 0,
            reset: Vec::new(),
            errors: Vec::new(),
            ended: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn Source>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the reading thread may be using the source: the job must not wait on it.
    fn reading(&self) -> bool {
        self.reader.is_some() && !self.ended
    }

    /// The job has finished every poll it took (a rebalance waiting for it may go on).
    fn finished(&self) {
        self.handoff.lock().finished = self.taken;
        self.handoff.changed();
    }

    /// Asks the reading thread for partition progress and lag. While it waits for the job it
    /// answers at once, and the job waits for that answer ([`PROGRESS_WAIT`] at most); while
    /// it polls it answers after the poll, and the job takes the last answer.
    fn ask_progress(&self) -> MutexGuard<'_, Shared> {
        let mut shared = self.handoff.lock();
        // An answer of a moment ago serves both questions (progress, then lag).
        if shared
            .answered_at
            .is_some_and(|t| t.elapsed() < PROGRESS_WAIT)
        {
            return shared;
        }
        let asked_at = shared.answers;
        shared.progress_asked = true;
        self.handoff.changed();
        if !shared.waiting {
            // Polling: its answer comes after the poll, and the job does not wait for it.
            return shared;
        }
        let deadline = Instant::now() + PROGRESS_WAIT;
        while shared.answers == asked_at && !shared.reader_gone {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            shared = self.handoff.wait(shared, left);
        }
        shared
    }

    /// Starts the reading thread: it polls, hands the batch over, waits until the job has
    /// taken it, and polls again, until the source ends, fails, or the job lets go.
    fn start(&mut self) -> Result<()> {
        let handoff = self.handoff.clone();
        self.lock()
            .before_revoke(Arc::new(move || handoff.finish_and_give_positions()));
        let (inner, request) = (self.inner.clone(), self.request.clone());
        let (handoff, description) = (self.handoff.clone(), self.description.clone());
        let thread = std::thread::Builder::new()
            .name("velo-read".into())
            .spawn(move || {
                let _gone = Gone(handoff.clone());
                read(&inner, &request, &handoff, &description);
            })
            .map_err(|e| ConnectorError::Config(format!("starting a reading thread: {e}")))?;
        self.reader = Some(thread);
        Ok(())
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.handoff.lock().stopping = true;
        self.handoff.changed();
        // A poll in progress ends within its wait.
        if let Some(thread) = self.reader.take() {
            let _ = thread.join();
        }
        // What the job asked to commit last (at its end) is committed before the source goes.
        commit_asked(&mut **self.lock(), &self.handoff, &self.description);
    }
}

impl Source for Prefetch {
    fn poll_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<SourceBatch>> {
        if self.ended {
            return Ok(None);
        }
        self.finished();
        self.request
            .max_records
            .store(max_records, Ordering::Relaxed);
        self.request
            .max_wait_us
            .store(max_wait.as_micros() as u64, Ordering::Relaxed);
        if self.reader.is_none() {
            self.start()?;
        }
        let deadline = Instant::now() + max_wait;
        let polled = {
            let mut shared = self.handoff.lock();
            loop {
                if let Some(polled) = shared.slot.take() {
                    break polled;
                }
                if shared.reader_gone {
                    drop(shared);
                    let why = match self.reader.take().map(JoinHandle::join) {
                        Some(Err(panic)) => {
                            format!("stopped on a panic: {}", panic_text(&*panic))
                        }
                        _ => "ended without a last batch".to_string(),
                    };
                    return Err(ConnectorError::Config(format!(
                        "the reading thread of {} {why}",
                        self.description
                    )));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Nothing read within the wait: an empty batch, as a poll that waited
                    // in vain.
                    return Ok(Some(RecordBatchCollector::new(0).finish()));
                }
                shared = self.handoff.wait(shared, left);
            }
        };
        self.handoff.changed();
        self.taken += 1;
        self.reset.extend(polled.reset);
        self.errors.extend(polled.errors);
        self.assigned = polled.assigned;
        let batch = polled.batch?;
        self.ended = batch.is_none();
        Ok(batch)
    }

    fn seek(&mut self, positions: &Positions) -> Result<()> {
        if self.reader.is_some() {
            return Err(ConnectorError::Config(format!(
                "{} is read ahead: it can be positioned only before its first poll",
                self.description
            )));
        }
        self.lock().seek(positions)
    }

    fn commit(&mut self, positions: &Positions) -> Result<()> {
        {
            let mut shared = self.handoff.lock();
            shared.to_commit.extend(positions);
            shared.commit_failed = false;
        }
        if self.reading() {
            // The reading thread commits them before its next poll, or now if it waits.
            self.handoff.changed();
            return Ok(());
        }
        let asked = std::mem::take(&mut self.handoff.lock().to_commit);
        self.lock().commit(&asked)
    }

    fn idle(&mut self) {
        self.finished();
    }

    fn take_reset_partitions(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.reset)
    }

    fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    fn partition_progress(&self) -> Vec<PartitionProgress> {
        if !self.reading() {
            return self.lock().partition_progress();
        }
        self.ask_progress().progress.clone()
    }

    fn positions_only_in_checkpoints(&self) -> bool {
        self.positions_only_in_checkpoints
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        self.assigned.clone()
    }

    fn lag(&self) -> Option<i64> {
        if !self.reading() {
            return self.lock().lag();
        }
        self.ask_progress().lag
    }
}

/// What a panic said, when it said it with text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Payload;
    use crate::source::RevokeHook;
    use arrow::array::Array;

    /// A bounded source of `batches` batches of two records each, then the end; each poll
    /// takes a little while, as a real read does.
    struct Counted {
        next: usize,
        batches: usize,
    }

    impl Source for Counted {
        fn poll_batch(&mut self, _max: usize, _wait: Duration) -> Result<Option<SourceBatch>> {
            if self.next == self.batches {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(200));
            let mut collector = RecordBatchCollector::new(2);
            for record in 0..2 {
                let text = format!("{}-{record}", self.next);
                let offset = (self.next * 2 + record) as i64;
                collector.push(
                    Some(text.as_bytes()),
                    None,
                    "t",
                    0,
                    offset,
                    None,
                    std::iter::empty(),
                );
            }
            self.next += 1;
            Ok(Some(collector.finish()))
        }

        fn describe(&self) -> String {
            "counted".into()
        }

        fn is_bounded(&self) -> bool {
            true
        }
    }

    /// A source whose read panics.
    struct Panicking;

    impl Source for Panicking {
        fn poll_batch(&mut self, _max: usize, _wait: Duration) -> Result<Option<SourceBatch>> {
            panic!("the disk caught fire at offset 7")
        }

        fn describe(&self) -> String {
            "a panicking source".into()
        }

        fn is_bounded(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_panic_on_the_reading_thread_is_an_error_that_says_what_it_said() {
        let mut source = Prefetch::new(Box::new(Panicking));
        let error = loop {
            match source.poll_batch(10, Duration::from_secs(5)) {
                // Nothing handed over within the wait: ask again.
                Ok(Some(batch)) if batch.is_empty() => continue,
                other => break other.unwrap_err(),
            }
        };
        assert_eq!(
            error.to_string(),
            "the reading thread of a panicking source stopped on a panic: the disk caught fire \
             at offset 7"
        );
    }

    fn payloads(batch: &SourceBatch) -> Vec<String> {
        let Payload::Encoded(bytes) = &batch.payload else {
            panic!("encoded payloads")
        };
        (0..bytes.len())
            .map(|i| String::from_utf8(bytes.value(i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_prefetched_source_gives_every_batch_once_in_order_then_ends() {
        let mut source = Prefetch::new(Box::new(Counted {
            next: 0,
            batches: 200,
        }));
        let mut got = Vec::new();
        // Short waits: some polls come back empty while the thread reads; none loses a batch.
        while let Some(batch) = source.poll_batch(100, Duration::from_micros(100)).unwrap() {
            got.extend(payloads(&batch));
        }
        let want: Vec<String> = (0..200)
            .flat_map(|i| [format!("{i}-0"), format!("{i}-1")])
            .collect();
        assert_eq!(got, want);
        assert!(source.poll_batch(100, Duration::ZERO).unwrap().is_none());
    }

    #[test]
    fn a_prefetched_source_dropped_mid_read_stops_its_thread() {
        let mut source = Prefetch::new(Box::new(Counted {
            next: 0,
            batches: 1_000_000,
        }));
        assert!(source
            .poll_batch(10, Duration::from_secs(5))
            .unwrap()
            .is_some());
        // The thread has read ahead and waits to hand the next batch over; dropping the
        // source ends and joins it (the test would hang otherwise).
        drop(source);
    }

    #[test]
    fn a_prefetched_source_is_positioned_only_before_its_first_poll() {
        let mut source = Prefetch::new(Box::new(Counted {
            next: 0,
            batches: 3,
        }));
        source.poll_batch(10, Duration::from_secs(5)).unwrap();
        let error = source
            .seek(&Positions::from([(0, 4)]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("only before its first poll"), "{error}");
    }

    /// A batch of one record at `offset` of partition 0.
    fn one_record(offset: i64) -> SourceBatch {
        let mut collector = RecordBatchCollector::new(1);
        collector.push(Some(b"x"), None, "t", 0, offset, None, std::iter::empty());
        collector.finish()
    }

    /// An endless source of one-record batches that records its commits and, on its second
    /// poll, calls its revoke hook as a rebalance would (recording what the hook gave).
    #[derive(Default)]
    struct Rebalanced {
        next: i64,
        hook: Option<RevokeHook>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Source for Rebalanced {
        fn poll_batch(&mut self, _max: usize, _wait: Duration) -> Result<Option<SourceBatch>> {
            if self.next == 1 {
                self.log.lock().unwrap().push("revoking".into());
                let given = self.hook.as_ref().map(|hook| hook());
                self.log.lock().unwrap().push(format!("revoke: {given:?}"));
            }
            self.next += 1;
            Ok(Some(one_record(self.next - 1)))
        }

        fn commit(&mut self, positions: &Positions) -> Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("commit: {positions:?}"));
            Ok(())
        }

        fn before_revoke(&mut self, hook: RevokeHook) {
            self.hook = Some(hook);
        }

        fn describe(&self) -> String {
            "rebalanced".into()
        }

        fn is_bounded(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_revoke_waits_until_the_job_has_finished_its_batch_and_gives_what_it_committed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut source = Prefetch::new(Box::new(Rebalanced {
            log: log.clone(),
            ..Rebalanced::default()
        }));
        // The job takes the first batch; the reading thread's next poll (the revoke) waits.
        let first = source
            .poll_batch(1, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 1);
        assert!(logged(&log, "revoking"));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            *log.lock().unwrap(),
            ["revoking"],
            "the revoke waits for the job"
        );
        // The job finishes it: asks to commit, and asks for the next batch.
        source.commit(&Positions::from([(0, 1)])).unwrap();
        let second = source
            .poll_batch(1, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(second.len(), 1);
        drop(source);
        let log = log.lock().unwrap();
        assert_eq!(log[1], "revoke: Some({0: 1})", "{log:?}");
        // Committed as usual too (before a later poll, or when the source was let go).
        assert!(log[2..].contains(&"commit: {0: 1}".to_string()), "{log:?}");
    }

    #[test]
    fn a_commit_asked_while_reading_ahead_is_made_by_the_time_the_source_is_let_go() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut source = Prefetch::new(Box::new(Rebalanced {
            next: 2,
            log: log.clone(),
            ..Rebalanced::default()
        }));
        source.poll_batch(1, Duration::from_secs(5)).unwrap();
        source.commit(&Positions::from([(0, 3)])).unwrap();
        drop(source);
        assert_eq!(log.lock().unwrap().last().unwrap(), "commit: {0: 3}");
    }

    /// Waits (at most 5 s) until `log` holds `line`.
    fn logged(log: &Mutex<Vec<String>>, line: &str) -> bool {
        logged_when(log, |l| l == line).is_some()
    }

    /// The log once it holds a line `wanted` accepts (`None` after 5 s).
    fn logged_when(log: &Mutex<Vec<String>>, wanted: impl Fn(&str) -> bool) -> Option<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let now = log.lock().unwrap().clone();
            if now.iter().any(|l| wanted(l)) {
                return Some(now);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn a_revoke_does_not_wait_for_a_paused_job_and_gives_what_it_committed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut source = Prefetch::new(Box::new(Rebalanced {
            log: log.clone(),
            ..Rebalanced::default()
        }));
        source.poll_batch(1, Duration::from_secs(5)).unwrap();
        source.commit(&Positions::from([(0, 1)])).unwrap();
        // Paused: it asks for no batch, and says it is idle.
        source.idle();
        let log = logged_when(&log, |l| l.starts_with("revoke:"))
            .unwrap_or_else(|| panic!("the revoke still waits: {:?}", log.lock().unwrap()));
        // Committed before the revoke (the thread's commit before its poll), or by it.
        let revoke = log.iter().position(|l| l.starts_with("revoke:")).unwrap();
        let before = log[..revoke].iter().any(|l| l == "commit: {0: 1}");
        assert!(log[revoke] == "revoke: Some({0: 1})" || before, "{log:?}");
    }

    #[test]
    fn a_commit_asked_while_the_next_batch_waits_to_be_taken_is_made_at_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut source = Prefetch::new(Box::new(Rebalanced {
            next: 2,
            log: log.clone(),
            ..Rebalanced::default()
        }));
        source.poll_batch(1, Duration::from_secs(5)).unwrap();
        // The thread has read the next batch and waits for the job to take it; the job (a
        // paused one) does not, but its commit is made.
        source.commit(&Positions::from([(0, 3)])).unwrap();
        assert!(logged(&log, "commit: {0: 3}"), "{:?}", log.lock().unwrap());
    }

    /// An endless source of one-record batches whose commits all fail, counted.
    struct FailingCommits {
        next: i64,
        attempts: Arc<AtomicUsize>,
    }

    impl Source for FailingCommits {
        fn poll_batch(&mut self, _max: usize, _wait: Duration) -> Result<Option<SourceBatch>> {
            self.next += 1;
            Ok(Some(one_record(self.next - 1)))
        }

        fn commit(&mut self, _positions: &Positions) -> Result<()> {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            Err(ConnectorError::Config(
                "the group has a new generation".into(),
            ))
        }

        fn describe(&self) -> String {
            "failing commits".into()
        }

        fn is_bounded(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_failing_commit_is_tried_again_with_the_next_poll_not_in_a_loop_that_stops_reading() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut source = Prefetch::new(Box::new(FailingCommits {
            next: 0,
            attempts: attempts.clone(),
        }));
        let mut batches = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while batches < 50 {
            assert!(
                Instant::now() < deadline,
                "reading stopped after {batches} batches"
            );
            let batch = source.poll_batch(1, Duration::from_millis(100)).unwrap();
            if batch.is_some_and(|b| !b.is_empty()) {
                batches += 1;
                source.commit(&Positions::from([(0, batches)])).unwrap();
            }
        }
        drop(source);
        // One try per commit asked and per poll, at most (and the last, when let go).
        let attempts = attempts.load(Ordering::Relaxed);
        assert!((1..=2 * 50 + 2).contains(&attempts), "{attempts} tries");
    }
}
