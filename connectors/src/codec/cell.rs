//! One cell of an Arrow column read as a plain number, for the encoders that build a value per
//! row (Avro, Protobuf): integers of any width, floats, and instants of any time unit.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

/// The integer at `row`, or `None` when the column is not an integer column (or a `UInt64` too
/// large for `i64`).
pub fn integer_at(array: &dyn Array, row: usize) -> Option<i64> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row) as i64,
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row) as i64,
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row) as i64,
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row) as i64,
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row) as i64,
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row) as i64,
        DataType::UInt64 => i64::try_from(array.as_primitive::<UInt64Type>().value(row)).ok()?,
        _ => return None,
    })
}

/// The float at `row` (integers widened), or `None` when the column is not numeric.
pub fn float_at(array: &dyn Array, row: usize) -> Option<f64> {
    Some(match array.data_type() {
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row) as f64,
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
        _ => integer_at(array, row)? as f64,
    })
}

/// The instant at `row` as nanoseconds since the epoch (a date is its midnight), or `None` when
/// the column is not a timestamp or date column.
pub fn epoch_nanos_at(array: &dyn Array, row: usize) -> Option<i128> {
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            array.as_primitive::<TimestampSecondType>().value(row) as i128 * 1_000_000_000
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            array.as_primitive::<TimestampMillisecondType>().value(row) as i128 * 1_000_000
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().value(row) as i128 * 1000
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            array.as_primitive::<TimestampNanosecondType>().value(row) as i128
        }
        DataType::Date32 => {
            array.as_primitive::<Date32Type>().value(row) as i128 * 86_400_000_000_000
        }
        _ => return None,
    })
}

/// The instant at `row` as microseconds since the epoch (finer units floored), as
/// [`epoch_nanos_at`] gives it.
pub fn epoch_micros_at(array: &dyn Array, row: usize) -> Option<i128> {
    epoch_nanos_at(array, row).map(|n| n.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray, UInt64Array};

    #[test]
    fn integers_widen_and_a_too_large_unsigned_is_none() {
        let a = UInt64Array::from(vec![7, u64::MAX]);
        assert_eq!(integer_at(&a, 0), Some(7));
        assert_eq!(integer_at(&a, 1), None);
        assert_eq!(float_at(&a, 0), Some(7.0));
        assert_eq!(integer_at(&StringArray::from(vec!["1"]), 0), None);
    }

    #[test]
    fn instants_of_every_unit_become_epoch_nanoseconds() {
        let micros = TimestampMicrosecondArray::from(vec![-1]);
        assert_eq!(epoch_nanos_at(&micros, 0), Some(-1000));
        let date = Date32Array::from(vec![1]);
        assert_eq!(epoch_nanos_at(&date, 0), Some(86_400_000_000_000));
    }
}
