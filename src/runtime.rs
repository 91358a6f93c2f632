//! The epoch loop that runs a planned query.
//!
//! One epoch: poll a batch from the source → decode it (bad records go to the log and the
//! dead-letter queue) → run the pipeline → write to the sink → flush the sink → commit the
//! source. Offsets are committed only after the sink has acknowledged the epoch's output, so a
//! crash replays at most the last epoch (at-least-once); a graceful stop loses and repeats
//! nothing. A bounded input ends with the watermark at +∞ so every operator emits what it holds.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, RecordBatchOptions};
use arrow::datatypes::Int32Type;
use velo_connectors::codec::PayloadDecoder;
use velo_connectors::kafka::DeadLetterQueue;
use velo_connectors::record::{Payload, RecordMeta, SourceBatch};
use velo_connectors::sink::Sink;
use velo_connectors::source::Source;

use crate::error::{Result, VeloError};
use crate::operators::{OperatorMetrics, Pipeline, Watermark};
use crate::planner::{ScanColumn, ScanLayout};
use crate::watermark::WatermarkTracker;

/// How the loop polls.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeOptions {
    /// Most records per epoch.
    pub batch_size: usize,
    /// Longest wait for records before an epoch runs with what it has.
    pub flush_interval: Duration,
    /// Most bytes operator state may hold; the job fails with [`VeloError::StateLimit`] past
    /// it. Checked at most once per [`STATE_CHECK_INTERVAL`] (measuring state is O(keys)).
    pub max_state_bytes: Option<u64>,
}

/// How often the state limit is checked.
pub const STATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            batch_size: 8192,
            flush_interval: Duration::from_millis(200),
            max_state_bytes: None,
        }
    }
}

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
    /// The Prometheus series of this job, made once (nothing looked up per batch).
    metrics: JobMetrics,
}

/// A job's metric handles, labelled `job = <name>`.
#[derive(Debug)]
struct JobMetrics {
    records_in: metrics::Counter,
    records_out: metrics::Counter,
    decode_errors: metrics::Counter,
    dead_letters: metrics::Counter,
    batch_latency: metrics::Histogram,
    state_bytes: metrics::Gauge,
    state_rows: metrics::Gauge,
    lag: metrics::Gauge,
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
        }
    }
}

/// Adds `n` to a progress counter and to its Prometheus counter.
fn count(counter: &AtomicU64, metric: &metrics::Counter, n: u64) {
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

/// Turns source batches into the batches the pipeline expects (see [`ScanLayout`]).
pub struct InputAdapter {
    layout: ScanLayout,
    decoder: Option<PayloadDecoder>,
    /// The event-time column (index in the scan schema): a record without one is bad.
    event_time: Option<usize>,
}

/// A record that could not be turned into a row.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub index: usize,
    pub reason: String,
}

impl InputAdapter {
    /// An adapter producing batches laid out as `layout` says.
    pub fn new(layout: ScanLayout) -> Result<Self> {
        Ok(Self {
            decoder: None,
            layout,
            event_time: None,
        })
    }

    /// Declares scan column `index` the event time: records whose event time is NULL are bad
    /// records (reported, dead-lettered), never placed in a window.
    pub fn set_event_time(&mut self, index: usize) {
        self.event_time = Some(index);
    }

    /// The schema of produced batches.
    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.layout.schema
    }

    /// Decodes `batch` and assembles the scan columns, returning them with the source partition
    /// of each row. Records that fail are returned in `bad` and left out.
    pub fn adapt_with_partitions(
        &mut self,
        batch: &SourceBatch,
        bad: &mut Vec<BadRecord>,
    ) -> Result<(RecordBatch, Int32Array)> {
        let (payload, keep) = match &batch.payload {
            Payload::Decoded(b) => (b.clone(), None),
            Payload::Encoded(bytes) => {
                if self.decoder.is_none() {
                    self.decoder = Some(self.layout.stream.format.decoder(
                        self.layout.payload_schema()?,
                        self.layout.stream.registry.clone(),
                    )?);
                }
                let decoder = self.decoder.as_mut().expect("decoder was just created");
                let decoded = decoder.decode(bytes)?;
                bad.extend(decoded.failures.into_iter().map(|f| BadRecord {
                    index: f.index,
                    reason: f.reason,
                }));
                (decoded.batch, decoded.keep)
            }
        };
        let columns = self
            .layout
            .columns
            .iter()
            .zip(self.layout.schema.fields())
            .map(|(column, field)| -> Result<ArrayRef> {
                let array = match column {
                    ScanColumn::Payload(name) => {
                        payload.column_by_name(name).cloned().ok_or_else(|| {
                            VeloError::Execution(format!(
                                "the source did not produce column '{name}'"
                            ))
                        })?
                    }
                    ScanColumn::Metadata(name) => batch.meta.column(name, keep.as_ref())?,
                };
                if array.data_type() != field.data_type() {
                    return Ok(arrow::compute::cast(&array, field.data_type())?);
                }
                Ok(array)
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(payload.num_rows()));
        let partitions = match &keep {
            Some(mask) => arrow::compute::filter(&batch.meta.partition, mask)?
                .as_primitive::<Int32Type>()
                .clone(),
            None => batch.meta.partition.clone(),
        };
        let scan =
            RecordBatch::try_new_with_options(self.layout.schema.clone(), columns, &options)?;
        match self.event_time {
            Some(column) if scan.column(column).null_count() > 0 => {
                // Rows without an event time: bad records, reported by their source index.
                let times = scan.column(column);
                let source_index: Vec<usize> = match &keep {
                    Some(mask) => (0..mask.len()).filter(|&i| mask.value(i)).collect(),
                    None => (0..scan.num_rows()).collect(),
                };
                let name = self.layout.schema.field(column).name();
                for row in (0..scan.num_rows()).filter(|&r| times.is_null(r)) {
                    bad.push(BadRecord {
                        index: source_index[row],
                        reason: format!("the event time '{name}' is NULL"),
                    });
                }
                bad.sort_by_key(|b| b.index);
                let has_time = arrow::compute::is_not_null(times)?;
                Ok((
                    arrow::compute::filter_record_batch(&scan, &has_time)?,
                    arrow::compute::filter(&partitions, &has_time)?
                        .as_primitive::<Int32Type>()
                        .clone(),
                ))
            }
            _ => Ok((scan, partitions)),
        }
    }
}

/// A table topic followed while the job runs: its changes go to a lookup join.
pub struct TableFollower {
    pub table: String,
    pub source: Box<dyn Source>,
    pub decoder: velo_connectors::codec::PayloadDecoder,
    /// The feed number of the lookup join holding the table (see [`crate::planner::TableFeed`]).
    pub feed: usize,
}

impl TableFollower {
    /// Applies what arrived on the table topic since the last poll (waits for nothing).
    fn poll(&mut self, pipeline: &mut Pipeline) -> Result<()> {
        let Some(batch) = self.source.poll_batch(8192, Duration::ZERO)? else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut changes = crate::table::Changes::default();
        changes.fold(&batch);
        let (values, deleted) = changes.split();
        let decoded = self.decoder.decode(&values)?;
        for f in &decoded.failures {
            tracing::warn!("table '{}': skipped an update: {}", self.table, f.reason);
        }
        if !pipeline.apply_table_changes(self.feed, &decoded.batch, &deleted)? {
            return Err(VeloError::Execution(format!(
                "no join holds the table '{}'",
                self.table
            )));
        }
        Ok(())
    }
}

/// One input of a job: a stream's source and the adapter laying its batches out for the
/// pipeline.
pub struct JobInput {
    pub source: Box<dyn Source>,
    pub adapter: InputAdapter,
    /// The scan column holding event time, when the watermark follows this input.
    pub event_time: Option<usize>,
    /// True once the source has ended (a bounded input read to its end).
    pub ended: bool,
}

impl JobInput {
    pub fn new(
        source: Box<dyn Source>,
        mut adapter: InputAdapter,
        event_time: Option<usize>,
    ) -> Self {
        if let Some(column) = event_time {
            adapter.set_event_time(column);
        }
        Self {
            source,
            adapter,
            event_time,
            ended: false,
        }
    }
}

/// A running query: its inputs (one per stream read), pipeline, sink, dead-letter queue.
pub struct Job {
    /// Input `i` feeds pipeline input `i`.
    pub inputs: Vec<JobInput>,
    pub pipeline: Pipeline,
    pub sink: Box<dyn Sink>,
    pub dead_letters: Option<DeadLetterQueue>,
    pub options: RuntimeOptions,
    pub stop: Arc<AtomicBool>,
    /// Event-time tracking over the inputs with an event time.
    pub watermark: Option<WatermarkTracker>,
    /// Where late rows go (as JSON, one message per row); `None`: dropped and counted.
    pub late_rows: Option<Box<dyn Sink>>,
    /// Table topics followed for lookup joins.
    pub table_followers: Vec<TableFollower>,
    /// Live counters and the pause switch.
    pub progress: Arc<JobProgress>,
}

impl Job {
    /// Runs until the input ends, the query completes (LIMIT), or `stop` is set.
    pub fn run(&mut self) -> Result<JobStats> {
        let mut stats = JobStats::default();
        if self.late_rows.is_some() {
            self.pipeline.keep_late_rows();
        }
        let mut ended = false;
        let mut state_checked = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && !self.pipeline.is_finished() {
            if self.progress.paused.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let epoch_started = Instant::now();
            for follower in &mut self.table_followers {
                follower.poll(&mut self.pipeline)?;
            }
            // One poll per input still running; the first waits, the others take what is there.
            let mut got_data = false;
            let mut waited = false;
            for i in 0..self.inputs.len() {
                if self.inputs[i].ended {
                    continue;
                }
                let wait = if waited {
                    Duration::ZERO
                } else {
                    self.options.flush_interval
                };
                waited = true;
                if let (Some(_), Some(tracker), Some(assigned)) = (
                    self.inputs[i].event_time,
                    self.watermark.as_mut(),
                    self.inputs[i].source.assigned_partitions(),
                ) {
                    tracker.set_input_partitions(i, &assigned);
                }
                match self.inputs[i]
                    .source
                    .poll_batch(self.options.batch_size, wait)?
                {
                    None => self.inputs[i].ended = true,
                    Some(batch) if batch.is_empty() => {}
                    Some(batch) => {
                        got_data = true;
                        stats.records_in += batch.len() as u64;
                        let bad = self.process_batch(i, &batch)?;
                        stats.bad_records += bad;
                        let p = &self.progress;
                        count(&p.records_in, &p.metrics.records_in, batch.len() as u64);
                        count(&p.bad_records, &p.metrics.decode_errors, bad);
                    }
                }
            }
            if self.inputs.iter().all(|i| i.ended) {
                ended = true;
                break;
            }
            if !got_data {
                // No data: the watermark may still move (an idle partition stops counting).
                if self.advance_watermark()? > 0 {
                    self.end_epoch()?;
                }
                if state_checked.elapsed() >= STATE_CHECK_INTERVAL {
                    self.report_state();
                    state_checked = Instant::now();
                }
                continue;
            }
            stats.epochs += 1;
            self.advance_watermark()?;
            self.end_epoch()?;
            self.progress.epochs.fetch_add(1, Ordering::Relaxed);
            self.progress
                .metrics
                .batch_latency
                .record(epoch_started.elapsed().as_secs_f64());
            if state_checked.elapsed() >= STATE_CHECK_INTERVAL {
                self.report_state();
                self.check_state_limit()?;
                state_checked = Instant::now();
            }
        }
        if !self.stop.load(Ordering::Relaxed) {
            // The input ended: state is at its largest before the final flush.
            self.check_state_limit()?;
        }
        if ended || self.inputs.iter().all(|i| i.source.is_bounded()) {
            for out in self.pipeline.advance_watermark(Watermark::END)? {
                self.sink.write(&out)?;
            }
        }
        self.sink.finish()?;
        self.end_epoch()?;
        if let Some(late) = self.late_rows.as_mut() {
            late.finish()?;
        }
        stats.rows_out = self.sink.rows_written();
        stats.operators = self.pipeline.metrics();
        Ok(stats)
    }

    /// Decodes a batch of input `input`, reports its bad records, tracks its event time and
    /// runs it through the pipeline. Returns how many records were bad.
    fn process_batch(&mut self, input: usize, batch: &SourceBatch) -> Result<u64> {
        let mut bad = Vec::new();
        let this = &mut self.inputs[input];
        let (rows, partitions) = this.adapter.adapt_with_partitions(batch, &mut bad)?;
        if let (Some(column), Some(tracker)) = (this.event_time, self.watermark.as_mut()) {
            tracker.observe_input(input, &partitions, rows.column(column))?;
        }
        if !bad.is_empty() {
            self.handle_bad_records(batch, &bad)?;
        }
        for out in self.pipeline.process_input(input, rows)? {
            self.sink.write(&out)?;
        }
        Ok(bad.len() as u64)
    }

    /// Publishes state size, late rows and consumer lag (about once a second).
    fn report_state(&self) {
        let operators = self.pipeline.metrics();
        let p = &self.progress;
        self.progress
            .state_bytes
            .store(operators.state_bytes, Ordering::Relaxed);
        self.progress
            .state_rows
            .store(operators.state_rows, Ordering::Relaxed);
        self.progress
            .late_rows
            .store(operators.late_rows, Ordering::Relaxed);
        p.metrics.state_bytes.set(operators.state_bytes as f64);
        p.metrics.state_rows.set(operators.state_rows as f64);
        let lags: Vec<i64> = self.inputs.iter().filter_map(|i| i.source.lag()).collect();
        if !lags.is_empty() {
            let lag: i64 = lags.iter().sum();
            self.progress.lag.store(lag, Ordering::Relaxed);
            p.metrics.lag.set(lag as f64);
        }
    }

    /// Fails the job when operator state is over [`RuntimeOptions::max_state_bytes`].
    fn check_state_limit(&self) -> Result<()> {
        let Some(limit) = self.options.max_state_bytes else {
            return Ok(());
        };
        let bytes = self.pipeline.metrics().state_bytes;
        if bytes <= limit {
            return Ok(());
        }
        let operator = self.pipeline.largest_state().map_or("?", |(name, _)| name);
        Err(VeloError::StateLimit {
            bytes,
            limit,
            operator,
        })
    }

    /// Moves the pipeline's watermark to the tracker's; returns the rows this emitted.
    fn advance_watermark(&mut self) -> Result<usize> {
        let Some(watermark) = self.watermark.as_mut().and_then(|t| t.current()) else {
            return Ok(0);
        };
        let mut rows = 0;
        for out in self.pipeline.advance_watermark(Watermark(watermark))? {
            rows += out.num_rows();
            self.sink.write(&out)?;
        }
        Ok(rows)
    }

    fn end_epoch(&mut self) -> Result<()> {
        for rejected in self.sink.take_rejected() {
            tracing::warn!(
                "a result row for topic '{}' was not written: {} (row {})",
                rejected.topic,
                rejected.reason,
                String::from_utf8_lossy(&rejected.row)
            );
            if let Some(dlq) = self.dead_letters.as_mut() {
                dlq.send_rejected(&rejected.row, &rejected.reason, &rejected.topic)?;
                count(
                    &self.progress.dead_letters,
                    &self.progress.metrics.dead_letters,
                    1,
                );
            }
        }
        if let Some(late) = self.late_rows.as_mut() {
            for rows in self.pipeline.drain_late_rows() {
                late.write(&rows)?;
            }
            late.flush()?;
        }
        self.sink.flush()?;
        if let Some(dlq) = self.dead_letters.as_mut() {
            dlq.flush()?;
        }
        for input in &mut self.inputs {
            input.source.commit()?;
        }
        let written = self.sink.rows_written();
        let counted = self.progress.rows_out.load(Ordering::Relaxed);
        count(
            &self.progress.rows_out,
            &self.progress.metrics.records_out,
            written.saturating_sub(counted),
        );
        Ok(())
    }

    fn handle_bad_records(&mut self, batch: &SourceBatch, bad: &[BadRecord]) -> Result<()> {
        let meta: &RecordMeta = &batch.meta;
        for record in bad {
            let position = meta.position(record.index);
            tracing::warn!("skipped a bad record at {position}: {}", record.reason);
            if let Some(dlq) = self.dead_letters.as_mut() {
                let payload = match &batch.payload {
                    Payload::Encoded(bytes) if !bytes.is_null(record.index) => {
                        Some(bytes.value(record.index))
                    }
                    _ => None,
                };
                let key = (!meta.key.is_null(record.index)).then(|| meta.key.value(record.index));
                let headers = header_pairs(meta, record.index);
                dlq.send(payload, key, &headers, &position, &record.reason)?;
                count(
                    &self.progress.dead_letters,
                    &self.progress.metrics.dead_letters,
                    1,
                );
            }
        }
        Ok(())
    }
}

fn header_pairs(meta: &RecordMeta, index: usize) -> Vec<(String, Option<String>)> {
    if meta.headers.is_null(index) {
        return Vec::new();
    }
    let entries = meta.headers.value(index);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|i| {
            (
                keys.value(i).to_string(),
                (!values.is_null(i)).then(|| values.value(i).to_string()),
            )
        })
        .collect()
}
