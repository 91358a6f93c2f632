//! Exact decimal input: text (a JSON number or string, a CSV field, the digits an Avro or
//! Protobuf decimal was rewritten as) → `Decimal128(p, s)`, without ever dropping a digit
//! silently.
//!
//! A value that does not fit the declared type exactly — more fractional digits than `s`, or
//! more integer digits than `p − s` — is an error naming the value and the type, unless the
//! stream opted into rounding ([`DecimalRounding::HalfEven`] or [`DecimalRounding::HalfUp`]),
//! which rounds extra fractional digits (integer overflow stays an error). arrow's own parser
//! truncates extra fractional digits, which is why decoders read decimal columns as text and
//! convert them here ([`text_schema`], [`convert_text_columns`]).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder, ListArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// What to do with a decimal value that has more fractional digits than its column's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalRounding {
    /// Refuse it: the record is bad (the default: money is never changed silently).
    #[default]
    Exact,
    /// Round to the nearest, ties to the even digit (banker's rounding, IEEE 754's default).
    HalfEven,
    /// Round to the nearest, ties away from zero (what most people learn at school).
    HalfUp,
}

impl std::str::FromStr for DecimalRounding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "exact" | "none" | "reject" => Ok(DecimalRounding::Exact),
            "half-even" => Ok(DecimalRounding::HalfEven),
            "half-up" => Ok(DecimalRounding::HalfUp),
            other => Err(format!(
                "unknown decimal rounding '{other}' (use exact, half-even or half-up)"
            )),
        }
    }
}

impl std::fmt::Display for DecimalRounding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecimalRounding::Exact => "exact",
            DecimalRounding::HalfEven => "half-even",
            DecimalRounding::HalfUp => "half-up",
        })
    }
}

/// Why a text is not a value of a `DECIMAL(p, s)` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a decimal number at all.
    NotANumber,
    /// More fractional digits than the scale (and no rounding asked for).
    TooManyDecimals { decimals: usize },
    /// The value needs more digits than the precision allows.
    TooLarge,
}

/// `text` as the unscaled value of a `DECIMAL(precision, scale)`: an optional sign, digits with
/// an optional point, an optional exponent (`1.5e3`). Exact unless `rounding` says otherwise.
pub fn parse_decimal(
    text: &str,
    precision: u8,
    scale: i8,
    rounding: DecimalRounding,
) -> Result<i128, DecimalError> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => {
            let exp = std::str::from_utf8(&rest[i + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .filter(|e| e.unsigned_abs() <= 1_000)
                .ok_or(DecimalError::NotANumber)?;
            (&rest[..i], exp)
        }
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &mantissa[..0]),
    };
    if (int.is_empty() && frac.is_empty()) || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(DecimalError::NotANumber);
    }
    // The value is digits × 10^(exponent − frac.len()); as unscaled at `scale` the digits are
    // shifted by `shift` places (negative: the last −shift digits fall after the scale).
    let shift = scale as i64 + exponent as i64 - frac.len() as i64;
    let digits = int.iter().chain(frac).map(|b| b - b'0');
    let count = int.len() + frac.len();
    let kept = if shift >= 0 {
        count
    } else {
        count.saturating_sub(shift.unsigned_abs() as usize)
    };
    // Digits dropped past the scale that are implicit zeros in front of the written ones
    // (`6e-9` at scale 4 drops 0000 before the 6).
    let leading_zeros = if shift < 0 {
        (shift.unsigned_abs() as usize).saturating_sub(count)
    } else {
        0
    };
    let limit = 10i128.pow(precision.min(38) as u32);
    let mut unscaled: i128 = 0;
    let mut first_dropped = (leading_zeros > 0).then_some(0u8);
    let mut sticky = false; // a non-zero digit after the first dropped one
    let mut dropped_nonzero = 0usize; // the position of the last non-zero dropped digit + 1
    for (i, d) in digits.enumerate() {
        if i < kept {
            unscaled = unscaled
                .checked_mul(10)
                .and_then(|v| v.checked_add(d as i128))
                .filter(|v| *v < limit)
                .ok_or(DecimalError::TooLarge)?;
        } else {
            match first_dropped {
                None => first_dropped = Some(d),
                Some(_) => sticky |= d != 0,
            }
            if d != 0 {
                dropped_nonzero = leading_zeros + i - kept + 1;
            }
        }
    }
    if shift > 0 && unscaled != 0 {
        for _ in 0..shift {
            unscaled = unscaled
                .checked_mul(10)
                .filter(|v| *v < limit)
                .ok_or(DecimalError::TooLarge)?;
        }
    }
    if let Some(first) = first_dropped.filter(|_| dropped_nonzero > 0) {
        let round_up = match rounding {
            DecimalRounding::Exact => {
                let decimals = (scale as i64 + dropped_nonzero as i64).max(0) as usize;
                return Err(DecimalError::TooManyDecimals { decimals });
            }
            DecimalRounding::HalfUp => first >= 5,
            DecimalRounding::HalfEven => first > 5 || (first == 5 && (sticky || unscaled % 2 == 1)),
        };
        if round_up {
            unscaled += 1;
            if unscaled >= limit {
                return Err(DecimalError::TooLarge);
            }
        }
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// The message for a value `text` of column `column` that does not fit `DECIMAL(p, s)`.
pub fn describe_error(
    error: &DecimalError,
    column: &str,
    text: &str,
    precision: u8,
    scale: i8,
) -> String {
    let shown: String = text.chars().take(60).collect();
    let ellipsis = if shown.len() < text.len() { "…" } else { "" };
    match error {
        DecimalError::NotANumber => {
            format!("column '{column}': '{shown}{ellipsis}' is not a number (DECIMAL({precision},{scale}))")
        }
        DecimalError::TooManyDecimals { decimals } => format!(
            "column '{column}': {shown}{ellipsis} has {decimals} decimal places, DECIMAL({precision},{scale}) keeps {scale}; \
             digits are never dropped silently (declare a larger scale, or opt into rounding with --decimal-rounding half-even|half-up)"
        ),
        DecimalError::TooLarge => format!(
            "column '{column}': {shown}{ellipsis} does not fit DECIMAL({precision},{scale}) (at most {} digits before the point)",
            (precision as i16 - scale as i16).max(0)
        ),
    }
}

/// `schema` with every decimal field (also inside structs and lists) read as text; `None` when
/// it has none (decoders then take the fast path).
pub fn text_schema(schema: &Schema) -> Option<SchemaRef> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(text_type(f.data_type())))
        .collect();
    let changed = fields
        .iter()
        .zip(schema.fields())
        .any(|(a, b)| a.data_type() != b.data_type());
    changed.then(|| Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

fn text_type(t: &DataType) -> DataType {
    match t {
        DataType::Decimal128(_, _) => DataType::Utf8,
        DataType::Struct(fields) => DataType::Struct(text_fields(fields)),
        DataType::List(item) => DataType::List(Arc::new(
            item.as_ref()
                .clone()
                .with_data_type(text_type(item.data_type())),
        )),
        other => other.clone(),
    }
}

fn text_fields(fields: &Fields) -> Fields {
    fields
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(text_type(f.data_type())))
        .collect()
}

/// A row of a batch that could not be converted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub reason: String,
}

/// Converts `batch` (decoded with [`text_schema`]) to `target`: decimal text → `Decimal128`.
/// Rows holding a value that does not fit are left out of the result and reported (sorted by
/// row, one error per row).
pub fn convert_text_columns(
    batch: &RecordBatch,
    target: &SchemaRef,
    rounding: DecimalRounding,
) -> arrow::error::Result<(RecordBatch, Vec<RowError>)> {
    let mut errors = Vec::new();
    let identity = |row: usize| row;
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| convert(c, f.data_type(), f.name(), rounding, &identity, &mut errors))
        .collect::<arrow::error::Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    let converted = RecordBatch::try_new_with_options(target.clone(), columns, &options)?;
    if errors.is_empty() {
        return Ok((converted, errors));
    }
    errors.sort_by_key(|e| e.row);
    errors.dedup_by_key(|e| e.row);
    let mut keep = vec![true; batch.num_rows()];
    for e in &errors {
        keep[e.row] = false;
    }
    let kept =
        arrow::compute::filter_record_batch(&converted, &arrow::array::BooleanArray::from(keep))?;
    Ok((kept, errors))
}

/// Converts one array; `row_of` maps an index of `array` to the batch row holding it. A value
/// that does not fit is reported and becomes NULL (its row is dropped by the caller).
fn convert(
    array: &ArrayRef,
    target: &DataType,
    name: &str,
    rounding: DecimalRounding,
    row_of: &dyn Fn(usize) -> usize,
    errors: &mut Vec<RowError>,
) -> arrow::error::Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    match (array.data_type(), target) {
        (DataType::Utf8, DataType::Decimal128(p, s)) => {
            let text = array.as_string::<i32>();
            let mut out = Decimal128Builder::with_capacity(text.len());
            for i in 0..text.len() {
                if text.is_null(i) {
                    out.append_null();
                    continue;
                }
                match parse_decimal(text.value(i), *p, *s, rounding) {
                    Ok(v) => out.append_value(v),
                    Err(e) => {
                        errors.push(RowError {
                            row: row_of(i),
                            reason: describe_error(&e, name, text.value(i), *p, *s),
                        });
                        out.append_null();
                    }
                }
            }
            Ok(Arc::new(out.finish().with_precision_and_scale(*p, *s)?))
        }
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let array = array.as_struct();
            let children = array
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| {
                    let child = format!("{name}.{}", f.name());
                    convert(c, f.data_type(), &child, rounding, row_of, errors)
                })
                .collect::<arrow::error::Result<Vec<_>>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                array.nulls().cloned(),
            )?))
        }
        (DataType::List(_), DataType::List(item)) => {
            let list = array.as_list::<i32>();
            let offsets = list.offsets().clone();
            let lookup = |i: usize| {
                // The list (row of `list`) holding value `i`.
                let list_index = offsets.partition_point(|&o| o as usize <= i) - 1;
                row_of(list_index)
            };
            let values = convert(
                list.values(),
                item.data_type(),
                name,
                rounding,
                &lookup,
                errors,
            )?;
            Ok(Arc::new(ListArray::try_new(
                item.clone(),
                offsets,
                values,
                list.nulls().cloned(),
            )?))
        }
        _ => arrow::compute::cast(array, target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DecimalRounding::*;

    fn p(text: &str, rounding: DecimalRounding) -> Result<i128, DecimalError> {
        parse_decimal(text, 18, 4, rounding)
    }

    #[test]
    fn exact_values_parse_in_every_spelling() {
        assert_eq!(p("150.2567", Exact), Ok(1_502_567));
        assert_eq!(p("150.25670000", Exact), Ok(1_502_567));
        assert_eq!(p("-0.5", Exact), Ok(-5_000));
        assert_eq!(p("+7", Exact), Ok(70_000));
        assert_eq!(p(".25", Exact), Ok(2_500));
        assert_eq!(p("3.", Exact), Ok(30_000));
        assert_eq!(p("1.5e3", Exact), Ok(15_000_000));
        assert_eq!(p("15025E-2", Exact), Ok(1_502_500));
        assert_eq!(p("0000000000000000000000012.5", Exact), Ok(125_000));
        assert_eq!(p("99999999999999.9999", Exact), Ok(999_999_999_999_999_999));
        assert_eq!(p("0e999", Exact), Ok(0));
    }

    #[test]
    fn extra_fractional_digits_are_refused_unless_rounding_is_asked_for() {
        assert_eq!(
            p("150.25678", Exact),
            Err(DecimalError::TooManyDecimals { decimals: 5 })
        );
        assert_eq!(
            p("150.256700001", Exact),
            Err(DecimalError::TooManyDecimals { decimals: 9 })
        );
        assert_eq!(p("150.25678", HalfEven), Ok(1_502_568));
        assert_eq!(p("150.25675", HalfEven), Ok(1_502_568)); // tie → even 8
        assert_eq!(p("150.25665", HalfEven), Ok(1_502_566)); // tie → even 6
        assert_eq!(p("150.256650001", HalfEven), Ok(1_502_567)); // not a tie
        assert_eq!(p("150.25665", HalfUp), Ok(1_502_567));
        assert_eq!(p("-150.25665", HalfUp), Ok(-1_502_567));
        assert_eq!(p("150.25664", HalfUp), Ok(1_502_566));
        assert_eq!(p("0.00004", HalfUp), Ok(0));
        assert_eq!(p("1e-9", HalfEven), Ok(0));
        assert_eq!(p("6e-9", HalfUp), Ok(0));
        assert_eq!(p("5e-5", HalfUp), Ok(1));
        assert_eq!(p("5e-5", HalfEven), Ok(0));
        assert_eq!(
            p("6e-9", Exact),
            Err(DecimalError::TooManyDecimals { decimals: 9 })
        );
    }

    #[test]
    fn values_too_large_for_the_precision_are_refused() {
        assert_eq!(p("100000000000000", Exact), Err(DecimalError::TooLarge));
        assert_eq!(p("1e14", Exact), Err(DecimalError::TooLarge));
        assert_eq!(
            p("99999999999999.99995", HalfUp),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(
            parse_decimal("1e40", 38, 0, Exact),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(
            parse_decimal(&"9".repeat(39), 38, 0, Exact),
            Err(DecimalError::TooLarge)
        );
    }

    #[test]
    fn text_that_is_no_number_is_refused() {
        for bad in [
            "", "-", ".", "abc", "1.2.3", "1e", "1e+", "--1", " 1", "1 ", "0x10", "NaN", "1e99999",
        ] {
            assert_eq!(p(bad, Exact), Err(DecimalError::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_column_the_value_and_the_type() {
        let e = describe_error(
            &DecimalError::TooManyDecimals { decimals: 5 },
            "p",
            "150.25678",
            18,
            4,
        );
        assert!(
            e.starts_with("column 'p': 150.25678 has 5 decimal places, DECIMAL(18,4) keeps 4"),
            "{e}"
        );
    }
}
