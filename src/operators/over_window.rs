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
    /// Emitted rows still inside some frame.
    history: Option<RecordBatch>,
    /// Released rows waiting for their followers.
    pending: Option<RecordBatch>,
    emitted: u64,
    last_time: Option<i64>,
    rank: u64,
    dense_rank: u64,
}

/// Window functions over a stream.
pub struct OverWindowExec {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    time: Arc<dyn PhysicalExpr>,
    functions: Vec<OverFunction>,
    needs: FrameNeeds,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    /// Rows not yet released (event time at or after the watermark).
    buffer: Vec<RecordBatch>,
    partitions: HashMap<Box<[u8]>, PartitionState>,
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
        let ranking = functions
            .iter()
            .any(|f| !matches!(f, OverFunction::Evaluated(_)));
        Ok(Self {
            partition_by,
            converter: RowConverter::new(fields)?,
            time,
            functions,
            needs,
            input_schema,
            output_schema,
            buffer: Vec::new(),
            partitions: HashMap::new(),
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
        let mut empty = Vec::new();
        for (key, p) in self.partitions.iter_mut() {
            if needs.range {
                if let Some(history) = &p.history {
                    // Rows waiting for their followers are evaluated later, over frames
                    // reaching back from their own (older) times.
                    let mut horizon = horizon;
                    if let Some(pending) = &p.pending {
                        let t = evaluate_time(&self.time, pending)?;
                        let t = t.as_primitive::<TimestampMillisecondType>();
                        if !t.is_empty() && t.is_valid(0) {
                            horizon = horizon.min(t.value(0).saturating_sub(needs.lookback_ms));
                        }
                    }
                    let t = evaluate_time(&self.time, history)?;
                    let t = t.as_primitive::<TimestampMillisecondType>();
                    // Rows are in event-time order: drop the leading ones before the horizon,
                    // keeping the last `lookback_rows` for ROWS frames and LAG.
                    let before = (0..t.len())
                        .take_while(|&i| t.is_valid(i) && t.value(i) < horizon)
                        .count();
                    let drop = before.min(t.len().saturating_sub(needs.lookback_rows));
                    if drop > 0 {
                        p.history = (drop < t.len()).then(|| history.slice(drop, t.len() - drop));
                    }
                }
            }
            let idle = p.pending.is_none()
                && match expired {
                    Some(expired) => p.last_time.is_some_and(|t| t < expired),
                    None => false,
                };
            if (p.history.is_none() && p.pending.is_none() && !self.ranking) || idle {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.partitions.remove(&key);
        }
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
    fn release(&mut self, until: Option<i64>) -> Result<Vec<RecordBatch>> {
        if self.buffer.is_empty() && until.is_some() {
            return Ok(Vec::new());
        }
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
        let mut out = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let key = keys.row(order[i] as usize);
            let mut j = i;
            while j < order.len() && keys.row(order[j] as usize) == key {
                j += 1;
            }
            let rows = take_record_batch(&ready, &UInt32Array::from(order[i..j].to_vec()))?;
            i = j;
            let key: Box<[u8]> = key.as_ref().into();
            if let Some(batch) = self.evaluate_partition(key, Some(rows), until.is_none())? {
                out.push(batch);
            }
        }
        if until.is_none() {
            // End of input: flush every partition's pending rows.
            let keys: Vec<Box<[u8]>> = self.partitions.keys().cloned().collect();
            for key in keys {
                if let Some(batch) = self.evaluate_partition(key, None, true)? {
                    out.push(batch);
                }
            }
        }
        if out.is_empty() {
            return Ok(out);
        }
        // Emit in event-time order across partitions.
        let merged = concat_batches(&relaxed(&self.output_schema), &out)?;
        let times = self.times(&merged)?;
        let mut indices: Vec<u32> = (0..merged.num_rows() as u32).collect();
        indices.sort_by_key(|&i| times[i as usize]); // stable: ties keep partition order
        Ok(vec![take_record_batch(
            &merged,
            &UInt32Array::from(indices),
        )?])
    }

    fn evaluate_partition(
        &mut self,
        key: Box<[u8]>,
        new: Option<RecordBatch>,
        at_end: bool,
    ) -> Result<Option<RecordBatch>> {
        let state = self.partitions.entry(key.clone()).or_default();
        let history = state.history.take();
        let pending = state.pending.take();
        let history_len = history.as_ref().map_or(0, |b| b.num_rows());
        let parts: Vec<RecordBatch> = [history, pending, new].into_iter().flatten().collect();
        if parts.is_empty() {
            return Ok(None);
        }
        let batch = concat_batches(&self.input_schema, &parts)?;
        let total = batch.num_rows();
        let emit_end = if at_end {
            total
        } else {
            total
                .saturating_sub(self.needs.lookahead_rows)
                .max(history_len)
        };
        let n_emit = emit_end - history_len;
        let times = self.times(&batch)?;
        // Ranking counters over the emitted rows, in order.
        let state = self.partitions.get_mut(&key).expect("entry exists");
        let mut row_numbers = Vec::with_capacity(n_emit);
        let mut ranks = Vec::with_capacity(n_emit);
        let mut dense_ranks = Vec::with_capacity(n_emit);
        for t in &times[history_len..emit_end] {
            state.emitted += 1;
            if state.last_time != *t {
                state.rank = state.emitted;
                state.dense_rank += 1;
                state.last_time = *t;
            }
            row_numbers.push(state.emitted);
            ranks.push(state.rank);
            dense_ranks.push(state.dense_rank);
        }
        // What stays: rows waiting for followers, and emitted rows still inside a frame.
        if emit_end < total {
            state.pending = Some(batch.slice(emit_end, total - emit_end));
        }
        let mut keep_from = emit_end.saturating_sub(self.needs.lookback_rows);
        if self.needs.range {
            if let Some(Some(last)) = times[..emit_end].last() {
                let since = last.saturating_sub(self.needs.lookback_ms);
                let first_in_range =
                    times[..emit_end].partition_point(|t| t.is_some_and(|t| t < since));
                keep_from = keep_from.min(first_in_range);
            }
        }
        if keep_from < emit_end {
            state.history = Some(batch.slice(keep_from, emit_end - keep_from));
        }
        if n_emit == 0 {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| c.slice(history_len, n_emit))
            .collect();
        for function in &self.functions {
            columns.push(match function {
                OverFunction::RowNumber => Arc::new(UInt64Array::from(row_numbers.clone())),
                OverFunction::Rank => Arc::new(UInt64Array::from(ranks.clone())),
                OverFunction::DenseRank => Arc::new(UInt64Array::from(dense_ranks.clone())),
                OverFunction::Evaluated(expr) => expr.evaluate(&batch)?.slice(history_len, n_emit),
            });
        }
        let schema = relaxed(&self.output_schema);
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n_emit)),
        )?))
    }

    fn measure(&self) -> OperatorMetrics {
        let mut m = self.metrics;
        let batches = self.buffer.iter().chain(
            self.partitions
                .values()
                .flat_map(|p| p.history.iter().chain(p.pending.iter())),
        );
        for b in batches {
            m.state_rows += b.num_rows() as u64;
            m.state_bytes += b.get_array_memory_size() as u64;
        }
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
        let mut history = Vec::new();
        let mut pending = Vec::new();
        for (key, p) in &self.partitions {
            keys.push(key);
            emitted.push(p.emitted);
            last.push(p.last_time);
            rank.push(p.rank);
            dense.push(p.dense_rank);
            hl.push(p.history.as_ref().map_or(0, |b| b.num_rows() as u64));
            pl.push(p.pending.as_ref().map_or(0, |b| b.num_rows() as u64));
            history.extend(p.history.clone());
            pending.extend(p.pending.clone());
        }
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
            concat_batches(&self.input_schema, &history)?,
            concat_batches(&self.input_schema, &pending)?,
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
        self.partitions.clear();
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
        let (mut h, mut p) = (0usize, 0usize);
        for i in 0..partitions.num_rows() {
            let (hn, pn) = (hl.value(i) as usize, pl.value(i) as usize);
            self.partitions.insert(
                keys.value(i).into(),
                PartitionState {
                    history: (hn > 0).then(|| history.slice(h, hn)),
                    pending: (pn > 0).then(|| pending.slice(p, pn)),
                    emitted: emitted.value(i),
                    last_time: last.is_valid(i).then(|| last.value(i)),
                    rank: rank.value(i),
                    dense_rank: dense.value(i),
                },
            );
            h += hn;
            p += pn;
        }
        Ok(())
    }
}

fn relaxed(schema: &SchemaRef) -> SchemaRef {
    super::window_aggregate::relaxed(schema)
}
