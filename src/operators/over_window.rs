//! `OverWindowExec`: window functions `OVER (PARTITION BY … ORDER BY <event time> …)` on a
//! stream.
//!
//! Rows are held until the watermark passes their event time, then released in event-time
//! order per partition, so each row sees exactly the rows before (and, for LEAD or FOLLOWING
//! frames, after) it. Per partition the operator keeps only what the frames need:
//! `lookback` rows (or the rows of the last RANGE interval) already emitted, and the `lookahead`
//! rows released but waiting for their followers. DataFusion evaluates the functions over
//! "kept rows + new rows" of one partition; ROW_NUMBER, RANK and DENSE_RANK are counters kept
//! here, since they depend on the whole history. A row whose event time is behind the
//! watermark when it arrives is late (its place in the order is already gone): dropped and
//! counted. At the end of a bounded input every row is emitted (LEAD past the end is NULL).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, RecordBatchOptions,
    UInt32Array, UInt64Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::sliding::{self, SlidingAggregate};
use super::window_aggregate::evaluate_time;
use super::{counters_batch, read_counters, LateRows, OperatorMetrics, StreamOperator, Watermark};
use crate::error::{Result, VeloError};

/// One function of the SELECT list.
#[derive(Debug, Clone)]
pub enum OverFunction {
    RowNumber,
    Rank,
    DenseRank,
    /// Evaluated by DataFusion over the partition's kept + new rows.
    Evaluated(Arc<dyn WindowExpr>),
    /// A sliding aggregate computed here, every partition at once (see [`super::sliding`]).
    Sliding(SlidingAggregate),
}

/// What the functions need around each row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameNeeds {
    /// Rows before the current one (ROWS n PRECEDING, LAG n).
    pub lookback_rows: usize,
    /// Event time before the current row (RANGE INTERVAL … PRECEDING), in ms.
    pub lookback_ms: i64,
    /// Rows after the current one (ROWS n FOLLOWING, LEAD n).
    pub lookahead_rows: usize,
    /// True when some frame is a RANGE (keep every row within `lookback_ms` of the last).
    pub range: bool,
}

#[derive(Default)]
struct PartitionState {
    /// The partition's kept rows, if any.
    kept: Option<Kept>,
    emitted: u64,
    last_time: Option<i64>,
    rank: u64,
    dense_rank: u64,
}

/// Where a partition's kept rows are: `history` emitted rows still inside some frame, then
/// `pending` released rows waiting for their followers, contiguous in one segment.
#[derive(Debug, Clone, Copy)]
struct Kept {
    segment: u64,
    offset: usize,
    history: usize,
    pending: usize,
}

impl Kept {
    fn rows(&self) -> usize {
        self.history + self.pending
    }
}

/// The batches holding the partitions' kept rows. A release copies the kept rows of every
/// partition it touched into one new segment (one copy per column, not one per partition); a
/// segment no partition points into any more is dropped, and when the segments hold more than
/// twice the live rows, every partition's rows are copied into one (so a rarely seen key cannot
/// pin a whole old batch).
#[derive(Default)]
struct Segments {
    batches: HashMap<u64, (RecordBatch, usize)>,
    next: u64,
    /// Rows of all segments, dead ones included.
    rows: usize,
    /// Rows some partition points to.
    live: usize,
}

/// Dead rows tolerated beyond the live ones before segments are compacted.
const COMPACT_SLACK_ROWS: usize = 8192;

impl Segments {
    /// The id the next added segment gets.
    fn next_id(&self) -> u64 {
        self.next
    }

    /// Adds `batch`, pointed to by `refs` partitions holding `live` of its rows.
    fn add(&mut self, batch: RecordBatch, refs: usize, live: usize) -> u64 {
        let id = self.next;
        self.next += 1;
        self.rows += batch.num_rows();
        self.live += live;
        self.batches.insert(id, (batch, refs));
        id
    }

    fn batch(&self, id: u64) -> &RecordBatch {
        &self.batches[&id].0
    }

    /// A partition lets go of `kept`.
    fn release(&mut self, kept: Kept) {
        self.live -= kept.rows();
        let entry = self.batches.get_mut(&kept.segment).expect("segment exists");
        entry.1 -= 1;
        if entry.1 == 0 {
            let (batch, _) = self.batches.remove(&kept.segment).expect("segment exists");
            self.rows -= batch.num_rows();
        }
    }

    fn sparse(&self) -> bool {
        self.rows > 2 * self.live + COMPACT_SLACK_ROWS
    }

    /// One batch of the rows of `kept` (each a range of a segment), in order; the sources and
    /// picks for `interleave_record_batch`.
    fn picks(&self, kept: impl Iterator<Item = Kept>) -> (Vec<&RecordBatch>, Vec<(usize, usize)>) {
        let mut picker = Picker::default();
        for k in kept {
            picker.pick(self, k);
        }
        (picker.sources, picker.picks)
    }

    /// The memory of every segment.
    fn bytes(&self) -> usize {
        self.batches
            .values()
            .map(|(b, _)| b.get_array_memory_size())
            .sum()
    }
}

/// Rows gathered from segments (and other batches) for one `interleave_record_batch`.
#[derive(Default)]
struct Picker<'a> {
    sources: Vec<&'a RecordBatch>,
    /// The source number of each segment among `sources`.
    source_of: HashMap<u64, usize>,
    picks: Vec<(usize, usize)>,
}

impl<'a> Picker<'a> {
    /// Appends the rows of `kept`.
    fn pick(&mut self, segments: &'a Segments, kept: Kept) {
        let s = *self.source_of.entry(kept.segment).or_insert_with(|| {
            self.sources.push(segments.batch(kept.segment));
            self.sources.len() - 1
        });
        let rows = kept.offset..kept.offset + kept.rows();
        self.picks.extend(rows.map(|r| (s, r)));
    }
}

/// One partition's rows in a release's evaluation input: `rows` rows from `start`, of which the
/// first `history` were emitted before.
struct Span<'a> {
    key: &'a [u8],
    start: usize,
    rows: usize,
    history: usize,
}

/// Window functions over a stream.
pub struct OverWindowExec {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    time: Arc<dyn PhysicalExpr>,
    functions: Vec<OverFunction>,
    needs: FrameNeeds,
    input_schema: SchemaRef,
    /// Rows not yet released (event time at or after the watermark).
    buffer: Vec<RecordBatch>,
    partitions: HashMap<Box<[u8]>, PartitionState>,
    segments: Segments,
    /// The output schema with every field nullable: the schema of what is emitted.
    relaxed: SchemaRef,
    watermark: i64,
    metrics: OperatorMetrics,
    late: LateRows,
    /// ROW_NUMBER, RANK or DENSE_RANK is computed: a partition's counters are state.
    ranking: bool,
    /// Forget a partition whose newest row is this far behind the watermark (`--state-ttl`).
    ttl_ms: Option<i64>,
}

impl OverWindowExec {
    /// An operator computing `functions` (one output column each, after the input columns).
    pub fn new(
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        time: Arc<dyn PhysicalExpr>,
        functions: Vec<OverFunction>,
        needs: FrameNeeds,
        input_schema: SchemaRef,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let mut fields = Vec::new();
        for p in &partition_by {
            fields.push(SortField::new(p.data_type(&input_schema)?));
        }
        if fields.is_empty() {
            fields.push(SortField::new(DataType::Int8));
        }
        let ranking = functions.iter().any(|f| {
            matches!(
                f,
                OverFunction::RowNumber | OverFunction::Rank | OverFunction::DenseRank
            )
        });
        Ok(Self {
            partition_by,
            converter: RowConverter::new(fields)?,
            time,
            functions,
            needs,
            input_schema,
            relaxed: super::window_aggregate::relaxed(&output_schema),
            buffer: Vec::new(),
            partitions: HashMap::new(),
            segments: Segments::default(),
            watermark: i64::MIN,
            metrics: OperatorMetrics::default(),
            late: LateRows::default(),
            ranking,
            ttl_ms: None,
        })
    }

    /// Forgets partitions idle for `ttl_ms` of event time (their ranking counters restart).
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Drops what no future row can need, the watermark being at `watermark`: history rows
    /// outside every frame of a row at or after the watermark (RANGE frames), and partitions
    /// holding nothing (without ranking counters, or idle for longer than the state TTL).
    fn prune(&mut self, watermark: i64) -> Result<()> {
        let needs = self.needs;
        let horizon = watermark.saturating_sub(needs.lookback_ms);
        let expired = self.ttl_ms.map(|ttl| watermark.saturating_sub(ttl));
        // Event times of the segments, each evaluated once.
        let mut times: HashMap<u64, ArrayRef> = HashMap::new();
        let mut empty = Vec::new();
        for (key, p) in self.partitions.iter_mut() {
            if let (true, Some(kept)) = (needs.range, p.kept.as_mut()) {
                if kept.history > 0 {
                    let t = match times.entry(kept.segment) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let batch = self.segments.batch(kept.segment);
                            e.insert(evaluate_time(&self.time, batch)?)
                        }
                    };
                    let t = t.as_primitive::<TimestampMillisecondType>();
                    // Rows waiting for their followers are evaluated later, over frames
                    // reaching back from their own (older) times.
                    let mut horizon = horizon;
                    let first_pending = kept.offset + kept.history;
                    if kept.pending > 0 && t.is_valid(first_pending) {
                        horizon =
                            horizon.min(t.value(first_pending).saturating_sub(needs.lookback_ms));
                    }
                    // Rows are in event-time order: drop the leading ones before the horizon,
                    // keeping the last `lookback_rows` for ROWS frames and LAG.
                    let before = (kept.offset..first_pending)
                        .take_while(|&i| t.is_valid(i) && t.value(i) < horizon)
                        .count();
                    let drop = before.min(kept.history.saturating_sub(needs.lookback_rows));
                    kept.offset += drop;
                    kept.history -= drop;
                    self.segments.live -= drop;
                }
            }
            if let Some(kept) = p.kept {
                if kept.rows() == 0 {
                    self.segments.release(kept);
                    p.kept = None;
                }
            }
            let idle = p.kept.is_none_or(|k| k.pending == 0)
                && match expired {
                    Some(expired) => p.last_time.is_some_and(|t| t < expired),
                    None => false,
                };
            if (p.kept.is_none() && !self.ranking) || idle {
                empty.push(key.clone());
            }
        }
        for key in empty {
            if let Some(kept) = self.partitions.remove(&key).and_then(|p| p.kept) {
                self.segments.release(kept);
            }
        }
        self.compact_if_sparse()
    }

    /// Copies every partition's kept rows into one segment when the segments hold mostly rows
    /// no partition points to.
    fn compact_if_sparse(&mut self) -> Result<()> {
        if !self.segments.sparse() {
            return Ok(());
        }
        // One pass over the partitions: the rows are copied in the order the offsets are given.
        let mut kept: Vec<&mut Kept> = self
            .partitions
            .values_mut()
            .filter_map(|p| p.kept.as_mut())
            .collect();
        let (sources, picks) = self.segments.picks(kept.iter().map(|k| **k));
        let batch = match picks.is_empty() {
            true => None,
            false => Some(arrow::compute::interleave_record_batch(&sources, &picks)?),
        };
        let mut segments = Segments {
            next: self.segments.next,
            ..Segments::default()
        };
        if let Some(batch) = batch {
            let id = segments.next_id();
            let mut offset = 0;
            for k in kept.iter_mut() {
                (k.segment, k.offset) = (id, offset);
                offset += k.rows();
            }
            segments.add(batch, kept.len(), offset);
        }
        self.segments = segments;
        Ok(())
    }

    fn partition_rows(&self, batch: &RecordBatch) -> Result<arrow::row::Rows> {
        let columns: Vec<ArrayRef> = if self.partition_by.is_empty() {
            vec![Arc::new(arrow::array::Int8Array::from(vec![
                0i8;
                batch
                    .num_rows()
            ]))]
        } else {
            self.partition_by
                .iter()
                .map(|p| Ok(p.evaluate(batch)?.into_array(batch.num_rows())?))
                .collect::<Result<_>>()?
        };
        Ok(self.converter.convert_columns(&columns)?)
    }

    fn times(&self, batch: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let t = evaluate_time(&self.time, batch)?;
        let t = t.as_primitive::<TimestampMillisecondType>();
        Ok(t.iter().collect())
    }

    /// Releases buffered rows with event time before `until` (all when `None`) and computes
    /// what can be emitted.
    ///
    /// Every partition with new rows (and at the end of the input every partition with pending
    /// rows) gets a span of one evaluation input: its kept rows, then its new rows in event-time
    /// order. The input is built with one copy per column; DataFusion evaluates each function
    /// over each span; what is emitted is gathered with one `take`.
    fn release(&mut self, until: Option<i64>) -> Result<Vec<RecordBatch>> {
        if self.buffer.is_empty() && until.is_some() {
            return Ok(Vec::new());
        }
        let at_end = until.is_none();
        let all = concat_batches(&self.input_schema, &self.buffer)?;
        self.buffer.clear();
        let times = self.times(&all)?;
        let (ready, keep): (Vec<u32>, Vec<u32>) = (0..all.num_rows() as u32)
            .partition(|&i| until.is_none_or(|w| times[i as usize].is_some_and(|t| t < w)));
        if !keep.is_empty() {
            self.buffer
                .push(take_record_batch(&all, &UInt32Array::from(keep))?);
        }
        let ready = take_record_batch(&all, &UInt32Array::from(ready))?;
        // Group by partition, each in event-time order (stable: ties keep arrival order).
        let keys = self.partition_rows(&ready)?;
        let times = self.times(&ready)?;
        let mut order: Vec<u32> = (0..ready.num_rows() as u32).collect();
        order.sort_by(|&a, &b| {
            keys.row(a as usize)
                .cmp(&keys.row(b as usize))
                .then(times[a as usize].cmp(&times[b as usize]))
        });
        let mut groups: Vec<(&[u8], std::ops::Range<usize>)> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let key = keys.row(order[i] as usize);
            let mut j = i + 1;
            while j < order.len() && keys.row(order[j] as usize) == key {
                j += 1;
            }
            groups.push((key.data(), i..j));
            i = j;
        }
        // At the end of the input, every other partition's pending rows are flushed too.
        let flushed: Vec<Box<[u8]>> = match at_end {
            true => {
                let seen: std::collections::HashSet<&[u8]> =
                    groups.iter().map(|(k, _)| *k).collect();
                self.partitions
                    .iter()
                    .filter(|(k, p)| {
                        p.kept.is_some_and(|k| k.pending > 0) && !seen.contains(k.as_ref())
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            false => Vec::new(),
        };
        if !flushed.is_empty() {
            // Partitions in key order, flushed ones too: the emission order (event time, then
            // partition key) does not depend on how the partitions are hashed.
            groups.extend(flushed.iter().map(|k| (k.as_ref(), 0..0)));
            groups.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }

        // The evaluation input: source 0 is `ready`, the others the segments of kept rows.
        let mut picker = Picker {
            sources: vec![&ready],
            ..Picker::default()
        };
        let mut spans = Vec::with_capacity(groups.len());
        for (key, range) in &groups {
            let start = picker.picks.len();
            let mut history = 0;
            if let Some(kept) = self.partitions.get(*key).and_then(|p| p.kept) {
                picker.pick(&self.segments, kept);
                history = kept.history;
            }
            let new_rows = order[range.clone()].iter().map(|&r| (0, r as usize));
            picker.picks.extend(new_rows);
            spans.push(Span {
                key,
                start,
                rows: picker.picks.len() - start,
                history,
            });
        }
        let input = arrow::compute::interleave_record_batch(&picker.sources, &picker.picks)?;
        drop(picker);
        let times = self.times(&input)?;

        // First what can fail (DataFusion's evaluation, the copy of the kept rows), then the
        // partitions' state: an error leaves every partition as it was.
        let mut emitted: Vec<u32> = Vec::with_capacity(order.len());
        let mut kept_rows: Vec<u32> = Vec::new();
        let mut evaluated: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.functions.len()];
        // Per span: the end of its emitted rows and the start of its kept ones.
        let mut ends = Vec::with_capacity(spans.len());
        // The spans with rows to emit, for the sliding aggregates.
        let mut emitting = Vec::new();
        for span in &spans {
            let total = span.rows;
            let emit_end = match at_end {
                true => total,
                false => total
                    .saturating_sub(self.needs.lookahead_rows)
                    .max(span.history),
            };
            let n_emit = emit_end - span.history;
            let t = &times[span.start..span.start + total];
            // What stays: emitted rows still inside a frame, then rows waiting for followers.
            let mut keep_from = emit_end.saturating_sub(self.needs.lookback_rows);
            if self.needs.range {
                if let Some(Some(last)) = t[..emit_end].last() {
                    let since = last.saturating_sub(self.needs.lookback_ms);
                    let first_in_range =
                        t[..emit_end].partition_point(|t| t.is_some_and(|t| t < since));
                    keep_from = keep_from.min(first_in_range);
                }
            }
            kept_rows.extend((span.start + keep_from) as u32..(span.start + total) as u32);
            ends.push((emit_end, keep_from));
            if n_emit == 0 {
                continue;
            }
            emitted.extend((span.start + span.history) as u32..(span.start + emit_end) as u32);
            emitting.push(sliding::Span {
                start: span.start,
                rows: total,
                emit: (span.history, emit_end),
            });
            let rows = input.slice(span.start, total);
            for (function, out) in self.functions.iter().zip(evaluated.iter_mut()) {
                if let OverFunction::Evaluated(expr) = function {
                    out.push(expr.evaluate(&rows)?.slice(span.history, n_emit));
                }
            }
        }
        for (function, out) in self.functions.iter().zip(evaluated.iter_mut()) {
            let OverFunction::Sliding(aggregate) = function else {
                continue;
            };
            match aggregate.evaluate(&input, &times, &emitting)? {
                Some(values) => out.push(values),
                // Past what this computes exactly: DataFusion's result, or its error.
                None => {
                    for span in &emitting {
                        let rows = input.slice(span.start, span.rows);
                        let values = aggregate.expr.evaluate(&rows)?;
                        out.push(values.slice(span.emit.0, span.emit.1 - span.emit.0));
                    }
                }
            }
        }
        let segment = match kept_rows.is_empty() {
            true => None,
            false => {
                let live = kept_rows.len();
                let batch = take_record_batch(&input, &UInt32Array::from(kept_rows))?;
                let refs = ends.iter().zip(&spans).filter(|((_, k), s)| k < &s.rows);
                Some(self.segments.add(batch, refs.count(), live))
            }
        };
        let (mut row_numbers, mut ranks, mut dense_ranks) = (vec![], vec![], vec![]);
        let mut offset = 0;
        for (span, &(emit_end, keep_from)) in spans.iter().zip(&ends) {
            if !self.partitions.contains_key(span.key) {
                self.partitions
                    .insert(span.key.into(), PartitionState::default());
            }
            let state = self.partitions.get_mut(span.key).expect("inserted");
            if let Some(old) = state.kept.take() {
                self.segments.release(old);
            }
            // Ranking counters over the emitted rows, in order.
            for t in &times[span.start + span.history..span.start + emit_end] {
                state.emitted += 1;
                if state.last_time != *t {
                    state.rank = state.emitted;
                    state.dense_rank += 1;
                    state.last_time = *t;
                }
                if self.ranking {
                    row_numbers.push(state.emitted);
                    ranks.push(state.rank);
                    dense_ranks.push(state.dense_rank);
                }
            }
            if let (Some(segment), true) = (segment, keep_from < span.rows) {
                let kept = Kept {
                    segment,
                    offset,
                    history: emit_end - keep_from,
                    pending: span.rows - emit_end,
                };
                offset += kept.rows();
                state.kept = Some(kept);
            }
        }
        self.compact_if_sparse()?;
        if emitted.is_empty() {
            return Ok(Vec::new());
        }

        // Emit in event-time order across partitions (stable: ties keep partition key order,
        // then each partition's order): [`StreamOperator::emission_order`].
        let mut order: Vec<u32> = (0..emitted.len() as u32).collect();
        order.sort_by_key(|&i| times[emitted[i as usize] as usize]);
        let rows: UInt32Array = order.iter().map(|&i| emitted[i as usize]).collect();
        let order = UInt32Array::from(order);
        let mut columns = take_record_batch(&input, &rows)?.columns().to_vec();
        for (function, parts) in self.functions.iter().zip(evaluated) {
            let values: ArrayRef = match function {
                OverFunction::RowNumber => Arc::new(UInt64Array::from(row_numbers.clone())),
                OverFunction::Rank => Arc::new(UInt64Array::from(ranks.clone())),
                OverFunction::DenseRank => Arc::new(UInt64Array::from(dense_ranks.clone())),
                OverFunction::Evaluated(_) | OverFunction::Sliding(_) => {
                    let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                    arrow::compute::concat(&parts)?
                }
            };
            columns.push(arrow::compute::take(&values, &order, None)?);
        }
        let columns = columns
            .into_iter()
            .zip(self.relaxed.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c),
                false => Ok(arrow::compute::cast(&c, f.data_type())?),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(vec![RecordBatch::try_new_with_options(
            self.relaxed.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?])
    }

    fn measure(&self) -> OperatorMetrics {
        let mut m = self.metrics;
        for b in &self.buffer {
            m.state_rows += b.num_rows() as u64;
            m.state_bytes += b.get_array_memory_size() as u64;
        }
        m.state_rows += self.segments.live as u64;
        m.state_bytes += self.segments.bytes() as u64;
        m
    }
}

impl StreamOperator for OverWindowExec {
    fn name(&self) -> &'static str {
        "OverWindowExec"
    }

    fn holds_input(&self) -> bool {
        true
    }

    /// The PARTITION BY expressions: a partition's rows, kept rows and counters are its own.
    fn partition_keys(&self) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
        (!self.partition_by.is_empty()).then(|| self.partition_by.clone())
    }

    /// Event time (in milliseconds, as the operator orders it), then the partition key: rows
    /// of one partition (one lane's) keep their order among themselves.
    fn emission_order(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let times: Int64Array = self.times(batch)?.into_iter().collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(times)];
        for p in &self.partition_by {
            columns.push(p.evaluate(batch)?.into_array(batch.num_rows())?);
        }
        Ok(columns)
    }

    fn metrics(&self) -> OperatorMetrics {
        self.measure()
    }

    fn keep_late_rows(&mut self) {
        self.late.keep();
    }

    fn drain_late_rows(&mut self) -> Vec<RecordBatch> {
        self.late.drain()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let times = self.times(&batch)?;
        let mut keep = Vec::with_capacity(times.len());
        let mut late_rows = Vec::new();
        for (row, t) in times.into_iter().enumerate() {
            keep.push(match t {
                None => {
                    self.metrics.null_time_rows += 1;
                    false
                }
                Some(t) if t < self.watermark => {
                    self.metrics.late_rows += 1;
                    late_rows.push(row as u32);
                    false
                }
                Some(_) => true,
            });
        }
        self.late.push(&batch, late_rows)?;
        let kept = filter_record_batch(&batch, &arrow::array::BooleanArray::from(keep))?;
        if kept.num_rows() > 0 {
            self.buffer.push(kept);
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.watermark = self.watermark.max(watermark.0);
        if watermark == Watermark::END {
            self.release(None)
        } else {
            let out = self.release(Some(self.watermark))?;
            self.prune(self.watermark)?;
            Ok(out)
        }
    }

    /// Counters; buffered rows; per partition its key, counters and the lengths of its kept
    /// rows; then all history rows and all pending rows, partition after partition.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let meta = counters_batch(self.watermark, &self.metrics)?;
        let buffer = concat_batches(&self.input_schema, &self.buffer)?;
        let mut keys: Vec<&[u8]> = Vec::new();
        let (mut emitted, mut last, mut rank, mut dense, mut hl, mut pl) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut history, mut pending) = (Vec::new(), Vec::new());
        for (key, p) in &self.partitions {
            keys.push(key);
            emitted.push(p.emitted);
            last.push(p.last_time);
            rank.push(p.rank);
            dense.push(p.dense_rank);
            hl.push(p.kept.map_or(0, |k| k.history as u64));
            pl.push(p.kept.map_or(0, |k| k.pending as u64));
            if let Some(kept) = p.kept {
                history.push(Kept { pending: 0, ..kept });
                pending.push(Kept {
                    offset: kept.offset + kept.history,
                    history: 0,
                    ..kept
                });
            }
        }
        let gather = |kept: Vec<Kept>| -> Result<RecordBatch> {
            let (sources, picks) = self.segments.picks(kept.into_iter());
            Ok(match picks.is_empty() {
                true => RecordBatch::new_empty(self.input_schema.clone()),
                false => arrow::compute::interleave_record_batch(&sources, &picks)?,
            })
        };
        let u64s = |v: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(v)) };
        let partitions = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key", DataType::Binary, false),
                Field::new("emitted", DataType::UInt64, false),
                Field::new("last_time", DataType::Int64, true),
                Field::new("rank", DataType::UInt64, false),
                Field::new("dense_rank", DataType::UInt64, false),
                Field::new("history_rows", DataType::UInt64, false),
                Field::new("pending_rows", DataType::UInt64, false),
            ])),
            vec![
                Arc::new(BinaryArray::from(keys)),
                u64s(emitted),
                Arc::new(Int64Array::from(last)),
                u64s(rank),
                u64s(dense),
                u64s(hl),
                u64s(pl),
            ],
        )?;
        Ok(vec![
            meta,
            buffer,
            partitions,
            gather(history)?,
            gather(pending)?,
        ])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        let [meta, buffer, partitions, history, pending] = state else {
            return Err(VeloError::Execution(
                "OverWindowExec state must be 5 batches".into(),
            ));
        };
        self.watermark = read_counters(meta, &mut self.metrics)?;
        self.buffer = if buffer.num_rows() > 0 {
            vec![buffer.clone()]
        } else {
            Vec::new()
        };
        // Built aside, and taken only when all of it is valid.
        let mut restored = HashMap::with_capacity(partitions.num_rows());
        let mut segments = Segments::default();
        let keys = partitions.column(0).as_binary::<i32>();
        let u = |c: usize| {
            partitions
                .column(c)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .clone()
        };
        let (emitted, rank, dense, hl, pl) = (u(1), u(3), u(4), u(5), u(6));
        let last = partitions
            .column(2)
            .as_primitive::<arrow::datatypes::Int64Type>();
        // Every partition's kept rows, its history then its pending rows, in one segment.
        let segment = segments.next_id();
        let (mut h, mut p) = (0usize, 0usize);
        let mut picks = Vec::with_capacity(history.num_rows() + pending.num_rows());
        let mut refs = 0;
        for i in 0..partitions.num_rows() {
            let (hn, pn) = (hl.value(i) as usize, pl.value(i) as usize);
            if h + hn > history.num_rows() || p + pn > pending.num_rows() {
                return Err(VeloError::Execution(
                    "OverWindowExec state: kept rows beyond the saved ones".into(),
                ));
            }
            let kept = (hn + pn > 0).then_some(Kept {
                segment,
                offset: picks.len(),
                history: hn,
                pending: pn,
            });
            picks.extend((h..h + hn).map(|r| (0, r)));
            picks.extend((p..p + pn).map(|r| (1, r)));
            refs += usize::from(kept.is_some());
            restored.insert(
                keys.value(i).into(),
                PartitionState {
                    kept,
                    emitted: emitted.value(i),
                    last_time: last.is_valid(i).then(|| last.value(i)),
                    rank: rank.value(i),
                    dense_rank: dense.value(i),
                },
            );
            h += hn;
            p += pn;
        }
        if !picks.is_empty() {
            let live = picks.len();
            let batch = arrow::compute::interleave_record_batch(&[history, pending], &picks)?;
            segments.add(batch, refs, live);
        }
        self.partitions = restored;
        self.segments = segments;
        Ok(())
    }
}
