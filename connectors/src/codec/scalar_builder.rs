//! The builder of one scalar column, shared by the fast decoding paths ([`super::json_flat`],
//! [`super::protobuf_columnar`]): the Arrow types they build, nulls, and the finished array
//! (timestamps are built as `i64` and given their unit at the end).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, PrimitiveArray, PrimitiveBuilder, StringBuilder,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};

pub(super) enum ScalarBuilder {
    Int8(PrimitiveBuilder<Int8Type>),
    Int16(PrimitiveBuilder<Int16Type>),
    Int32(PrimitiveBuilder<Int32Type>),
    Int64(PrimitiveBuilder<Int64Type>),
    UInt8(PrimitiveBuilder<UInt8Type>),
    UInt16(PrimitiveBuilder<UInt16Type>),
    UInt32(PrimitiveBuilder<UInt32Type>),
    UInt64(PrimitiveBuilder<UInt64Type>),
    Float32(PrimitiveBuilder<Float32Type>),
    Float64(PrimitiveBuilder<Float64Type>),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    /// With the column's precision and scale.
    Decimal128(Decimal128Builder, u8, i8),
    /// Epoch values in the column's unit (a timestamp without a zone).
    Timestamp(TimeUnit, PrimitiveBuilder<Int64Type>),
}

impl ScalarBuilder {
    /// A builder for `rows` values of `data_type` (about `text_bytes` of string data), or
    /// `None` for a type that is not one of these scalars.
    pub(super) fn new(data_type: &DataType, rows: usize, text_bytes: usize) -> Option<Self> {
        use PrimitiveBuilder as P;
        Some(match data_type {
            DataType::Int8 => Self::Int8(P::with_capacity(rows)),
            DataType::Int16 => Self::Int16(P::with_capacity(rows)),
            DataType::Int32 => Self::Int32(P::with_capacity(rows)),
            DataType::Int64 => Self::Int64(P::with_capacity(rows)),
            DataType::UInt8 => Self::UInt8(P::with_capacity(rows)),
            DataType::UInt16 => Self::UInt16(P::with_capacity(rows)),
            DataType::UInt32 => Self::UInt32(P::with_capacity(rows)),
            DataType::UInt64 => Self::UInt64(P::with_capacity(rows)),
            DataType::Float32 => Self::Float32(P::with_capacity(rows)),
            DataType::Float64 => Self::Float64(P::with_capacity(rows)),
            DataType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Utf8 => Self::Utf8(StringBuilder::with_capacity(rows, text_bytes)),
            DataType::Decimal128(p, s) => Self::Decimal128(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(*p, *s)
                    .ok()?,
                *p,
                *s,
            ),
            DataType::Timestamp(unit, None) => Self::Timestamp(*unit, P::with_capacity(rows)),
            _ => return None,
        })
    }

    pub(super) fn push_null(&mut self) {
        match self {
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt8(b) => b.append_null(),
            Self::UInt16(b) => b.append_null(),
            Self::UInt32(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Boolean(b) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Decimal128(b, ..) => b.append_null(),
            Self::Timestamp(_, b) => b.append_null(),
        }
    }

    /// Bytes of string data so far (to size the next batch's builder).
    pub(super) fn text_bytes(&self) -> usize {
        match self {
            Self::Utf8(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    pub(super) fn finish(self) -> ArrayRef {
        match self {
            Self::Int8(mut b) => Arc::new(b.finish()),
            Self::Int16(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::UInt8(mut b) => Arc::new(b.finish()),
            Self::UInt16(mut b) => Arc::new(b.finish()),
            Self::UInt32(mut b) => Arc::new(b.finish()),
            Self::UInt64(mut b) => Arc::new(b.finish()),
            Self::Float32(mut b) => Arc::new(b.finish()),
            Self::Float64(mut b) => Arc::new(b.finish()),
            Self::Boolean(mut b) => Arc::new(b.finish()),
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::Decimal128(mut b, ..) => Arc::new(b.finish()),
            Self::Timestamp(unit, mut b) => with_unit(unit, b.finish()),
        }
    }
}

/// Epoch values as a timestamp array (without a zone) of `unit`.
pub(super) fn with_unit(unit: TimeUnit, values: PrimitiveArray<Int64Type>) -> ArrayRef {
    match unit {
        TimeUnit::Second => Arc::new(values.reinterpret_cast::<TimestampSecondType>()),
        TimeUnit::Millisecond => Arc::new(values.reinterpret_cast::<TimestampMillisecondType>()),
        TimeUnit::Microsecond => Arc::new(values.reinterpret_cast::<TimestampMicrosecondType>()),
        TimeUnit::Nanosecond => Arc::new(values.reinterpret_cast::<TimestampNanosecondType>()),
    }
}
