//! Columnar sliding aggregates for `OverWindowExec`: `SUM`, `COUNT`, `AVG`, `MIN` and `MAX`
//! over a `ROWS BETWEEN n PRECEDING AND CURRENT ROW` frame, computed for every partition of a
//! release in one pass over arrays, with exactly DataFusion's results.
//!
//! DataFusion evaluates a sliding aggregate row by row through `ScalarValue`s, once per
//! partition: with many partitions and a few new rows each per release, that was most of the
//! operator's time. Here the argument is evaluated once over the whole evaluation input, and
//! each frame is read from prefix sums (SUM, COUNT, AVG) or scanned (MIN, MAX). The results are
//! DataFusion's to the last digit: sums wrap as its sliding sum does (`add_wrapping`), an
//! average of decimals scales and truncates as its `DecimalAverager` does, and a frame without
//! a value gives NULL (COUNT: 0). What this does not cover (other types, DISTINCT, FILTER,
//! other frames, an average whose sum DataFusion keeps in 256 bits) stays with DataFusion, and
//! so does an average that overflows, so that its error is DataFusion's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, RecordBatch};
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

/// Frames longer than this are left to DataFusion for MIN and MAX (scanned per row here).
const MAX_SCANNED_FRAME: usize = 64;

/// One sliding aggregate of an OVER query.
#[derive(Debug, Clone)]
pub struct SlidingAggregate {
    kind: SlidingKind,
    /// The argument, as DataFusion evaluates it (after its coercions).
    arg: Arc<dyn PhysicalExpr>,
    /// Rows before the current one in the frame.
    preceding: usize,
    /// The result type (DataFusion's).
    output: DataType,
    /// DataFusion's evaluation: for what overflows here, so that the error is its own.
    pub expr: Arc<dyn WindowExpr>,
}

/// Where one partition's rows are in the evaluation input, and which of them get results.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// The partition's first row in the input.
    pub start: usize,
    /// Its rows (kept, then new).
    pub rows: usize,
    /// The rows getting results: `emit.0..emit.1`, relative to `start`.
    pub emit: (usize, usize),
}

impl SlidingAggregate {
    /// `expr` (DataFusion's window expression of `kind` over `arg`, a frame of `preceding`
    /// rows before the current one) computed here, when its argument and result types are ones
    /// this module computes exactly as DataFusion does.
    pub fn new(
        kind: SlidingKind,
        arg: Arc<dyn PhysicalExpr>,
        arg_type: &DataType,
        preceding: usize,
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
                *p <= 25 && *s >= 0 && *op == (*p + 4).min(38) && *os == (*s + 4).min(38) && os >= s
            }
            _ => false,
        };
        let scanned = matches!(kind, SlidingKind::Min | SlidingKind::Max);
        (fits && !(scanned && preceding > MAX_SCANNED_FRAME)).then_some(Self {
            kind,
            arg,
            preceding,
            output,
            expr,
        })
    }

    /// The results of every span's emitted rows, spans in order, as one array; `None` when
    /// one does not fit its type (an average past its precision): DataFusion evaluates them.
    pub fn evaluate(&self, input: &RecordBatch, spans: &[Span]) -> Result<Option<ArrayRef>> {
        let values = self.arg.evaluate(input)?.into_array(input.num_rows())?;
        let n = self.preceding;
        Ok(match (self.kind, values.data_type()) {
            (SlidingKind::Count, _) => {
                let mut out = Vec::new();
                let nulls = values.logical_nulls();
                for_each_frame::<Int64Type>(None, nulls.as_ref(), spans, n, |_, count| {
                    out.push(count as i64)
                });
                Some(Arc::new(Int64Array::from(out)))
            }
            (_, DataType::Int64) => self.numeric(values.as_primitive::<Int64Type>(), spans),
            (_, DataType::Decimal128(..)) => {
                self.numeric(values.as_primitive::<Decimal128Type>(), spans)
            }
            _ => None,
        })
    }

    fn numeric<T: ArrowPrimitiveType>(
        &self,
        values: &PrimitiveArray<T>,
        spans: &[Span],
    ) -> Option<ArrayRef>
    where
        T::Native: Ord,
    {
        let n = self.preceding;
        let out: Vec<Option<T::Native>> = match self.kind {
            SlidingKind::Sum => {
                let mut out = Vec::new();
                for_each_frame(
                    Some(values),
                    values.logical_nulls().as_ref(),
                    spans,
                    n,
                    |sum, count| out.push((count > 0).then_some(sum)),
                );
                out
            }
            SlidingKind::Avg => return self.average(values, spans),
            SlidingKind::Min | SlidingKind::Max => {
                let max = self.kind == SlidingKind::Max;
                let mut out = Vec::new();
                for span in spans {
                    for i in span.emit.0..span.emit.1 {
                        let frame = span.start + i.saturating_sub(n)..span.start + i + 1;
                        let present = frame
                            .filter(|&r| values.is_valid(r))
                            .map(|r| values.value(r));
                        out.push(if max { present.max() } else { present.min() });
                    }
                }
                out
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
        spans: &[Span],
    ) -> Option<ArrayRef> {
        let (DataType::Decimal128(_, scale), DataType::Decimal128(precision, target)) =
            (values.data_type(), &self.output)
        else {
            return None;
        };
        let values = values
            .as_any()
            .downcast_ref::<PrimitiveArray<Decimal128Type>>()?;
        let factor = 10_i128.pow((*target - *scale) as u32);
        let bound = 10_i128.checked_pow(*precision as u32);
        let mut out: Vec<Option<i128>> = Vec::new();
        let mut fits = true;
        let nulls = values.logical_nulls();
        for_each_frame(
            Some(values),
            nulls.as_ref(),
            spans,
            self.preceding,
            |sum, count| {
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
            },
        );
        if !fits {
            return None;
        }
        let array =
            PrimitiveArray::<Decimal128Type>::from_iter(out).with_data_type(self.output.clone());
        Some(Arc::new(array))
    }
}

/// Calls `each(sum, count)` for every emitted row of every span, in order: the wrapping sum of
/// the frame's values (zero without `values`) and how many of them are not null.
fn for_each_frame<T: ArrowPrimitiveType>(
    values: Option<&PrimitiveArray<T>>,
    nulls: Option<&arrow::buffer::NullBuffer>,
    spans: &[Span],
    preceding: usize,
    mut each: impl FnMut(T::Native, usize),
) {
    let zero = T::Native::default();
    let (mut sums, mut counts): (Vec<T::Native>, Vec<usize>) = (Vec::new(), Vec::new());
    for span in spans {
        sums.clear();
        counts.clear();
        sums.push(zero);
        counts.push(0);
        for r in span.start..span.start + span.emit.1 {
            let valid = nulls.is_none_or(|n| n.is_valid(r));
            let value = match (values, valid) {
                (Some(v), true) => v.value(r),
                _ => zero,
            };
            sums.push(sums[sums.len() - 1].add_wrapping(value));
            counts.push(counts[counts.len() - 1] + valid as usize);
        }
        for i in span.emit.0..span.emit.1 {
            let low = i.saturating_sub(preceding);
            each(
                sums[i + 1].sub_wrapping(sums[low]),
                counts[i + 1] - counts[low],
            );
        }
    }
}
