//! `WindowAggregateExec`: GROUP BY over tumbling and sliding (hopping) event-time windows, and
//! GROUP BY without a window (an updating aggregate: one window that never closes), and GROUP BY
//! a window bound of the window aggregate below (a cascaded window: groups close with the
//! window their key names).
//!
//! State is one group table per open window (DataFusion's `GroupValues`, Arrow row format) with
//! one `GroupsAccumulator` per aggregate, so a batch updates its windows column-at-a-time.
//! - `EMIT FINAL`: a window emits its rows once, when the watermark passes its end; its state
//!   is then dropped. Without a window, the rows are emitted when the input ends.
//! - `EMIT CHANGES`: after every batch, the current row of each group the batch changed is
//!   emitted (reading current values costs a pass over the window's accumulator states); a
//!   window then closes silently.
//!
//! A row whose every window has already closed is late: dropped and counted. A row with a NULL
//! event time is dropped and counted too.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, Int8Array, RecordBatch,
    RecordBatchOptions, UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use velo_udfs::window::window_struct;

use super::aggregate::AggregateSpec;
use super::{
    counters_batch, order_rows, read_counters, LateRows, OperatorMetrics, Partial, RowError,
    StreamOperator, Watermark,
};
use crate::error::{Result, VeloError};
use crate::sql::window::EmitMode;

/// Tumbling (`slide == size`) or sliding windows, aligned to the epoch, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindows {
    pub size: i64,
    pub slide: i64,
}

impl FixedWindows {
    /// Whether every window holding time `t` has a start and an end that fit in an `i64`
    /// (checked before [`FixedWindows::starts`]; conservative by one size and one slide).
    pub fn fits(&self, t: i64) -> bool {
        let reach = self.size.saturating_add(self.slide);
        t.checked_sub(reach).is_some() && t.checked_add(reach).is_some()
    }

    /// Starts of the windows holding time `t`, latest first (`t` must [`FixedWindows::fits`]).
    fn starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = t - t.rem_euclid(self.slide);
        (0..)
            .map(move |i| last - i * self.slide)
            .take_while(move |s| *s > t - self.size)
    }
}

/// The error of row `row` (event time `t`) whose window of `span` ms would start or end outside
/// the timestamp range.
pub(crate) fn window_overflow(batch: &RecordBatch, row: usize, t: i64, span: i64) -> RowError {
    RowError {
        input_row: row,
        row: batch.slice(row, 1),
        reason: format!(
            "the event time {t} ms is too close to the end of the timestamp range for a window \
             of {span} ms"
        ),
    }
}

/// What the grouping looks like: key expressions and where the window column sits among the
/// GROUP BY outputs.
pub struct Grouping {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub key_fields: Vec<Field>,
    /// Index of the window struct among the GROUP BY expressions (the output columns); `None`
    /// for a GROUP BY without a window.
    pub window_position: Option<usize>,
}

impl Grouping {
    /// The GROUP BY columns of an output batch in emission order: what `window` (the window
    /// column, when there is one) gives, then the keys.
    pub(crate) fn ordered_columns(
        &self,
        batch: &RecordBatch,
        window: impl Fn(&ArrayRef) -> Vec<ArrayRef>,
    ) -> Vec<ArrayRef> {
        let groups = self.key_fields.len() + usize::from(self.window_position.is_some());
        let mut columns = match self.window_position {
            Some(w) => window(batch.column(w)),
            None => Vec::new(),
        };
        columns.extend(
            (0..groups)
                .filter(|i| Some(*i) != self.window_position)
                .map(|i| batch.column(i).clone()),
        );
        columns
    }
}

/// Rows to windows: window start (a cascaded window's end) → the rows' indices, in order.
type Assignment = BTreeMap<i64, Vec<u32>>;

struct WindowState {
    groups: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

/// GROUP BY over tumbling or sliding windows, or without a window.
pub struct WindowAggregateExec {
    /// `None`: no window, every row in one group table that never closes.
    windows: Option<FixedWindows>,
    /// The event time (`None` without a window).
    time: Option<Arc<dyn PhysicalExpr>>,
    /// Without a window of its own: the key (index into `grouping.keys`) holding a window
    /// bound of the rows below, and the ms that take it to the window's end. Rows are then
    /// grouped per window end, and a window's groups are emitted when the watermark passes it.
    closing: Option<(usize, i64)>,
    emit: EmitMode,
    grouping: Grouping,
    /// Schema of the interned keys (a constant column when there are no keys).
    key_schema: SchemaRef,
    aggregates: Vec<AggregateSpec>,
    output_schema: SchemaRef,
    open: BTreeMap<i64, WindowState>,
    watermark: i64,
    metrics: OperatorMetrics,
    /// Late rows kept for a late-data destination.
    late: LateRows,
    /// Rows whose windows would fall outside the timestamp range, since the last drain.
    errors: Vec<RowError>,
    /// Every aggregate's state merges to the same value however the rows are grouped: COUNT,
    /// SUM, AVG, MIN, MAX without DISTINCT or ORDER BY and without floating-point state (a
    /// floating-point sum depends on the order it adds in).
    merges_exactly: bool,
}

impl WindowAggregateExec {
    /// A window aggregate producing `output_schema` (GROUP BY columns, then aggregates).
    /// `windows` and `time` go together: both `Some`, or both `None` for no window.
    pub fn new(
        windows: Option<(FixedWindows, Arc<dyn PhysicalExpr>)>,
        emit: EmitMode,
        grouping: Grouping,
        aggregates: Vec<AggregateSpec>,
        output_schema: SchemaRef,
    ) -> Self {
        let key_schema = key_schema(&grouping.key_fields);
        let merges_exactly = aggregates.iter().all(|a| {
            let f = &a.function;
            matches!(f.fun().name(), "count" | "sum" | "avg" | "min" | "max")
                && !f.is_distinct()
                && f.order_bys().is_empty()
                && f.state_fields()
                    .is_ok_and(|fields| fields.iter().all(|field| !field.data_type().is_floating()))
        });
        let (windows, time) = match windows {
            Some((w, t)) => (Some(w), Some(t)),
            None => (None, None),
        };
        Self {
            windows,
            time,
            closing: None,
            emit,
            grouping,
            key_schema,
            aggregates,
            output_schema,
            open: BTreeMap::new(),
            watermark: i64::MIN,
            metrics: OperatorMetrics::default(),
            late: LateRows::default(),
            errors: Vec::new(),
            merges_exactly,
        }
    }

    /// A cascaded window (see [`WindowAggregateExec::closing`]): key `key` plus `offset_ms`
    /// is the end of the window each row belongs to. Only for an aggregate without a window.
    pub fn closing_with(mut self, key: usize, offset_ms: i64) -> Self {
        debug_assert!(self.windows.is_none() && key < self.grouping.keys.len());
        self.closing = Some((key, offset_ms));
        self
    }

    /// Counters, with the state size measured now.
    fn measure(&self) -> OperatorMetrics {
        let mut m = self.metrics;
        m.state_rows = self.open.values().map(|w| w.groups.len() as u64).sum();
        m.state_bytes = self
            .open
            .values()
            .map(|w| {
                (w.groups.size() + w.accumulators.iter().map(|a| a.size()).sum::<usize>()) as u64
            })
            .sum();
        m
    }

    fn new_state(&self) -> Result<WindowState> {
        Ok(WindowState {
            groups: new_group_values(self.key_schema.clone(), &GroupOrdering::None)?,
            accumulators: self
                .aggregates
                .iter()
                .map(|a| a.groups_accumulator())
                .collect::<Result<_>>()?,
        })
    }

    /// Which windows each row of `batch` belongs to (start, or a cascaded window's end → rows,
    /// in order) with windows closed at `watermark` left out, and the rows all of whose windows
    /// had closed (late). Late and NULL-time rows are counted in `metrics`; rows whose windows
    /// would leave the timestamp range are added to `errors`.
    fn assign(
        &self,
        batch: &RecordBatch,
        watermark: i64,
        metrics: &mut OperatorMetrics,
        errors: &mut Vec<RowError>,
    ) -> Result<(Assignment, Vec<u32>)> {
        let rows = batch.num_rows();
        let mut assignment = Assignment::new();
        let mut late_rows: Vec<u32> = Vec::new();
        match (&self.windows, &self.time) {
            (Some(windows), Some(time)) => {
                let times = evaluate_time(time, batch)?;
                let times = times.as_primitive::<TimestampMillisecondType>();
                for row in 0..rows {
                    if times.is_null(row) {
                        metrics.null_time_rows += 1;
                        continue;
                    }
                    let t = times.value(row);
                    if !windows.fits(t) {
                        errors.push(window_overflow(batch, row, t, windows.size));
                        continue;
                    }
                    let mut placed = false;
                    for start in windows.starts(t) {
                        if start + windows.size <= watermark {
                            continue; // this window has closed
                        }
                        assignment.entry(start).or_default().push(row as u32);
                        placed = true;
                    }
                    if !placed {
                        metrics.late_rows += 1;
                        late_rows.push(row as u32);
                    }
                }
            }
            _ => match self.closing {
                Some((key, offset)) => {
                    let ends = window_end(&self.grouping.keys[key], batch)?;
                    let ends = ends.as_primitive::<TimestampMillisecondType>();
                    for row in 0..rows {
                        if ends.is_null(row) {
                            metrics.null_time_rows += 1;
                            continue;
                        }
                        let end = ends.value(row).saturating_add(offset);
                        if end <= watermark {
                            metrics.late_rows += 1;
                            late_rows.push(row as u32);
                        } else {
                            assignment.entry(end).or_default().push(row as u32);
                        }
                    }
                }
                None => {
                    assignment.insert(0, (0..rows as u32).collect());
                }
            },
        }
        Ok((assignment, late_rows))
    }

    /// The key columns of `batch` and each aggregate's inputs and filter.
    #[allow(clippy::type_complexity)]
    fn evaluate(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<ArrayRef>, Vec<(Vec<ArrayRef>, Option<BooleanArray>)>)> {
        let keys = evaluate_keys(&self.grouping.keys, batch)?;
        let inputs = self
            .aggregates
            .iter()
            .map(|a| a.evaluate(batch))
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, inputs))
    }

    /// Merges a window's state in the layout of [`state_batch`] (from a checkpoint, or a
    /// [`Partial`]) into the window's open state.
    fn merge_state_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let start = batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0);
        if !self.open.contains_key(&start) {
            let state = self.new_state()?;
            self.open.insert(start, state);
        }
        let key_count = self.key_schema.fields().len();
        let window = self.open.get_mut(&start).expect("inserted above");
        let keys: Vec<ArrayRef> = batch.columns()[1..1 + key_count].to_vec();
        let mut ids = Vec::new();
        window.groups.intern(&keys, &mut ids)?;
        let mut column = 1 + key_count;
        for (acc, spec) in window.accumulators.iter_mut().zip(&self.aggregates) {
            let width = spec.function.state_fields()?.len();
            let states = batch.columns()[column..column + width].to_vec();
            column += width;
            acc.merge_batch(&states, &ids, window.groups.len())?;
        }
        Ok(())
    }

    fn window_column(&self, start: i64, n: usize) -> Option<ArrayRef> {
        self.windows.map(|w| -> ArrayRef {
            Arc::new(window_struct(vec![start; n], vec![start + w.size; n], None))
        })
    }

    fn emit_window(&self, start: i64, mut state: WindowState) -> Result<RecordBatch> {
        let n = state.groups.len();
        let keys = state.groups.emit(EmitTo::All)?;
        let mut aggs = Vec::with_capacity(state.accumulators.len());
        for acc in state.accumulators.iter_mut() {
            aggs.push(acc.evaluate(EmitTo::All)?);
        }
        let batch = assemble_output(
            &self.output_schema,
            &self.grouping,
            self.window_column(start, n),
            keys,
            aggs,
            n,
        )?;
        order_rows(&batch, &self.emission_order(&batch)?)
    }

    /// The current rows of the groups `changed` of window `start` (`EMIT CHANGES`). `keys` are
    /// the key columns of the rows in `first_rows`, one per changed group, in the same order.
    fn emit_changes(
        &mut self,
        start: i64,
        changed: &[usize],
        keys: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        let fresh: Vec<Box<dyn GroupsAccumulator>> = self
            .aggregates
            .iter()
            .map(|a| a.groups_accumulator())
            .collect::<Result<_>>()?;
        let mut temps: Vec<Box<dyn GroupsAccumulator>> = self
            .aggregates
            .iter()
            .map(|a| a.groups_accumulator())
            .collect::<Result<_>>()?;
        let state = self
            .open
            .get_mut(&start)
            .expect("the window was just updated");
        let total = state.groups.len();
        let all: Vec<usize> = (0..total).collect();
        let picked = UInt32Array::from(changed.iter().map(|&g| g as u32).collect::<Vec<_>>());
        let temp_ids: Vec<usize> = (0..changed.len()).collect();
        let mut aggs = Vec::with_capacity(temps.len());
        for ((acc, mut replacement), temp) in state
            .accumulators
            .iter_mut()
            .zip(fresh)
            .zip(temps.iter_mut())
        {
            // Reading state consumes it: put it back into a fresh accumulator.
            let states = acc.state(EmitTo::All)?;
            replacement.merge_batch(&states, &all, total)?;
            *acc = replacement;
            let taken = states
                .iter()
                .map(|s| Ok(take(s, &picked, None)?))
                .collect::<Result<Vec<_>>>()?;
            temp.merge_batch(&taken, &temp_ids, changed.len())?;
            aggs.push(temp.evaluate(EmitTo::All)?);
        }
        let n = changed.len();
        let batch = assemble_output(
            &self.output_schema,
            &self.grouping,
            self.window_column(start, n),
            keys,
            aggs,
            n,
        )?;
        order_rows(&batch, &self.emission_order(&batch)?)
    }
}

/// The interned key schema: the key fields, or one constant column when there are none.
pub(crate) fn key_schema(key_fields: &[Field]) -> SchemaRef {
    if key_fields.is_empty() {
        Arc::new(Schema::new(vec![Field::new(
            "__no_key",
            DataType::Int8,
            false,
        )]))
    } else {
        Arc::new(Schema::new(key_fields.to_vec()))
    }
}

/// Key columns of `batch` (a constant column when there are no keys).
pub(crate) fn evaluate_keys(
    keys: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    if keys.is_empty() {
        return Ok(vec![Arc::new(Int8Array::from(vec![0i8; batch.num_rows()]))]);
    }
    keys.iter()
        .map(|k| Ok(k.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

/// Event times of `batch` in ms (nulls where the time is NULL).
pub(crate) fn evaluate_time(time: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    let t = time.evaluate(batch)?.into_array(batch.num_rows())?;
    let t = match t.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, None) => t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            cast(&t, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt64 => cast(
            &cast(&t, &DataType::Int64)?,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?,
        other => {
            return Err(VeloError::Execution(format!(
                "the event time must be a TIMESTAMP or epoch milliseconds, not {other}"
            )))
        }
    };
    Ok(t)
}

/// A cascaded window's closing key as times in ms: a window bound, or the window struct itself
/// (its `window_end`).
fn window_end(key: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    let value = key.evaluate(batch)?.into_array(batch.num_rows())?;
    if let Some(window) = value.as_struct_opt() {
        let end = window
            .column_by_name("window_end")
            .ok_or_else(|| VeloError::Execution("the window column has no window_end".into()))?;
        return Ok(cast(
            end,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?);
    }
    evaluate_time(key, batch)
}

/// Builds an output batch: GROUP BY columns in order (the window at its position, the keys
/// around it), then the aggregates.
pub(crate) fn assemble_output(
    schema: &SchemaRef,
    grouping: &Grouping,
    window: Option<ArrayRef>,
    keys: Vec<ArrayRef>,
    aggs: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut keys = keys.into_iter();
    if grouping.key_fields.is_empty() {
        keys.next(); // the constant column
    }
    let group_columns = grouping.key_fields.len() + usize::from(grouping.window_position.is_some());
    for i in 0..group_columns {
        if Some(i) == grouping.window_position {
            columns.push(
                window
                    .clone()
                    .ok_or_else(|| VeloError::Execution("missing window column".into()))?,
            );
        } else {
            columns.push(
                keys.next()
                    .ok_or_else(|| VeloError::Execution("missing key column".into()))?,
            );
        }
    }
    columns.extend(aggs);
    // Cast where an accumulator's type differs in detail (e.g. nullability) from the plan's.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else if c.is_empty() {
                Ok(new_null_array(f.data_type(), 0))
            } else {
                Ok(cast(&c, f.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        relaxed(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// `schema` with every field nullable (aggregates of empty inputs may be NULL).
pub(crate) fn relaxed(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

impl StreamOperator for WindowAggregateExec {
    /// A cascaded window has a name of its own: it keeps its state per window end, so a
    /// checkpoint of the other kind (whose pipeline description names the operators) must not
    /// restore into it.
    fn name(&self) -> &'static str {
        match self.closing {
            Some(_) => "CascadedWindowAggregateExec",
            None => "WindowAggregateExec",
        }
    }

    fn holds_input(&self) -> bool {
        true
    }

    fn partition_keys(&self) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
        (!self.grouping.keys.is_empty()).then(|| self.grouping.keys.clone())
    }

    /// The window, then the keys: windows come out in order, each window's rows by key. A
    /// cascaded window's key column goes first.
    fn emission_order(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let mut columns = self
            .grouping
            .ordered_columns(batch, |window| vec![window.clone()]);
        if let Some((key, _)) = self.closing {
            let column = columns.remove(key);
            columns.insert(0, column);
        }
        Ok(columns)
    }

    /// A window's rows (a cascaded window's: an end's) come out as one batch; without a
    /// window, all rows of a call.
    fn emission_unit(&self, batch: &RecordBatch) -> Result<Option<ArrayRef>> {
        if self.windows.is_none() && self.closing.is_none() {
            return Ok(None);
        }
        Ok(self.emission_order(batch)?.into_iter().next())
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

    fn drain_row_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.errors)
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let (mut metrics, mut errors) = (OperatorMetrics::default(), Vec::new());
        let (assignment, late_rows) =
            self.assign(&batch, self.watermark, &mut metrics, &mut errors)?;
        self.metrics = self.metrics + metrics;
        self.errors.extend(errors);
        self.late.push(&batch, late_rows)?;
        if assignment.is_empty() {
            return Ok(Vec::new());
        }
        let (keys, inputs) = self.evaluate(&batch)?;
        let mut group_ids = Vec::with_capacity(rows);
        let mut out = Vec::new();
        for (start, indices) in assignment {
            if !self.open.contains_key(&start) {
                let state = self.new_state()?;
                self.open.insert(start, state);
            }
            let state = self.open.get_mut(&start).expect("inserted above");
            let window_keys = update(state, &keys, &inputs, &indices, rows, &mut group_ids)?;
            if self.emit == EmitMode::Changes {
                let total = state.groups.len();
                // One representative row per changed group, in order of first appearance.
                let mut seen = vec![false; total];
                let mut changed = Vec::new();
                let mut first_rows = Vec::new();
                for (row, &g) in group_ids.iter().enumerate() {
                    if !seen[g] {
                        seen[g] = true;
                        changed.push(g);
                        first_rows.push(row as u32);
                    }
                }
                let first_rows = UInt32Array::from(first_rows);
                let changed_keys = window_keys
                    .iter()
                    .map(|k| Ok(take(k, &first_rows, None)?))
                    .collect::<Result<Vec<_>>>()?;
                out.push(self.emit_changes(start, &changed, changed_keys)?);
            }
        }
        Ok(out)
    }

    /// Splits into partials when every aggregate's state merges exactly in any grouping of
    /// the rows (no floating-point state, no DISTINCT, no ORDER BY) and the operator emits
    /// only when windows close: a global window or aggregate (without keys), `EMIT FINAL`.
    fn partial_watermark(&self) -> Option<i64> {
        (self.merges_exactly
            && self.grouping.keys.is_empty()
            && self.closing.is_none()
            && self.emit == EmitMode::Final)
            .then_some(self.watermark)
    }

    fn partial(&self, watermark: i64, batch: &RecordBatch) -> Result<Partial> {
        let mut partial = Partial::default();
        let (assignment, late_rows) =
            self.assign(batch, watermark, &mut partial.metrics, &mut partial.errors)?;
        if !late_rows.is_empty() {
            partial.late = Some(arrow::compute::take_record_batch(
                batch,
                &UInt32Array::from(late_rows),
            )?);
        }
        if assignment.is_empty() {
            return Ok(partial);
        }
        let (keys, inputs) = self.evaluate(batch)?;
        let mut group_ids = Vec::with_capacity(batch.num_rows());
        for (start, indices) in assignment {
            let mut state = self.new_state()?;
            update(
                &mut state,
                &keys,
                &inputs,
                &indices,
                batch.num_rows(),
                &mut group_ids,
            )?;
            partial.states.push(state_batch(start, &mut state)?.0);
        }
        Ok(partial)
    }

    fn merge_partials(&mut self, partials: Vec<Partial>) -> Result<Vec<RecordBatch>> {
        for partial in partials {
            self.metrics = self.metrics + partial.metrics;
            if let Some(late) = partial.late {
                let rows = (0..late.num_rows() as u32).collect();
                self.late.push(&late, rows)?;
            }
            for batch in &partial.states {
                self.merge_state_batch(batch)?;
            }
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.watermark = self.watermark.max(watermark.0);
        // Group tables are keyed by window start, or by window end for a cascaded window.
        let size = match (self.windows, self.closing) {
            (Some(w), _) => Some(w.size),
            (None, Some(_)) => Some(0),
            // Without a window, the only group table "closes" when the input ends.
            (None, None) if watermark == Watermark::END => None,
            (None, None) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            if size.is_some_and(|size| start.saturating_add(size) > self.watermark) {
                break;
            }
            let state = self.open.remove(&start).expect("first key exists");
            if self.emit == EmitMode::Final {
                out.push(self.emit_window(start, state)?);
            }
        }
        Ok(out)
    }

    /// One row of counters (watermark, late rows, null-time rows), then per open window its
    /// start, keys and accumulator states. Taking state out of `GroupValues` and accumulators
    /// consumes it, so each window's state is merged back into fresh structures afterwards.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        self.snapshot_windows()
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        self.open.clear();
        let Some((meta, windows)) = state.split_first() else {
            return Ok(());
        };
        self.watermark = read_counters(meta, &mut self.metrics)?;
        for batch in windows {
            self.merge_state_batch(batch)?;
        }
        Ok(())
    }
}

/// Updates `state` with the rows `indices` of a batch of `rows` rows whose key columns are
/// `keys` and aggregate inputs `inputs`; `group_ids` is left holding each row's group. Returns
/// those rows' key columns.
fn update(
    state: &mut WindowState,
    keys: &[ArrayRef],
    inputs: &[(Vec<ArrayRef>, Option<BooleanArray>)],
    indices: &[u32],
    rows: usize,
    group_ids: &mut Vec<usize>,
) -> Result<Vec<ArrayRef>> {
    let all_rows = indices.len() == rows;
    let picked = (!all_rows).then(|| UInt32Array::from(indices.to_vec()));
    let pick = |a: &ArrayRef| -> Result<ArrayRef> {
        match &picked {
            None => Ok(a.clone()),
            Some(p) => Ok(take(a, p, None)?),
        }
    };
    let window_keys = keys.iter().map(&pick).collect::<Result<Vec<_>>>()?;
    group_ids.clear();
    state.groups.intern(&window_keys, group_ids)?;
    let total = state.groups.len();
    for (acc, (values, filter)) in state.accumulators.iter_mut().zip(inputs) {
        let values = values.iter().map(&pick).collect::<Result<Vec<_>>>()?;
        let filter = match filter {
            Some(f) => Some(
                pick(&(Arc::new(f.clone()) as ArrayRef))?
                    .as_boolean()
                    .clone(),
            ),
            None => None,
        };
        acc.update_batch(&values, group_ids, filter.as_ref(), total)?;
    }
    Ok(window_keys)
}

/// Window `start`'s state as one batch (start, key columns, accumulator states: the layout of
/// a checkpoint and of a [`Partial`]), taken out of `state`, which is left empty; with the
/// keys and states taken.
#[allow(clippy::type_complexity)]
fn state_batch(
    start: i64,
    state: &mut WindowState,
) -> Result<(RecordBatch, Vec<ArrayRef>, Vec<Vec<ArrayRef>>)> {
    let n = state.groups.len();
    let keys = state.groups.emit(EmitTo::All)?;
    let mut states = Vec::new();
    for acc in state.accumulators.iter_mut() {
        states.push(acc.state(EmitTo::All)?);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![start; n]))];
    columns.extend(keys.iter().cloned());
    columns.extend(states.iter().flatten().cloned());
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok((batch, keys, states))
}

impl WindowAggregateExec {
    fn snapshot_windows(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = vec![counters_batch(self.watermark, &self.metrics)?];
        let starts: Vec<i64> = self.open.keys().copied().collect();
        for start in starts {
            let mut state = self.open.remove(&start).expect("listed above");
            let (batch, keys, states) = state_batch(start, &mut state)?;
            out.push(batch);
            // Put the state back.
            let mut fresh = self.new_state()?;
            let mut ids = Vec::new();
            fresh.groups.intern(&keys, &mut ids)?;
            for (acc, s) in fresh.accumulators.iter_mut().zip(&states) {
                acc.merge_batch(s, &ids, fresh.groups.len())?;
            }
            self.open.insert(start, fresh);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_cover_each_time_size_over_slide_times() {
        let w = FixedWindows {
            size: 300,
            slide: 100,
        };
        assert_eq!(w.starts(250).collect::<Vec<_>>(), vec![200, 100, 0]);
        assert_eq!(w.starts(-50).collect::<Vec<_>>(), vec![-100, -200, -300]);
        let t = FixedWindows {
            size: 100,
            slide: 100,
        };
        assert_eq!(t.starts(199).collect::<Vec<_>>(), vec![100]);
    }
}
