//! `SessionWindowExec`: GROUP BY over session windows, per key.
//!
//! A session is a run of a key's rows whose event times are less than `gap` apart; it spans
//! `[first time, last time + gap)` and emits when the watermark passes its end. Rows arriving out
//! of order may bridge two sessions, which then merge (accumulator states are merged with
//! DataFusion's `merge_batch`). Keys are held in Arrow's row format; a key's entry is freed when
//! its last session emits. A row that would open a session that has already closed is late:
//! dropped and counted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::{Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use velo_udfs::window::window_struct;

use super::aggregate::AggregateSpec;
use super::window_aggregate::{
    assemble_output, evaluate_keys, evaluate_time, key_schema, window_overflow, Grouping,
};
use super::{
    counters_batch, order_rows, read_counters, LateRows, OperatorMetrics, RowError, StreamOperator,
    Watermark,
};
use crate::error::{Result, VeloError};
use crate::sql::window::EmitMode;

struct Session {
    start: i64,
    last: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// GROUP BY over session windows.
pub struct SessionWindowExec {
    gap: i64,
    emit: EmitMode,
    time: Arc<dyn PhysicalExpr>,
    grouping: Grouping,
    converter: RowConverter,
    aggregates: Vec<AggregateSpec>,
    output_schema: SchemaRef,
    /// Open sessions per key (row-format bytes), sorted by start.
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    watermark: i64,
    metrics: OperatorMetrics,
    /// Late rows kept for a late-data destination.
    late: LateRows,
    /// Rows whose session would end past the timestamp range, since the last drain.
    errors: Vec<RowError>,
}

impl SessionWindowExec {
    /// A session window aggregate with `gap` ms producing `output_schema`.
    pub fn new(
        gap: i64,
        emit: EmitMode,
        time: Arc<dyn PhysicalExpr>,
        grouping: Grouping,
        aggregates: Vec<AggregateSpec>,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let fields = key_schema(&grouping.key_fields);
        let converter = RowConverter::new(
            fields
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            gap,
            emit,
            time,
            grouping,
            converter,
            aggregates,
            output_schema,
            sessions: HashMap::new(),
            watermark: i64::MIN,
            metrics: OperatorMetrics::default(),
            late: LateRows::default(),
            errors: Vec::new(),
        })
    }

    /// Counters, with the state size measured now.
    fn measure(&self) -> OperatorMetrics {
        let mut m = self.metrics;
        m.state_rows = self.sessions.values().map(|s| s.len() as u64).sum();
        m.state_bytes = self
            .sessions
            .iter()
            .map(|(k, s)| {
                (k.len()
                    + s.iter()
                        .map(|x| x.accumulators.iter().map(|a| a.size()).sum::<usize>())
                        .sum::<usize>()) as u64
            })
            .sum();
        m
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.aggregates.iter().map(|a| a.accumulator()).collect()
    }

    /// The current rows of the sessions `changed` (key, start) for `EMIT CHANGES`. Reading an
    /// accumulator consumes its state, so the state is merged back into a fresh accumulator and
    /// into a scratch one that is evaluated.
    fn emit_changes(&mut self, changed: &[(Box<[u8]>, i64)]) -> Result<Vec<RecordBatch>> {
        let gap = self.gap;
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        for (key, start) in changed {
            let mut fresh = self.new_accumulators()?;
            let mut scratch = self.new_accumulators()?;
            let Some(session) = self
                .sessions
                .get_mut(key)
                .and_then(|list| list.iter_mut().find(|s| s.start == *start))
            else {
                continue;
            };
            for (((acc, fresh), scratch), out) in session
                .accumulators
                .iter_mut()
                .zip(fresh.iter_mut())
                .zip(scratch.iter_mut())
                .zip(values.iter_mut())
            {
                let state = acc
                    .state()?
                    .into_iter()
                    .map(|v| Ok(v.to_array()?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                fresh.merge_batch(&state)?;
                scratch.merge_batch(&state)?;
                out.push(scratch.evaluate()?);
            }
            session.accumulators = fresh;
            keys.push(key.clone());
            starts.push(session.start);
            ends.push(session.last + gap);
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.assemble(keys, starts, ends, values)
    }

    fn assemble(
        &self,
        keys: Vec<Box<[u8]>>,
        starts: Vec<i64>,
        ends: Vec<i64>,
        values: Vec<Vec<ScalarValue>>,
    ) -> Result<Vec<RecordBatch>> {
        let n = keys.len();
        let parser = self.converter.parser();
        let key_columns = self
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let aggs = values
            .into_iter()
            .zip(&self.aggregates)
            .map(|(v, spec)| {
                let field = spec.function.field();
                if v.is_empty() {
                    return Ok(arrow::array::new_null_array(field.data_type(), 0));
                }
                Ok(ScalarValue::iter_to_array(v)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let window: ArrayRef = Arc::new(window_struct(starts, ends, None));
        let batch = assemble_output(
            &self.output_schema,
            &self.grouping,
            Some(window),
            key_columns,
            aggs,
            n,
        )?;
        Ok(vec![order_rows(&batch, &self.emission_order(&batch)?)?])
    }

    /// Emits the sessions whose end is at or before the watermark.
    fn emit_closed(&mut self) -> Result<Vec<RecordBatch>> {
        let watermark = self.watermark;
        let gap = self.gap;
        // With EMIT CHANGES a session closes silently: its last change was already emitted.
        let final_rows = self.emit == EmitMode::Final;
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        self.sessions.retain(|key, sessions| {
            sessions.retain_mut(|s| {
                if s.last.saturating_add(gap) > watermark {
                    return true;
                }
                if !final_rows {
                    return false;
                }
                keys.push(key.clone());
                starts.push(s.start);
                ends.push(s.last + gap);
                for (acc, out) in s.accumulators.iter_mut().zip(values.iter_mut()) {
                    out.push(acc.evaluate().unwrap_or(ScalarValue::Null));
                }
                false
            });
            !sessions.is_empty()
        });
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // `assemble` puts them in event-time order (end, start, key): the output depends
        // neither on hashing nor on how many lanes held the sessions.
        self.assemble(keys, starts, ends, values)
    }
}

fn merge_into(
    target: &mut [Box<dyn Accumulator>],
    source: &mut [Box<dyn Accumulator>],
) -> Result<()> {
    for (t, s) in target.iter_mut().zip(source.iter_mut()) {
        let state = s
            .state()?
            .into_iter()
            .map(|v| Ok(v.to_array()?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        t.merge_batch(&state)?;
    }
    Ok(())
}

impl StreamOperator for SessionWindowExec {
    fn name(&self) -> &'static str {
        "SessionWindowExec"
    }

    fn holds_input(&self) -> bool {
        true
    }

    fn partition_keys(&self) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
        (!self.grouping.keys.is_empty()).then(|| self.grouping.keys.clone())
    }

    /// Session end, then start, then the keys (event-time order: the output does not depend on
    /// hashing, nor on how many lanes held the sessions).
    fn emission_order(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        Ok(self.grouping.ordered_columns(batch, |window| {
            let window = window.as_struct();
            vec![window.column(1).clone(), window.column(0).clone()]
        }))
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
        let times = evaluate_time(&self.time, &batch)?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let key_rows = self
            .converter
            .convert_columns(&evaluate_keys(&self.grouping.keys, &batch)?)?;
        let inputs = self
            .aggregates
            .iter()
            .map(|a| a.evaluate(&batch))
            .collect::<Result<Vec<_>>>()?;
        let gap = self.gap;
        let mut order: Vec<u32> = Vec::with_capacity(rows);
        for i in 0..rows {
            if !times.is_valid(i) {
                self.metrics.null_time_rows += 1;
            } else if times.value(i).checked_add(gap).is_none()
                || times.value(i).checked_sub(gap).is_none()
            {
                let error = window_overflow(&batch, i, times.value(i), gap);
                self.errors.push(error);
            } else {
                order.push(i as u32);
            }
        }
        order.sort_by(|&a, &b| {
            key_rows
                .row(a as usize)
                .cmp(&key_rows.row(b as usize))
                .then(times.value(a as usize).cmp(&times.value(b as usize)))
        });
        let mut changed: Vec<(Box<[u8]>, i64)> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            // One segment: same key, times less than `gap` apart.
            let key = key_rows.row(order[i] as usize);
            let mut j = i + 1;
            while j < order.len()
                && key_rows.row(order[j] as usize) == key
                && times
                    .value(order[j] as usize)
                    .saturating_sub(times.value(order[j - 1] as usize))
                    < gap
            {
                j += 1;
            }
            let segment = &order[i..j];
            let first = times.value(segment[0] as usize);
            let last = times.value(segment[segment.len() - 1] as usize);
            i = j;
            let watermark = self.watermark;
            let fresh = self.new_accumulators()?;
            let sessions = self.sessions.entry(key.as_ref().into()).or_default();
            // Sessions this segment touches: [start, last + gap) overlaps [first, last' + gap).
            let (touching, rest): (Vec<Session>, Vec<Session>) = std::mem::take(sessions)
                .into_iter()
                .partition(|s| s.start < last + gap && first < s.last + gap);
            *sessions = rest;
            if touching.is_empty() && last.saturating_add(gap) <= watermark {
                self.metrics.late_rows += segment.len() as u64;
                self.late.push(&batch, segment.to_vec())?;
                if sessions.is_empty() {
                    self.sessions.remove(key.as_ref());
                }
                continue;
            }
            let mut merged = Session {
                start: first,
                last,
                accumulators: fresh,
            };
            for mut s in touching {
                merged.start = merged.start.min(s.start);
                merged.last = merged.last.max(s.last);
                merge_into(&mut merged.accumulators, &mut s.accumulators)?;
            }
            let indices = UInt32Array::from(segment.to_vec());
            for (acc, (values, mask)) in merged.accumulators.iter_mut().zip(&inputs) {
                let mut taken = values
                    .iter()
                    .map(|v| Ok(take(v, &indices, None)?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                if let Some(mask) = mask {
                    let mask = take(mask, &indices, None)?;
                    let mask = mask.as_boolean();
                    taken = taken
                        .iter()
                        .map(|v| Ok(filter(v, mask)?))
                        .collect::<Result<_>>()?;
                }
                acc.update_batch(&taken)?;
            }
            let sessions = self.sessions.entry(key.as_ref().into()).or_default();
            let at = sessions.partition_point(|s| s.start < merged.start);
            let (start, merged_start, merged_last) = (merged.start, merged.start, merged.last);
            sessions.insert(at, merged);
            if self.emit == EmitMode::Changes {
                // Sessions merged into this one are gone; other sessions of the key stay.
                let (first, last) = (merged_start, merged_last);
                changed.retain(|(k, s): &(Box<[u8]>, i64)| {
                    k.as_ref() != key.as_ref() || *s < first || *s > last
                });
                changed.push((key.as_ref().into(), start));
            }
        }
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        self.emit_changes(&changed)
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.watermark = self.watermark.max(watermark.0);
        self.emit_closed()
    }

    /// One row of counters, then one batch of all open sessions: key columns, start, last time,
    /// and each aggregate's state columns.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let meta = counters_batch(self.watermark, &self.metrics)?;
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut starts = Vec::new();
        let mut lasts = Vec::new();
        let mut states: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); self.aggregates.len()];
        for (key, sessions) in self.sessions.iter_mut() {
            for s in sessions.iter_mut() {
                keys.push(key);
                starts.push(s.start);
                lasts.push(s.last);
                for (acc, out) in s.accumulators.iter_mut().zip(states.iter_mut()) {
                    out.push(acc.state()?);
                }
            }
        }
        if keys.is_empty() {
            return Ok(vec![meta]);
        }
        let parser = self.converter.parser();
        let mut columns = self
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(lasts)));
        for per_session in states {
            let width = per_session.first().map_or(0, |s| s.len());
            for c in 0..width {
                columns.push(ScalarValue::iter_to_array(
                    per_session.iter().map(|s| s[c].clone()),
                )?);
            }
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        Ok(vec![
            meta,
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
        ])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        self.sessions.clear();
        let Some((meta, rest)) = state.split_first() else {
            return Ok(());
        };
        self.watermark = read_counters(meta, &mut self.metrics)?;
        let Some(batch) = rest.first() else {
            return Ok(());
        };
        let key_count = key_schema(&self.grouping.key_fields).fields().len();
        let rows = self
            .converter
            .convert_columns(&batch.columns()[..key_count])?;
        let starts = batch
            .column(key_count)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let lasts = batch
            .column(key_count + 1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        for r in 0..batch.num_rows() {
            let mut accumulators = self.new_accumulators()?;
            let mut column = key_count + 2;
            for (acc, spec) in accumulators.iter_mut().zip(&self.aggregates) {
                let width = spec.function.state_fields()?.len();
                let state: Vec<ArrayRef> = batch.columns()[column..column + width]
                    .iter()
                    .map(|c| c.slice(r, 1))
                    .collect();
                column += width;
                acc.merge_batch(&state)?;
            }
            let sessions = self
                .sessions
                .entry(rows.row(r).as_ref().into())
                .or_default();
            let session = Session {
                start: starts.value(r),
                last: lasts.value(r),
                accumulators,
            };
            let at = sessions.partition_point(|s| s.start < session.start);
            sessions.insert(at, session);
        }
        if self.sessions.values().any(|s| s.is_empty()) {
            return Err(VeloError::Execution(
                "empty session list in snapshot".into(),
            ));
        }
        Ok(())
    }
}
