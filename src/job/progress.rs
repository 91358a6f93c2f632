//! A running job's live counters and controls ([`JobProgress`], shared with whoever manages
//! the job and exported as Prometheus metrics) and a finished run's counters ([`JobStats`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::operators::OperatorMetrics;

/// Live counters and controls of a running job, shared with whoever manages it (the server's
/// job manager reads them; `paused` holds the loop between micro-batches). The runtime also
/// reports them as Prometheus metrics labelled with `name`.
#[derive(Debug)]
pub struct JobProgress {
    pub name: String,
    pub records_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub bad_records: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_rows: AtomicU64,
    pub epochs: AtomicU64,
    pub state_bytes: AtomicU64,
    pub state_rows: AtomicU64,
    /// Records behind the end of the input's partitions; -1 while unknown.
    pub lag: AtomicI64,
    pub paused: AtomicBool,
    /// Checkpoints written by this run.
    pub checkpoints: AtomicU64,
    /// The id of the last checkpoint written (0: none yet).
    pub last_checkpoint: AtomicU64,
    /// Time spent writing checkpoints, in microseconds.
    pub checkpoint_micros: AtomicU64,
    /// Asks the job for a checkpoint now (a savepoint); cleared when it is written.
    pub checkpoint_requested: AtomicBool,
    /// The Prometheus series of this job, made once (nothing looked up per batch).
    pub(crate) metrics: JobMetrics,
}

/// A job's metric handles, labelled `job = <name>`.
#[derive(Debug)]
pub(crate) struct JobMetrics {
    pub(crate) records_in: metrics::Counter,
    pub(crate) records_out: metrics::Counter,
    pub(crate) decode_errors: metrics::Counter,
    pub(crate) dead_letters: metrics::Counter,
    pub(crate) batch_latency: metrics::Histogram,
    pub(crate) state_bytes: metrics::Gauge,
    pub(crate) state_rows: metrics::Gauge,
    pub(crate) lag: metrics::Gauge,
    pub(crate) checkpoints: metrics::Counter,
    pub(crate) checkpoint_duration: metrics::Histogram,
    pub(crate) checkpoint_bytes: metrics::Gauge,
}

impl JobMetrics {
    fn new(job: &str) -> Self {
        let label = || [("job", job.to_string())];
        Self {
            records_in: metrics::counter!("velo_records_in_total", &label()),
            records_out: metrics::counter!("velo_records_out_total", &label()),
            decode_errors: metrics::counter!("velo_decode_errors_total", &label()),
            dead_letters: metrics::counter!("velo_dlq_records_total", &label()),
            batch_latency: metrics::histogram!("velo_batch_latency_seconds", &label()),
            state_bytes: metrics::gauge!("velo_state_bytes", &label()),
            state_rows: metrics::gauge!("velo_state_rows", &label()),
            lag: metrics::gauge!("velo_consumer_lag", &label()),
            checkpoints: metrics::counter!("velo_checkpoints_total", &label()),
            checkpoint_duration: metrics::histogram!("velo_checkpoint_duration_seconds", &label()),
            checkpoint_bytes: metrics::gauge!("velo_checkpoint_bytes", &label()),
        }
    }
}

impl JobProgress {
    /// Counters for job `name`; its metric series are registered now (call it after the
    /// metrics recorder is installed; without one they count nothing).
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            metrics: JobMetrics::new(&name),
            name,
            records_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            bad_records: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            state_rows: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            paused: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(0),
            checkpoint_micros: AtomicU64::new(0),
            checkpoint_requested: AtomicBool::new(false),
        }
    }
}

/// Adds `n` to a progress counter and to its Prometheus counter.
pub(crate) fn count(counter: &AtomicU64, metric: &metrics::Counter, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
        metric.increment(n);
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobStats {
    pub records_in: u64,
    pub bad_records: u64,
    pub rows_out: u64,
    pub epochs: u64,
    /// Operator counters and state at the end of the run.
    pub operators: OperatorMetrics,
}
