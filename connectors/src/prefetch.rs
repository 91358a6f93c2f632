//! [`Prefetch`]: a source polled on a thread of its own, one batch ahead of the job.
//!
//! A job's step is poll → decode → query → encode → write, one after the other. Reading (a
//! consumer's poll and the copy of the payloads into a batch, or a file's reads and line
//! splitting) is a large part of it, and needs nothing from the rest: while the job works on
//! batch N, this source's thread already reads batch N + 1, so a second core does the
//! reading. Every input of every job is read this way, bounded (`execute`) or continuous.
//!
//! The job sees the same batches, in the same order, with the same reset partitions, problems
//! and assigned partitions (each delivered with the batch whose poll found them). One batch is
//! read ahead (read, or being read), never more. A batch read ahead but never taken (the job
//! stopped, a LIMIT was reached) is simply dropped: the job's positions count only the batches
//! it processed. The source is positioned (`seek`) before its first poll.
//!
//! While the thread reads, the job never waits on the source itself:
//! - **commits** are handed to the thread, which makes them before its next poll (at most
//!   [`MAX_READ_WAIT`] later), at most every [`COMMIT_INTERVAL`] (what was asked meanwhile
//!   is committed together), and at the latest when the job lets the source go;
//! - **partition progress and lag** are asked of the thread, which answers after its next
//!   poll; the job gets the last answer (about a second old: it asks about once a second).
//!
//! **Consumer group rebalances.** Partitions are taken from a member inside a poll, which now
//! runs while the job still works on the batch before. So the revoke waits (at most
//! [`REVOKE_WAIT`]) until the job has finished every batch it was given and asked for the
//! next, and commits the positions the job asked to commit by then, before the partitions go
//! ([`Source::before_revoke`]): their next owner starts after what this member processed, as
//! it did when the job polled between batches itself. (A job that commits only with its
//! checkpoints has committed only up to its last checkpoint, as before.)

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::record::{RecordBatchCollector, SourceBatch};
use crate::source::{PartitionProgress, Positions, Source};
use crate::{ConnectorError, Result};

/// The shortest wait of the reading thread's polls.
const MIN_READ_WAIT: Duration = Duration::from_millis(10);

/// The longest wait of the reading thread's polls: commits handed to it wait at most this long.
const MAX_READ_WAIT: Duration = Duration::from_millis(50);

/// The longest a rebalance waits for the job to finish the batches it was given.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

/// The reading thread commits at most this often (a commit waits for the broker's answer,
/// and reading waits with it): what the job asked to commit meanwhile is committed together.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// What one poll of the inner source gave, with what it found on the way.
struct Polled {
    batch: Result<Option<SourceBatch>>,
    reset: Vec<i32>,
    errors: Vec<String>,
    assigned: Option<Vec<i32>>,
}

/// The reading thread and how to stop it.
struct Reader {
    ready: Receiver<Polled>,
    thread: Option<JoinHandle<()>>,
}

/// The size and wait of the polls the job asks for; the reading thread polls with the latest.
#[derive(Default)]
struct Request {
    max_records: AtomicUsize,
    max_wait_us: AtomicU64,
}

/// What the job and the reading thread share besides the batches.
#[derive(Default)]
struct Shared {
    /// Batches the thread has handed over.
    handed: u64,
    /// Batches the job has finished: all it had taken when it last asked for the next.
    finished: u64,
    /// Positions the job asked to commit that are not committed yet.
    to_commit: Positions,
    /// The job asked for partition progress and lag since the thread last answered.
    progress_asked: bool,
    progress: Vec<PartitionProgress>,
    lag: Option<i64>,
    /// The job lets the source go: nothing is to wait for it any more.
    stopping: bool,
    /// When the reading thread last committed.
    committed_at: Option<Instant>,
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
                    "a rebalance waited {} s for the job to finish its batch; its partitions go \
                     with only what was committed before",
                    REVOKE_WAIT.as_secs()
                );
                break;
            }
            shared = self
                .changed
                .wait_timeout(shared, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        shared.to_commit.clone()
    }
}

/// Commits what the job asked to commit (on the reading thread, at most every
/// [`COMMIT_INTERVAL`] unless `now`; or after it): a failure is logged and the positions kept
/// for the next try, unless newer ones came meanwhile.
fn commit_asked(source: &mut dyn Source, handoff: &Handoff, description: &str, now: bool) {
    let positions = {
        let mut shared = handoff.lock();
        if !now
            && shared
                .committed_at
                .is_some_and(|t| t.elapsed() < COMMIT_INTERVAL)
        {
            return;
        }
        if shared.to_commit.is_empty() {
            return;
        }
        shared.committed_at = Some(Instant::now());
        std::mem::take(&mut shared.to_commit)
    };
    if let Err(e) = source.commit(&positions) {
        tracing::warn!(
            "could not commit the offsets of {description} (retried with the next commit): {e}"
        );
        let mut shared = handoff.lock();
        for (partition, offset) in positions {
            shared.to_commit.entry(partition).or_insert(offset);
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
    stop: Arc<AtomicBool>,
    reader: Option<Reader>,
    /// Batches the job has taken.
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
            stop: Arc::new(AtomicBool::new(false)),
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

    /// Starts the reading thread: it polls, hands the batch over (waiting while one is still
    /// untaken), and polls again, until the source ends, fails, or the job lets go.
    fn start(&mut self) -> Result<()> {
        let handoff = self.handoff.clone();
        self.lock()
            .before_revoke(Arc::new(move || handoff.finish_and_give_positions()));
        // No slot: the thread holds the batch it read until the job takes it, so one batch is
        // read ahead, never more (a batch may be up to `MAX_BATCH_BYTES`).
        let (ready_tx, ready) = sync_channel::<Polled>(0);
        let (inner, request, stopping) =
            (self.inner.clone(), self.request.clone(), self.stop.clone());
        let (handoff, description) = (self.handoff.clone(), self.description.clone());
        let thread = std::thread::Builder::new()
            .name("velo-read".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let max_records = request.max_records.load(Ordering::Relaxed);
                    // At least a few milliseconds: the job may ask for polls without a wait
                    // (its second input), and this thread must not spin on an idle source.
                    let max_wait =
                        Duration::from_micros(request.max_wait_us.load(Ordering::Relaxed))
                            .clamp(MIN_READ_WAIT, MAX_READ_WAIT);
                    let polled = {
                        let mut source = inner.lock().unwrap_or_else(|p| p.into_inner());
                        commit_asked(&mut **source, &handoff, &description, false);
                        let batch = source.poll_batch(max_records, max_wait);
                        let polled = Polled {
                            batch,
                            reset: source.take_reset_partitions(),
                            errors: source.take_errors(),
                            assigned: source.assigned_partitions(),
                        };
                        if std::mem::take(&mut handoff.lock().progress_asked) {
                            // One round of broker calls: the lag is the progress's when
                            // there is one.
                            let progress = source.partition_progress();
                            let lag = match progress.is_empty() {
                                true => source.lag(),
                                false => {
                                    Some(progress.iter().map(|p| (p.total - p.read).max(0)).sum())
                                }
                            };
                            let mut shared = handoff.lock();
                            shared.progress = progress;
                            shared.lag = lag;
                        }
                        polled
                    };
                    let last = !matches!(polled.batch, Ok(Some(_)));
                    // An empty poll is handed over only for what it found (the job's own
                    // wait runs out meanwhile and gives it an empty batch).
                    let empty = matches!(&polled.batch, Ok(Some(b)) if b.is_empty())
                        && polled.reset.is_empty()
                        && polled.errors.is_empty();
                    if empty {
                        continue;
                    }
                    if ready_tx.send(polled).is_err() || last {
                        return;
                    }
                    // Counted before the next poll, whose rebalance may wait for the job.
                    handoff.lock().handed += 1;
                }
            })
            .map_err(|e| ConnectorError::Config(format!("starting a reading thread: {e}")))?;
        self.reader = Some(Reader {
            ready,
            thread: Some(thread),
        });
        Ok(())
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handoff.lock().stopping = true;
        self.handoff.changed.notify_all();
        if let Some(mut reader) = self.reader.take() {
            // Dropping the receiver ends a hand-over in progress; a poll in progress ends
            // within its wait.
            let thread = reader.thread.take();
            drop(reader);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        // What the job asked to commit last (at its end) is committed before the source goes.
        commit_asked(&mut **self.lock(), &self.handoff, &self.description, true);
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
        {
            // The job is done with every batch it took: a rebalance waiting for it may go on.
            let mut shared = self.handoff.lock();
            shared.finished = self.taken;
        }
        self.handoff.changed.notify_all();
        self.request
            .max_records
            .store(max_records, Ordering::Relaxed);
        self.request
            .max_wait_us
            .store(max_wait.as_micros() as u64, Ordering::Relaxed);
        if self.reader.is_none() {
            self.start()?;
        }
        let reader = self.reader.as_ref().expect("started above");
        let polled = match reader.ready.recv_timeout(max_wait) {
            Ok(polled) => polled,
            // Nothing read yet within the wait: an empty batch, as a poll that waited in vain.
            Err(RecvTimeoutError::Timeout) => {
                return Ok(Some(RecordBatchCollector::new(0).finish()))
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The thread has returned or panicked (its end of the channel is gone).
                let joined = self.reader.as_mut().and_then(|r| r.thread.take());
                let why = match joined.map(JoinHandle::join) {
                    Some(Err(panic)) => format!("stopped on a panic: {}", panic_text(&*panic)),
                    _ => "ended without a last batch".to_string(),
                };
                return Err(ConnectorError::Config(format!(
                    "the reading thread of {} {why}",
                    self.description
                )));
            }
        };
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
        self.handoff.lock().to_commit.extend(positions);
        if self.reading() {
            // The reading thread commits them before its next poll.
            return Ok(());
        }
        let asked = std::mem::take(&mut self.handoff.lock().to_commit);
        self.lock().commit(&asked)
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
        let mut shared = self.handoff.lock();
        shared.progress_asked = true;
        shared.progress.clone()
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
        let mut shared = self.handoff.lock();
        shared.progress_asked = true;
        shared.lag
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
                let given = self.hook.as_ref().map(|hook| hook());
                self.log.lock().unwrap().push(format!("revoke: {given:?}"));
            }
            let mut collector = RecordBatchCollector::new(1);
            collector.push(
                Some(b"x"),
                None,
                "t",
                0,
                self.next,
                None,
                std::iter::empty(),
            );
            self.next += 1;
            Ok(Some(collector.finish()))
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
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            *log.lock().unwrap(),
            Vec::<String>::new(),
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
        assert_eq!(log[0], "revoke: Some({0: 1})", "{log:?}");
        // Committed as usual too (before a later poll, or when the source was let go).
        assert!(log[1..].contains(&"commit: {0: 1}".to_string()), "{log:?}");
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
}
