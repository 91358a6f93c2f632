//! [`Prefetch`]: a bounded source polled on a thread of its own, one batch ahead of the job.
//!
//! A job's step is poll → decode → query → encode → write, one after the other. Reading (a
//! consumer's poll and the copy of the payloads into a batch, or a file's reads and line
//! splitting) is a large part of it, and needs nothing from the rest: while the job works on
//! batch N, this source's thread already reads batch N + 1, so a second core does the
//! reading.
//!
//! The job sees the same batches, in the same order, with the same reset partitions and
//! problems (each delivered with the batch whose poll found them). One batch is read ahead
//! (read, or being read), never more. For bounded reads only (`execute`): a read that ends by
//! itself, has no consumer group to rebalance, and is positioned (`seek`) before its first
//! poll. A batch read ahead but never taken (the job stopped, a LIMIT was reached) is simply
//! dropped: the job's positions count only the batches it processed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::record::{RecordBatchCollector, SourceBatch};
use crate::source::{PartitionProgress, Positions, Source};
use crate::{ConnectorError, Result};

/// The shortest wait of the reading thread's polls.
const MIN_READ_WAIT: Duration = Duration::from_millis(10);

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
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The size and wait of the polls the job asks for; the reading thread polls with the latest.
#[derive(Default)]
struct Request {
    max_records: AtomicUsize,
    max_wait_us: AtomicU64,
}

/// A source read one batch ahead on a thread of its own (see the module documentation).
pub struct Prefetch {
    inner: Arc<Mutex<Box<dyn Source>>>,
    description: String,
    bounded: bool,
    positions_only_in_checkpoints: bool,
    request: Arc<Request>,
    reader: Option<Reader>,
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
            reader: None,
            reset: Vec::new(),
            errors: Vec::new(),
            ended: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Source>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the reading thread: it polls, hands the batch over (waiting while one is still
    /// untaken), and polls again, until the source ends, fails, or the job lets go.
    fn start(&mut self) -> Result<()> {
        // No slot: the thread holds the batch it read until the job takes it, so one batch is
        // read ahead, never more (a batch may be up to `MAX_BATCH_BYTES`).
        let (ready_tx, ready) = sync_channel::<Polled>(0);
        let stop = Arc::new(AtomicBool::new(false));
        let (inner, request, stopping) = (self.inner.clone(), self.request.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("velo-read".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let max_records = request.max_records.load(Ordering::Relaxed);
                    // At least a few milliseconds: the job may ask for polls without a wait
                    // (its second input), and this thread must not spin on an idle source.
                    let max_wait =
                        Duration::from_micros(request.max_wait_us.load(Ordering::Relaxed))
                            .max(MIN_READ_WAIT);
                    let polled = {
                        let mut source = inner.lock().unwrap_or_else(|p| p.into_inner());
                        let batch = source.poll_batch(max_records, max_wait);
                        Polled {
                            batch,
                            reset: source.take_reset_partitions(),
                            errors: source.take_errors(),
                            assigned: source.assigned_partitions(),
                        }
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
                }
            })
            .map_err(|e| ConnectorError::Config(format!("starting a reading thread: {e}")))?;
        self.reader = Some(Reader {
            ready,
            stop,
            thread: Some(thread),
        });
        Ok(())
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(mut reader) = self.reader.take() {
            reader.stop.store(true, Ordering::Relaxed);
            // Dropping the receiver ends a hand-over in progress; a poll in progress ends
            // within its wait.
            let thread = reader.thread.take();
            drop(reader);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
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
        self.lock().commit(positions)
    }

    fn take_reset_partitions(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.reset)
    }

    fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    fn partition_progress(&self) -> Vec<PartitionProgress> {
        self.lock().partition_progress()
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
        self.lock().lag()
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
}
