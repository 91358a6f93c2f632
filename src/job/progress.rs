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
    /// Payload bytes read.
    pub bytes_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub bad_records: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_rows: AtomicU64,
    pub epochs: AtomicU64,
    pub state_bytes: AtomicU64,
    pub state_rows: AtomicU64,
    /// Records behind the end of the input's partitions; -1 while unknown.
    pub lag: AtomicI64,
    /// The latency (poll → sink flushed → committed) of the last 256 micro-batches, in
    /// microseconds, oldest first.
    pub batch_latencies_us: std::sync::Mutex<std::collections::VecDeque<u64>>,
    /// When this run started (for records per second).
    pub started: std::time::Instant,
    /// A bounded read's progress in each partition: (stream, progress), sampled each second.
    pub partitions: std::sync::Mutex<Vec<(String, velo_connectors::source::PartitionProgress)>>,
    pub paused: AtomicBool,
    /// Checkpoints written by this run.
    pub checkpoints: AtomicU64,
    /// The id of the last checkpoint written (0: none yet).
    pub last_checkpoint: AtomicU64,
    /// Time spent writing checkpoints, in microseconds.
    pub checkpoint_micros: AtomicU64,
    /// Asks the job for a checkpoint now (a savepoint); cleared when it is written.
    pub checkpoint_requested: AtomicBool,
    /// Bad records and rows, by [`ErrorKind`] (index `kind as usize`).
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    /// The Prometheus series of this job, made once (nothing looked up per batch).
    pub(crate) metrics: JobMetrics,
}

/// A job's metric handles, labelled `job_id = <name>` (`job` is the scrape job's label).
#[derive(Debug)]
pub(crate) struct JobMetrics {
    pub(crate) records_in: metrics::Counter,
    pub(crate) records_out: metrics::Counter,
    pub(crate) dead_letters: metrics::Counter,
    pub(crate) batch_latency: metrics::Histogram,
    pub(crate) state_bytes: metrics::Gauge,
    pub(crate) state_rows: metrics::Gauge,
    pub(crate) lag: metrics::Gauge,
    pub(crate) checkpoints: metrics::Counter,
    pub(crate) checkpoint_duration: metrics::Histogram,
    pub(crate) checkpoint_bytes: metrics::Gauge,
    /// Rows that came after the watermark had passed their window (total).
    pub(crate) late_rows: metrics::Counter,
    /// How far the watermark is behind the wall clock, in seconds.
    pub(crate) watermark_delay: metrics::Gauge,
    /// `velo_record_errors_total{kind}`, by [`ErrorKind`].
    pub(crate) errors: [metrics::Counter; ErrorKind::ALL.len()],
}

impl JobMetrics {
    fn new(job: &str) -> Self {
        let label = || [("job_id", job.to_string())];
        Self {
            records_in: metrics::counter!("velo_records_in_total", &label()),
            records_out: metrics::counter!("velo_records_out_total", &label()),
            dead_letters: metrics::counter!("velo_dlq_records_total", &label()),
            batch_latency: metrics::histogram!("velo_batch_latency_seconds", &label()),
            state_bytes: metrics::gauge!("velo_state_bytes", &label()),
            state_rows: metrics::gauge!("velo_state_rows", &label()),
            lag: metrics::gauge!("velo_consumer_lag", &label()),
            checkpoints: metrics::counter!("velo_checkpoints_total", &label()),
            checkpoint_duration: metrics::histogram!("velo_checkpoint_duration_seconds", &label()),
            checkpoint_bytes: metrics::gauge!("velo_checkpoint_bytes", &label()),
            late_rows: metrics::counter!("velo_late_rows_total", &label()),
            watermark_delay: metrics::gauge!("velo_watermark_delay_seconds", &label()),
            errors: ErrorKind::ALL.map(|kind| {
                metrics::counter!(
                    "velo_record_errors_total",
                    &[
                        ("job_id", job.to_string()),
                        ("kind", kind.name().to_string())
                    ]
                )
            }),
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
            bytes_in: AtomicU64::new(0),
            partitions: std::sync::Mutex::default(),
            batch_latencies_us: std::sync::Mutex::default(),
            started: std::time::Instant::now(),
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
            errors: Default::default(),
        }
    }

    /// The bad records and rows counted so far.
    pub fn error_counts(&self) -> ErrorCounts {
        let get = |kind: ErrorKind| self.errors[kind as usize].load(Ordering::Relaxed);
        ErrorCounts {
            decode: get(ErrorKind::Decode),
            event_time: get(ErrorKind::EventTime),
            expression: get(ErrorKind::Expression),
            encode: get(ErrorKind::Encode),
        }
    }

    /// Counts one bad record or row of `kind`.
    /// Records one micro-batch's latency (kept for the last 256).
    pub(crate) fn record_latency(&self, latency: std::time::Duration) {
        let mut kept = self
            .batch_latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if kept.len() == 256 {
            kept.pop_front();
        }
        kept.push_back(latency.as_micros() as u64);
    }

    /// The p50, p95 and p99 of the kept micro-batch latencies, in milliseconds.
    pub fn latency_percentiles_ms(&self) -> Option<[f64; 3]> {
        let v = self.latency_percentiles_at(&[50.0, 95.0, 99.0])?;
        Some([v[0], v[1], v[2]])
    }

    /// The given percentiles (0–100) of the kept micro-batch latencies, in milliseconds.
    pub fn latency_percentiles_at(&self, percentiles: &[f64]) -> Option<Vec<f64>> {
        let mut kept: Vec<u64> = self
            .batch_latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if kept.is_empty() {
            return None;
        }
        kept.sort_unstable();
        let at = |p: f64| {
            let p = (p / 100.0).clamp(0.0, 1.0);
            kept[((kept.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        };
        Some(percentiles.iter().map(|&p| at(p)).collect())
    }

    pub(crate) fn count_error(&self, kind: ErrorKind) {
        self.count_errors(kind, 1);
    }

    /// Counts `n` bad records or rows of `kind`.
    pub(crate) fn count_errors(&self, kind: ErrorKind, n: u64) {
        count(
            &self.errors[kind as usize],
            &self.metrics.errors[kind as usize],
            n,
        );
    }
}

/// Why a record or a row did not make it to the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The record is not valid in its format or does not fit the schema (a decimal with more
    /// digits than its column among them).
    Decode = 0,
    /// Its event time is missing, or too far ahead to be believed (`--max-event-time-skew`).
    EventTime = 1,
    /// An expression of the query cannot be evaluated on it (a failing cast, a division by
    /// zero).
    Expression = 2,
    /// The sink cannot encode the result row (a value the output schema cannot hold).
    Encode = 3,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Decode,
        ErrorKind::EventTime,
        ErrorKind::Expression,
        ErrorKind::Encode,
    ];

    /// `decode`, `event_time`, `expression`, `encode`: the metric label and status field.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::EventTime => "event_time",
            ErrorKind::Expression => "expression",
            ErrorKind::Encode => "encode",
        }
    }
}

/// Bad records and rows of a job, by kind (the `errors` of its status).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorCounts {
    pub decode: u64,
    pub event_time: u64,
    pub expression: u64,
    pub encode: u64,
}

impl ErrorCounts {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.decode + self.event_time + self.expression + self.encode
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
    /// Bad records and rows by kind.
    pub errors: ErrorCounts,
}

/// A terminal progress bar over a bounded job's [`JobProgress`]: records and bytes read, against
/// what the end offsets say is left (the lag, sampled each second), and a line per partition
/// (records read against its end offset), redrawn five times a second on stderr until
/// [`ProgressBar::finish`].
pub struct ProgressBar {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    /// Starts drawing `progress` on stderr.
    pub fn start(progress: std::sync::Arc<JobProgress>) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} records · {msg} · {per_sec} · eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let bars = indicatif::MultiProgress::new();
            let bar = bars.add(bar);
            let mut partition_bars: Vec<indicatif::ProgressBar> = Vec::new();
            let style =
                indicatif::ProgressStyle::with_template("  {prefix:>14} {bar:30} {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            loop {
                let read = progress.records_in.load(Ordering::Relaxed);
                let left = progress.lag.load(Ordering::Relaxed).max(0) as u64;
                bar.set_length(read + left);
                bar.set_position(read);
                // One line per partition (the first 16), against its end offset.
                let partitions = progress
                    .partitions
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_default();
                let several_streams = partitions
                    .iter()
                    .any(|(s, _)| Some(s) != partitions.first().map(|(f, _)| f));
                for (i, (stream, p)) in partitions.iter().take(16).enumerate() {
                    if partition_bars.len() <= i {
                        let line = bars.add(indicatif::ProgressBar::new(0));
                        line.set_style(style.clone());
                        partition_bars.push(line);
                    }
                    let line = &partition_bars[i];
                    line.set_prefix(match several_streams {
                        true => format!("{stream} p{}", p.partition),
                        false => format!("partition {}", p.partition),
                    });
                    line.set_length(p.total.max(0) as u64);
                    line.set_position(p.read.max(0) as u64);
                }
                bar.set_message(format!(
                    "{} read, {} rows written",
                    bytesize::ByteSize(progress.bytes_in.load(Ordering::Relaxed)),
                    progress.rows_out.load(Ordering::Relaxed)
                ));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            for line in &partition_bars {
                line.finish();
            }
            bar.finish();
        });
        Self {
            done,
            thread: Some(thread),
        }
    }

    /// Draws the last state and stops.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
