//! The epoch loop every job runs: `execute`, `stream`, server jobs, ad-hoc `/sql` queries and
//! the test harness.
//!
//! One epoch: poll each input → decode (bad records to the log and the dead-letter queue) →
//! run the pipeline → write to the sink → flush the sink → acknowledge. Between epochs nothing
//! is in flight, so a checkpoint taken there (operator state, watermark, input offsets, the
//! sink's position) is consistent by construction.
//!
//! What is acknowledged, and when, follows from where a record's effect lives
//! ([`Acknowledge`]): a stateless query whose sink delivers per epoch commits after every
//! epoch; a query holding rows in windows, joins or aggregates, or whose output is delivered
//! with checkpoints (files, exactly-once Kafka), commits the offsets of each completed
//! checkpoint, never more. A graceful stop writes a checkpoint; a bounded input ends with the
//! watermark at +∞ so every operator emits what it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use velo_connectors::codec::Encoded;
use velo_connectors::kafka::DeadLetterQueue;
use velo_connectors::record::{Payload, RecordMeta, SourceBatch};
use velo_connectors::sink::Sink;

use super::checkpoint::{Acknowledge, Checkpoint, Checkpointer, InputPosition, OperatorState};
use super::input::{BadRecord, JobInput, TableFollower};
use super::lanes::{self, Exchange, Lanes};
use super::progress::ErrorKind;
use super::progress::{count, JobProgress, JobStats};
use super::spec::{OnError, RuntimeOptions};
use crate::error::{Result, VeloError};
use crate::operators::{OperatorMetrics, Pipeline, PipelineRowError, Watermark};
use crate::watermark::WatermarkTracker;

/// How often state size and lag are published and the state limit checked.
pub const STATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a job waits at its start for a followed table to read the changes its topic holds
/// (written while the job was down) before it reads its first records.
pub const TABLE_CATCH_UP: Duration = Duration::from_secs(30);

/// With eager batches, the longest a job goes on without its output delivered and its offsets
/// committed before it waits for them (see [`Runner::end_epoch`]).
pub const UNDELIVERED_AT_MOST: Duration = Duration::from_secs(1);

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Records were processed.
    Data,
    /// Nothing arrived.
    Idle,
    /// Every input ended.
    Ended,
    /// The query can emit nothing more (LIMIT, `--limit`).
    Finished,
}

/// A job ready to run: its inputs, pipeline, sink and settings.
pub struct Runner {
    /// Input `i` feeds pipeline input `i`.
    pub inputs: Vec<JobInput>,
    pub pipeline: Pipeline,
    /// Further lanes the query runs on, and how rows are shared among them (see [`lanes`]).
    pub lanes: Lanes,
    pub sink: Box<dyn Sink>,
    pub dead_letters: Option<DeadLetterQueue>,
    /// What a bad record or row does (see [`OnError`]).
    pub on_error: OnError,
    /// Where late rows go (as JSON, one message per row); `None`: dropped and counted.
    pub late_rows: Option<Box<dyn Sink>>,
    /// Table topics followed for lookup joins.
    pub table_followers: Vec<TableFollower>,
    /// The followed tables were caught up with their topics before the first records.
    tables_caught_up: bool,
    /// Event-time tracking over the inputs with an event time.
    pub watermark: Option<WatermarkTracker>,
    pub options: RuntimeOptions,
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<JobProgress>,
    /// Writes checkpoints; `None`: the job keeps no state across runs.
    pub checkpoints: Option<Checkpointer>,
    /// Result rows this run may still write (`--limit`).
    pub rows_left: Option<u64>,
    /// Results produced past `--limit`: kept in the final checkpoint for the next run, which
    /// emits them first.
    pub carry: Vec<RecordBatch>,
    limit_reached: bool,
    /// Something changed since the last checkpoint.
    dirty: bool,
    /// Since when output written is not known to be delivered, nor the offsets committed
    /// (eager batches).
    undelivered_since: Option<Instant>,
    stats: JobStats,
    state_checked: Instant,
    /// The rows this run's sink had written when last counted into `progress` (which a
    /// server job keeps across its restarts, each with a new sink).
    rows_out_counted: u64,
}

impl Runner {
    /// A runner over these parts, with no checkpoints and no limit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inputs: Vec<JobInput>,
        pipeline: Pipeline,
        sink: Box<dyn Sink>,
        watermark: Option<WatermarkTracker>,
        options: RuntimeOptions,
        stop: Arc<AtomicBool>,
        progress: Arc<JobProgress>,
    ) -> Self {
        Self {
            inputs,
            pipeline,
            lanes: Lanes::default(),
            sink,
            dead_letters: None,
            on_error: OnError::Skip,
            late_rows: None,
            table_followers: Vec::new(),
            tables_caught_up: false,
            watermark,
            options,
            stop,
            progress,
            checkpoints: None,
            rows_left: None,
            carry: Vec::new(),
            limit_reached: false,
            dirty: false,
            undelivered_since: None,
            stats: JobStats::default(),
            state_checked: Instant::now(),
            rows_out_counted: 0,
        }
    }

    /// When this job acknowledges its input (see the module doc).
    pub fn acknowledge(&self) -> Acknowledge {
        if self.checkpoints.is_some()
            && (self.pipeline.holds_input() || self.sink.delivers_with_checkpoints())
        {
            Acknowledge::WithCheckpoints
        } else {
            Acknowledge::PerEpoch
        }
    }

    /// Restores the state of `checkpoint` (operators, watermark, results held past a limit);
    /// the inputs were already started at its offsets and the sink restored by the builder.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        // The checkpoint holds each lane's operators, lane after lane: every lane of a keyed
        // query (the builder gives it the checkpoint's lane count), the first of any other.
        let lanes = 1 + self.lanes.extra.len();
        let saved = checkpoint.lanes.max(1);
        let keyed = self.lanes.exchange.as_ref().is_some_and(Exchange::by_key);
        if saved > lanes || (keyed && saved != lanes) {
            return Err(VeloError::State(format!(
                "the checkpoint holds the state of {saved} lanes, this job runs on {lanes}"
            )));
        }
        // Each lane's state is that of the keys the split gave it: a query split otherwise
        // (another build, another plan) would look for them on other lanes.
        let now = self.lanes.exchange.as_ref().map(Exchange::describe);
        if let (true, Some(then)) = (saved > 1, &checkpoint.split) {
            if now.as_ref() != Some(then) {
                return Err(VeloError::State(format!(
                    "the checkpoint holds {saved} lanes' states of the query split as '{then}'; \
                     this job splits it as '{}': start afresh with --ignore-state",
                    now.as_deref().unwrap_or("not at all")
                )));
            }
        }
        let per_lane = self.pipeline.len().max(1);
        let states: Vec<_> = checkpoint.operators.chunks(per_lane).collect();
        if checkpoint.operators.len() != saved * self.pipeline.len() {
            return Err(VeloError::State(format!(
                "the checkpoint holds {} operator states, not {saved} lanes of {}",
                checkpoint.operators.len(),
                self.pipeline.len()
            )));
        }
        for (pipeline, state) in self.pipelines().into_iter().zip(states) {
            pipeline.restore_named(
                &state
                    .iter()
                    .map(|o| (o.name.clone(), o.batches.clone()))
                    .collect::<Vec<_>>(),
            )?;
        }
        if let (Some(tracker), Some(state)) = (self.watermark.as_mut(), &checkpoint.watermark) {
            tracker.restore(state);
        }
        // The checkpoint's offsets are where the inputs start only when it acknowledged with
        // them (or nothing else keeps them: files); a job acknowledging per micro-batch reads
        // on from its group's newer offsets, and tracks its positions from what it reads.
        let with_checkpoints = checkpoint.acknowledge == Acknowledge::WithCheckpoints;
        for (index, input) in self.inputs.iter_mut().enumerate() {
            if !with_checkpoints && !input.source.positions_only_in_checkpoints() {
                continue;
            }
            // Inputs are saved in the query's order (a stream read twice is two inputs).
            if let Some(saved) = checkpoint
                .inputs
                .get(index)
                .filter(|s| s.stream == input.name)
            {
                input.positions = saved.positions.clone();
            }
        }
        self.carry = checkpoint.carry.clone();
        Ok(())
    }

    /// Runs until the input ends, the query completes (LIMIT), or `stop` is set.
    pub fn run(&mut self) -> Result<JobStats> {
        if self.late_rows.is_some() {
            self.pipelines()
                .into_iter()
                .for_each(Pipeline::keep_late_rows);
        }
        let carried = std::mem::take(&mut self.carry);
        self.emit(carried)?;
        let mut ended = false;
        while !self.stop.load(Ordering::Relaxed) && !self.finished() {
            if self.progress.checkpoint_requested.load(Ordering::Relaxed) {
                self.checkpoint()?;
            }
            if self.progress.paused.load(Ordering::Relaxed) {
                for input in &mut self.inputs {
                    input.source.idle();
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if self.step()? == Step::Ended {
                ended = true;
                break;
            }
        }
        self.finish(ended)
    }

    fn finished(&self) -> bool {
        self.limit_reached || self.pipeline.is_finished()
    }

    /// Runs one epoch: polls every running input once (the first waits up to the flush
    /// interval, the others take what is there), processes, advances the watermark, flushes
    /// and acknowledges.
    pub fn step(&mut self) -> Result<Step> {
        let epoch_started = Instant::now();
        self.commit_delivered()?;
        // At the start, the tables catch up with their topics (one deadline for all of them).
        let catch_up = (!self.tables_caught_up).then(|| Instant::now() + TABLE_CATCH_UP);
        self.tables_caught_up = true;
        for follower in &mut self.table_followers {
            let failures = match catch_up {
                Some(deadline) => follower.catch_up(&mut self.pipeline, deadline, &self.stop)?,
                None => follower.poll(&mut self.pipeline)?,
            };
            for failure in failures {
                self.progress.count_error(ErrorKind::Decode);
                if self.on_error == OnError::Fail {
                    return Err(VeloError::BadData(failure));
                }
                tracing::warn!("skipped {failure}");
            }
        }
        let mut got_data = false;
        let mut waited = false;
        for i in 0..self.inputs.len() {
            if self.inputs[i].ended || self.finished() {
                continue;
            }
            let wait = if waited {
                Duration::ZERO
            } else {
                self.options.flush_interval
            };
            waited = true;
            let polled = self.inputs[i]
                .source
                .poll_batch(self.options.batch_size, wait)?;
            // The partitions read now, as of this poll: a consumer joining its group is given
            // them inside the poll that returns its first records. Taken before the poll, a
            // partition whose records had not come yet did not hold the watermark, and the
            // first partition's records moved it past all of them (a backlog of two partitions
            // lost up to half of one partition's records as late).
            if let (Some(_), Some(tracker), Some(assigned)) = (
                self.inputs[i].event_time,
                self.watermark.as_mut(),
                self.inputs[i].source.assigned_partitions(),
            ) {
                tracker.set_input_partitions(i, &assigned);
            }
            for partition in self.inputs[i].source.take_reset_partitions() {
                self.inputs[i].positions.remove(&partition);
            }
            for problem in self.inputs[i].source.take_errors() {
                self.source_error(&problem)?;
            }
            match polled {
                None => self.inputs[i].ended = true,
                Some(batch) if batch.is_empty() => {}
                Some(batch) => {
                    got_data = true;
                    self.stats.records_in += batch.len() as u64;
                    let bad = self.process_batch(i, &batch)?;
                    self.stats.bad_records += bad;
                    let p = &self.progress;
                    count(&p.records_in, &p.metrics.records_in, batch.len() as u64);
                    p.bytes_in
                        .fetch_add(batch.payload_bytes(), Ordering::Relaxed);
                    p.bad_records.fetch_add(bad, Ordering::Relaxed);
                }
            }
        }
        if self.inputs.iter().all(|i| i.ended) {
            return Ok(Step::Ended);
        }
        if !got_data {
            // No data: the watermark may still move (an idle partition stops counting).
            if self.advance_watermark()? > 0 {
                self.end_epoch()?;
            } else if self.dirty && self.checkpoints.as_ref().is_some_and(|c| c.due()) {
                self.checkpoint()?;
            }
            // State over the limit is over it whether or not records flow now.
            self.check_state()?;
            return Ok(if self.finished() {
                Step::Finished
            } else {
                Step::Idle
            });
        }
        self.stats.epochs += 1;
        self.advance_watermark()?;
        self.end_epoch()?;
        self.progress.epochs.fetch_add(1, Ordering::Relaxed);
        self.progress
            .metrics
            .batch_latency
            .record(epoch_started.elapsed().as_secs_f64());
        self.progress.record_latency(epoch_started.elapsed());
        self.check_state()?;
        Ok(if self.finished() {
            Step::Finished
        } else {
            Step::Data
        })
    }

    /// Ends the run: a bounded input's last windows are emitted; a continuous job writes its
    /// final checkpoint (its state is kept, not flushed).
    fn finish(&mut self, ended: bool) -> Result<JobStats> {
        let stopped = self.stop.load(Ordering::Relaxed);
        if !stopped && !self.finished() {
            // The input ended: state is at its largest before the final flush.
            self.check_state_limit()?;
        }
        if ended || self.inputs.iter().all(|i| i.source.is_bounded()) {
            self.end_of_input()?;
        }
        self.flush_epoch()?;
        if self.checkpoints.is_some() {
            self.checkpoint()?;
        } else {
            self.commit_positions()?;
        }
        self.sink.finish()?;
        if let Some(late) = self.late_rows.as_mut() {
            late.finish()?;
        }
        self.count_rows_out();
        self.stats.rows_out = self.sink.rows_written();
        self.stats.operators = self.operator_metrics();
        Ok(self.stats)
    }

    /// The inputs have ended: the watermark goes to +∞ and every operator emits what it holds.
    pub fn end_of_input(&mut self) -> Result<()> {
        // The last sample of state, lag and partition progress (what a progress bar ends on).
        self.report_state();
        let out = self.advance_lanes(Watermark::END)?;
        self.emit(out)
    }

    /// Writes result batches to the sink, holding back what is past `--limit`.
    fn emit(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        self.emit_encoded(batches, Vec::new())
    }

    /// [`Runner::emit`], with batch `i`'s rows already encoded for the sink as `encoded[i]`
    /// where they were (on the lanes; none past its end).
    fn emit_encoded(
        &mut self,
        batches: Vec<RecordBatch>,
        encoded: Vec<Option<Encoded>>,
    ) -> Result<()> {
        let mut encoded = encoded.into_iter();
        for batch in batches {
            let rows = encoded.next().flatten();
            if batch.num_rows() == 0 {
                continue;
            }
            if self.limit_reached {
                self.carry.push(batch);
                continue;
            }
            match (self.rows_left, rows) {
                (None, Some(rows)) => self.sink.write_encoded(&batch, rows)?,
                (None, None) => self.sink.write(&batch)?,
                (Some(left), _) if (batch.num_rows() as u64) < left => {
                    self.sink.write(&batch)?;
                    self.rows_left = Some(left - batch.num_rows() as u64);
                }
                (Some(left), _) => {
                    let left = left as usize;
                    self.sink.write(&batch.slice(0, left))?;
                    if batch.num_rows() > left {
                        self.carry.push(batch.slice(left, batch.num_rows() - left));
                    }
                    self.rows_left = Some(0);
                    self.limit_reached = true;
                }
            }
        }
        Ok(())
    }

    /// Decodes a batch of input `input`, reports its bad records, tracks its event time and
    /// runs it through the pipeline, on the job's lanes (see [`super::lanes`]). Returns how
    /// many records were bad.
    fn process_batch(&mut self, input: usize, batch: &SourceBatch) -> Result<u64> {
        let horizon = self.event_time_horizon();
        let before = self.rows_left.map(|_| self.inputs[input].positions.clone());
        let wanted = self.rows_left;
        // Under --limit the records behind the last row written must be found: a row-wise
        // query runs on one lane. One with an exchange always uses all: a keyed one's lanes
        // each hold their keys' state (a gathered one's output rows, aggregated, do not map to
        // the records behind them anyway).
        let pool = self.lanes.pool.clone();
        let mut parts = vec![(&mut self.inputs[input].adapter, &mut self.pipeline)];
        if self.lanes.exchange.is_some() || self.rows_left.is_none() {
            for lane in &mut self.lanes.extra {
                parts.push((&mut lane.adapters[input], &mut lane.pipeline));
            }
        }
        // A row-wise query on several lanes encodes its rows there too.
        let encoder = if parts.len() > 1 && self.lanes.exchange.is_none() {
            self.sink.row_encoder()
        } else {
            None
        };
        let processed = lanes::process(
            pool.as_ref(),
            parts,
            self.lanes.exchange.as_ref(),
            input,
            batch,
            horizon,
            encoder.as_ref(),
        )?;
        let mut bad = Vec::new();
        let mut failed_records = Vec::new();
        let mut failed_rows = Vec::new();
        for part in processed.parts {
            if let (Some(column), Some(tracker)) =
                (self.inputs[input].event_time, self.watermark.as_mut())
            {
                tracker.observe_input(input, &part.partitions, part.rows.column(column))?;
            }
            bad.extend(part.bad);
            failed_records.extend(part.failed_records);
            failed_rows.extend(part.failed_rows);
        }
        let out = processed.out;
        if !bad.is_empty() {
            self.handle_bad_records(batch, &bad)?;
        }
        crate::operators::order_row_errors(&mut failed_rows);
        self.handle_row_errors(failed_rows)?;
        if !failed_records.is_empty() {
            self.handle_bad_records(batch, &failed_records)?;
        }
        batch
            .meta
            .advance(&mut self.inputs[input].positions, batch.len());
        self.emit_encoded(out, processed.encoded)?;
        let reached_here = self.limit_reached && wanted.is_some_and(|w| w > 0);
        if let (true, Some(before), Some(wanted)) = (reached_here, before, wanted) {
            if !self.pipeline.holds_input() {
                // A stateless query reached --limit inside this batch: acknowledge only the
                // records up to the one that produced the last row written, so the next run
                // with this group starts right after it.
                let (records, surplus) = self.records_for_rows(input, batch, wanted)?;
                let mut positions = before;
                match (surplus.is_empty(), self.checkpoints.is_some()) {
                    // The record that reached the limit gave more rows than the limit took
                    // (a join): the rest come first in the next run, from the checkpoint…
                    (false, true) => batch.meta.advance(&mut positions, records),
                    // …or, without checkpoints, that record is read again (its first rows
                    // then appear twice rather than its last ones never).
                    (false, false) => batch.meta.advance(&mut positions, records - 1),
                    (true, _) => batch.meta.advance(&mut positions, records),
                }
                self.inputs[input].positions = positions;
                self.carry = surplus;
            }
        }
        Ok(bad.len() as u64)
    }

    /// The latest believable event time now: the later of the watermark and the wall clock,
    /// plus [`RuntimeOptions::max_event_time_skew`] (`None`: no bound). The clock counts too so
    /// that a replay of old data with a real gap in it is never mistaken for skew.
    fn event_time_horizon(&self) -> Option<i64> {
        let skew = self.options.max_event_time_skew?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let watermark = self.watermark.as_ref().and_then(|t| t.last());
        Some(
            now.max(watermark.unwrap_or(i64::MIN))
                .saturating_add(skew.as_millis() as i64),
        )
    }

    /// The fewest leading records of `batch` whose results through the (stateless) pipeline
    /// hold `rows` rows, and the rows of those results past the first `rows`.
    fn records_for_rows(
        &mut self,
        input: usize,
        batch: &SourceBatch,
        rows: u64,
    ) -> Result<(usize, Vec<RecordBatch>)> {
        let mut run = |records: usize| -> Result<Vec<RecordBatch>> {
            let mut bad = Vec::new();
            let (scan, _) = self.inputs[input].adapter.adapt_with_partitions(
                &batch.slice(0, records),
                &mut bad,
                None,
            )?;
            let out = self.pipeline.process_input(input, scan);
            // A re-run of rows already reported.
            self.pipeline.take_row_errors();
            out
        };
        let count = |out: &[RecordBatch]| out.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let (mut low, mut high) = (1, batch.len());
        while low < high {
            let mid = (low + high) / 2;
            if count(&run(mid)?) >= rows {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        // The rows past the limit, in order.
        let mut skip = rows as usize;
        let mut surplus = Vec::new();
        for b in run(low)? {
            if skip >= b.num_rows() {
                skip -= b.num_rows();
            } else {
                surplus.push(b.slice(skip, b.num_rows() - skip));
                skip = 0;
            }
        }
        Ok((low, surplus))
    }

    /// Publishes state size, late rows and lag, and checks the state limit, about once a second.
    fn check_state(&mut self) -> Result<()> {
        if self.state_checked.elapsed() < STATE_CHECK_INTERVAL {
            return Ok(());
        }
        self.report_state();
        self.state_checked = Instant::now();
        self.check_state_limit()
    }

    fn report_state(&self) {
        let operators = self.operator_metrics();
        let p = &self.progress;
        p.state_bytes
            .store(operators.state_bytes, Ordering::Relaxed);
        p.state_rows.store(operators.state_rows, Ordering::Relaxed);
        p.late_rows.store(operators.late_rows, Ordering::Relaxed);
        p.metrics.state_bytes.set(operators.state_bytes as f64);
        p.metrics.state_rows.set(operators.state_rows as f64);
        p.metrics.late_rows.absolute(operators.late_rows);
        if let Some(watermark) = self.watermark.as_ref().and_then(|t| t.last()) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            p.metrics
                .watermark_delay
                .set(now.saturating_sub(watermark) as f64 / 1000.0);
        }
        // Each input's partitions (one round of broker calls), their sum as the lag.
        let mut partitions = Vec::new();
        let mut lag: Option<i64> = None;
        for input in &self.inputs {
            let progress = input.source.partition_progress();
            let input_lag = if progress.is_empty() {
                input.source.lag()
            } else {
                Some(progress.iter().map(|p| (p.total - p.read).max(0)).sum())
            };
            if let Some(l) = input_lag {
                lag = Some(lag.unwrap_or(0) + l);
            }
            for part in &progress {
                metrics::gauge!(
                    "velo_partition_lag",
                    "job_id" => p.name.clone(),
                    "stream" => input.name.clone(),
                    "partition" => part.partition.to_string()
                )
                .set((part.total - part.read).max(0) as f64);
            }
            partitions.extend(progress.into_iter().map(|p| (input.name.clone(), p)));
        }
        if !partitions.is_empty() {
            if let Ok(mut shown) = p.partitions.lock() {
                *shown = partitions;
            }
        }
        if let Some(lag) = lag {
            p.lag.store(lag, Ordering::Relaxed);
            p.metrics.lag.set(lag as f64);
        }
    }

    /// Fails the job when operator state is over [`RuntimeOptions::max_state_bytes`].
    fn check_state_limit(&self) -> Result<()> {
        let Some(limit) = self.options.max_state_bytes else {
            return Ok(());
        };
        let bytes = self.operator_metrics().state_bytes;
        if bytes <= limit {
            return Ok(());
        }
        let operator = self
            .lanes
            .pipelines(&self.pipeline)
            .filter_map(Pipeline::largest_state)
            .max_by_key(|(_, bytes)| *bytes)
            .map_or("?", |(name, _)| name);
        Err(VeloError::StateLimit {
            bytes,
            limit,
            operator,
        })
    }

    /// Every lane's pipeline, the runner's first.
    fn pipelines(&mut self) -> Vec<&mut Pipeline> {
        self.lanes.pipelines_mut(&mut self.pipeline)
    }

    /// The sum of every lane's operator metrics.
    pub fn operator_metrics(&self) -> OperatorMetrics {
        self.lanes
            .pipelines(&self.pipeline)
            .map(Pipeline::metrics)
            .fold(OperatorMetrics::default(), |sum, m| sum + m)
    }

    /// Every lane's pipeline to `watermark`: what they emit, in one lane's order.
    fn advance_lanes(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.lanes.advance_watermark(&mut self.pipeline, watermark)
    }

    /// Moves the pipeline's watermark to the tracker's; returns the rows this emitted.
    fn advance_watermark(&mut self) -> Result<usize> {
        let Some(watermark) = self.watermark.as_mut().and_then(|t| t.current()) else {
            return Ok(0);
        };
        let out = self.advance_lanes(Watermark(watermark))?;
        let rows = out.iter().map(|b| b.num_rows()).sum();
        self.emit(out)?;
        Ok(rows)
    }

    /// Flushes everything the epoch wrote, then acknowledges: with a checkpoint when one is
    /// due, else per epoch when the job acknowledges per epoch. With eager batches a job
    /// acknowledging per epoch does not wait for its output to be delivered: the next batch
    /// starts at once, and the offsets are committed once everything written so far is
    /// delivered ([`Runner::commit_delivered`]), or after a blocking flush at the latest
    /// [`UNDELIVERED_AT_MOST`] later.
    fn end_epoch(&mut self) -> Result<()> {
        let due = self.checkpoints.as_ref().is_some_and(|c| c.due());
        let eager = self.options.eager_batches && self.acknowledge() == Acknowledge::PerEpoch;
        let overdue = self
            .undelivered_since
            .is_some_and(|t| t.elapsed() >= UNDELIVERED_AT_MOST);
        if eager && !due && !overdue {
            self.send_epoch(false)?;
            self.undelivered_since.get_or_insert_with(Instant::now);
            self.commit_delivered()?;
        } else {
            self.flush_epoch()?;
            if due {
                self.checkpoint()?;
            } else if self.acknowledge() == Acknowledge::PerEpoch {
                self.commit_positions()?;
            }
            self.undelivered_since = None;
        }
        self.count_rows_out();
        Ok(())
    }

    /// Commits the offsets processed so far when every output row written so far is
    /// delivered (eager batches: see [`Runner::end_epoch`]).
    fn commit_delivered(&mut self) -> Result<()> {
        if self.undelivered_since.is_some() && self.sink.send_written()? {
            self.undelivered_since = None;
            self.commit_positions()?;
        }
        Ok(())
    }

    /// Sends what the epoch produced on its way: rejected rows and late rows, then flushes the
    /// sink and the dead-letter queue.
    fn flush_epoch(&mut self) -> Result<()> {
        self.send_epoch(true)
    }

    /// [`Runner::flush_epoch`], waiting for the sink's delivery only when `wait`.
    fn send_epoch(&mut self, wait: bool) -> Result<()> {
        self.dirty = true;
        let errors = self
            .pipelines()
            .into_iter()
            .flat_map(Pipeline::take_row_errors)
            .collect();
        self.handle_row_errors(errors)?;
        self.route_rejected()?;
        if self.late_rows.is_some() {
            let rows: Vec<RecordBatch> = self
                .pipelines()
                .into_iter()
                .flat_map(Pipeline::drain_late_rows)
                .collect();
            let late = self.late_rows.as_mut().expect("checked above");
            for rows in rows {
                late.write(&rows)?;
            }
            late.flush()?;
        }
        // Without waiting, [`Runner::commit_delivered`] sends what is written right after.
        if wait {
            self.sink.flush()?;
        }
        if let Some(dlq) = self.dead_letters.as_mut() {
            dlq.flush()?;
        }
        Ok(())
    }

    /// Reports the result rows the sink could not encode.
    fn route_rejected(&mut self) -> Result<()> {
        for rejected in self.sink.take_rejected() {
            let what = format!("a result row for '{}'", rejected.topic);
            self.bad_row(
                ErrorKind::Encode,
                &what,
                &rejected.row,
                &rejected.reason,
                &[("velo.sink.topic", rejected.topic.as_str())],
            )?;
        }
        Ok(())
    }

    /// Rows an operator could not evaluate that were not traced back to a record of the batch
    /// being processed (rows of windows, joins): each as a bad row of its own.
    fn handle_row_errors(&mut self, errors: Vec<PipelineRowError>) -> Result<()> {
        for e in errors {
            let mut json = velo_connectors::codec::EncodedRows::default();
            velo_connectors::codec::JsonEncoder::default().encode(&e.row, &mut json)?;
            let row = json.iter().next().unwrap_or(b"{}").to_vec();
            let what = format!("a row of {}", e.operator);
            self.bad_row(
                ErrorKind::Expression,
                &what,
                &row,
                &e.reason,
                &[("velo.operator", e.operator)],
            )?;
        }
        Ok(())
    }

    /// A bad row without a record of its own (`what` it is): counted, then skipped,
    /// dead-lettered as JSON or failing the job, as `on_error` says.
    fn bad_row(
        &mut self,
        kind: ErrorKind,
        what: &str,
        row: &[u8],
        reason: &str,
        context: &[(&str, &str)],
    ) -> Result<()> {
        self.progress.count_error(kind);
        self.stats.errors = self.progress.error_counts();
        let reason = velo_connectors::kafka::bounded_reason(reason);
        let shown = String::from_utf8_lossy(&row[..row.len().min(1024)]).into_owned();
        match (self.on_error, self.dead_letters.as_mut()) {
            (OnError::Fail, _) => Err(VeloError::BadData(format!(
                "{what} ({} error): {reason} (row {shown})",
                kind.name()
            ))),
            (OnError::DeadLetter, Some(dlq)) => {
                tracing::warn!("{what} was dead-lettered: {reason} (row {shown})");
                dlq.send_row(row, &reason, context, what)?;
                count(
                    &self.progress.dead_letters,
                    &self.progress.metrics.dead_letters,
                    1,
                );
                Ok(())
            }
            _ => {
                tracing::warn!("{what} was skipped: {reason} (row {shown})");
                Ok(())
            }
        }
    }

    /// Commits each input's positions. A failed commit (the broker unreachable for a moment)
    /// is not fatal: what was processed is safe in the sink or the checkpoint, and the next
    /// commit covers it.
    fn commit_positions(&mut self) -> Result<()> {
        // Never an offset whose results may still be undelivered (eager batches): a record is
        // acknowledged only once what it produced is.
        if self.undelivered_since.take().is_some() {
            self.sink.flush()?;
        }
        for input in &mut self.inputs {
            if let Err(e) = input.source.commit(&input.positions) {
                tracing::warn!(
                    "could not commit the offsets of {} (retried with the next commit): {e}",
                    input.source.describe()
                );
            }
        }
        Ok(())
    }

    /// Counts into `progress` the rows the sink wrote since the last call.
    fn count_rows_out(&mut self) {
        let written = self.sink.rows_written();
        count(
            &self.progress.rows_out,
            &self.progress.metrics.records_out,
            written.saturating_sub(self.rows_out_counted),
        );
        self.rows_out_counted = self.rows_out_counted.max(written);
    }

    /// The job's state now, at a micro-batch boundary, as checkpoint `id` (the sink's part
    /// taken too). Nothing is written.
    pub fn take_checkpoint(&mut self, id: u64) -> Result<Checkpoint> {
        // A keyed query's lanes each hold their keys' state; a row-wise query's hold nothing.
        let keyed = self.lanes.exchange.as_ref().is_some_and(Exchange::by_key);
        let mut pipelines = self.pipelines();
        if !keyed {
            pipelines.truncate(1);
        }
        let lanes = pipelines.len();
        let mut operators = Vec::new();
        for pipeline in pipelines {
            for (name, batches) in pipeline.snapshot_named()? {
                operators.push(OperatorState {
                    name: name.to_string(),
                    batches,
                });
            }
        }
        let sink = self.sink.checkpoint(id)?;
        Ok(Checkpoint {
            id,
            job: String::new(),
            fingerprint: String::new(),
            query: String::new(),
            created_at: chrono::Utc::now().to_rfc3339(),
            acknowledge: self.acknowledge(),
            operators,
            lanes,
            split: self
                .lanes
                .exchange
                .as_ref()
                .filter(|_| lanes > 1)
                .map(Exchange::describe),
            watermark: self.watermark.as_ref().map(|t| t.snapshot()),
            inputs: self
                .inputs
                .iter()
                .map(|i| InputPosition {
                    stream: i.name.clone(),
                    positions: i.positions.clone(),
                })
                .collect(),
            tables: self
                .table_followers
                .iter()
                .map(|f| InputPosition {
                    stream: f.table.clone(),
                    positions: f.positions.clone(),
                })
                .collect(),
            sink,
            carry: self.carry.clone(),
        })
    }

    /// Writes a checkpoint now (the sink was flushed at the end of the last epoch), lets the
    /// sink deliver what it held for it, then commits the offsets it covers. Returns its id
    /// (0 when the job keeps no checkpoints).
    pub fn checkpoint(&mut self) -> Result<u64> {
        let Some(next_id) = self.checkpoints.as_ref().map(|c| c.next_id) else {
            // A request for a checkpoint (a savepoint) is answered: there will be none.
            self.progress
                .checkpoint_requested
                .store(false, Ordering::Relaxed);
            return Ok(0);
        };
        let started = Instant::now();
        let checkpoint = self.take_checkpoint(next_id)?;
        let checkpointer = self.checkpoints.as_mut().expect("checked above");
        checkpointer.acknowledge = checkpoint.acknowledge;
        let (id, bytes) = checkpointer.write(checkpoint)?;
        self.sink.checkpoint_complete(id)?;
        // Held-back results are out now (exactly-once output), also when no epoch follows.
        self.count_rows_out();
        // Delivering held-back results may reject rows (exactly-once output encodes them now).
        self.route_rejected()?;
        if let Some(dlq) = self.dead_letters.as_mut() {
            dlq.flush()?;
        }
        self.commit_positions()?;
        self.dirty = false;
        let p = &self.progress;
        p.checkpoints.fetch_add(1, Ordering::Relaxed);
        p.last_checkpoint.store(id, Ordering::Relaxed);
        p.checkpoint_requested.store(false, Ordering::Relaxed);
        p.metrics.checkpoints.increment(1);
        p.metrics
            .checkpoint_duration
            .record(started.elapsed().as_secs_f64());
        p.checkpoint_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        p.metrics.checkpoint_bytes.set(bytes as f64);
        tracing::debug!(
            "checkpoint {id}: {bytes} bytes in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(id)
    }

    /// A problem a source met that is not one record (a file it cannot read): counted as a
    /// decode error and logged, or the end of the job with `on_error = fail`.
    fn source_error(&mut self, problem: &str) -> Result<()> {
        self.progress.count_error(ErrorKind::Decode);
        self.stats.errors = self.progress.error_counts();
        if self.on_error == OnError::Fail {
            return Err(VeloError::BadData(problem.to_string()));
        }
        tracing::warn!("skipped: {problem}");
        Ok(())
    }

    /// Bad records of `batch`: counted by kind, then skipped, dead-lettered (unchanged, with
    /// the reason and their position) or failing the job, as `on_error` says.
    fn handle_bad_records(&mut self, batch: &SourceBatch, bad: &[BadRecord]) -> Result<()> {
        let meta: &RecordMeta = &batch.meta;
        for record in bad {
            self.progress.count_error(record.kind);
            let position = meta.position(record.index);
            let reason = velo_connectors::kafka::bounded_reason(&record.reason);
            match (self.on_error, self.dead_letters.as_mut()) {
                (OnError::Fail, _) => {
                    self.stats.errors = self.progress.error_counts();
                    return Err(VeloError::BadData(format!(
                        "the record at {position} ({} error): {reason}",
                        record.kind.name()
                    )));
                }
                (OnError::DeadLetter, Some(dlq)) => {
                    tracing::warn!("dead-lettered the record at {position}: {reason}");
                    let payload = match &batch.payload {
                        Payload::Encoded(bytes) if !bytes.is_null(record.index) => {
                            Some(bytes.value(record.index))
                        }
                        _ => None,
                    };
                    let key =
                        (!meta.key.is_null(record.index)).then(|| meta.key.value(record.index));
                    let headers = header_pairs(meta, record.index);
                    dlq.send(payload, key, &headers, &position, &record.reason)?;
                    count(
                        &self.progress.dead_letters,
                        &self.progress.metrics.dead_letters,
                        1,
                    );
                }
                _ => tracing::warn!("skipped the record at {position}: {reason}"),
            }
        }
        self.stats.errors = self.progress.error_counts();
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
