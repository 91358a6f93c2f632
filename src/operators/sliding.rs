//! Columnar sliding aggregates for `OverWindowExec`: `SUM`, `COUNT`, `AVG`, `MIN` and `MAX`
//! over a `ROWS BETWEEN n PRECEDING AND CURRENT ROW` or `RANGE BETWEEN INTERVAL … PRECEDING AND
//! CURRENT ROW` frame, computed for every partition of a release in one pass over arrays, with
//! exactly DataFusion's results.
//!
//! DataFusion evaluates a sliding aggregate row by row through `ScalarValue`s, once per
//! partition: with many partitions and a few new rows each per release, that was most of the
//! operator's time. Here the argument is evaluated once over the whole evaluation input, and
//! each frame is read from prefix sums (SUM, COUNT, AVG) or a monotonic queue (MIN, MAX: a
//! frame's ends only move forward). A RANGE frame reaches back to the first row within the
//! interval and forward to the current row's last peer (the same event time). The results are
//! DataFusion's to the last digit: sums wrap as its sliding sum does (`add_wrapping`), an
//! average of decimals scales and truncates as its `DecimalAverager` does, and a frame without
//! a value gives NULL (COUNT: 0). What this does not cover (other types, DISTINCT, FILTER,
//! other frames, an average whose sum DataFusion keeps in 256 bits) stays with DataFusion, and
//! so does an average that overflows, so that its error is DataFusion's.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Decimal128Type, Int64Type,
};
use datafusion::physical_expr::window::WindowExpr;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;

/// The aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingKind {
    Sum,
    Count,
    Avg,
    Min,
    Max,
}

impl SlidingKind {
    /// The kind of DataFusion's aggregate `name`, if computed here.
    pub fn of(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => SlidingKind::Sum,
            "count" => SlidingKind::Count,
            "avg" | "mean" => SlidingKind::Avg,
            "min" => SlidingKind::Min,
            "max" => SlidingKind::Max,
            _ => return None,
        })
    }
}

/// The rows a result covers, ending at the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(usize),
    /// `RANGE BETWEEN INTERVAL '…' PRECEDING AND CURRENT ROW`, in milliseconds of an event time
    /// kept in milliseconds, so that the operator's times are the ones DataFusion compares.
    Range(i64),
}

/// One sliding aggregate of an OVER query.
#[derive(Debug, Clone)]
pub struct SlidingAggregate {
    kind: SlidingKind,
    /// The argument, as DataFusion evaluates it (after its coercions).
    arg: Arc<dyn PhysicalExpr>,
    frame: SlidingFrame,
    /// The result type (DataFusion's).
    output: DataType,
    /// DataFusion's evaluation: for what this does not compute, so that the result (or the
    /// error) is its own.
    pub expr: Arc<dyn WindowExpr>,
}

/// Where one partition's rows are in the evaluation input, and which of them get results.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// The partition's first row in the input.
    pub start: usize,
    /// Its rows (kept, then new), in event-time order.
    pub rows: usize,
    /// The rows getting results: `emit.0..emit.1`, relative to `start`.
    pub emit: (usize, usize),
}

/// One span's frames: each emitted row's as input rows `lo..hi`, neither end ever moving back.
struct Frames {
    /// The span's first row in the input.
    start: usize,
    bounds: Vec<(usize, usize)>,
}

impl SlidingAggregate {
    /// `expr` (DataFusion's window expression of `kind` over `arg`, over `frame`) computed
    /// here, when its argument and result types are ones this module computes exactly as
    /// DataFusion does.
    pub fn new(
        kind: SlidingKind,
        arg: Arc<dyn PhysicalExpr>,
        arg_type: &DataType,
        frame: SlidingFrame,
        expr: Arc<dyn WindowExpr>,
    ) -> Option<Self> {
        let output = expr.field().ok()?.data_type().clone();
        let fits = match (kind, arg_type, &output) {
            (SlidingKind::Count, _, DataType::Int64) => true,
            (
                SlidingKind::Sum | SlidingKind::Min | SlidingKind::Max,
                DataType::Int64,
                DataType::Int64,
            ) => true,
            (SlidingKind::Sum, DataType::Decimal128(p, s), DataType::Decimal128(op, os)) => {
                *op == (*p + 10).min(38) && os == s
            }
            (
                SlidingKind::Min | SlidingKind::Max,
                DataType::Decimal128(..),
                DataType::Decimal128(..),
            ) => arg_type == &output,
            // DataFusion keeps the sum of wider decimals in 256 bits.
            (SlidingKind::Avg, DataType::Decimal128(p, s), DataType::Decimal128(op, os)) => {
                *p <= 25 && *s >= 0 && *op == (*p + 4).min(38) && *os == (*s + 4).min(38)
            }
            _ => false,
        };
        fits.then_some(Self {
            kind,
            arg,
            frame,
            output,
            expr,
        })
    }

    /// The results of every span's emitted rows, spans in order, as one array (`times`: each
    /// input row's event time, in milliseconds); `None` when one does not fit its type (an
    /// average past its precision) or a RANGE frame meets a row without an event time:
    /// DataFusion evaluates them.
    pub fn evaluate(
        &self,
        input: &RecordBatch,
        times: &[Option<i64>],
        spans: &[Span],
    ) -> Result<Option<ArrayRef>> {
        let Some(frames) = self.frames(times, spans) else {
            return Ok(None);
        };
        let values = self.arg.evaluate(input)?.into_array(input.num_rows())?;
        Ok(match (self.kind, values.data_type()) {
            (SlidingKind::Count, _) => {
                let mut out = Vec::new();
                let nulls = values.logical_nulls();
                for_each_frame::<Int64Type>(None, nulls.as_ref(), &frames, |_, count| {
                    out.push(count as i64)
                });
                Some(Arc::new(Int64Array::from(out)))
            }
            (_, DataType::Int64) => self.numeric(values.as_primitive::<Int64Type>(), &frames),
            (_, DataType::Decimal128(..)) => {
                self.numeric(values.as_primitive::<Decimal128Type>(), &frames)
            }
            _ => None,
        })
    }

    /// Per span, the frame of each emitted row; `None` when a RANGE frame meets a row without
    /// an event time.
    fn frames(&self, times: &[Option<i64>], spans: &[Span]) -> Option<Vec<Frames>> {
        let mut all = Vec::with_capacity(spans.len());
        for span in spans {
            let mut bounds = Vec::with_capacity(span.emit.1 - span.emit.0);
            match self.frame {
                SlidingFrame::Rows(n) => {
                    for i in span.emit.0..span.emit.1 {
                        bounds.push((span.start + i.saturating_sub(n), span.start + i + 1));
                    }
                }
                SlidingFrame::Range(ms) => {
                    let t = times[span.start..span.start + span.rows]
                        .iter()
                        .copied()
                        .collect::<Option<Vec<i64>>>()?;
                    for i in span.emit.0..span.emit.1 {
                        let since = t[i].saturating_sub(ms);
                        let lo = t.partition_point(|&x| x < since);
                        let hi = i + t[i..].partition_point(|&x| x == t[i]);
                        bounds.push((span.start + lo, span.start + hi));
                    }
                }
            }
            all.push(Frames {
                start: span.start,
                bounds,
            });
        }
        Some(all)
    }

    fn numeric<T: ArrowPrimitiveType>(
        &self,
        values: &PrimitiveArray<T>,
        frames: &[Frames],
    ) -> Option<ArrayRef>
    where
        T::Native: Ord,
    {
        let out: Vec<Option<T::Native>> = match self.kind {
            SlidingKind::Sum => {
                let mut out = Vec::new();
                let nulls = values.logical_nulls();
                for_each_frame(Some(values), nulls.as_ref(), frames, |sum, count| {
                    out.push((count > 0).then_some(sum))
                });
                out
            }
            SlidingKind::Avg => return self.average(values, frames),
            SlidingKind::Min | SlidingKind::Max => {
                extremes(values, frames, self.kind == SlidingKind::Max)
            }
            SlidingKind::Count => unreachable!("counted without the values"),
        };
        let array = PrimitiveArray::<T>::from_iter(out).with_data_type(self.output.clone());
        Some(Arc::new(array))
    }

    /// DataFusion's decimal average: the sum scaled up to the result's scale, divided by the
    /// count (truncating), and refused (`None`) where that overflows or leaves the precision.
    fn average<T: ArrowPrimitiveType>(
        &self,
        values: &PrimitiveArray<T>,
        frames: &[Frames],
    ) -> Option<ArrayRef> {
        let (DataType::Decimal128(_, scale), DataType::Decimal128(precision, target)) =
            (values.data_type(), &self.output)
        else {
            return None;
        };
        let values = values
            .as_any()
            .downcast_ref::<PrimitiveArray<Decimal128Type>>()?;
        let factor = 10_i128.checked_pow(u32::try_from(*target - *scale).ok()?)?;
        let bound = 10_i128.checked_pow(*precision as u32);
        let mut out: Vec<Option<i128>> = Vec::new();
        let mut fits = true;
        let nulls = values.logical_nulls();
        for_each_frame(Some(values), nulls.as_ref(), frames, |sum, count| {
            if count == 0 {
                out.push(None);
                return;
            }
            let average = sum.checked_mul(factor).map(|v| v / count as i128);
            match (average, bound) {
                (Some(v), Some(b)) if v.unsigned_abs() < b as u128 => out.push(Some(v)),
                (Some(v), None) => out.push(Some(v)),
                _ => fits = false,
            }
        });
        if !fits {
            return None;
        }
        let array =
            PrimitiveArray::<Decimal128Type>::from_iter(out).with_data_type(self.output.clone());
        Some(Arc::new(array))
    }
}

/// Calls `each(sum, count)` for every frame of every span, in order: the wrapping sum of the
/// frame's values (zero without `values`) and how many of them are not null.
fn for_each_frame<T: ArrowPrimitiveType>(
    values: Option<&PrimitiveArray<T>>,
    nulls: Option<&NullBuffer>,
    frames: &[Frames],
    mut each: impl FnMut(T::Native, usize),
) {
    let zero = T::Native::default();
    let (mut sums, mut counts): (Vec<T::Native>, Vec<usize>) = (Vec::new(), Vec::new());
    for span in frames {
        let end = span.bounds.last().map_or(span.start, |&(_, hi)| hi);
        sums.clear();
        counts.clear();
        sums.push(zero);
        counts.push(0);
        for r in span.start..end {
            let valid = nulls.is_none_or(|n| n.is_valid(r));
            let value = match (values, valid) {
                (Some(v), true) => v.value(r),
                _ => zero,
            };
            sums.push(sums[sums.len() - 1].add_wrapping(value));
            counts.push(counts[counts.len() - 1] + valid as usize);
        }
        for &(lo, hi) in &span.bounds {
            let (lo, hi) = (lo - span.start, hi - span.start);
            each(sums[hi].sub_wrapping(sums[lo]), counts[hi] - counts[lo]);
        }
    }
}

/// The least (or, with `max`, the greatest) non-null value of every frame, spans in order,
/// through a monotonic queue: each row enters it and leaves it once.
fn extremes<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    frames: &[Frames],
    max: bool,
) -> Vec<Option<T::Native>>
where
    T::Native: Ord,
{
    let mut out = Vec::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for span in frames {
        queue.clear();
        let mut next = span.start;
        for &(lo, hi) in &span.bounds {
            while next < hi {
                if values.is_valid(next) {
                    let v = values.value(next);
                    // What `v` beats or ties can never be a frame's answer again: `v` stays
                    // in every later frame at least as long.
                    while queue.back().is_some_and(|&b| {
                        let b = values.value(b);
                        if max {
                            b <= v
                        } else {
                            b >= v
                        }
                    }) {
                        queue.pop_back();
                    }
                    queue.push_back(next);
                }
                next += 1;
            }
            while queue.front().is_some_and(|&f| f < lo) {
                queue.pop_front();
            }
            out.push(queue.front().map(|&f| values.value(f)));
        }
    }
    out
}
