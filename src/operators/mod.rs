//! Streaming operators and the pipeline that chains them.
//!
//! Every operator implements the same contract, stateful or not: take a batch, react to the
//! watermark (emitting what it closes), snapshot its state as Arrow batches and restore from
//! them. Between epochs nothing is in flight, so the snapshots of all operators plus the
//! source offsets form a consistent checkpoint.
//!
//! Stateless operators evaluate DataFusion physical expressions planned once
//! ([`FilterExec`], [`ProjectionExec`]); [`LimitExec`] keeps a row count;
//! [`WindowAggregateExec`] (tumbling and sliding windows) and [`SessionWindowExec`] aggregate
//! per event-time window with DataFusion's accumulators.

mod aggregate;
mod constant;
mod limit;
mod lookup_join;
mod over_window;
mod session_window;
mod sliding;
mod sort;
mod stateless;
mod stream_join;
mod window_aggregate;

pub use aggregate::AggregateSpec;
pub use constant::ConstantExec;
pub use limit::LimitExec;
pub use lookup_join::{LookupJoinExec, LookupKind, StreamSide};
pub use over_window::{FrameNeeds, OverFunction, OverWindowExec};
pub use session_window::SessionWindowExec;
pub use sliding::{SlidingAggregate, SlidingFrame, SlidingKind};
pub use sort::{SortExec, SortKey, SortMode};
pub use stateless::{FilterExec, ProjectionExec};
pub use stream_join::{JoinSide, JoinTime, Ordered, StreamJoinExec, StreamJoinSpec};
pub use window_aggregate::{FixedWindows, Grouping, WindowAggregateExec};

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, VeloError};

/// Event time in milliseconds since the epoch; [`Watermark::END`] closes everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark(pub i64);

impl Watermark {
    /// The watermark of an input that has ended: every window closes.
    pub const END: Watermark = Watermark(i64::MAX);
}

/// One step of a streaming query.
pub trait StreamOperator: Send {
    /// A short name for logs and errors, e.g. `FilterExec`.
    fn name(&self) -> &'static str;

    /// Processes one batch, returning what it emits now.
    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>>;

    /// How many inputs the operator reads (a join of two streams reads several; the others one).
    fn inputs(&self) -> usize {
        1
    }

    /// Processes one batch of input `input` (see [`StreamOperator::inputs`]).
    fn process_input(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if input != 0 {
            return Err(VeloError::Execution(format!(
                "{} has one input, not input {input}",
                self.name()
            )));
        }
        self.process(batch)
    }

    /// The watermark advanced to `watermark`: emit what it closes.
    fn on_watermark(&mut self, _watermark: Watermark) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// The operator's state as Arrow batches (empty for stateless operators). Takes `&mut`
    /// because reading accumulator state out may consume and rebuild it.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Restores state taken by [`StreamOperator::snapshot`].
    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        if state.iter().any(|b| b.num_rows() > 0) {
            return Err(VeloError::Execution(format!(
                "{} is stateless but was given state to restore",
                self.name()
            )));
        }
        Ok(())
    }

    /// True when the operator will emit nothing more whatever comes (a reached LIMIT).
    fn is_finished(&self) -> bool {
        false
    }

    /// True when an input row's effect may stay in this operator's state after its batch is
    /// processed (windows, sessions, OVER history, join sides, a LIMIT's count): the job may
    /// then acknowledge its input only with checkpoints holding that state.
    fn holds_input(&self) -> bool {
        false
    }

    /// Counters and state size (zero for stateless operators).
    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics::default()
    }

    /// The late rows dropped since the last call (input rows of this operator), for a late-data
    /// destination. Operators keep them only after [`StreamOperator::keep_late_rows`].
    fn drain_late_rows(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }

    /// Asks the operator to keep the late rows it drops, for [`StreamOperator::drain_late_rows`].
    fn keep_late_rows(&mut self) {}

    /// The rows an expression of this operator could not evaluate since the last call (they
    /// were left out of its output).
    fn drain_row_errors(&mut self) -> Vec<RowError> {
        Vec::new()
    }

    /// The rows operator chains nested in this one (a join's branches) could not evaluate since
    /// the last call, as those chains report them (inputs numbered as this operator's).
    fn drain_nested_row_errors(&mut self) -> Vec<PipelineRowError> {
        Vec::new()
    }

    /// When this operator's work on a batch can be split into partial results, each made from
    /// a contiguous part of the batch (on a lane of its own, by a copy of this operator: see
    /// [`StreamOperator::partial`]) and merged here in order with the same outcome — rows
    /// emitted, state, counters, errors — the watermark those parts are to be made against
    /// (this operator's now). `None` (the default): it cannot.
    fn partial_watermark(&self) -> Option<i64> {
        None
    }

    /// The partial result of `batch` (a part of a batch, its rows in order) against
    /// `watermark` (see [`StreamOperator::partial_watermark`]). Changes nothing here.
    fn partial(&self, _watermark: i64, _batch: &RecordBatch) -> Result<Partial> {
        Err(VeloError::Execution(format!(
            "{} has no partial results",
            self.name()
        )))
    }

    /// Merges the partial results of a batch's parts, in the parts' order, as
    /// [`StreamOperator::process`] would have processed the whole batch: returns what it emits.
    fn merge_partials(&mut self, _partials: Vec<Partial>) -> Result<Vec<RecordBatch>> {
        Err(VeloError::Execution(format!(
            "{} has no partial results",
            self.name()
        )))
    }

    /// This operator as a join of streams, for running its copies on several lanes.
    fn as_stream_join(&self) -> Option<&StreamJoinExec> {
        None
    }

    /// This operator as a lookup join, for sharing its table.
    fn as_lookup_join(&self) -> Option<&LookupJoinExec> {
        None
    }

    /// Makes this operator, a copy planned for a further lane, share with `first` (the first
    /// lane's copy) what the copies only read: a lookup join's table, held once per job. An
    /// error when `first` is not the same operator.
    fn share_with(&mut self, _first: &dyn StreamOperator) -> Result<()> {
        Ok(())
    }

    /// This operator as a join of streams, to run.
    fn as_stream_join_mut(&mut self) -> Option<&mut StreamJoinExec> {
        None
    }

    /// How the rows of the last output map to the rows of the last input (see [`RowMapping`]).
    fn row_mapping(&self) -> RowMapping {
        RowMapping::Lost
    }

    /// True when each output row comes from one input row and in input order, whatever came
    /// before (filters, projections): the operator may run on any cut of its input.
    fn row_wise(&self) -> bool {
        false
    }

    /// The expressions (over the operator's input) its state is keyed by, when every key's
    /// rows may be processed apart from the others' (GROUP BY keys, OVER's PARTITION BY): `None` when the state is
    /// one whole (a global aggregate, a LIMIT, a join of streams). An operator giving keys
    /// gives an [`StreamOperator::emission_order`] too.
    fn partition_keys(&self) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
        None
    }

    /// The columns the rows of an emitted `batch` are ordered by (see [`order_rows`]): the
    /// operator emits in this order, so that what copies of it emit on several lanes merges
    /// back into exactly what one emits.
    fn emission_order(&self, _batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        Ok(Vec::new())
    }

    /// The column of an emitted `batch` (in emission order) whose runs of equal values are the
    /// batches one copy emits in one call: a window aggregate emits a batch per window. `None`:
    /// one batch per call. What copies on several lanes emit is cut back into these batches,
    /// so the operators after it see exactly the batches one copy's would.
    fn emission_unit(&self, _batch: &RecordBatch) -> Result<Option<ArrayRef>> {
        Ok(None)
    }

    /// Applies changes of the table fed as `feed` (see [`crate::planner::TableFeed`]):
    /// `upserts` (rows of the table's columns) replace the rows with the same key, `deletes`
    /// remove the rows whose key column reads as one of these keys. Returns false when the
    /// operator does not hold that table (only a [`LookupJoinExec`] does).
    fn apply_table_changes(
        &mut self,
        _feed: usize,
        _upserts: &RecordBatch,
        _deletes: &[String],
    ) -> Result<bool> {
        Ok(false)
    }
}

/// A row an operator's expression could not evaluate (a failing cast, a division by zero):
/// left out of the output and reported, never silently dropped.
#[derive(Debug, Clone)]
pub struct RowError {
    /// The row's index in the operator's input batch.
    pub input_row: usize,
    /// The row (one row of the operator's input).
    pub row: RecordBatch,
    pub reason: String,
}

/// An operator's work on part of a batch, made on a lane of its own, to be merged by the copy
/// that holds the state (see [`StreamOperator::partial`]).
#[derive(Default)]
pub struct Partial {
    /// State to merge, in the operator's checkpoint layout.
    pub states: Vec<RecordBatch>,
    /// The part's late rows (dropped, for a late-data destination).
    pub late: Option<RecordBatch>,
    /// Late and NULL-time rows counted.
    pub metrics: OperatorMetrics,
    /// Rows that could not be evaluated (`input_row`: the row in the part), reported by whoever
    /// merges the partials (a merge does not report them).
    pub errors: Vec<RowError>,
}

/// `error` of `op` at position `step`, as the pipeline reports a row its input row `origin`.
fn row_error_at(op: &dyn StreamOperator, step: usize, error: RowError) -> PipelineRowError {
    PipelineRowError {
        operator: op.name(),
        step,
        input: 0,
        origin: Some(error.input_row),
        row: error.row,
        reason: error.reason,
    }
}

/// How an operator's output rows relate to its input rows, for tracing a failing row back to
/// the record it came from.
#[derive(Debug, Clone)]
pub enum RowMapping {
    /// Output row i is input row i (a projection where every row evaluated).
    Same,
    /// The output holds the input rows this mask selects, in order (a filter).
    Kept(arrow::array::BooleanArray),
    /// No row-to-row correspondence (aggregates, joins, windows).
    Lost,
}

/// A [`RowError`] as the pipeline reports it: which operator, and the pipeline-input row it
/// came from when that can be traced (only through filters and projections).
#[derive(Debug, Clone)]
pub struct PipelineRowError {
    pub operator: &'static str,
    /// The operator's position in the pipeline (for the rows of a join's branches, the
    /// join's): one lane reports a batch's errors operator by operator, and the lanes' are put
    /// back in that order (see [`order_row_errors`]).
    pub step: usize,
    /// The pipeline input (stream) the traced row came from.
    pub input: usize,
    /// The row's index in that input's batch, when traced.
    pub origin: Option<usize>,
    pub row: RecordBatch,
    pub reason: String,
}

/// What an operator counts and holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OperatorMetrics {
    /// Rows dropped because their window had closed.
    pub late_rows: u64,
    /// Rows dropped because their event time was NULL.
    pub null_time_rows: u64,
    /// Rows of state held now (groups of open windows, open sessions).
    pub state_rows: u64,
    /// Bytes of state held now, as the accumulators and group tables report them.
    pub state_bytes: u64,
}

/// The event-time progress and counters every windowed operator snapshots: one row of
/// `watermark`, `late_rows`, `null_time_rows`.
pub(crate) fn counters_batch(watermark: i64, metrics: &OperatorMetrics) -> Result<RecordBatch> {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![
            Field::new("watermark", DataType::Int64, false),
            Field::new("late_rows", DataType::Int64, false),
            Field::new("null_time_rows", DataType::Int64, false),
        ])),
        vec![
            std::sync::Arc::new(Int64Array::from(vec![watermark])),
            std::sync::Arc::new(Int64Array::from(vec![metrics.late_rows as i64])),
            std::sync::Arc::new(Int64Array::from(vec![metrics.null_time_rows as i64])),
        ],
    )?)
}

/// Reads a [`counters_batch`] back into the watermark and the counters.
pub(crate) fn read_counters(batch: &RecordBatch, metrics: &mut OperatorMetrics) -> Result<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    if batch.num_columns() != 3 || batch.num_rows() != 1 {
        return Err(VeloError::Execution(
            "operator counters must be one row of three columns".into(),
        ));
    }
    let get = |i: usize| batch.column(i).as_primitive::<Int64Type>().value(0);
    metrics.late_rows = get(1) as u64;
    metrics.null_time_rows = get(2) as u64;
    Ok(get(0))
}

/// Late rows an operator keeps for a late-data destination, once asked to.
#[derive(Debug, Default)]
pub(crate) struct LateRows(Option<Vec<RecordBatch>>);

impl LateRows {
    /// From now on, keep late rows.
    pub(crate) fn keep(&mut self) {
        self.0.get_or_insert_with(Vec::new);
    }

    /// Keeps the rows `indices` of `batch`, if late rows are kept.
    pub(crate) fn push(&mut self, batch: &RecordBatch, indices: Vec<u32>) -> Result<()> {
        if let (Some(kept), false) = (self.0.as_mut(), indices.is_empty()) {
            kept.push(arrow::compute::take_record_batch(
                batch,
                &arrow::array::UInt32Array::from(indices),
            )?);
        }
        Ok(())
    }

    /// The rows kept since the last call.
    pub(crate) fn drain(&mut self) -> Vec<RecordBatch> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl std::ops::Add for OperatorMetrics {
    type Output = OperatorMetrics;
    fn add(self, o: OperatorMetrics) -> OperatorMetrics {
        OperatorMetrics {
            late_rows: self.late_rows + o.late_rows,
            null_time_rows: self.null_time_rows + o.null_time_rows,
            state_rows: self.state_rows + o.state_rows,
            state_bytes: self.state_bytes + o.state_bytes,
        }
    }
}

/// A chain of operators; the output of one is the input of the next.
#[derive(Default)]
pub struct Pipeline {
    operators: Vec<Box<dyn StreamOperator>>,
    /// Rows operators could not evaluate, since the last [`Pipeline::take_row_errors`].
    row_errors: Vec<PipelineRowError>,
    /// How the rows the last [`Pipeline::process_until`] gave map to its input rows, when
    /// each can be traced (see [`Pipeline::take_trace`]).
    trace: Option<Vec<BooleanArray>>,
}

/// `batch`'s rows ordered by `columns` (one per row each): ascending, NULLs first, in the
/// byte order of arrow's row format; rows that tie keep their order.
pub(crate) fn order_rows(batch: &RecordBatch, columns: &[ArrayRef]) -> Result<RecordBatch> {
    if batch.num_rows() < 2 || columns.is_empty() {
        return Ok(batch.clone());
    }
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(columns)?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    if order.iter().enumerate().all(|(i, &row)| i as u32 == row) {
        return Ok(batch.clone());
    }
    Ok(arrow::compute::take_record_batch(
        batch,
        &UInt32Array::from(order),
    )?)
}

/// The errors of the chains nested in the operator at `step` (a join's branches), as that
/// operator's.
fn nested_at(step: usize, errors: Vec<PipelineRowError>) -> Vec<PipelineRowError> {
    errors
        .into_iter()
        .map(|e| PipelineRowError { step, ..e })
        .collect()
}

/// Puts row errors gathered from a batch's ranges (each range's errors operator by operator)
/// in the order one lane reports the whole batch's: operator by operator, each operator's in
/// the order they came (range by range: row order).
pub fn order_row_errors(errors: &mut [PipelineRowError]) {
    errors.sort_by_key(|e| e.step);
}

/// Row `row` of a batch that went through `masks` (in order) as a row of the batch before them.
pub(crate) fn trace_back(masks: &[arrow::array::BooleanArray], mut row: usize) -> Option<usize> {
    for mask in masks.iter().rev() {
        row = mask.values().set_indices().nth(row)?;
    }
    Some(row)
}

impl Pipeline {
    /// Appends an operator at the end of the chain.
    pub fn push(&mut self, operator: Box<dyn StreamOperator>) {
        self.operators.push(operator);
    }

    /// Operator names, source side first.
    pub fn describe(&self) -> Vec<&'static str> {
        self.operators.iter().map(|o| o.name()).collect()
    }

    fn run_range(
        &mut self,
        first: usize,
        end: usize,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut current = batches;
        for (step, op) in self.operators[..end].iter_mut().enumerate().skip(first) {
            let mut next = Vec::new();
            for batch in current {
                next.extend(op.process(batch)?);
                for e in op.drain_row_errors() {
                    self.row_errors.push(PipelineRowError {
                        operator: op.name(),
                        step,
                        input: 0,
                        origin: None,
                        row: e.row,
                        reason: e.reason,
                    });
                }
                self.row_errors
                    .extend(nested_at(step, op.drain_nested_row_errors()));
            }
            current = next;
        }
        Ok(current.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// The rows operators could not evaluate since the last call.
    pub fn take_row_errors(&mut self) -> Vec<PipelineRowError> {
        std::mem::take(&mut self.row_errors)
    }

    /// Runs one input batch through every operator.
    pub fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.process_input(0, batch)
    }

    /// How many inputs the pipeline reads: those of its first operator (a stream join reads
    /// two or more, a query of constants none), else one.
    pub fn inputs(&self) -> usize {
        self.operators.first().map_or(1, |o| o.inputs())
    }

    /// True when every operator is row-wise (see [`StreamOperator::row_wise`]): any cut of
    /// the input gives the same rows in the same order.
    pub fn is_row_wise(&self) -> bool {
        self.operators.iter().all(|o| o.row_wise())
    }

    /// The index of the first operator that is not row-wise, if any.
    pub fn first_stateful(&self) -> Option<usize> {
        self.operators.iter().position(|o| !o.row_wise())
    }

    /// Where the pipeline may be split by key: the index of its first stateful operator and
    /// its key expressions over that operator's input, when it is keyed, the operators before
    /// it are row-wise, the pipeline reads one input, and no key is volatile (`random()`: a
    /// row's key must come out the same when the exchange computes it and when the operator
    /// does). The operators after it, stateful ones too (a second GROUP BY, an ORDER BY), run
    /// on the first lane only, fed exactly the batches one copy emits (see
    /// [`Pipeline::merge_emitted`]).
    pub fn exchange_point(&self) -> Option<(usize, Vec<Arc<dyn PhysicalExpr>>)> {
        if self.inputs() != 1 {
            return None;
        }
        let at = self.first_stateful()?;
        let keys = self.operators[at].partition_keys()?;
        let stable = !keys
            .iter()
            .any(datafusion::physical_expr_common::physical_expr::is_volatile);
        (stable && !keys.is_empty()).then_some((at, keys))
    }

    /// True when the pipeline opens with a join of streams whose copies may run on several
    /// lanes, each with some keys' rows (see [`StreamJoinExec::splits_by_key`]).
    pub fn splits_join(&self) -> bool {
        self.operators
            .first()
            .and_then(|o| o.as_stream_join())
            .is_some_and(StreamJoinExec::splits_by_key)
    }

    /// The join of streams heading the pipeline.
    pub fn stream_join(&self) -> Option<&StreamJoinExec> {
        self.operators.first()?.as_stream_join()
    }

    /// The join of streams heading the pipeline, to run.
    pub fn stream_join_mut(&mut self) -> Option<&mut StreamJoinExec> {
        self.operators.first_mut()?.as_stream_join_mut()
    }

    /// Runs a batch of input `input` through its side's branch of the join heading the
    /// pipeline: the rows arriving at the join (see [`StreamJoinExec::enter`]). What the
    /// branch could not evaluate is kept with the pipeline's row errors.
    pub fn enter_join(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.enter_join_until(input, batch, usize::MAX)
    }

    /// [`Pipeline::enter_join`] through the branch's operators before `end` only. The branch's
    /// trace of its rows is the pipeline's (see [`Pipeline::take_trace`]).
    pub fn enter_join_until(
        &mut self,
        input: usize,
        batch: RecordBatch,
        end: usize,
    ) -> Result<Vec<RecordBatch>> {
        let (trace, arrived) = self.on_join(|join| {
            let (side, arrived) = join.enter_until(input, batch, end)?;
            Ok((join.branch_mut(side).take_trace(), arrived))
        })?;
        self.trace = trace;
        Ok(arrived.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Runs `work` on the join of streams heading the pipeline; what its branches could not
    /// evaluate meanwhile is kept with the pipeline's row errors.
    pub fn on_join<R>(&mut self, work: impl FnOnce(&mut StreamJoinExec) -> Result<R>) -> Result<R> {
        let join = self.stream_join_mut().ok_or_else(|| {
            VeloError::Execution("the pipeline does not open with a join of streams".into())
        })?;
        let out = work(join);
        // The join heads the pipeline: step 0, as `process_until` gives them.
        let errors = nested_at(0, join.drain_nested_row_errors());
        self.row_errors.extend(errors);
        out
    }

    /// Runs one batch of input `input` through every operator.
    pub fn process_input(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.process_until(input, batch, self.operators.len())
    }

    /// Runs the rows operator `first` receives through the operators from `first` to before
    /// `end`: what the one before `end` emits comes out.
    pub fn process_range(
        &mut self,
        first: usize,
        end: usize,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let end = end.min(self.operators.len());
        self.run_range(first, end, batches)
    }

    /// Puts what copies of operator `at` emitted in one call (on several lanes) into the order
    /// one copy emits it in, in the batches one copy emits (see
    /// [`StreamOperator::emission_order`], [`StreamOperator::emission_unit`]).
    pub fn merge_emitted(&self, at: usize, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        if batches.len() < 2 {
            return Ok(batches);
        }
        let operator = &self.operators[at];
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
        let ordered = order_rows(&all, &operator.emission_order(&all)?)?;
        let Some(unit) = operator.emission_unit(&ordered)? else {
            return Ok(vec![ordered]);
        };
        let rows = RowConverter::new(vec![SortField::new(unit.data_type().clone())])?
            .convert_columns(&[unit])?;
        let mut out = Vec::new();
        let mut start = 0;
        for row in 1..=ordered.num_rows() {
            if row == ordered.num_rows() || rows.row(row) != rows.row(start) {
                out.push(ordered.slice(start, row - start));
                start = row;
            }
        }
        Ok(out)
    }

    /// Runs one batch of input `input` through the operators before `end`; what the operator
    /// before `end` emits comes out.
    pub fn process_until(
        &mut self,
        input: usize,
        batch: RecordBatch,
        end: usize,
    ) -> Result<Vec<RecordBatch>> {
        let end = end.min(self.operators.len());
        self.trace = None;
        let Some(first) = self.operators[..end].first_mut() else {
            if input != 0 {
                return Err(VeloError::Execution(format!("no input {input}")));
            }
            self.trace = Some(Vec::new());
            return Ok(vec![batch]
                .into_iter()
                .filter(|b| b.num_rows() > 0)
                .collect());
        };
        // Through the leading filters and projections each row is traced back to its input
        // row (masks kept, nothing computed unless a row fails).
        let mut masks: Option<Vec<arrow::array::BooleanArray>> = Some(Vec::new());
        let mut current = first.process_input(input, batch)?;
        let mut k = 0;
        loop {
            let op = &mut self.operators[k];
            // A join's branches read the pipeline's inputs: their errors are traced already.
            self.row_errors
                .extend(nested_at(k, op.drain_nested_row_errors()));
            for e in op.drain_row_errors() {
                let origin = masks.as_deref().and_then(|m| trace_back(m, e.input_row));
                self.row_errors.push(PipelineRowError {
                    operator: op.name(),
                    step: k,
                    input,
                    origin,
                    row: e.row,
                    reason: e.reason,
                });
            }
            masks = match (masks, op.row_mapping()) {
                (Some(m), RowMapping::Same) => Some(m),
                (Some(mut m), RowMapping::Kept(mask)) => {
                    m.push(mask);
                    Some(m)
                }
                _ => None,
            };
            k += 1;
            if masks.is_none() || k == end || current.len() != 1 {
                break;
            }
            let batch = current.pop().expect("one batch");
            current = self.operators[k].process(batch)?;
        }
        if k == end {
            if current.len() <= 1 {
                self.trace = masks;
            }
            return Ok(current.into_iter().filter(|b| b.num_rows() > 0).collect());
        }
        self.run_range(k, end, current)
    }

    /// How each row the last [`Pipeline::process_until`] gave maps to a row of its input: the
    /// masks of the filters it went through (see [`trace_back`]), when every operator before
    /// its end kept its rows traceable and it gave at most one batch; `None` otherwise.
    pub fn take_trace(&mut self) -> Option<Vec<BooleanArray>> {
        self.trace.take()
    }

    /// Runs `batch` (at most one) through operator `at` alone; what it emits, and the rows it
    /// could not evaluate, each with its index in `batch` as its `origin` (for the caller to
    /// trace back to its record).
    pub fn process_at(
        &mut self,
        at: usize,
        batch: Option<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, Vec<PipelineRowError>)> {
        let op = &mut self.operators[at];
        let out = match batch {
            Some(batch) => op.process(batch)?,
            None => Vec::new(),
        };
        let errors = op
            .drain_row_errors()
            .into_iter()
            .map(|e| row_error_at(op.as_ref(), at, e))
            .collect();
        let nested = nested_at(at, op.drain_nested_row_errors());
        self.row_errors.extend(nested);
        Ok((out, errors))
    }

    /// Operator `at`'s watermark for partial results, when its work splits into them (see
    /// [`StreamOperator::partial_watermark`]).
    pub fn partial_watermark(&self, at: usize) -> Option<i64> {
        self.operators.get(at)?.partial_watermark()
    }

    /// Operator `at`'s partial result of `batches` (a part of a batch, against `watermark`),
    /// its rows that failed reported as [`Pipeline::process_at`] reports them (`origin`: the
    /// row among `batches`' rows); `None` when they hold no row.
    pub fn partial_at(
        &self,
        at: usize,
        watermark: i64,
        batches: &[RecordBatch],
    ) -> Result<Option<(Partial, Vec<PipelineRowError>)>> {
        let Some(first) = batches.first() else {
            return Ok(None);
        };
        let batch = match batches {
            [one] => one.clone(),
            _ => arrow::compute::concat_batches(&first.schema(), batches)?,
        };
        let op = &self.operators[at];
        let mut partial = op.partial(watermark, &batch)?;
        let errors = std::mem::take(&mut partial.errors)
            .into_iter()
            .map(|e| row_error_at(op.as_ref(), at, e))
            .collect();
        Ok(Some((partial, errors)))
    }

    /// Merges partial results into operator `at` (see [`StreamOperator::merge_partials`]).
    pub fn merge_partials_at(
        &mut self,
        at: usize,
        partials: Vec<Partial>,
    ) -> Result<Vec<RecordBatch>> {
        self.operators[at].merge_partials(partials)
    }

    /// Advances the watermark through the chain; what an operator emits flows downstream.
    pub fn advance_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.advance_watermark_range(0, self.operators.len(), watermark)
    }

    /// Advances the watermark through the operators from `first` to before `end`; what one
    /// emits flows on up to `end`.
    pub fn advance_watermark_range(
        &mut self,
        first: usize,
        end: usize,
        watermark: Watermark,
    ) -> Result<Vec<RecordBatch>> {
        let end = end.min(self.operators.len());
        let mut out = Vec::new();
        for i in first..end {
            let emitted = self.operators[i].on_watermark(watermark)?;
            let nested = nested_at(i, self.operators[i].drain_nested_row_errors());
            self.row_errors.extend(nested);
            if !emitted.is_empty() {
                let downstream = self.run_range(i + 1, end, emitted)?;
                // Downstream operators see the flushed rows before the watermark reaches them.
                out.extend(downstream);
            }
        }
        Ok(out)
    }

    /// True when some operator can emit nothing more (the query is complete).
    pub fn is_finished(&self) -> bool {
        self.operators.iter().any(|o| o.is_finished())
    }

    /// The sum of every operator's metrics.
    pub fn metrics(&self) -> OperatorMetrics {
        self.operators
            .iter()
            .map(|o| o.metrics())
            .fold(OperatorMetrics::default(), |a, b| a + b)
    }

    /// The operator holding the most state bytes, and how many.
    pub fn largest_state(&self) -> Option<(&'static str, u64)> {
        self.operators
            .iter()
            .map(|o| (o.name(), o.metrics().state_bytes))
            .max_by_key(|(_, bytes)| *bytes)
    }

    /// Late rows every operator dropped since the last call.
    pub fn drain_late_rows(&mut self) -> Vec<RecordBatch> {
        self.operators
            .iter_mut()
            .flat_map(|o| o.drain_late_rows())
            .collect()
    }

    /// Makes every operator keep its late rows.
    pub fn keep_late_rows(&mut self) {
        self.operators.iter_mut().for_each(|o| o.keep_late_rows());
    }

    /// Applies changes of the table fed as `feed` (see [`StreamOperator::apply_table_changes`]);
    /// false when no operator holds it.
    pub fn apply_table_changes(
        &mut self,
        feed: usize,
        upserts: &RecordBatch,
        deletes: &[String],
    ) -> Result<bool> {
        for op in &mut self.operators {
            if op.apply_table_changes(feed, upserts, deletes)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes this pipeline, a copy of `first` planned for a further lane, share with it what
    /// their operators only read (see [`StreamOperator::share_with`]).
    pub fn share_with(&mut self, first: &Pipeline) -> Result<()> {
        if self.describe() != first.describe() {
            return Err(VeloError::Execution(format!(
                "a lane's copy of the query was planned as [{}], the first lane's as [{}]",
                self.describe().join(", "),
                first.describe().join(", ")
            )));
        }
        for (op, theirs) in self.operators.iter_mut().zip(&first.operators) {
            op.share_with(theirs.as_ref())?;
        }
        Ok(())
    }

    /// Number of operators.
    pub fn len(&self) -> usize {
        self.operators.len()
    }

    /// True when the pipeline has no operator.
    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// Every operator's state, in chain order.
    pub fn snapshot(&mut self) -> Result<Vec<Vec<RecordBatch>>> {
        self.operators.iter_mut().map(|o| o.snapshot()).collect()
    }

    /// Every operator's name and state, in chain order (for checkpoints).
    pub fn snapshot_named(&mut self) -> Result<Vec<(&'static str, Vec<RecordBatch>)>> {
        self.operators
            .iter_mut()
            .map(|o| Ok((o.name(), o.snapshot()?)))
            .collect()
    }

    /// Restores states taken by [`Pipeline::snapshot_named`], checking they belong to the same
    /// chain of operators.
    pub fn restore_named(&mut self, states: &[(String, Vec<RecordBatch>)]) -> Result<()> {
        let ours = self.describe();
        let theirs: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
        if ours != theirs {
            return Err(VeloError::State(format!(
                "the checkpoint holds the state of operators [{}], this query has [{}]",
                theirs.join(", "),
                ours.join(", ")
            )));
        }
        for (op, (_, state)) in self.operators.iter_mut().zip(states) {
            op.restore(state)?;
        }
        Ok(())
    }

    /// True when some operator may hold the effect of an input row after its batch (see
    /// [`StreamOperator::holds_input`]).
    pub fn holds_input(&self) -> bool {
        self.operators.iter().any(|o| o.holds_input())
    }

    /// Restores the states taken by [`Pipeline::snapshot`].
    pub fn restore(&mut self, states: &[Vec<RecordBatch>]) -> Result<()> {
        if states.len() != self.operators.len() {
            return Err(VeloError::Execution(format!(
                "snapshot has {} operator states, the pipeline {} operators",
                states.len(),
                self.operators.len()
            )));
        }
        for (op, state) in self.operators.iter_mut().zip(states) {
            op.restore(state)?;
        }
        Ok(())
    }
}
