//! Worker lanes: one job's micro-batches decoded and run on several threads.
//!
//! A job runs on `parallelism` lanes. The runner's own adapters and pipeline are lane 0; each
//! further lane has its own, planned from the same query. Which queries, and how:
//!
//! - **Row-wise queries** (filters, projections, expressions, UDFs: every operator row-wise).
//!   A polled batch of at least [`MIN_LANE_RECORDS`] records per lane is cut into contiguous
//!   ranges, up to [`RANGES_PER_LANE`] per lane; the lanes take ranges in turn,
//!   decode each, run it through their pipeline and encode its rows for the sink (when the sink
//!   lends its encoder), and the outputs are put back together in range order. Output rows, bad
//!   records and row errors are exactly those one lane gives, in the same order.
//! - **Keyed queries** (a GROUP BY with keys — windowed, session or updating — or an OVER with
//!   a PARTITION BY, as the first stateful operator, with row-wise operators before it, and no
//!   volatile key). The ranges are decoded and
//!   run up to the keyed operator as above; then every row goes to the lane its key hashes to
//!   (an exchange), and each lane runs the keyed operator on the rows of its keys, in input
//!   order, as one batch. What the lanes emit is merged into the operator's own emission order
//!   (windows in order, each window's rows by key; OVER rows by event time, then partition
//!   key), cut back into the batches one copy emits (a batch per window), and the operators
//!   after it, stateful ones too, run on the first lane: the output is the output of one
//!   lane, row for row. Late rows come out lane after lane. Every lane is given the same watermark (the
//!   runner tracks one over all input), and a checkpoint holds every lane's state, taken
//!   between micro-batches when nothing is in flight. The hash ([`stable_hashes`]) is this
//!   crate's own, the same on every machine and release, so a restored lane gets back exactly
//!   its keys; a job restored from a checkpoint keeps the checkpoint's lane count.
//! - **Joins of streams** (interval joins and updating joins with a state TTL, whose inputs
//!   reach the join through row-wise operators). Each range is decoded and run through its
//!   side's operators; every row arriving at the join goes to the lane its join key hashes to,
//!   so each lane's copy of the join holds the rows of its keys, and matches them with the other
//!   side's rows of the same keys. Every lane takes every arrival (its rows of it, or none), so
//!   the copies number arrivals alike; a row keeps its position in the whole arrival. What the
//!   copies emit (pairs as rows arrive, unmatched rows of an outer join as the watermark passes
//!   their bound) is merged by (arrival, position) into the order one copy emits it in (see
//!   [`Ordered`]), in the same batches (pairs, then unmatchable rows, per arrival; each side's
//!   expired rows per watermark). The operators after the join, stateful ones too (q4's GROUP
//!   BYs), run on the first lane only, and see exactly the batches one lane's would.
//! - **Joins whose inputs are split** (window joins, joins fed by a stateful input: Nexmark q5,
//!   q7, q8): each side's branch runs on the lanes as far as its operators allow
//!   ([`BranchSplit`]: a keyed window exchanged by its keys, a row-wise branch by ranges), and
//!   the rest of each branch, the join and the operators after it run on the first lane.
//! - **Queries whose first stateful operator has no key** (a global aggregate or window,
//!   LIMIT, a bounded ORDER BY, OVER without PARTITION BY, a GROUP BY a volatile key): the
//!   ranges are decoded and run up to that operator on the lanes, their rows gathered into
//!   one batch in range order ([`Exchange::Gathered`]), and the operator and those after it
//!   run on the first lane, which alone holds state. A batch too small to split runs whole on
//!   the first lane. A global aggregate whose states merge exactly (COUNT, and SUM, AVG, MIN,
//!   MAX without floating-point state; `EMIT FINAL`) is aggregated on the lanes instead, each
//!   range into partial states that the first lane's copy merges in range order
//!   ([`process_partials`]): the one thread then merges a handful of rows per range instead
//!   of aggregating every row.
//! - **Lookup joins** (stream–table) are row-wise: the copies on further lanes share the first
//!   lane's table (one table per job, whatever the lane count), whose join alone takes a
//!   followed table's changes, between micro-batches, when no lane reads it.
//! - Anything else runs on one lane: a join of three or more streams, a join both of whose
//!   inputs are global aggregates that do not split into partials.
//!
//! Contiguous ranges rather than a partition per lane: a batch's records are split evenly
//! whatever the topic's partition count (one partition still uses every core). Several ranges
//! per lane, taken in turn, rather than one: a lane whose thread waits for a core leaves its
//! ranges to the others, so a batch waits at most one range for its slowest lane. The runner's
//! thread works with a pool of threads kept for the job's life ([`lane_pool`]), and each piece
//! of a batch's work (a lane's ranges, a lane's keyed rows) is taken by whichever of them is
//! free ([`on_pool`], [`on_threads`]), so no piece waits for a thread to start. The
//! watermark, the writing of the sink, the dead-letter queue and the acknowledged offsets stay
//! with the runner's thread.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::physical_expr::PhysicalExpr;
use velo_connectors::codec::{Encoded, RowEncoder};
use velo_connectors::record::SourceBatch;

use super::input::{BadRecord, InputAdapter};
use super::progress::ErrorKind;
use crate::error::{Result, VeloError};
use crate::operators::{
    trace_back, JoinSide, Ordered, Partial, Pipeline, PipelineRowError, StreamJoinExec, Watermark,
};

/// Fewest records a lane is given: smaller batches (a trickle of records, the latency path)
/// are decoded on the runner's thread alone, where a thread hand-off would cost more than it
/// saves.
pub const MIN_LANE_RECORDS: usize = 1024;

/// A further lane: its own adapter per input and its own copy of the pipeline.
pub struct Lane {
    /// Adapter `i` decodes input `i`.
    pub adapters: Vec<InputAdapter>,
    pub pipeline: Pipeline,
}

/// A job's lanes beyond the runner's own, and how rows are shared among them.
#[derive(Default)]
pub struct Lanes {
    pub extra: Vec<Lane>,
    /// Where rows change lanes (by key, or gathered on the first lane); `None`: a row-wise
    /// query.
    pub exchange: Option<Exchange>,
    /// The watermark every lane was last advanced to.
    advanced: Option<Watermark>,
    /// The lanes' threads (`None`: one lane).
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

impl Lanes {
    /// Every lane's pipeline, `first` (the runner's) first.
    pub fn pipelines<'a>(&'a self, first: &'a Pipeline) -> impl Iterator<Item = &'a Pipeline> {
        std::iter::once(first).chain(self.extra.iter().map(|l| &l.pipeline))
    }

    /// Every lane's pipeline, `first` (the runner's) first, to change.
    pub fn pipelines_mut<'a>(&'a mut self, first: &'a mut Pipeline) -> Vec<&'a mut Pipeline> {
        std::iter::once(first)
            .chain(self.extra.iter_mut().map(|l| &mut l.pipeline))
            .collect()
    }

    /// Advances every lane's pipeline (`first`, the runner's, and the others) to `watermark`:
    /// what they emit, in the order one lane would emit it. A keyed query's lanes close their
    /// windows in parallel when the watermark moved; what closes is merged.
    pub(crate) fn advance_watermark(
        &mut self,
        first: &mut Pipeline,
        watermark: Watermark,
    ) -> Result<Vec<RecordBatch>> {
        let moved = self.advanced.is_none_or(|last| watermark > last);
        self.advanced = Some(watermark);
        // The lanes' threads, when the lanes close windows (or expire rows) at once.
        let pool = match self.exchange {
            Some(Exchange::Keyed { .. } | Exchange::Join | Exchange::Branches(_)) if moved => {
                self.pool.clone()
            }
            _ => None,
        };
        on_pool(pool.as_ref(), || self.advance_all(first, watermark, moved))
    }

    /// [`Lanes::advance_watermark`], `moved`: whether the watermark moved since the last call.
    fn advance_all(
        &mut self,
        first: &mut Pipeline,
        watermark: Watermark,
        moved: bool,
    ) -> Result<Vec<RecordBatch>> {
        let mut pipelines: Vec<&mut Pipeline> = std::iter::once(first)
            .chain(self.extra.iter_mut().map(|l| &mut l.pipeline))
            .collect();
        let Some(exchange) = self.exchange.as_ref() else {
            let mut out = Vec::new();
            for pipeline in pipelines {
                out.extend(pipeline.advance_watermark(watermark)?);
            }
            return Ok(out);
        };
        let at = exchange.at();
        let work: Vec<&mut Pipeline> = pipelines.iter_mut().map(|p| &mut **p).collect();
        let emitted = match exchange {
            Exchange::Keyed { .. } => on_threads(work, moved, |_, pipeline| {
                pipeline.advance_watermark_range(0, at + 1, watermark)
            })?
            .into_iter()
            .flatten()
            .collect(),
            Exchange::Join => merge_ordered(on_threads(work, moved, |_, pipeline| {
                joined(pipeline)?.advance_ordered(watermark, true)
            })?)?,
            Exchange::Branches(sides) => branches_at_watermark(work, sides, moved, watermark)?,
            // Only the first lane holds state.
            Exchange::Gathered { .. } => {
                pipelines[0].advance_watermark_range(0, at + 1, watermark)?
            }
        };
        let mut out = downstream(&mut pipelines, exchange, emitted)?;
        out.extend(pipelines[0].advance_watermark_range(at + 1, usize::MAX, watermark)?);
        Ok(out)
    }
}

/// Where a keyed query's rows change lanes, and by what.
pub enum Exchange {
    /// Before the keyed operator at index `at` of the pipeline, by its key expressions (over
    /// its input).
    Keyed {
        at: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
    },
    /// The pipeline opens with a join of streams: the rows arriving at the join (after its
    /// row-wise branches) change lanes by join key.
    Join,
    /// The pipeline opens with a join of streams that is not split by join key (a window join,
    /// whose inputs are window aggregates grouped by keys of their own; a join fed by a
    /// stateful branch): each side's branch is split as its operators allow, and the rest of
    /// each branch, the join and the operators after it run on the first lane.
    Branches([BranchSplit; 2]),
    /// The first stateful operator, at index `at`, is not keyed (a global aggregate, LIMIT,
    /// ORDER BY, OVER without PARTITION BY): the ranges are decoded and run up to it on the
    /// lanes, their rows gathered into one batch in range order (as one lane would have them),
    /// and the operator and those after it run on the first lane, which alone holds state.
    Gathered { at: usize },
}

/// How one side's branch of a join runs on the lanes ([`Exchange::Branches`]).
pub enum BranchSplit {
    /// Every operator of the branch is row-wise: each range runs through it on its lane, and
    /// the ranges' rows arrive at the join as one batch, in order (as one lane's would).
    Rows,
    /// The branch's first stateful operator (at index `at`) is keyed: the ranges run up to it
    /// on their lanes, rows change lanes by its keys, each lane's copy holds its keys' state,
    /// and what the copies emit is merged into one copy's batches (as for a keyed query).
    Keyed {
        at: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
    },
    /// A global aggregate whose states merge exactly, at index `at` (see
    /// [`crate::operators::StreamOperator::partial_watermark`]): the ranges run up to it and
    /// are aggregated on their lanes, the first lane's copy merges their partial states in
    /// range order and runs the rest of the branch. Its state is the first lane's, as
    /// [`BranchSplit::Whole`]'s.
    Partial { at: usize },
    /// None of these (another global aggregate): the side is decoded and run on the first
    /// lane.
    Whole,
}

impl BranchSplit {
    fn of(branch: &Pipeline) -> BranchSplit {
        if branch.is_row_wise() {
            return BranchSplit::Rows;
        }
        if let Some((at, keys)) = branch.exchange_point() {
            return BranchSplit::Keyed { at, keys };
        }
        match branch.first_stateful() {
            Some(at) if branch.partial_watermark(at).is_some() => BranchSplit::Partial { at },
            _ => BranchSplit::Whole,
        }
    }
}

impl Exchange {
    /// True when rows change lanes by key, so that each lane's copy holds some keys' state (a
    /// checkpoint then holds every lane's, and a restored job keeps its lane count); false for
    /// a join whose inputs are only split by range, which keeps all its state on the first
    /// lane.
    pub fn by_key(&self) -> bool {
        match self {
            Exchange::Keyed { .. } | Exchange::Join => true,
            Exchange::Branches(sides) => {
                sides.iter().any(|s| matches!(s, BranchSplit::Keyed { .. }))
            }
            Exchange::Gathered { .. } => false,
        }
    }

    /// How the query is split, for checkpoints: which state each lane holds.
    pub fn describe(&self) -> String {
        let side = |s: &BranchSplit| match s {
            BranchSplit::Rows => "by range".to_string(),
            BranchSplit::Keyed { at, .. } => format!("by key before operator {at}"),
            // The state is the first lane's either way: a checkpoint fits both.
            BranchSplit::Partial { .. } | BranchSplit::Whole => "on the first lane".to_string(),
        };
        match self {
            Exchange::Keyed { at, .. } => format!("by key before operator {at}"),
            Exchange::Join => "by join key".to_string(),
            Exchange::Branches([left, right]) => {
                format!("join inputs: left {}, right {}", side(left), side(right))
            }
            Exchange::Gathered { at } => format!("by range before operator {at}"),
        }
    }

    /// The index of the operator whose copies hold the keys' state.
    fn at(&self) -> usize {
        match self {
            Exchange::Keyed { at, .. } | Exchange::Gathered { at } => *at,
            Exchange::Join | Exchange::Branches(_) => 0,
        }
    }

    /// How a join's branches may be split, when `pipeline` opens with one reading an input
    /// per side and some side may use the lanes.
    fn branches_of(pipeline: &Pipeline) -> Option<Exchange> {
        let join = pipeline.stream_join()?;
        if join.branches().iter().any(|b| b.inputs() != 1) {
            return None;
        }
        let sides = join.branches().each_ref().map(BranchSplit::of);
        let used = sides.iter().any(|s| !matches!(s, BranchSplit::Whole));
        used.then_some(Exchange::Branches(sides))
    }
}

/// How a pipeline may run on several lanes, if it may.
pub enum Split {
    /// Every operator is row-wise.
    Rows,
    /// Rows go through an exchange: by key before a keyed operator (GROUP BY keys, OVER
    /// PARTITION BY) as the first stateful one, by join key into a join of streams fed by
    /// row-wise operators, into a join whose inputs are split ([`Exchange::Branches`]), or
    /// gathered on the first lane before any other first stateful operator
    /// ([`Exchange::Gathered`]).
    Exchange(Exchange),
}

impl Split {
    /// How `pipeline` may be split; `None`: it runs on one lane.
    pub fn of(pipeline: &Pipeline) -> Option<Split> {
        if pipeline.is_row_wise() {
            return Some(Split::Rows);
        }
        if pipeline.splits_join() {
            return Some(Split::Exchange(Exchange::Join));
        }
        if let Some(branches) = Exchange::branches_of(pipeline) {
            return Some(Split::Exchange(branches));
        }
        if let Some((at, keys)) = pipeline.exchange_point() {
            return Some(Split::Exchange(Exchange::Keyed { at, keys }));
        }
        let at = pipeline
            .first_stateful()
            .filter(|_| pipeline.inputs() == 1)?;
        Some(Split::Exchange(Exchange::Gathered { at }))
    }
}

/// The parallelism a job gets when none is given: one lane per core.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What one lane made of its range of a source batch, up to the exchange. Record indices are
/// in the whole batch.
pub(crate) struct LaneOutput {
    /// The rows the range decoded to (the scan layout), and each row's partition.
    pub rows: RecordBatch,
    pub partitions: Int32Array,
    /// Records that could not be decoded (or had no event time).
    pub bad: Vec<BadRecord>,
    /// Rows an expression failed on, traced back to their records…
    pub failed_records: Vec<BadRecord>,
    /// …and those that could not be traced back.
    pub failed_rows: Vec<PipelineRowError>,
    /// The index in the whole batch of the range's first record.
    first_record: usize,
    /// How the rows the range's operators gave map to its records (see
    /// [`crate::operators::trace_back`]), when each can be traced: a row the keyed or
    /// gathered operator then fails on is reported as its record, as one lane reports it.
    trace: Option<Vec<BooleanArray>>,
}

/// A source batch processed on the lanes: each range's part, in range order, and what the
/// pipelines emitted.
pub(crate) struct Processed {
    pub parts: Vec<LaneOutput>,
    pub out: Vec<RecordBatch>,
    /// The rows of each batch of `out`, encoded for the sink on the lane that produced it (a
    /// row-wise query given the sink's encoder), one per batch; empty, or `None` for a batch:
    /// the sink encodes them (and reports what fails to, when it writes them).
    pub encoded: Vec<Option<Encoded>>,
}

/// Decodes `part` (the records of a source batch from `offset` on) and runs it through `run`
/// (the first operators of `pipeline`) as input `input`; returns what they emit.
fn run_lane(
    adapter: &mut InputAdapter,
    pipeline: &mut Pipeline,
    input: usize,
    part: &SourceBatch,
    offset: usize,
    horizon: Option<i64>,
    run: impl FnOnce(&mut Pipeline, RecordBatch) -> Result<Vec<RecordBatch>>,
) -> Result<(LaneOutput, Vec<RecordBatch>)> {
    let mut bad = Vec::new();
    let (rows, partitions) = adapter.adapt_with_partitions(part, &mut bad, horizon)?;
    let _ = pipeline.take_trace();
    let out = run(pipeline, rows.clone())?;
    let trace = pipeline
        .take_trace()
        .map(|masks| adapter.masks().iter().cloned().chain(masks).collect());
    let mut failed_records = Vec::new();
    let mut failed_rows = Vec::new();
    for e in pipeline.take_row_errors() {
        let traced = match e.origin {
            Some(row) if e.input == input => adapter.source_index(row),
            _ => None,
        };
        match traced {
            Some(index) => failed_records.push(BadRecord {
                index: index + offset,
                kind: ErrorKind::Expression,
                reason: e.reason,
            }),
            None => failed_rows.push(e),
        }
    }
    failed_records.sort_by_key(|r| r.index);
    for record in &mut bad {
        record.index += offset;
    }
    let output = LaneOutput {
        rows,
        partitions,
        bad,
        failed_records,
        failed_rows,
        first_record: offset,
        trace,
    };
    Ok((output, out))
}

/// How many lanes a batch of `records` records is decoded on, with `lanes` available.
fn lanes_for(records: usize, lanes: usize) -> usize {
    (records / MIN_LANE_RECORDS).clamp(1, lanes.max(1))
}

/// Ranges each lane's share of a batch is cut into: the lanes take ranges in turn until none
/// is left, so a lane whose thread waits for a core (two cores shared with the reading thread
/// and the broker) leaves its ranges to the lanes that run, and a batch waits at most one
/// range for its slowest lane.
const RANGES_PER_LANE: usize = 4;

/// How many ranges a batch of `records` records decoded on `lanes` lanes is cut into: one
/// without a second lane, else up to [`RANGES_PER_LANE`] per lane, of about
/// [`MIN_LANE_RECORDS`] records or more each (the last range holds what is left).
fn ranges_for(records: usize, lanes: usize) -> usize {
    if lanes < 2 {
        return 1;
    }
    (records / MIN_LANE_RECORDS).clamp(lanes, lanes * RANGES_PER_LANE)
}

/// Runs `work` for each item and returns the results in item order. When `parallel` and
/// called within [`on_pool`], the items are taken in turn by this thread and the lanes'
/// threads, whichever is free: a lane thread still waking when the others have taken every
/// item leaves them to those (it is waited for only to find nothing left, never to do an
/// item). A panic in `work` is an error of the job, not a panic of the runner.
fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    parallel: bool,
    work: impl Fn(usize, T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let pool = LANE_POOL.with(|p| p.borrow().clone());
    let Some(pool) = pool.filter(|_| parallel && items.len() > 1) else {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| work(i, item))
            .collect();
    };
    let n = items.len();
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<Result<R>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // Log lines of every thread in the job's span.
    let span = tracing::Span::current();
    let claim = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        let item = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(item) = item else { break };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| span.in_scope(|| work(i, item))))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| m.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(VeloError::Execution(format!(
                    "worker lane {i} stopped on a panic: {message}"
                )))
            });
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    };
    let claim = &claim;
    pool.in_place_scope(|scope| {
        for _ in 1..n.min(pool.current_num_threads() + 1) {
            scope.spawn(move |_| claim());
        }
        claim();
    });
    results
        .iter()
        .map(|slot| {
            slot.lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| Err(VeloError::Execution("a worker lane never ran".into())))
        })
        .collect()
}

thread_local! {
    /// The lanes' threads of the job whose batch this thread is processing (see [`on_pool`]).
    static LANE_POOL: std::cell::RefCell<Option<Arc<rayon::ThreadPool>>> =
        const { std::cell::RefCell::new(None) };
}

/// The threads that help the runner's thread with a job's lanes: `threads` (one per further
/// lane), kept for the job's life (a thread started per micro-batch took longer to get going
/// than a range takes to decode), with the runner's stack size (expressions are evaluated
/// recursively).
pub(crate) fn lane_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("velo-lane-{i}"))
        .stack_size(crate::sql::PLANNING_STACK_BYTES)
        .build()
        .map(Arc::new)
        .map_err(|e| VeloError::Execution(format!("cannot start the worker lanes' threads: {e}")))
}

/// Runs `f` here, with `pool`'s threads sharing the work it hands out with [`on_threads`]
/// (without a pool, one lane: none is shared).
pub(crate) fn on_pool<R>(pool: Option<&Arc<rayon::ThreadPool>>, f: impl FnOnce() -> R) -> R {
    let Some(pool) = pool else { return f() };
    struct Restore(Option<Arc<rayon::ThreadPool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LANE_POOL.with(|p| *p.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(LANE_POOL.with(|p| p.borrow_mut().replace(Arc::clone(pool))));
    f()
}

/// Decodes `batch` on as many of `lanes` as its size calls for, cut into contiguous ranges
/// that the lanes take in turn (on their threads), and runs each range through `run` there; then
/// `then` on the same lane and thread. Per range, in order: what the lane made of it, what
/// `run` emitted, and what `then` gave.
fn decode_on_lanes<R: Send>(
    lanes: &mut [(&mut InputAdapter, &mut Pipeline)],
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
    run: impl Fn(&mut Pipeline, RecordBatch) -> Result<Vec<RecordBatch>> + Sync,
    then: impl Fn(&mut Pipeline, &[RecordBatch]) -> Result<R> + Sync,
) -> Result<Vec<(LaneOutput, Vec<RecordBatch>, R)>> {
    let deciders = lanes_for(batch.len(), lanes.len());
    let ranges = ranges_for(batch.len(), deciders);
    let chunk = batch.len().div_ceil(ranges);
    let next = AtomicUsize::new(0);
    // Once a range fails no lane takes another: every range before it is taken already, so
    // the first failing range (the error one lane reports) is among those done.
    let failed = AtomicBool::new(false);
    let decoding: Vec<_> = lanes
        .iter_mut()
        .take(deciders)
        .map(|(a, p)| (&mut **a, &mut **p))
        .collect();
    let taken = on_threads(decoding, deciders > 1, |_, (adapter, pipeline)| {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let start = i * chunk;
            if start >= batch.len() && !(i == 0 && batch.is_empty()) {
                break;
            }
            let len = chunk.min(batch.len() - start);
            let part = if len == batch.len() {
                batch.clone()
            } else {
                batch.slice(start, len)
            };
            let range = run_lane(
                adapter,
                pipeline,
                input,
                &part,
                start,
                horizon,
                |p, rows| run(p, rows),
            )
            .and_then(|(output, emitted)| {
                let extra = then(pipeline, &emitted)?;
                Ok((output, emitted, extra))
            });
            failed.fetch_or(range.is_err(), Ordering::Relaxed);
            done.push((i, range));
        }
        Ok(done)
    })?;
    let mut done: Vec<_> = taken.into_iter().flatten().collect();
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, range)| range).collect()
}

/// Processes `batch` of input `input` on `lanes` (the runner's first) as `exchange` says:
/// without one, each lane decodes and runs a range of the batch; with one, rows change lanes
/// by key before the keyed operator (or the join, or a join input's keyed operator). A keyed
/// query always goes through the exchange, however small the batch: a key's state lives in
/// one lane only. A row-wise query given the sink's `encoder` encodes its output rows on the
/// lanes too. The pieces of a batch large enough to share are taken by this thread and
/// `pool`'s; a smaller batch is all this thread's (its watermark may still close windows on
/// the lanes' threads, see [`Lanes::advance_watermark`]).
pub(crate) fn process(
    pool: Option<&Arc<rayon::ThreadPool>>,
    lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    exchange: Option<&Exchange>,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
    encoder: Option<&RowEncoder>,
) -> Result<Processed> {
    // Fewer records than two lanes' worth decode on one lane (`lanes_for`), and seldom leave
    // enough rows to exchange in parallel (a lookup join matching many rows may: they are
    // then exchanged on this thread, with the same result).
    let pool = pool.filter(|_| lanes.len() > 1 && batch.len() >= 2 * MIN_LANE_RECORDS);
    on_pool(pool, || match exchange {
        None => process_rows(lanes, input, batch, horizon, encoder),
        Some(keyed @ Exchange::Keyed { at, keys }) => {
            process_keyed(lanes, keyed, *at, keys, input, batch, horizon)
        }
        Some(Exchange::Join) => process_join(lanes, input, batch, horizon),
        Some(Exchange::Branches(sides)) => process_branches(lanes, sides, input, batch, horizon),
        Some(gathered @ Exchange::Gathered { at }) => {
            process_gathered(lanes, gathered, *at, input, batch, horizon)
        }
    })
}

/// A query whose first stateful operator, at `at`, has `keys` ([`Exchange::Keyed`]): its rows
/// are exchanged by key before it (see [`exchange_by_key`]).
fn process_keyed(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    keyed: &Exchange,
    at: usize,
    keys: &[Arc<dyn PhysicalExpr>],
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    let (parts, emitted, errors) = exchange_by_key(
        &mut lanes,
        input,
        batch,
        horizon,
        keys,
        |pipeline, rows| pipeline.process_until(input, rows, at),
        |pipeline, rows| pipeline.process_at(at, rows),
    )?;
    let pipelines: Vec<&mut Pipeline> = lanes.into_iter().map(|(_, p)| p).collect();
    finish(parts, pipelines, keyed, emitted, errors)
}

/// A query whose first stateful operator, at `at`, has no key ([`Exchange::Gathered`]): the
/// ranges are decoded and run up to it on the lanes, their rows gathered into one batch for it
/// on the first lane, and the rows it rejects traced back through their ranges to their
/// records. A batch too small to split runs whole on the first lane.
fn process_gathered(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    gathered: &Exchange,
    at: usize,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    if lanes_for(batch.len(), lanes.len()) == 1 {
        return whole_on_first_lane(lanes, input, batch, horizon);
    }
    if let Some(watermark) = lanes[0].1.partial_watermark(at) {
        return process_partials(lanes, gathered, at, watermark, input, batch, horizon);
    }
    let decoded = decode_on_lanes(
        &mut lanes,
        input,
        batch,
        horizon,
        |p, rows| p.process_until(input, rows, at),
        |_, _| Ok(()),
    )?;
    // Where each range's rows start in the gathered batch.
    let mut parts = Vec::with_capacity(decoded.len());
    let mut rows = Vec::new();
    let mut starts = Vec::with_capacity(decoded.len());
    let mut gathered_rows = 0;
    for (part, out, ()) in decoded {
        starts.push(gathered_rows);
        gathered_rows += out.iter().map(RecordBatch::num_rows).sum::<usize>();
        parts.push(part);
        rows.extend(out);
    }
    let mut pipelines: Vec<&mut Pipeline> = lanes.into_iter().map(|(_, p)| p).collect();
    let (emitted, failed) = pipelines[0].process_at(at, as_one_batch(rows)?.pop())?;
    let failed = failed
        .into_iter()
        .map(|e| {
            let row = e.origin.unwrap_or(0);
            let range = starts.partition_point(|&s| s <= row) - 1;
            (range, row - starts[range], e)
        })
        .collect();
    let errors = to_records(&mut parts, failed, input);
    finish(parts, pipelines, gathered, emitted, errors)
}

/// A gathered query whose operator at `at` splits into partial results (a global aggregate:
/// see [`crate::operators::StreamOperator::partial_watermark`]): each range is decoded, run up
/// to it and aggregated on its lane, against the operator's `watermark`, and the first lane's
/// operator merges the ranges' partial results in range order. The rows the partial
/// aggregations reject are traced back through their ranges to their records, in range order,
/// as when the whole batch is gathered.
fn process_partials(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    gathered: &Exchange,
    at: usize,
    watermark: i64,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    let decoded = decode_on_lanes(
        &mut lanes,
        input,
        batch,
        horizon,
        |p, rows| p.process_until(input, rows, at),
        |p, emitted| p.partial_at(at, watermark, emitted),
    )?;
    let (mut parts, partials, failed) = partials_of(decoded);
    let mut pipelines: Vec<&mut Pipeline> = lanes.into_iter().map(|(_, p)| p).collect();
    let emitted = pipelines[0].merge_partials_at(at, partials)?;
    let errors = to_records(&mut parts, failed, input);
    finish(parts, pipelines, gathered, emitted, errors)
}

/// The ranges' parts, partial results and rejected rows (each with its range and its row among
/// the rows the range's operators gave), in range order.
#[allow(clippy::type_complexity)]
fn partials_of(
    decoded: Vec<(
        LaneOutput,
        Vec<RecordBatch>,
        Option<(Partial, Vec<PipelineRowError>)>,
    )>,
) -> (
    Vec<LaneOutput>,
    Vec<Partial>,
    Vec<(usize, usize, PipelineRowError)>,
) {
    let mut parts = Vec::with_capacity(decoded.len());
    let mut partials = Vec::with_capacity(decoded.len());
    let mut failed = Vec::new();
    for (range, (part, _, partial)) in decoded.into_iter().enumerate() {
        parts.push(part);
        if let Some((partial, errors)) = partial {
            partials.push(partial);
            failed.extend(
                errors
                    .into_iter()
                    .map(|e| (range, e.origin.unwrap_or(0), e)),
            );
        }
    }
    (parts, partials, failed)
}

/// `batch` decoded on `lanes` range by range, each range run through `run` on its lane: the
/// ranges' parts and what `run` emitted, in range order.
fn ranges_through(
    lanes: &mut [(&mut InputAdapter, &mut Pipeline)],
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
    run: impl Fn(&mut Pipeline, RecordBatch) -> Result<Vec<RecordBatch>> + Sync,
) -> Result<(Vec<LaneOutput>, Vec<RecordBatch>)> {
    let decoded = decode_on_lanes(lanes, input, batch, horizon, run, |_, _| Ok(()))?;
    let mut parts = Vec::with_capacity(decoded.len());
    let mut emitted = Vec::new();
    for (part, out, ()) in decoded {
        parts.push(part);
        emitted.extend(out);
    }
    Ok((parts, emitted))
}

/// The exchange before a keyed operator (of the pipeline, or of a join's branch): each range
/// of `batch` is decoded and run up to the operator on its lane (`upto`), its rows go to the
/// lanes their `keys` hash to, and each lane's copy of the operator takes its keys' rows from
/// every range, in range order, as one batch (as one lane would have had them: an operator
/// emitting per batch, EMIT CHANGES, then emits what it would at parallelism 1), through
/// `keyed`. Returns the ranges' parts, what the copies emitted (lane after lane) and the row
/// errors of the lanes.
#[allow(clippy::type_complexity)]
fn exchange_by_key(
    lanes: &mut [(&mut InputAdapter, &mut Pipeline)],
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
    keys: &[Arc<dyn PhysicalExpr>],
    upto: impl Fn(&mut Pipeline, RecordBatch) -> Result<Vec<RecordBatch>> + Sync,
    keyed: impl Fn(&mut Pipeline, Option<RecordBatch>) -> Result<(Vec<RecordBatch>, Vec<PipelineRowError>)>
        + Sync,
) -> Result<(Vec<LaneOutput>, Vec<RecordBatch>, Vec<PipelineRowError>)> {
    let count = lanes.len();
    let decoded = decode_on_lanes(lanes, input, batch, horizon, upto, |_, emitted| {
        route(emitted, count, |b| evaluate(keys, b))
    })?;
    let (mut parts, batches, received, origins) = gather(decoded, count);
    let rows: usize = received.iter().map(Vec::len).sum();
    let mut pipelines: Vec<&mut Pipeline> = lanes.iter_mut().map(|(_, p)| &mut **p).collect();
    let work = paired(&mut pipelines, received);
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    let emitted = on_threads(
        work,
        rows >= 2 * MIN_LANE_RECORDS,
        |_, (pipeline, picks)| {
            let (out, failed) = keyed(pipeline, picked(&sources, &picks)?)?;
            // Each failed row's range, and its row among the range's rows.
            let failed: Vec<_> = failed
                .into_iter()
                .map(|e| {
                    let (b, row) = picks[e.origin.unwrap_or(0)];
                    let (range, first) = origins[b];
                    (range, first + row, e)
                })
                .collect();
            Ok((out, failed, pipeline.take_row_errors()))
        },
    )?;
    let mut merged = Vec::new();
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    for (batches, lane_failed, lane_errors) in emitted {
        merged.extend(batches);
        failed.extend(lane_failed);
        errors.extend(lane_errors);
    }
    errors.extend(to_records(&mut parts, failed, input));
    Ok((parts, merged, errors))
}

/// Rows the keyed or gathered operator could not evaluate, each with its range and its row
/// among the rows the range's operators gave: reported as their records where the range's rows
/// can be traced back to them (in record order, as one lane reports them), else returned, to
/// be reported as rows.
fn to_records(
    parts: &mut [LaneOutput],
    failed: Vec<(usize, usize, PipelineRowError)>,
    input: usize,
) -> Vec<PipelineRowError> {
    let mut untraced = Vec::new();
    let mut touched = Vec::new();
    for (range, row, e) in failed {
        let part = &mut parts[range];
        match part.trace.as_deref().and_then(|t| trace_back(t, row)) {
            Some(index) => {
                part.failed_records.push(BadRecord {
                    index: part.first_record + index,
                    kind: ErrorKind::Expression,
                    reason: e.reason,
                });
                touched.push(range);
            }
            None => untraced.push(PipelineRowError {
                input,
                origin: None,
                ..e
            }),
        }
    }
    touched.sort_unstable();
    touched.dedup();
    for range in touched {
        parts[range].failed_records.sort_by_key(|r| r.index);
    }
    untraced
}

/// A row-wise query: each range is decoded and run through the whole pipeline on its lane,
/// and its output rows encoded there with `encoder`.
fn process_rows(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
    encoder: Option<&RowEncoder>,
) -> Result<Processed> {
    let decoded = decode_on_lanes(
        &mut lanes,
        input,
        batch,
        horizon,
        |pipeline, rows| pipeline.process_input(input, rows),
        // A batch that fails to encode is left to the sink: its error then comes where it
        // would on one lane, after the batch's bad records are reported.
        |_, emitted| {
            Ok(match encoder {
                Some(encoder) => emitted
                    .iter()
                    .map(|b| Encoded::of(encoder, b).ok())
                    .collect(),
                None => Vec::new(),
            })
        },
    )?;
    let mut parts = Vec::with_capacity(decoded.len());
    let mut out = Vec::new();
    let mut encoded = Vec::new();
    for (output, emitted, rows) in decoded {
        parts.push(output);
        out.extend(emitted);
        encoded.extend(rows);
    }
    Ok(Processed {
        parts,
        out,
        encoded,
    })
}

/// A query opening with a join of streams on its lanes: each range is decoded and run through
/// its side's branch, the rows arriving at the join change lanes by join key, every lane's
/// copy of the join takes its rows (with their positions in the whole arrival) and what the
/// copies emit is merged into what one copy emits, then run through the operators after the
/// join on the first lane.
fn process_join(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    let count = lanes.len();
    let side = joined(lanes[0].1)?.side_of(input).0;
    let decoded = decode_on_lanes(
        &mut lanes,
        input,
        batch,
        horizon,
        |pipeline, rows| pipeline.enter_join(input, rows),
        |pipeline, arrived| {
            let join = joined(pipeline)?;
            route(arrived, count, |b| join.key_columns(side, b))
        },
    )?;
    let (parts, batches, received, _) = gather(decoded, count);
    // A row's position in the arrival: rows in range order, as one lane would have them.
    let mut first_row = Vec::with_capacity(batches.len());
    let mut rows = 0;
    for b in &batches {
        first_row.push(rows);
        rows += b.num_rows();
    }
    let mut pipelines: Vec<&mut Pipeline> = lanes.into_iter().map(|(_, p)| p).collect();
    if rows == 0 {
        // Nothing arrives: no lane counts an arrival (nor would one lane).
        return finish(parts, pipelines, &Exchange::Join, Vec::new(), Vec::new());
    }
    let work = paired(&mut pipelines, received);
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    let schema = batches[0].schema();
    // Every lane takes the arrival, its rows or none: the copies number arrivals alike.
    let emitted = on_threads(
        work,
        rows >= 2 * MIN_LANE_RECORDS,
        |_, (pipeline, picks)| {
            let positions: Vec<u32> = picks
                .iter()
                .map(|&(b, row)| (first_row[b] + row) as u32)
                .collect();
            let rows =
                picked(&sources, &picks)?.unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
            joined(pipeline)?.arrive_at(side, rows, Some(&positions))
        },
    )?;
    let merged = merge_ordered(emitted)?;
    finish(parts, pipelines, &Exchange::Join, merged, Vec::new())
}

/// `batch` decoded and run through the whole pipeline on the first of `lanes`, as one lane
/// runs it.
fn whole_on_first_lane(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    let (parts, out) = ranges_through(&mut lanes[..1], input, batch, horizon, |p, rows| {
        p.process_input(input, rows)
    })?;
    Ok(Processed {
        parts,
        out,
        encoded: Vec::new(),
    })
}

/// A query opening with a join whose branches are split ([`Exchange::Branches`]): a batch of
/// input `input` goes through its side's branch as [`BranchSplit`] says, and what arrives at the
/// join is joined on the first lane, then run through the operators after the join there.
fn process_branches(
    mut lanes: Vec<(&mut InputAdapter, &mut Pipeline)>,
    sides: &[BranchSplit; 2],
    input: usize,
    batch: &SourceBatch,
    horizon: Option<i64>,
) -> Result<Processed> {
    let side = joined(lanes[0].1)?.side_of(input).0;
    let exchange = Exchange::Join;
    let (parts, arrived, errors) = match &sides[side as usize] {
        BranchSplit::Whole => return whole_on_first_lane(lanes, input, batch, horizon),
        BranchSplit::Partial { .. } if lanes_for(batch.len(), lanes.len()) == 1 => {
            return whole_on_first_lane(lanes, input, batch, horizon)
        }
        BranchSplit::Partial { at } => {
            let at = *at;
            let watermark = lanes[0]
                .1
                .on_join(|join| Ok(join.branch_mut(side).partial_watermark(at)))?
                .ok_or_else(|| {
                    VeloError::Execution("a join input's aggregate lost its partials".into())
                })?;
            let decoded = decode_on_lanes(
                &mut lanes,
                input,
                batch,
                horizon,
                |pipeline, rows| pipeline.enter_join_until(input, rows, at),
                |pipeline, emitted| {
                    pipeline
                        .on_join(|join| join.branch_mut(side).partial_at(at, watermark, emitted))
                },
            )?;
            let (mut parts, partials, failed) = partials_of(decoded);
            // Those not traced back to records are the join's, as on one lane.
            let failed = failed
                .into_iter()
                .map(|(range, row, e)| (range, row, PipelineRowError { step: 0, ..e }))
                .collect();
            let errors = to_records(&mut parts, failed, input);
            let arrived = lanes[0].1.on_join(|join| {
                let branch = join.branch_mut(side);
                let merged = branch.merge_partials_at(at, partials)?;
                branch.process_range(at + 1, usize::MAX, merged)
            })?;
            (parts, arrived, errors)
        }
        BranchSplit::Rows => {
            let (parts, rows) = ranges_through(&mut lanes, input, batch, horizon, |p, rows| {
                p.enter_join(input, rows)
            })?;
            (parts, as_one_batch(rows)?, Vec::new())
        }
        BranchSplit::Keyed { at, keys } => {
            let at = *at;
            let (parts, emitted, errors) = exchange_by_key(
                &mut lanes,
                input,
                batch,
                horizon,
                keys,
                |pipeline, rows| pipeline.enter_join_until(input, rows, at),
                |pipeline, rows| {
                    let (out, failed) =
                        pipeline.on_join(|join| join.branch_mut(side).process_at(at, rows))?;
                    // Those not traced back to records are the join's, as on one lane.
                    let failed = failed
                        .into_iter()
                        .map(|e| PipelineRowError { step: 0, ..e })
                        .collect();
                    Ok((out, failed))
                },
            )?;
            let arrived = lanes[0].1.on_join(|join| {
                let branch = join.branch_mut(side);
                let merged = branch.merge_emitted(at, emitted)?;
                branch.process_range(at + 1, usize::MAX, merged)
            })?;
            (parts, arrived, errors)
        }
    };
    let mut pipelines: Vec<&mut Pipeline> = lanes.into_iter().map(|(_, p)| p).collect();
    let out = pipelines[0].on_join(|join| join.arrive_all(side, arrived))?;
    finish(parts, pipelines, &exchange, out, errors)
}

/// What row-wise operators gave for each range of a batch, as the one batch they give one
/// lane for the whole batch.
fn as_one_batch(rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    Ok(match rows.len() {
        0 | 1 => rows,
        _ => vec![arrow::compute::concat_batches(&rows[0].schema(), &rows)?],
    })
}

/// What a join whose branches are split ([`Exchange::Branches`]) emits at `watermark`, in the
/// order one copy's `on_watermark` emits it: each lane advances its keyed sides' operators up
/// to the keyed one (`work`, in parallel when `parallel`); on the first lane, each side's
/// merged windows run through the rest of its branch and arrive at the join, left side first,
/// then the join's own state expires.
fn branches_at_watermark(
    work: Vec<&mut Pipeline>,
    sides: &[BranchSplit; 2],
    parallel: bool,
    watermark: Watermark,
) -> Result<Vec<RecordBatch>> {
    const SIDES: [JoinSide; 2] = [JoinSide::Left, JoinSide::Right];
    let keyed = sides.iter().any(|s| matches!(s, BranchSplit::Keyed { .. }));
    let advanced = on_threads(work, parallel && keyed, |_, pipeline| {
        let mut closed: [Vec<RecordBatch>; 2] = Default::default();
        for ((split, side), closed) in sides.iter().zip(SIDES).zip(&mut closed) {
            if let BranchSplit::Keyed { at, .. } = split {
                *closed = pipeline.on_join(|join| {
                    join.branch_mut(side)
                        .advance_watermark_range(0, at + 1, watermark)
                })?;
            }
        }
        Ok((pipeline, closed))
    })?;
    let mut lanes = advanced.into_iter();
    let (first, mut closed) = lanes.next().expect("the first lane");
    for (_, more) in lanes {
        for (all, more) in closed.iter_mut().zip(more) {
            all.extend(more);
        }
    }
    let mut out = Vec::new();
    for ((split, side), closed) in sides.iter().zip(SIDES).zip(closed) {
        out.extend(first.on_join(|join| {
            let branch = join.branch_mut(side);
            let arrived = match split {
                BranchSplit::Keyed { at, .. } => {
                    let merged = branch.merge_emitted(*at, closed)?;
                    let mut arrived = branch.process_range(at + 1, usize::MAX, merged)?;
                    arrived.extend(branch.advance_watermark_range(
                        at + 1,
                        usize::MAX,
                        watermark,
                    )?);
                    arrived
                }
                BranchSplit::Rows | BranchSplit::Partial { .. } | BranchSplit::Whole => {
                    branch.advance_watermark(watermark)?
                }
            };
            join.arrive_all(side, arrived)
        })?);
    }
    let expired = first.on_join(|join| join.advance_ordered(watermark, false))?;
    out.extend(
        expired
            .map(|o| o.batch)
            .into_iter()
            .filter(|b| b.num_rows() > 0),
    );
    Ok(out)
}

/// The decoded ranges' parts, their emitted batches (all ranges', in order), per lane the rows
/// routed to it as (batch, row) in those batches, and per batch its range and the row it
/// starts at among the range's rows.
#[allow(clippy::type_complexity)]
fn gather(
    decoded: Vec<(LaneOutput, Vec<RecordBatch>, Vec<Vec<(usize, usize)>>)>,
    lanes: usize,
) -> (
    Vec<LaneOutput>,
    Vec<RecordBatch>,
    Vec<Vec<(usize, usize)>>,
    Vec<(usize, usize)>,
) {
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut received: Vec<Vec<(usize, usize)>> = (0..lanes).map(|_| Vec::new()).collect();
    let mut parts = Vec::with_capacity(decoded.len());
    // Per batch: its range, and the row its rows start at among the range's.
    let mut origins = Vec::new();
    for (range, (output, emitted, routed)) in decoded.into_iter().enumerate() {
        parts.push(output);
        let first = batches.len();
        let mut row = 0;
        for b in &emitted {
            origins.push((range, row));
            row += b.num_rows();
        }
        batches.extend(emitted);
        for (j, picks) in routed.into_iter().enumerate() {
            received[j].extend(picks.into_iter().map(|(b, row)| (first + b, row)));
        }
    }
    (parts, batches, received, origins)
}

/// Each lane's pipeline with the rows routed to it.
#[allow(clippy::type_complexity)]
fn paired<'a>(
    pipelines: &'a mut [&mut Pipeline],
    received: Vec<Vec<(usize, usize)>>,
) -> Vec<(&'a mut Pipeline, Vec<(usize, usize)>)> {
    pipelines
        .iter_mut()
        .map(|p| &mut **p)
        .zip(received)
        .collect()
}

/// The rows `picks` of `sources` as one batch (`None`: no rows).
fn picked(sources: &[&RecordBatch], picks: &[(usize, usize)]) -> Result<Option<RecordBatch>> {
    Ok(match (sources, picks.len()) {
        (_, 0) => None,
        // Every row of the one batch there is, in order: no copy.
        ([only], n) if n == only.num_rows() => Some((*only).clone()),
        _ => Some(arrow::compute::interleave_record_batch(sources, picks)?),
    })
}

/// The end of a batch on the lanes: what the keyed operator's copies emitted (`merged`) run
/// through the operators after it on the first lane; row errors of the lanes (`errors`) and of
/// those operators reported with the first range.
fn finish(
    mut parts: Vec<LaneOutput>,
    mut pipelines: Vec<&mut Pipeline>,
    exchange: &Exchange,
    merged: Vec<RecordBatch>,
    errors: Vec<PipelineRowError>,
) -> Result<Processed> {
    let out = downstream(&mut pipelines, exchange, merged)?;
    if let Some(first) = parts.first_mut() {
        first.failed_rows.extend(errors);
        first.failed_rows.extend(pipelines[0].take_row_errors());
    }
    Ok(Processed {
        parts,
        out,
        encoded: Vec::new(),
    })
}

/// The join of streams heading `pipeline` (a query split as [`Exchange::Join`]).
fn joined(pipeline: &mut Pipeline) -> Result<&mut StreamJoinExec> {
    pipeline
        .stream_join_mut()
        .ok_or_else(|| VeloError::Execution("a lane's pipeline lost its join".into()))
}

/// Each lane's copy of a join emitted its parts (see [`Ordered`]): part k of every copy,
/// merged by order key into part k of one copy, parts in order.
fn merge_ordered<const N: usize>(emitted: Vec<[Ordered; N]>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for k in 0..N {
        let pieces: Vec<&Ordered> = emitted
            .iter()
            .map(|parts| &parts[k])
            .filter(|o| o.batch.num_rows() > 0)
            .collect();
        match pieces.as_slice() {
            [] => {}
            [one] => out.push(one.batch.clone()),
            _ => {
                let mut order: Vec<((u64, u32), usize, usize)> = pieces
                    .iter()
                    .enumerate()
                    .flat_map(|(p, o)| o.order.iter().enumerate().map(move |(r, &k)| (k, p, r)))
                    .collect();
                // Stable: rows with one key come from one row, on one lane, in order.
                order.sort_by_key(|&(k, _, _)| k);
                let picks: Vec<(usize, usize)> = order.iter().map(|&(_, p, r)| (p, r)).collect();
                let sources: Vec<&RecordBatch> = pieces.iter().map(|o| &o.batch).collect();
                out.push(arrow::compute::interleave_record_batch(&sources, &picks)?);
            }
        }
    }
    Ok(out)
}

/// What the keyed operator (or join) emitted on every lane, merged into the order one copy
/// emits it in, through the operators after it: those of the first lane, which alone run
/// them (the other lanes' copies of them hold nothing).
fn downstream(
    pipelines: &mut [&mut Pipeline],
    exchange: &Exchange,
    emitted: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let first = &mut pipelines[0];
    let at = exchange.at();
    let merged = match exchange {
        Exchange::Keyed { .. } => first.merge_emitted(at, emitted)?,
        // Merged already, by order key; or the output of the first lane's operator.
        Exchange::Join | Exchange::Branches(_) | Exchange::Gathered { .. } => emitted,
    };
    first.process_range(at + 1, usize::MAX, merged)
}

/// Each key expression evaluated over `batch`.
fn evaluate(keys: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let rows = batch.num_rows();
    keys.iter()
        .map(|k| Ok(k.evaluate(batch)?.into_array(rows)?))
        .collect()
}

/// The lane of each row of `batches`, by the hash of its key (`keys` of a batch): per lane,
/// its rows as (batch, row) in order.
fn route(
    batches: &[RecordBatch],
    lanes: usize,
    keys: impl Fn(&RecordBatch) -> Result<Vec<ArrayRef>>,
) -> Result<Vec<Vec<(usize, usize)>>> {
    let mut routed: Vec<Vec<(usize, usize)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (b, batch) in batches.iter().enumerate() {
        let columns = keys(batch)?;
        for (row, hash) in stable_hashes(&columns, batch.num_rows())?
            .into_iter()
            .enumerate()
        {
            routed[(hash % lanes as u64) as usize].push((b, row));
        }
    }
    Ok(routed)
}

/// A hash of each row of `keys` that is the same on every machine, in every run and every
/// release (a key's lane must not move between a checkpoint and the run restoring it). Equal
/// keys hash equally; values that group together (-0.0 and 0.0, any NaN, one string in two
/// dictionaries) hash equally too. A column of a type without a hash of its own here (lists,
/// structs) adds nothing: its rows share lanes by the other keys — coarser, never wrong.
pub fn stable_hashes(keys: &[ArrayRef], rows: usize) -> Result<Vec<u64>> {
    let mut hashes = vec![0x243F_6A88_85A3_08D3_u64; rows];
    for key in keys {
        hash_column(key, &mut hashes)?;
    }
    Ok(hashes.into_iter().map(mix).collect())
}

/// What a NULL key value hashes as.
const NULL_HASH: u64 = 0x6A09_E667_F3BC_C909;

fn hash_column(array: &ArrayRef, hashes: &mut [u64]) -> Result<()> {
    let array = match array.data_type() {
        DataType::Dictionary(_, values) => cast(array, values)?,
        _ => array.clone(),
    };
    let mut add = |row: usize, value: Option<u64>| {
        hashes[row] = mix(hashes[row] ^ value.unwrap_or(NULL_HASH));
    };
    match array.data_type() {
        DataType::Decimal128(_, _) => {
            let values = array.as_primitive::<arrow::datatypes::Decimal128Type>();
            for (row, v) in values.iter().enumerate() {
                add(row, v.map(|v| mix(v as u64) ^ ((v >> 64) as u64)));
            }
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let values = cast(&array, &DataType::Float64)?;
            for (row, v) in values
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .enumerate()
            {
                add(
                    row,
                    v.map(|v| {
                        if v.is_nan() {
                            f64::NAN.to_bits()
                        } else if v == 0.0 {
                            0 // -0.0 too
                        } else {
                            v.to_bits()
                        }
                    }),
                );
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let values = cast(&array, &DataType::Utf8)?;
            for (row, v) in values.as_string::<i32>().iter().enumerate() {
                add(row, v.map(|v| fnv1a(v.as_bytes())));
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let values = cast(&array, &DataType::Binary)?;
            for (row, v) in values.as_binary::<i32>().iter().enumerate() {
                add(row, v.map(fnv1a));
            }
        }
        t if t.is_integer() || t.is_temporal() || *t == DataType::Boolean => {
            // Each value as an integer (UInt64 past i64::MAX becomes NULL: a shared lane).
            let values = arrow::compute::cast_with_options(
                &array,
                &DataType::Int64,
                &arrow::compute::CastOptions {
                    safe: true,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Int64, array.len()));
            for (row, v) in values.as_primitive::<Int64Type>().iter().enumerate() {
                add(row, v.map(|v| v as u64));
            }
        }
        _ => {}
    }
    Ok(())
}

/// FNV-1a over bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Decimal128Array, DictionaryArray, Float64Array, Int32Array, Int64Array,
        StringArray, StringViewArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::Int32Type;

    fn hashes(column: ArrayRef) -> Vec<u64> {
        let rows = column.len();
        stable_hashes(&[column], rows).unwrap()
    }

    #[test]
    fn a_batch_is_decoded_on_a_lane_per_thousand_records_up_to_the_lanes_there_are() {
        assert_eq!(lanes_for(0, 4), 1);
        assert_eq!(lanes_for(1023, 4), 1);
        assert_eq!(lanes_for(2048, 4), 2);
        assert_eq!(lanes_for(8192, 4), 4);
        assert_eq!(lanes_for(8192, 1), 1);
        assert_eq!(lanes_for(8192, 0), 1);
    }

    /// The name of the thread running this.
    fn thread() -> String {
        std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn with_the_lanes_threads_the_items_run_at_once_each_on_a_thread_of_its_own() {
        let pool = lane_pool(1).unwrap();
        let started = AtomicUsize::new(0);
        let threads = on_pool(Some(&pool), || {
            on_threads(vec![(), ()], true, |_, ()| {
                started.fetch_add(1, Ordering::SeqCst);
                // Each item waits (at most 10 s) for the other to have started.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while started.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                Ok((thread(), started.load(Ordering::SeqCst)))
            })
        })
        .unwrap();
        assert_eq!(
            threads[0].1, 2,
            "the second item never started beside the first"
        );
        assert_eq!(threads[1].1, 2);
        assert_ne!(threads[0].0, threads[1].0);
        assert!(
            threads.iter().any(|(name, _)| name == "velo-lane-0"),
            "{threads:?}"
        );
        assert!(
            threads.iter().any(|(name, _)| *name == thread()),
            "{threads:?}"
        );
    }

    #[test]
    fn items_the_lanes_thread_is_not_free_for_are_all_run_by_the_thread_that_handed_them_out() {
        let pool = lane_pool(1).unwrap();
        // The one lane thread is kept busy until the last item runs.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (busy, is_busy) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            busy.send(()).unwrap();
            let _ = wait.recv_timeout(std::time::Duration::from_secs(30));
        });
        is_busy.recv().unwrap();
        let release = Mutex::new(release);
        let threads = on_pool(Some(&pool), || {
            on_threads(vec![0, 1, 2], true, |i, item: usize| {
                assert_eq!(i, item);
                if i == 2 {
                    release.lock().unwrap().send(()).unwrap();
                }
                Ok(thread())
            })
        })
        .unwrap();
        assert_eq!(threads, [thread(), thread(), thread()]);
        // Without a pool, here too.
        let here = on_pool(None, || {
            on_threads(vec![0, 1], true, |_, _: usize| Ok(thread()))
        });
        assert_eq!(here.unwrap(), [thread(), thread()]);
    }

    #[test]
    fn a_panic_on_a_lane_is_an_error_of_the_job() {
        let pool = lane_pool(2).unwrap();
        let result = on_pool(Some(&pool), || {
            on_threads(vec![0, 1], true, |_, item: u32| {
                if item == 1 {
                    panic!("a bug");
                }
                Ok(item)
            })
        });
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("worker lane 1 stopped on a panic: a bug"),
            "{error}"
        );
    }

    #[test]
    fn a_batch_on_several_lanes_is_cut_into_up_to_four_ranges_a_lane_of_about_a_thousand_records_or_more(
    ) {
        assert_eq!(ranges_for(8192, 1), 1);
        assert_eq!(ranges_for(2048, 2), 2);
        assert_eq!(ranges_for(5000, 2), 4);
        assert_eq!(ranges_for(8192, 2), 8);
        assert_eq!(ranges_for(100_000, 2), 8);
        assert_eq!(ranges_for(8192, 4), 8);
    }

    #[test]
    fn the_hash_of_a_key_is_fixed_forever() {
        // Checkpointed lanes depend on these numbers: changing them moves keys between lanes.
        let ints = hashes(Arc::new(Int64Array::from(vec![Some(1), Some(42), None])));
        let text = hashes(Arc::new(StringArray::from(vec![
            Some("AAPL"),
            Some(""),
            None,
        ])));
        assert_eq!(
            (ints, text),
            (
                vec![
                    7681546532107669364,
                    7911826700007728909,
                    6083959279791358403
                ],
                vec![
                    3227678021014607317,
                    2052185907237200167,
                    6083959279791358403
                ],
            )
        );
    }

    #[test]
    fn values_that_group_together_hash_together() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![7, -3]));
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![7, -3]));
        assert_eq!(
            hashes(ints),
            hashes(narrow),
            "the same number in another width"
        );
        let floats = hashes(Arc::new(Float64Array::from(vec![
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
        ])));
        assert_eq!(floats[0], floats[1], "0.0 and -0.0");
        assert_eq!(floats[2], floats[3], "NaNs");
        let plain = hashes(Arc::new(StringArray::from(vec!["b", "a", "b"])));
        let view = hashes(Arc::new(StringViewArray::from(vec!["b", "a", "b"])));
        let keys = Int32Array::from(vec![1, 0, 1]);
        let dictionary: DictionaryArray<Int32Type> =
            DictionaryArray::try_new(keys, Arc::new(StringArray::from(vec!["a", "b"]))).unwrap();
        assert_eq!(plain, view);
        assert_eq!(plain, hashes(Arc::new(dictionary)));
        assert_eq!(plain[0], plain[2]);
        assert_ne!(plain[0], plain[1]);
    }

    #[test]
    fn distinct_keys_of_every_type_spread_over_the_lanes() {
        let n = 4000;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("k{i}")),
            )),
            Arc::new(
                Decimal128Array::from_iter_values((0..n).map(|i| i as i128 * 1_000_003))
                    .with_precision_and_scale(20, 2)
                    .unwrap(),
            ),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n).map(|i| i * 60_000),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 / 3.0),
            )),
        ];
        for column in columns {
            let what = column.data_type().clone();
            let mut per_lane = [0usize; 4];
            for h in hashes(column) {
                per_lane[(h % 4) as usize] += 1;
            }
            assert!(
                per_lane.iter().all(|&c| c > 800),
                "{what}: {per_lane:?} of {n} keys per lane"
            );
        }
        let flags = hashes(Arc::new(BooleanArray::from(vec![true, false, true])));
        assert_eq!(flags[0], flags[2]);
        assert_ne!(flags[0], flags[1]);
    }
}
