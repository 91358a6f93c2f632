//! SQL type names → Arrow types, for declared stream columns.
//!
//! `TIMESTAMP` is millisecond precision (Kafka's), `DECIMAL(p, s)` is `Decimal128(p, s)`
//! (`DECIMAL` alone is `DECIMAL(38, 10)`), strings are `Utf8`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType as SqlType, ExactNumberInfo, TimezoneInfo,
};

/// The Arrow type for a SQL type, or a message saying what is supported.
pub fn arrow_type(sql: &SqlType) -> Result<DataType, String> {
    use SqlType::*;
    Ok(match sql {
        Character(_) | Char(_) | CharacterVarying(_) | CharVarying(_) | Varchar(_) | Nvarchar(_)
        | Text | String(_) | Uuid | JSON | JSONB => DataType::Utf8,
        Binary(_) | Varbinary(_) | Blob(_) | Bytes(_) | Bytea => DataType::Binary,
        TinyInt(_) | Int8(_) => DataType::Int8,
        SmallInt(_) | Int2(_) | Int16 => DataType::Int16,
        Int(_) | Integer(_) | Int4(_) | Int32 => DataType::Int32,
        BigInt(_) | Int64 => DataType::Int64,
        Float(_) | Real | Float4 | Float32 => DataType::Float32,
        Double(_) | DoublePrecision | Float8 | Float64 => DataType::Float64,
        Bool | Boolean => DataType::Boolean,
        Date | Date32 => DataType::Date32,
        Decimal(info) | Numeric(info) | Dec(info) => {
            let (precision, scale) = match info {
                ExactNumberInfo::None => (38, 10),
                ExactNumberInfo::Precision(p) => (*p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            if precision == 0 || precision > 38 {
                return Err(format!("DECIMAL precision must be 1 to 38, got {precision}"));
            }
            if scale < 0 || scale as u64 > precision {
                return Err(format!(
                    "DECIMAL scale must be between 0 and the precision ({precision}), got {scale}"
                ));
            }
            DataType::Decimal128(precision as u8, scale as i8)
        }
        Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
        }
        Timestamp(_, _) | Datetime(_) | TimestampNtz(_) => {
            DataType::Timestamp(TimeUnit::Millisecond, None)
        }
        Array(ArrayElemTypeDef::AngleBracket(inner) | ArrayElemTypeDef::SquareBracket(inner, _) | ArrayElemTypeDef::Parenthesis(inner)) => {
            DataType::List(Arc::new(Field::new("item", arrow_type(inner)?, true)))
        }
        Struct(fields, _) => {
            let fields = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let name = f
                        .field_name
                        .as_ref()
                        .map(|n| n.value.clone())
                        .unwrap_or_else(|| format!("f{i}"));
                    Ok(Field::new(name, arrow_type(&f.field_type)?, true))
                })
                .collect::<Result<Vec<_>, std::string::String>>()?;
            DataType::Struct(fields.into())
        }
        other => {
            return Err(format!(
                "type {other} is not supported (use VARCHAR, BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL(p,s), DATE, TIMESTAMP, BYTES, ARRAY<…> or STRUCT<…>)"
            ))
        }
    })
}
