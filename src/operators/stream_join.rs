//! `StreamJoinExec`: a join of two streams (window joins, interval joins, updating joins with a
//! state TTL).
//!
//! A symmetric hash join. Each side keeps the rows that can still match, hashed on the join key
//! (Arrow row format). A row arriving on one side probes the other side's rows with the same key,
//! the full ON condition is evaluated on each candidate pair (so the SQL bounds are exactly the
//! bounds), and the row is then kept for the rows still to come on the other side. Every
//! matching pair is therefore emitted exactly once: when the later of its two rows arrives.
//!
//! What bounds the state is the [`JoinTime`]:
//! - **interval join**: `right.t − left.t ∈ [lower, upper]`; once the watermark passes
//!   `left.t + upper` no right row to come can match a left row, and likewise for right rows
//!   past `right.t − lower`. Rows older than the watermark on arrival are late: dropped and
//!   counted (or kept for the late-data topic), as Flink does.
//! - **window join**: both inputs are window aggregates that emit a window's rows once, when the
//!   watermark passes its end; the join matches them and drops them once the window is closed
//!   on both sides.
//! - **state TTL** (an updating join the user opted into): rows are kept for a span of
//!   processing time.
//!
//! Outer joins emit a preserved row with NULLs for the other side when it leaves the state
//! without having matched: once the watermark proves that nothing can match it any more.
//!
//! The operator owns the operator chains of its two inputs (`branches`): input `i` of the
//! query goes to the left branch when `i` is below the left branch's input count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch,
    RecordBatchOptions, UInt32Array,
};
use arrow::compute::{cast, filter_record_batch, interleave, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::window_aggregate::{evaluate_time, relaxed};
use super::{LateRows, OperatorMetrics, Pipeline, PipelineRowError, StreamOperator, Watermark};
use crate::error::{Result, VeloError};

/// What bounds a stream join's state.
#[derive(Debug, Clone)]
pub enum JoinTime {
    /// `right_time − left_time` must lie in `[lower, upper]` milliseconds.
    Interval {
        left_time: Arc<dyn PhysicalExpr>,
        right_time: Arc<dyn PhysicalExpr>,
        lower: i64,
        upper: i64,
    },
    /// Rows carry the end of their window (an expression per side); they can match until the
    /// watermark reaches it.
    Window {
        left_end: Arc<dyn PhysicalExpr>,
        right_end: Arc<dyn PhysicalExpr>,
    },
    /// Rows are kept `ttl_ms` milliseconds of processing time.
    Ttl { ttl_ms: i64 },
}

/// The two inputs of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinSide {
    Left = 0,
    Right = 1,
}

impl JoinSide {
    fn other(self) -> JoinSide {
        match self {
            JoinSide::Left => JoinSide::Right,
            JoinSide::Right => JoinSide::Left,
        }
    }
}

/// The join's inputs and conditions, as planned.
pub struct StreamJoinSpec {
    /// The operator chains feeding the left and the right input.
    pub branches: [Pipeline; 2],
    /// Equality keys of each side (same types on both sides).
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The rest of the ON condition, over the joined row (left columns, then right columns).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Whether unmatched rows of each side are emitted (LEFT: `[true, false]`, FULL: both).
    pub preserve: [bool; 2],
    pub time: JoinTime,
    /// Schemas of the two inputs.
    pub input_schemas: [SchemaRef; 2],
    pub output_schema: SchemaRef,
}

/// Rows a join emitted, each with its order key: the arrival (on its side) and the position in
/// that arrival of the row that made it. Copies of the join on several lanes, each given the
/// rows of some keys with their positions in the whole arrival, emit parts that merge by these
/// keys into what one copy given every row emits (see `crate::job::lanes`): rows with equal
/// keys come from one row, so from one copy, already in order.
pub struct Ordered {
    pub batch: RecordBatch,
    pub order: Vec<(u64, u32)>,
}

impl Ordered {
    fn empty(schema: SchemaRef) -> Ordered {
        Ordered {
            batch: RecordBatch::new_empty(schema),
            order: Vec::new(),
        }
    }
}

/// A row held in state: where it is.
#[derive(Debug, Clone, Copy)]
struct RowRef {
    batch: u64,
    row: u32,
}

/// Rows of one arrival, with what the join tracks per row.
struct StoredBatch {
    batch: RecordBatch,
    /// Each row's position in its arrival (the rows kept are a subset, see [`Ordered`]).
    positions: Vec<u32>,
    /// When the row leaves the state: watermark (or processing time, for a TTL) reaching it.
    expires_at: Vec<i64>,
    matched: Vec<bool>,
    alive: Vec<bool>,
    live: usize,
    min_expiry: i64,
}

/// The rows one side keeps, by arrival.
#[derive(Default)]
struct SideState {
    batches: BTreeMap<u64, StoredBatch>,
    /// The number the next arrival on this side gets (every arrival counts, kept rows or not).
    next_arrival: u64,
    index: HashMap<Box<[u8]>, Vec<RowRef>>,
    live_rows: usize,
    /// Index entries that point at rows gone from the state (cleaned when they pile up).
    dead_entries: usize,
    bytes: usize,
}

impl SideState {
    fn get(&self, r: RowRef) -> Option<&StoredBatch> {
        self.batches
            .get(&r.batch)
            .filter(|b| b.alive[r.row as usize])
    }

    /// Keeps `batch`, rows of arrival `id` (at `positions` in it); `key_rows[i]` is row i's key
    /// in `keys`.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        id: u64,
        batch: RecordBatch,
        positions: Vec<u32>,
        keys: &arrow::row::Rows,
        key_rows: &[usize],
        expires_at: Vec<i64>,
        matched: Vec<bool>,
    ) {
        let n = batch.num_rows();
        if n == 0 {
            return;
        }
        for (row, &k) in key_rows.iter().enumerate() {
            let key = keys.row(k);
            let entry = RowRef {
                batch: id,
                row: row as u32,
            };
            match self.index.get_mut(key.as_ref()) {
                Some(list) => list.push(entry),
                None => {
                    self.index.insert(key.as_ref().into(), vec![entry]);
                }
            }
        }
        self.live_rows += n;
        self.bytes += batch.get_array_memory_size() + n * 24;
        let min_expiry = expires_at.iter().copied().min().unwrap_or(i64::MAX);
        self.batches.insert(
            id,
            StoredBatch {
                batch,
                positions,
                expires_at,
                matched,
                alive: vec![true; n],
                live: n,
                min_expiry,
            },
        );
    }

    /// Removes the rows expiring at or before `now`; returns those never matched (when asked).
    fn expire(&mut self, now: i64, want_unmatched: bool) -> Vec<(u64, u32)> {
        let mut unmatched = Vec::new();
        for (&id, stored) in self.batches.iter_mut() {
            if stored.min_expiry > now {
                continue;
            }
            let mut next_min = i64::MAX;
            for row in 0..stored.alive.len() {
                if !stored.alive[row] {
                    continue;
                }
                if stored.expires_at[row] <= now {
                    stored.alive[row] = false;
                    stored.live -= 1;
                    self.live_rows -= 1;
                    self.dead_entries += 1;
                    if want_unmatched && !stored.matched[row] {
                        unmatched.push((id, row as u32));
                    }
                } else {
                    next_min = next_min.min(stored.expires_at[row]);
                }
            }
            stored.min_expiry = next_min;
        }
        unmatched.sort_unstable();
        unmatched
    }

    /// Drops batches with no live row left and, when dead index entries pile up, cleans the
    /// index.
    fn compact(&mut self) {
        let mut freed = 0;
        self.batches.retain(|_, b| {
            let keep = b.live > 0;
            if !keep {
                freed += b.batch.get_array_memory_size() + b.alive.len() * 24;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        if self.dead_entries > 1024 && self.dead_entries > self.live_rows {
            let batches = &self.batches;
            self.index.retain(|_, list| {
                list.retain(|r| {
                    batches
                        .get(&r.batch)
                        .is_some_and(|b| b.alive[r.row as usize])
                });
                !list.is_empty()
            });
            self.dead_entries = 0;
        }
    }

    fn index_bytes(&self) -> usize {
        self.index
            .iter()
            .map(|(k, v)| k.len() + 48 + v.capacity() * std::mem::size_of::<RowRef>())
            .sum()
    }
}

/// A join of two streams.
pub struct StreamJoinExec {
    branches: [Pipeline; 2],
    left_inputs: usize,
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_types: Vec<DataType>,
    converter: RowConverter,
    filter: Option<Arc<dyn PhysicalExpr>>,
    preserve: [bool; 2],
    time: JoinTime,
    input_schemas: [SchemaRef; 2],
    output_schema: SchemaRef,
    sides: [SideState; 2],
    watermark: i64,
    metrics: OperatorMetrics,
    late: LateRows,
}

impl StreamJoinExec {
    pub fn new(spec: StreamJoinSpec) -> Result<Self> {
        let key_types = spec.keys[0]
            .iter()
            .map(|k| Ok(k.data_type(&spec.input_schemas[0])?))
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(
            key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )?;
        let left_inputs = spec.branches[0].inputs();
        Ok(Self {
            branches: spec.branches,
            left_inputs,
            keys: spec.keys,
            key_types,
            converter,
            filter: spec.filter,
            preserve: spec.preserve,
            time: spec.time,
            input_schemas: spec.input_schemas,
            output_schema: relaxed(&spec.output_schema),
            sides: [SideState::default(), SideState::default()],
            watermark: i64::MIN,
            metrics: OperatorMetrics::default(),
            late: LateRows::default(),
        })
    }

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// For each row of `batch` arriving on `side`: its event time (interval joins, to find late
    /// rows) and when it leaves the state.
    fn timing(&self, side: JoinSide, batch: &RecordBatch) -> Result<(Option<ArrayRef>, Vec<i64>)> {
        let n = batch.num_rows();
        Ok(match &self.time {
            JoinTime::Interval {
                left_time,
                right_time,
                lower,
                upper,
            } => {
                let (expr, reach) = match side {
                    JoinSide::Left => (left_time, *upper),
                    JoinSide::Right => (right_time, lower.saturating_neg()),
                };
                let times = evaluate_time(expr, batch)?;
                let t = times.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                // A row can match while the watermark is at most `t + reach`.
                let expires = (0..n)
                    .map(|i| {
                        if t.is_null(i) {
                            i64::MIN
                        } else {
                            t.value(i).saturating_add(reach).saturating_add(1)
                        }
                    })
                    .collect();
                (Some(times), expires)
            }
            JoinTime::Window {
                left_end,
                right_end,
            } => {
                let expr = match side {
                    JoinSide::Left => left_end,
                    JoinSide::Right => right_end,
                };
                let ends = evaluate_time(expr, batch)?;
                let e = ends.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                let expires = (0..n)
                    .map(|i| if e.is_null(i) { i64::MIN } else { e.value(i) })
                    .collect();
                (None, expires)
            }
            JoinTime::Ttl { ttl_ms } => {
                let at = Self::now_ms().saturating_add(*ttl_ms);
                (None, vec![at; n])
            }
        })
    }

    /// The join key of each row of `batch` arriving on `side`, cast as the join compares them.
    pub fn key_columns(&self, side: JoinSide, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.keys[side as usize]
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                let column = k.evaluate(batch)?.into_array(batch.num_rows())?;
                if column.data_type() == t {
                    Ok(column)
                } else {
                    Ok(cast(&column, t)?)
                }
            })
            .collect()
    }

    /// Joined rows: `probe` rows of `probe_side` (by index) next to stored rows of the other
    /// side (`None`: NULLs).
    fn assemble(
        &self,
        probe_side: JoinSide,
        probe: &RecordBatch,
        probe_rows: &[u32],
        stored: &[Option<RowRef>],
    ) -> Result<RecordBatch> {
        let n = probe_rows.len();
        let probe_index = UInt32Array::from(probe_rows.to_vec());
        let probe_columns = probe
            .columns()
            .iter()
            .map(|c| Ok(take(c, &probe_index, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let other = probe_side.other();
        let stored_columns = self.gather(other, stored)?;
        let columns = match probe_side {
            JoinSide::Left => probe_columns.into_iter().chain(stored_columns).collect(),
            JoinSide::Right => stored_columns.into_iter().chain(probe_columns).collect(),
        };
        self.output(columns, n)
    }

    /// Columns of stored rows of `side` (`None`: a NULL row).
    fn gather(&self, side: JoinSide, rows: &[Option<RowRef>]) -> Result<Vec<ArrayRef>> {
        let schema = &self.input_schemas[side as usize];
        let state = &self.sides[side as usize];
        if rows.iter().all(Option::is_none) {
            return Ok(schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), rows.len()))
                .collect());
        }
        // Batch 0 of the interleave is an all-NULL row; stored batches follow.
        let mut sources: Vec<&RecordBatch> = Vec::new();
        let mut position: HashMap<u64, usize> = HashMap::new();
        let mut picks = Vec::with_capacity(rows.len());
        for r in rows {
            match r {
                None => picks.push((0, 0)),
                Some(r) => {
                    let at = *position.entry(r.batch).or_insert_with(|| {
                        sources.push(&state.batches[&r.batch].batch);
                        sources.len()
                    });
                    picks.push((at, r.row as usize));
                }
            }
        }
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let null = new_null_array(f.data_type(), 1);
                let arrays: Vec<&dyn Array> = std::iter::once(null.as_ref())
                    .chain(sources.iter().map(|b| b.column(c).as_ref()))
                    .collect();
                Ok(interleave(&arrays, &picks)?)
            })
            .collect()
    }

    fn output(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let columns = columns
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// A batch arrived on `side` (after its branch): probe, emit, keep. `positions` are the
    /// rows' positions in the whole arrival when this copy is given some keys' rows of it (on
    /// a lane), `None` when it is given all. Returns the matched pairs, then the preserved rows
    /// with a NULL key, each ordered by the position of the row arriving.
    pub fn arrive_at(
        &mut self,
        side: JoinSide,
        batch: RecordBatch,
        positions: Option<&[u32]>,
    ) -> Result<[Ordered; 2]> {
        let n = batch.num_rows();
        let arrival = self.sides[side as usize].next_arrival;
        self.sides[side as usize].next_arrival += 1;
        if let JoinTime::Ttl { .. } = self.time {
            // An updating join is INNER only (the planner refuses the others): rows leaving
            // the state here emit nothing. Before anything else: a lane given no rows of an
            // arrival forgets its old rows too.
            self.expire(Self::now_ms(), false)?;
        }
        let position = |i: usize| positions.map_or(i as u32, |p| p[i]);
        // Order keys only for copies on lanes (given positions): one copy's output is in order.
        let ordered = |rows: &[u32], batch: RecordBatch| Ordered {
            batch,
            order: match positions {
                Some(_) => rows
                    .iter()
                    .map(|&r| (arrival, position(r as usize)))
                    .collect(),
                None => Vec::new(),
            },
        };
        let schema = self.output_schema.clone();
        let empty = || Ordered::empty(schema.clone());
        if n == 0 {
            return Ok([empty(), empty()]);
        }
        let (times, expires_at) = self.timing(side, &batch)?;
        let keys = self.key_columns(side, &batch)?;
        let key_rows = self.converter.convert_columns(&keys)?;
        // Late rows (interval joins): older than the watermark, so rows they could have
        // matched may be gone already.
        let mut usable = vec![true; n];
        if let Some(times) = &times {
            let mut late = Vec::new();
            let t = times.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for (i, ok) in usable.iter_mut().enumerate() {
                if t.is_null(i) {
                    *ok = false;
                    self.metrics.null_time_rows += 1;
                } else if t.value(i) < self.watermark {
                    *ok = false;
                    late.push(i as u32);
                }
            }
            self.metrics.late_rows += late.len() as u64;
            self.late.push(&batch, late)?;
        }
        let has_key: Vec<bool> = (0..n)
            .map(|i| usable[i] && keys.iter().all(|k| !k.is_null(i)))
            .collect();
        // Candidate pairs: the other side's rows with the same key.
        let other = side.other();
        let mut probe_rows = Vec::new();
        let mut stored_rows = Vec::new();
        {
            let other_state = &self.sides[other as usize];
            for i in (0..n).filter(|&i| has_key[i]) {
                if let Some(list) = other_state.index.get(key_rows.row(i).as_ref()) {
                    for &r in list {
                        if other_state.get(r).is_some() {
                            probe_rows.push(i as u32);
                            stored_rows.push(Some(r));
                        }
                    }
                }
            }
        }
        let mut matched = vec![false; n];
        let pairs = if probe_rows.is_empty() {
            empty()
        } else {
            let mut pairs = self.assemble(side, &batch, &probe_rows, &stored_rows)?;
            if let Some(filter) = &self.filter {
                let mask = filter.evaluate(&pairs)?.into_array(pairs.num_rows())?;
                let mask = mask.as_boolean_opt().ok_or_else(|| {
                    VeloError::Execution("a join condition must be boolean".into())
                })?;
                // NULL counts as false, as in SQL.
                let keep: BooleanArray = mask.iter().map(|m| Some(m == Some(true))).collect();
                pairs = filter_record_batch(&pairs, &keep)?;
                let (mut p, mut s) = (Vec::new(), Vec::new());
                for (i, k) in keep.iter().enumerate() {
                    if k == Some(true) {
                        p.push(probe_rows[i]);
                        s.push(stored_rows[i]);
                    }
                }
                probe_rows = p;
                stored_rows = s;
            }
            for &p in &probe_rows {
                matched[p as usize] = true;
            }
            let other_state = &mut self.sides[other as usize];
            for r in stored_rows.iter().flatten() {
                if let Some(b) = other_state.batches.get_mut(&r.batch) {
                    b.matched[r.row as usize] = true;
                }
            }
            ordered(&probe_rows, pairs)
        };
        // Rows with a NULL key can never match: a preserved one is emitted now, NULL-padded.
        let mut unmatchable = empty();
        if self.preserve[side as usize] {
            let never: Vec<u32> = (0..n as u32)
                .filter(|&i| usable[i as usize] && !has_key[i as usize])
                .collect();
            if !never.is_empty() {
                let nulls = vec![None; never.len()];
                let rows = self.assemble(side, &batch, &never, &nulls)?;
                unmatchable = ordered(&never, rows);
            }
        }
        // Keep the rows that may match rows still to come.
        let keep: Vec<usize> = (0..n).filter(|&i| has_key[i]).collect();
        if !keep.is_empty() {
            let kept = if keep.len() == n {
                batch
            } else {
                let mask: BooleanArray = has_key.iter().map(|&k| Some(k)).collect();
                filter_record_batch(&batch, &mask)?
            };
            let kept_positions = keep.iter().map(|&i| position(i)).collect();
            let expires = keep.iter().map(|&i| expires_at[i]).collect();
            let was_matched = keep.iter().map(|&i| matched[i]).collect();
            self.sides[side as usize].insert(
                arrival,
                kept,
                kept_positions,
                &key_rows,
                &keep,
                expires,
                was_matched,
            );
        }
        Ok([pairs, unmatchable])
    }

    /// Drops the rows that can match nothing more at `now` (watermark, or processing time for
    /// a TTL); returns the preserved ones that never matched, NULL-padded: the left side's,
    /// then the right side's, each in arrival order (with order keys when `keyed`).
    fn expire(&mut self, now: i64, keyed: bool) -> Result<[Ordered; 2]> {
        let mut out = [
            Ordered::empty(self.output_schema.clone()),
            Ordered::empty(self.output_schema.clone()),
        ];
        for side in [JoinSide::Left, JoinSide::Right] {
            let want = self.preserve[side as usize];
            let gone = self.sides[side as usize].expire(now, want);
            if !gone.is_empty() {
                let rows: Vec<Option<RowRef>> = gone
                    .iter()
                    .map(|&(batch, row)| Some(RowRef { batch, row }))
                    .collect();
                // Read while their batches are still held (`compact` drops them below).
                let columns = self.gather(side, &rows)?;
                let state = &self.sides[side as usize];
                let order = match keyed {
                    true => gone
                        .iter()
                        .map(|&(batch, row)| (batch, state.batches[&batch].positions[row as usize]))
                        .collect(),
                    false => Vec::new(),
                };
                let nulls = self.input_schemas[side.other() as usize]
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows.len()))
                    .collect::<Vec<_>>();
                let columns = match side {
                    JoinSide::Left => columns.into_iter().chain(nulls).collect(),
                    JoinSide::Right => nulls.into_iter().chain(columns).collect(),
                };
                out[side as usize] = Ordered {
                    batch: self.output(columns, rows.len())?,
                    order,
                };
            }
            self.sides[side as usize].compact();
        }
        Ok(out)
    }

    /// Advances the watermark of a join whose branches emit nothing on a watermark (row-wise
    /// ones: see [`StreamJoinExec::splits_by_key`]); returns what leaves the state, as
    /// [`StreamJoinExec::expire`] does, with order keys when `keyed` (a copy on a lane).
    pub fn advance_ordered(&mut self, watermark: Watermark, keyed: bool) -> Result<[Ordered; 2]> {
        self.watermark = self.watermark.max(watermark.0);
        let now = match self.time {
            JoinTime::Ttl { .. } if watermark == Watermark::END => i64::MAX,
            JoinTime::Ttl { .. } => Self::now_ms(),
            _ => self.watermark,
        };
        self.expire(now, keyed)
    }

    /// True when copies of this join, each given the rows of some join keys (and every copy
    /// every watermark), emit between them what one copy given every row emits: its inputs
    /// reach it through row-wise operators only (a window join's windows are not split), and
    /// it has equality keys, none volatile.
    pub fn splits_by_key(&self) -> bool {
        let volatile = self
            .keys
            .iter()
            .flatten()
            .any(datafusion::physical_expr_common::physical_expr::is_volatile);
        self.branches.iter().all(Pipeline::is_row_wise)
            && !self.keys[0].is_empty()
            && !volatile
            && !matches!(self.time, JoinTime::Window { .. })
    }

    /// Runs a batch of input `input` through its side's branch: the side, and the rows arriving
    /// at the join. What the branch could not evaluate is in
    /// [`StreamOperator::drain_nested_row_errors`].
    pub fn enter(
        &mut self,
        input: usize,
        batch: RecordBatch,
    ) -> Result<(JoinSide, Vec<RecordBatch>)> {
        self.enter_until(input, batch, usize::MAX)
    }

    /// [`StreamJoinExec::enter`] through the branch's operators before `end` only: what the
    /// one before `end` emits.
    pub fn enter_until(
        &mut self,
        input: usize,
        batch: RecordBatch,
        end: usize,
    ) -> Result<(JoinSide, Vec<RecordBatch>)> {
        let (side, local) = self.side_of(input);
        let arrived = self.branches[side as usize].process_until(local, batch, end)?;
        Ok((side, arrived))
    }

    /// The operator chains feeding the left and the right input.
    pub fn branches(&self) -> &[Pipeline; 2] {
        &self.branches
    }

    /// The operator chain feeding `side`, to run (what it cannot evaluate is then in
    /// [`StreamOperator::drain_nested_row_errors`]).
    pub fn branch_mut(&mut self, side: JoinSide) -> &mut Pipeline {
        &mut self.branches[side as usize]
    }

    /// Batches arriving on `side` one after the other (see [`StreamJoinExec::arrive_at`],
    /// given every row): what the join emits, in order.
    pub fn arrive_all(
        &mut self,
        side: JoinSide,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for b in batches {
            out.extend(self.arrive_at(side, b, None)?.map(|o| o.batch));
        }
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// The side input `input` of the query feeds, and its number among that side's inputs.
    pub fn side_of(&self, input: usize) -> (JoinSide, usize) {
        if input < self.left_inputs {
            (JoinSide::Left, input)
        } else {
            (JoinSide::Right, input - self.left_inputs)
        }
    }

    fn state_batch(&self, side: JoinSide) -> Result<RecordBatch> {
        let schema = &self.input_schemas[side as usize];
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("__expires_at", DataType::Int64, false));
        fields.push(Field::new("__matched", DataType::Boolean, false));
        fields.push(Field::new("__arrival", DataType::Int64, false));
        fields.push(Field::new("__position", DataType::Int64, false));
        let state_schema = Arc::new(Schema::new(fields));
        let state = &self.sides[side as usize];
        let rows: Vec<Option<RowRef>> = state
            .batches
            .iter()
            .flat_map(|(&batch, b)| {
                (0..b.alive.len()).filter(|&r| b.alive[r]).map(move |row| {
                    Some(RowRef {
                        batch,
                        row: row as u32,
                    })
                })
            })
            .collect();
        let mut columns = if rows.is_empty() {
            schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 0))
                .collect()
        } else {
            self.gather(side, &rows)?
        };
        let held = |r: &Option<RowRef>| {
            let r = r.expect("state rows are present");
            (&state.batches[&r.batch], r.row as usize)
        };
        columns.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(
            |r| {
                let (b, i) = held(r);
                b.expires_at[i]
            },
        ))));
        columns.push(Arc::new(BooleanArray::from_iter(rows.iter().map(|r| {
            let (b, i) = held(r);
            Some(b.matched[i])
        }))));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|r| r.expect("state rows are present").batch as i64),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(
            |r| {
                let (b, i) = held(r);
                i64::from(b.positions[i])
            },
        ))));
        Ok(RecordBatch::try_new_with_options(
            state_schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }

    /// Restores one side's rows from a [`StreamJoinExec::state_batch`]: by arrival, or as one
    /// arrival when the checkpoint is older than arrivals (no `__arrival` column).
    fn restore_side(&mut self, side: JoinSide, state: &RecordBatch) -> Result<()> {
        let width = self.input_schemas[side as usize].fields().len();
        let with_arrivals = state.num_columns() == width + 4;
        if !with_arrivals && state.num_columns() != width + 2 {
            return Err(VeloError::Execution(format!(
                "StreamJoinExec: the {side:?} state has {} columns, expected {}",
                state.num_columns(),
                width + 4
            )));
        }
        let rows = RecordBatch::try_new_with_options(
            self.input_schemas[side as usize].clone(),
            state.columns()[..width].to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(state.num_rows())),
        )?;
        let n = rows.num_rows();
        let expires = state.column(width).as_primitive::<Int64Type>().values();
        let matched = state.column(width + 1).as_boolean();
        let (arrivals, positions): (Vec<u64>, Vec<u32>) = if with_arrivals {
            let a = state.column(width + 2).as_primitive::<Int64Type>().values();
            let p = state.column(width + 3).as_primitive::<Int64Type>().values();
            (
                a.iter().map(|&a| a as u64).collect(),
                p.iter().map(|&p| p as u32).collect(),
            )
        } else {
            (vec![0; n], (0..n as u32).collect())
        };
        let keys = self.key_columns(side, &rows)?;
        let key_rows = self.converter.convert_columns(&keys)?;
        let mut restored = SideState::default();
        // Rows are listed arrival after arrival: each run of one arrival is one stored batch.
        let mut start = 0;
        while start < n {
            let arrival = arrivals[start];
            let end = (start..n).find(|&i| arrivals[i] != arrival).unwrap_or(n);
            let picked: Vec<usize> = (start..end).collect();
            // A copy of the run, not a slice: a slice's memory size counts the whole buffer.
            let run = UInt32Array::from_iter_values(start as u32..end as u32);
            restored.insert(
                arrival,
                arrow::compute::take_record_batch(&rows, &run)?,
                positions[start..end].to_vec(),
                &key_rows,
                &picked,
                expires[start..end].to_vec(),
                (start..end).map(|i| matched.value(i)).collect(),
            );
            start = end;
        }
        restored.next_arrival = arrivals.iter().max().map_or(0, |a| a + 1);
        self.sides[side as usize] = restored;
        Ok(())
    }
}

impl StreamOperator for StreamJoinExec {
    fn name(&self) -> &'static str {
        "StreamJoinExec"
    }

    fn holds_input(&self) -> bool {
        true
    }

    fn inputs(&self) -> usize {
        self.left_inputs + self.branches[1].inputs()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.process_input(0, batch)
    }

    fn process_input(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let (side, arrived) = self.enter(input, batch)?;
        self.arrive_all(side, arrived)
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        // What the branches close at this watermark arrives first (window joins).
        for side in [JoinSide::Left, JoinSide::Right] {
            let closed = self.branches[side as usize].advance_watermark(watermark)?;
            out.extend(self.arrive_all(side, closed)?);
        }
        out.extend(self.advance_ordered(watermark, false)?.map(|o| o.batch));
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    fn as_stream_join(&self) -> Option<&StreamJoinExec> {
        Some(self)
    }

    fn share_with(&mut self, first: &dyn StreamOperator) -> Result<()> {
        let first = first.as_stream_join().ok_or_else(|| {
            VeloError::Execution("a lane's copy of a join was planned otherwise".into())
        })?;
        for (branch, theirs) in self.branches.iter_mut().zip(first.branches()) {
            branch.share_with(theirs)?;
        }
        Ok(())
    }

    fn as_stream_join_mut(&mut self) -> Option<&mut StreamJoinExec> {
        Some(self)
    }

    fn drain_nested_row_errors(&mut self) -> Vec<PipelineRowError> {
        let left_inputs = self.left_inputs;
        let mut errors = self.branches[0].take_row_errors();
        errors.extend(self.branches[1].take_row_errors().into_iter().map(|mut e| {
            e.input += left_inputs;
            e
        }));
        errors
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = vec![
            super::counters_batch(self.watermark, &self.metrics)?,
            self.state_batch(JoinSide::Left)?,
            self.state_batch(JoinSide::Right)?,
        ];
        // The branches' states, each operator's batches preceded by their count.
        let mut counts = Vec::new();
        let mut nested = Vec::new();
        for branch in &mut self.branches {
            let states = branch.snapshot()?;
            counts.push(states.len() as i64);
            for s in states {
                counts.push(s.len() as i64);
                nested.extend(s);
            }
        }
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "branch_layout",
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(Int64Array::from(counts))],
        )?);
        out.extend(nested);
        // Last, each side's next arrival number: copies of the join on several lanes number
        // arrivals alike, whichever rows each keeps.
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "next_arrival",
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(Int64Array::from_iter_values(
                self.sides.iter().map(|s| s.next_arrival as i64),
            ))],
        )?);
        Ok(out)
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        if state.len() < 4 {
            return Err(VeloError::Execution(
                "StreamJoinExec: the snapshot is incomplete".into(),
            ));
        }
        self.watermark = super::read_counters(&state[0], &mut self.metrics)?;
        self.restore_side(JoinSide::Left, &state[1])?;
        self.restore_side(JoinSide::Right, &state[2])?;
        let layout = state[3]
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let mut layout = layout.into_iter();
        let mut rest = state[4..].iter();
        for branch in &mut self.branches {
            let operators = layout.next().unwrap_or(0);
            let mut states = Vec::new();
            for _ in 0..operators {
                let n = layout.next().unwrap_or(0);
                states.push((0..n).filter_map(|_| rest.next().cloned()).collect());
            }
            branch.restore(&states)?;
        }
        // Absent from checkpoints older than arrivals: then numbered on from the rows held.
        if let Some(next) = rest.next() {
            let next = next.column(0).as_primitive::<Int64Type>();
            for (side, n) in self.sides.iter_mut().zip(next.values()) {
                side.next_arrival = side.next_arrival.max(*n as u64);
            }
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        let own = OperatorMetrics {
            state_rows: self.sides.iter().map(|s| s.live_rows as u64).sum(),
            state_bytes: self
                .sides
                .iter()
                .map(|s| (s.bytes + s.index_bytes()) as u64)
                .sum(),
            ..self.metrics
        };
        self.branches
            .iter()
            .map(|b| b.metrics())
            .fold(own, |a, b| a + b)
    }

    fn keep_late_rows(&mut self) {
        self.late.keep();
        self.branches.iter_mut().for_each(|b| b.keep_late_rows());
    }

    fn drain_late_rows(&mut self) -> Vec<RecordBatch> {
        let mut rows = self.late.drain();
        for b in &mut self.branches {
            rows.extend(b.drain_late_rows());
        }
        rows
    }

    fn apply_table_changes(
        &mut self,
        feed: usize,
        upserts: &RecordBatch,
        deletes: &[String],
    ) -> Result<bool> {
        for b in &mut self.branches {
            if b.apply_table_changes(feed, upserts, deletes)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
