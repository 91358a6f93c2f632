//! The window functions of `GROUP BY`: `TUMBLE(ts, size)`, `HOP(ts, slide, size)` and
//! `SESSION(ts, gap)`.
//!
//! Each returns a struct `{window_start, window_end}` (millisecond timestamps). The streaming
//! planner recognises these calls in a GROUP BY and replaces them with a window operator; as
//! plain scalar functions only `TUMBLE` can be evaluated (a row belongs to exactly one tumbling
//! window), while `HOP` and `SESSION` say that they need the streaming planner.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StructArray, TimestampMillisecondArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, TimeUnit, TimestampMillisecondType};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// Which window a call describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFunction {
    Tumble,
    Hop,
    Session,
}

impl WindowFunction {
    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            WindowFunction::Tumble => "tumble",
            WindowFunction::Hop => "hop",
            WindowFunction::Session => "session",
        }
    }

    /// The function called `name` (case-insensitive), if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tumble" => Some(WindowFunction::Tumble),
            "hop" => Some(WindowFunction::Hop),
            "session" => Some(WindowFunction::Session),
            _ => None,
        }
    }

    fn arity(self) -> usize {
        match self {
            WindowFunction::Hop => 3,
            _ => 2,
        }
    }
}

/// Name of the start field of a window struct.
pub const WINDOW_START: &str = "window_start";
/// Name of the end field of a window struct.
pub const WINDOW_END: &str = "window_end";

/// The struct type the window functions return.
pub fn window_struct_type() -> DataType {
    DataType::Struct(window_fields())
}

/// The fields of [`window_struct_type`].
pub fn window_fields() -> Fields {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    Fields::from(vec![
        Field::new(WINDOW_START, ts.clone(), true),
        Field::new(WINDOW_END, ts, true),
    ])
}

/// Builds a window struct array from starts and ends (null where `valid` is false).
pub fn window_struct(starts: Vec<i64>, ends: Vec<i64>, nulls: Option<NullBuffer>) -> StructArray {
    StructArray::new(
        window_fields(),
        vec![
            Arc::new(TimestampMillisecondArray::new(starts.into(), nulls.clone())),
            Arc::new(TimestampMillisecondArray::new(ends.into(), nulls.clone())),
        ],
        nulls,
    )
}

/// The UDF for `function`.
pub fn window_udf(function: WindowFunction) -> ScalarUDF {
    ScalarUDF::from(WindowUdf::new(function))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    function: WindowFunction,
    signature: Signature,
}

impl WindowUdf {
    fn new(function: WindowFunction) -> Self {
        let ts = [
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Second, None),
        ];
        let intervals = [
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Interval(IntervalUnit::DayTime),
        ];
        let mut signatures = Vec::new();
        for t in &ts {
            for i in &intervals {
                let mut args = vec![t.clone(), i.clone()];
                if function.arity() == 3 {
                    args.push(i.clone());
                }
                signatures.push(TypeSignature::Exact(args));
            }
        }
        // Volatile, so the optimiser never drops the call from a GROUP BY as "determined by
        // the other keys" (as it would for GROUP BY ts, TUMBLE(ts, …)): the window is the point.
        Self {
            function,
            signature: Signature::one_of(signatures, Volatility::Volatile),
        }
    }
}

/// Milliseconds of an interval literal, refusing months (their length varies).
pub fn interval_millis(value: &ScalarValue) -> Result<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return plan_err!("window sizes in months are not supported; use days");
            }
            Ok(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Ok(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        other => plan_err!("a window size must be an INTERVAL literal, got {other}"),
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.function.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(window_struct_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.function != WindowFunction::Tumble {
            return exec_err!(
                "{}() groups rows into windows only in a streaming GROUP BY",
                self.function.name().to_uppercase()
            );
        }
        let [ts, size] = args.args.as_slice() else {
            return plan_err!("TUMBLE takes (time, size)");
        };
        let ColumnarValue::Scalar(size) = size else {
            return plan_err!("TUMBLE's size must be a literal INTERVAL");
        };
        let size = interval_millis(size)?;
        if size <= 0 {
            return plan_err!("TUMBLE's size must be positive");
        }
        let ts: ArrayRef = ts.to_array(args.number_rows)?;
        let ts = arrow::compute::cast(&ts, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let ts = ts.as_primitive::<TimestampMillisecondType>();
        let starts: Vec<i64> = ts.values().iter().map(|t| t - t.rem_euclid(size)).collect();
        let ends: Vec<i64> = starts.iter().map(|s| s + size).collect();
        Ok(ColumnarValue::Array(Arc::new(window_struct(
            starts,
            ends,
            ts.nulls().cloned(),
        ))))
    }
}
