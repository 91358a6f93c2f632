//! JSON ↔ Arrow.
//!
//! Decoding takes the fast path of [`super::json_flat`] where the schema's columns are scalars and
//! the batch's records are plain flat objects, and arrow-json's tape `Decoder` otherwise; both
//! give the same values. Numbers and numeric strings bound for `Decimal128` columns are parsed
//! from their text, never through `f64`. A batch that holds a bad record is decoded again record
//! by record to single out the bad ones; the good ones are then decoded together, so one bad record costs one slow batch, not a
//! lost batch. Encoding uses arrow-json's encoders row by row into one buffer; decimals are
//! written as exact strings (default) or as JSON numbers with exactly the column's digits.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, BooleanArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

use super::decimal::{convert_text_columns, text_schema, DecimalRounding};
use super::json_flat::FlatDecoder;
use super::{DecodeFailure, Decoded, EncodedRows};
use crate::{ConnectorError, Result};

/// Decodes JSON objects (one per payload) into batches of a fixed schema.
pub struct JsonDecoder {
    schema: SchemaRef,
    /// `schema` with decimals read as text (see [`super::decimal`]); `None` without decimals.
    text_schema: Option<SchemaRef>,
    rounding: DecimalRounding,
    decoder: Decoder,
    /// The fast path, when every column of the decoding schema is a scalar it reads.
    flat: Option<Box<FlatDecoder>>,
    /// Rows the decoder holds before it must be flushed; grown to the largest batch seen.
    capacity: usize,
}

impl std::fmt::Debug for JsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("schema", &self.schema)
            .finish()
    }
}

impl JsonDecoder {
    /// A decoder producing batches of `schema`. Fields absent from a record are null; fields of
    /// the record that the schema does not name are ignored.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let capacity = 1024;
        let text_schema = text_schema(&schema);
        let decoding = text_schema.as_ref().unwrap_or(&schema);
        let decoder = Self::build(decoding, capacity)?;
        let flat = FlatDecoder::new(decoding).map(Box::new);
        Ok(Self {
            schema,
            text_schema,
            rounding: DecimalRounding::Exact,
            decoder,
            flat,
            capacity,
        })
    }

    /// The same decoder without the fast path: the oracle of its tests.
    #[cfg(test)]
    pub(super) fn tape_only(schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            flat: None,
            ..Self::new(schema)?
        })
    }

    /// Rounds decimal values with more fractional digits than their column's scale, instead of
    /// refusing the record (see [`DecimalRounding`]).
    pub fn with_decimal_rounding(mut self, rounding: DecimalRounding) -> Self {
        self.set_decimal_rounding(rounding);
        self
    }

    /// See [`JsonDecoder::with_decimal_rounding`].
    pub fn set_decimal_rounding(&mut self, rounding: DecimalRounding) {
        self.rounding = rounding;
    }

    /// The schema the tape decoder produces (decimals as text).
    fn decoding_schema(&self) -> &SchemaRef {
        self.text_schema.as_ref().unwrap_or(&self.schema)
    }

    fn rebuild(&mut self) -> Result<()> {
        self.decoder = Self::build(self.decoding_schema(), self.capacity)?;
        Ok(())
    }

    fn build(schema: &SchemaRef, capacity: usize) -> Result<Decoder> {
        Ok(ReaderBuilder::new(schema.clone())
            .with_batch_size(capacity)
            .with_coerce_primitive(true)
            .build_decoder()?)
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes one payload per record. Records that are not one valid JSON object fitting the
    /// schema are reported in [`Decoded::failures`] and left out of the batch.
    pub fn decode(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        let decoded = self.decode_records(payloads)?;
        self.convert_decimals(decoded)
    }

    /// Turns the decimal text columns into `Decimal128`, exactly (or rounded when asked);
    /// records holding a value that does not fit become failures.
    fn convert_decimals(&self, decoded: Decoded) -> Result<Decoded> {
        if self.text_schema.is_none() {
            return Ok(decoded);
        }
        let (batch, errors) = convert_text_columns(&decoded.batch, &self.schema, self.rounding)?;
        if errors.is_empty() {
            return Ok(Decoded { batch, ..decoded });
        }
        // Rows of the batch → records of the input.
        let mut keep: Vec<bool> = match &decoded.keep {
            Some(k) => k.iter().map(|v| v == Some(true)).collect(),
            None => vec![true; decoded.batch.num_rows()],
        };
        let record_of: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
        let mut failures = decoded.failures;
        for e in errors {
            let index = record_of[e.row];
            keep[index] = false;
            failures.push(DecodeFailure {
                index,
                reason: e.reason,
            });
        }
        failures.sort_by_key(|f| f.index);
        Ok(Decoded {
            batch,
            keep: Some(BooleanArray::from(keep)),
            failures,
        })
    }

    fn decode_records(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        if let Some(batch) = self.flat.as_mut().and_then(|f| f.decode(payloads)) {
            return Ok(Decoded {
                batch,
                keep: None,
                failures: Vec::new(),
            });
        }
        if payloads.len() > self.capacity {
            self.capacity = payloads.len().next_power_of_two();
            self.rebuild()?;
        }
        match self.decode_all(payloads, None) {
            Ok(batch) => Ok(Decoded {
                batch,
                keep: None,
                failures: Vec::new(),
            }),
            Err(_) => {
                // Slow path: this batch holds at least one bad record. Find them one by one.
                self.rebuild()?;
                let mut failures = Vec::new();
                let mut keep = Vec::with_capacity(payloads.len());
                for i in 0..payloads.len() {
                    match self.check_one(payloads, i) {
                        Ok(()) => keep.push(true),
                        Err(reason) => {
                            keep.push(false);
                            failures.push(DecodeFailure { index: i, reason });
                            self.rebuild()?;
                        }
                    }
                }
                let keep = BooleanArray::from(keep);
                let batch = self.decode_all(payloads, Some(&keep)).map_err(|e| {
                    ConnectorError::Config(format!(
                        "JSON batch failed after checking each record: {e}"
                    ))
                })?;
                Ok(Decoded {
                    batch,
                    keep: Some(keep),
                    failures,
                })
            }
        }
    }

    /// Decodes every record (or those `keep` selects) into one batch; any problem is an error.
    fn decode_all(
        &mut self,
        payloads: &BinaryArray,
        keep: Option<&BooleanArray>,
    ) -> std::result::Result<RecordBatch, String> {
        for i in 0..payloads.len() {
            if keep.is_some_and(|k| !k.value(i)) {
                continue;
            }
            if let Err(e) = self.feed_one(payloads, i) {
                self.rebuild().map_err(|e| e.to_string())?;
                return Err(e);
            }
        }
        match self.decoder.flush() {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => Ok(RecordBatch::new_empty(self.decoding_schema().clone())),
            Err(e) => {
                self.rebuild().map_err(|e| e.to_string())?;
                Err(e.to_string())
            }
        }
    }

    /// Feeds record `i` to the decoder, checking it is exactly one complete JSON value.
    fn feed_one(&mut self, payloads: &BinaryArray, i: usize) -> std::result::Result<(), String> {
        if payloads.is_null(i) {
            return Err("record has no value (tombstone)".to_string());
        }
        let bytes = payloads.value(i);
        let before = self.decoder.len();
        self.decoder
            .decode(bytes)
            .map_err(|e| format!("invalid JSON: {}", strip_arrow_prefix(&e)))?;
        if self.decoder.has_partial_record() {
            return Err("invalid JSON: the value is truncated".to_string());
        }
        match self.decoder.len() - before {
            1 => Ok(()),
            0 => Err("invalid JSON: the payload is empty".to_string()),
            n => Err(format!(
                "invalid JSON: the payload holds {n} values, expected one object"
            )),
        }
    }

    /// Decodes record `i` alone, to find out whether it is good.
    fn check_one(&mut self, payloads: &BinaryArray, i: usize) -> std::result::Result<(), String> {
        self.feed_one(payloads, i)?;
        match self.decoder.flush() {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "does not fit the schema: {}",
                strip_arrow_prefix(&e)
            )),
        }
    }
}

fn strip_arrow_prefix(e: &ArrowError) -> String {
    let text = e.to_string();
    for prefix in [
        "Json error: ",
        "Parser error: ",
        "Cast error: ",
        "Invalid argument error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// How decimals are written in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalFormat {
    /// As a string holding the exact value with the column's scale: `"15025.6700"`.
    #[default]
    String,
    /// As a JSON number with exactly the column's digits: `15025.6700`.
    Number,
}

impl std::str::FromStr for DecimalFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "string" => Ok(DecimalFormat::String),
            "number" => Ok(DecimalFormat::Number),
            other => Err(format!(
                "unknown decimal format '{other}' (expected 'string' or 'number')"
            )),
        }
    }
}

/// Encodes rows of a batch as JSON objects, one per row.
#[derive(Debug, Clone)]
pub struct JsonEncoder {
    options: EncoderOptions,
}

impl Default for JsonEncoder {
    fn default() -> Self {
        Self::new(DecimalFormat::default())
    }
}

impl JsonEncoder {
    /// An encoder writing null columns explicitly (`"col":null`) and decimals per `decimals`.
    pub fn new(decimals: DecimalFormat) -> Self {
        let options = EncoderOptions::default()
            .with_explicit_nulls(true)
            .with_encoder_factory(Arc::new(ExactText { decimals }));
        Self { options }
    }

    /// Appends one JSON object per row of `batch` to `out`.
    pub fn encode(&self, batch: &RecordBatch, out: &mut EncodedRows) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let array = StructArray::from(batch.clone());
        let field: FieldRef = Arc::new(Field::new_struct(
            "",
            batch.schema().fields().clone(),
            false,
        ));
        let mut encoder = make_encoder(&field, &array, &self.options)?;
        out.ends.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            encoder.encode(row, &mut out.bytes);
            out.ends.push(out.bytes.len());
        }
        Ok(())
    }
}

/// Writes decimals (as strings or numbers, per [`DecimalFormat`]) and timestamps without time
/// zone straight into the output buffer: the same text as arrow-json's own encoders, which go
/// through `fmt` and allocate per value (they were a quarter of a JSON pass-through's CPU).
#[derive(Debug)]
struct ExactText {
    decimals: DecimalFormat,
}

impl EncoderFactory for ExactText {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> std::result::Result<Option<NullableEncoder<'a>>, ArrowError> {
        let quoted = self.decimals == DecimalFormat::String;
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Decimal128(precision, scale) => Box::new(Decimal128Text {
                array: array.as_primitive(),
                precision: u32::from(*precision),
                scale: i32::from(*scale),
                quoted,
                fallback: ArrayFormatter::try_new(array, &FormatOptions::new())?,
            }),
            DataType::Decimal32(_, _) | DataType::Decimal64(_, _) | DataType::Decimal256(_, _)
                if quoted =>
            {
                Box::new(QuotedDisplay(ArrayFormatter::try_new(
                    array,
                    &FormatOptions::new(),
                )?))
            }
            DataType::Timestamp(unit, None) => Box::new(NaiveTimestampText {
                values: {
                    // Every timestamp unit is an i64 column: share its buffer.
                    let data = array.to_data();
                    arrow::buffer::ScalarBuffer::new(
                        data.buffers()[0].clone(),
                        data.offset(),
                        data.len(),
                    )
                },
                digits: match unit {
                    TimeUnit::Second => 0,
                    TimeUnit::Millisecond => 3,
                    TimeUnit::Microsecond => 6,
                    TimeUnit::Nanosecond => 9,
                },
                fallback: ArrayFormatter::try_new(
                    array,
                    &FormatOptions::new().with_display_error(true),
                )?,
            }),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())))
    }
}

struct Decimal128Text<'a> {
    array: &'a arrow::array::Decimal128Array,
    precision: u32,
    scale: i32,
    quoted: bool,
    /// For a value with more digits than the precision (arrow's display truncates it).
    fallback: ArrayFormatter<'a>,
}

impl Encoder for Decimal128Text<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        if self.quoted {
            out.push(b'"');
        }
        let value = self.array.value(idx);
        if super::text::fits_precision(value, self.precision) {
            super::text::write_decimal(out, value, self.scale);
        } else {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}", self.fallback.value(idx));
        }
        if self.quoted {
            out.push(b'"');
        }
    }
}

struct NaiveTimestampText<'a> {
    values: arrow::buffer::ScalarBuffer<i64>,
    digits: u32,
    /// For years outside 0–9999 (written with a sign) and values chrono cannot represent.
    fallback: ArrayFormatter<'a>,
}

impl Encoder for NaiveTimestampText<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        if !super::text::write_naive_timestamp(out, self.values[idx], self.digits) {
            let _ = write!(out, "{}", self.fallback.value(idx));
        }
        out.push(b'"');
    }
}

struct QuotedDisplay<'a>(ArrayFormatter<'a>);

impl Encoder for QuotedDisplay<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        // Writing into a Vec cannot fail; decimal text needs no JSON escaping.
        let _ = write!(out, "{}", self.0.value(idx));
        out.push(b'"');
    }
}

/// Infers a schema from sample JSON objects, for streams declared without one.
///
/// Integers become `Int64`; numbers with a fraction, and strings that all hold such numbers
/// (`"150.25"`), become `Decimal128(38, s)` with `s` the most fraction digits seen (money stays
/// exact); strings that all hold ISO-8601 timestamps become `Timestamp(ms)`; other strings
/// `Utf8`, booleans `Boolean`, objects `Struct`, arrays `List`.
pub fn infer_schema<'a>(samples: impl Iterator<Item = &'a [u8]>) -> Result<Schema> {
    let mut values = Vec::new();
    let mut raw = Vec::new();
    for (i, sample) in samples.enumerate() {
        match serde_json::from_slice::<serde_json::Value>(sample) {
            Ok(v @ serde_json::Value::Object(_)) => {
                values.push(v);
                raw.push(sample);
            }
            Ok(_) => {
                tracing::warn!("schema inference: sample record {i} is not a JSON object, skipped")
            }
            Err(e) => {
                tracing::warn!("schema inference: sample record {i} is not JSON ({e}), skipped")
            }
        }
    }
    if values.is_empty() {
        return Err(ConnectorError::Inference(
            "no JSON object among the sampled records; declare the schema with --schema".into(),
        ));
    }
    let inferred =
        arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(|v| Ok(v.clone())))?;
    let scalar = |f: &FieldRef| {
        matches!(
            f.data_type(),
            DataType::Float64 | DataType::Int64 | DataType::Utf8
        )
    };
    // The exact text of every scalar sample (serde_json reads numbers as f64, which would
    // lose digits): arrow-json's tape keeps a number's text.
    let text_schema = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .filter(|f| scalar(f))
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let texts = JsonDecoder::new(text_schema.clone())?
        .decode(&BinaryArray::from_iter_values(raw))?
        .batch;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let data_type = match text_schema.index_of(f.name()) {
                Ok(column) if texts.num_rows() == values.len() => {
                    let text = texts.column(column).as_string::<i32>();
                    infer_scalar(values.iter().enumerate().filter_map(|(row, v)| {
                        let value = v.get(f.name())?;
                        Some((value, text.is_valid(row).then(|| text.value(row))))
                    }))
                    .unwrap_or_else(|| f.data_type().clone())
                }
                _ => f.data_type().clone(),
            };
            Field::new(f.name(), data_type, true)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The type of a top-level field from its sampled values: numbers (and numeric strings, when
/// most values are numeric) become `Int64` or `Decimal128`; strings that are all timestamps
/// become `Timestamp(ms)`. `None` leaves arrow-json's choice.
fn infer_scalar<'a>(
    samples: impl Iterator<Item = (&'a serde_json::Value, Option<&'a str>)>,
) -> Option<DataType> {
    let mut non_null = 0usize;
    let mut numbers = 0usize;
    let mut numeric_texts = Vec::new();
    let mut strings = Vec::new();
    for (v, text) in samples {
        match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Number(n) => {
                numbers += 1;
                numeric_texts.push(text.map_or_else(|| n.to_string(), str::to_string));
            }
            serde_json::Value::String(s) => {
                if is_decimal_text(s) {
                    numeric_texts.push(s.clone());
                }
                strings.push(s.as_str());
            }
            _ => {}
        }
        non_null += 1;
    }
    if non_null == 0 {
        return None;
    }
    let fractional = numeric_texts.iter().any(|t| t.contains('.'));
    if numeric_texts.len() * 2 > non_null && (numbers > 0 || fractional) {
        if fractional {
            return decimal_for(
                numeric_texts
                    .iter()
                    .map(String::as_str)
                    .filter(|t| is_decimal_text(t)),
            );
        }
        return Some(DataType::Int64);
    }
    if !strings.is_empty()
        && strings.len() == non_null
        && strings.iter().all(|t| looks_like_timestamp(t))
    {
        return Some(DataType::Timestamp(
            arrow::datatypes::TimeUnit::Millisecond,
            None,
        ));
    }
    if numbers == 0 && strings.len() == non_null {
        return Some(DataType::Utf8);
    }
    None
}

/// The significant integer digits and the fraction digits of a plain decimal text.
fn decimal_digits(t: &str) -> Option<(usize, usize)> {
    let digits = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| (int.trim_start_matches('0').len(), frac.len()))
}

fn is_decimal_text(t: &str) -> bool {
    decimal_digits(t).is_some_and(|(int, frac)| int + frac <= 38)
}

/// `DECIMAL(38, s)` holding every sample exactly: `s` the most fraction digits seen (no cap
/// but the 38 digits, of which the integer digits seen keep their share).
fn decimal_for<'a>(texts: impl Iterator<Item = &'a str>) -> Option<DataType> {
    let (mut int, mut scale) = (0usize, 0usize);
    for t in texts {
        let (i, f) = decimal_digits(t)?;
        int = int.max(i);
        scale = scale.max(f);
    }
    let scale = scale.max(1).min(38usize.saturating_sub(int));
    Some(DataType::Decimal128(38, scale as i8))
}

fn looks_like_timestamp(t: &str) -> bool {
    t.len() >= 10
        && t.as_bytes()[4] == b'-'
        && arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(t).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Decimal128Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(18, 4), true),
            Field::new("quantity", DataType::Int64, true),
        ]))
    }

    /// The encoder's own decimal and timestamp text equals arrow-json's (which goes through
    /// arrow's display), value for value, over random values of every unit and sign, nulls,
    /// values beyond the precision and years beyond 9999.
    #[test]
    fn decimal_and_timestamp_text_equals_arrow_jsons_own() {
        use arrow::array::{
            TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
            TimestampSecondArray,
        };
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rows = 5000;
        let mut wide = Vec::new();
        let mut narrow = Vec::new();
        let mut times = Vec::new();
        for i in 0..rows {
            let r = next();
            // Magnitudes from one digit to 38; about one in ten null.
            let digits = (r % 38) as u32 + 1;
            let magnitude = ((next() as u128) << 64 | next() as u128) % 10u128.pow(digits);
            let signed = if r & 1 == 0 {
                magnitude as i128
            } else {
                -(magnitude as i128)
            };
            wide.push((i % 10 != 0).then_some(signed));
            // DECIMAL(5,2) holding values beyond its precision (arrow truncates those).
            narrow.push(Some(signed % 100_000_000));
            // Times across ±3000 years around the epoch, and out to the i64 limits.
            let t = match r % 4 {
                0 => next() as i64,
                _ => (next() % 190_000_000_000_000_000) as i64 - 95_000_000_000_000_000,
            };
            times.push((i % 7 != 0).then_some(t));
        }
        let secs: Vec<_> = times.iter().map(|t| t.map(|t| t / 1_000_000_000)).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "d38_4",
                Arc::new(
                    Decimal128Array::from(wide.clone())
                        .with_precision_and_scale(38, 4)
                        .unwrap(),
                ) as ArrayRef,
            ),
            (
                "d38_0",
                Arc::new(
                    Decimal128Array::from(wide)
                        .with_precision_and_scale(38, 0)
                        .unwrap(),
                ),
            ),
            (
                "d5_2",
                Arc::new(
                    Decimal128Array::from(narrow.clone())
                        .with_precision_and_scale(5, 2)
                        .unwrap(),
                ),
            ),
            (
                "d10_m2",
                Arc::new(
                    Decimal128Array::from(narrow)
                        .with_precision_and_scale(10, -2)
                        .unwrap(),
                ),
            ),
            ("ts_s", Arc::new(TimestampSecondArray::from(secs))),
            (
                "ts_ms",
                Arc::new(TimestampMillisecondArray::from(
                    times
                        .iter()
                        .map(|t| t.map(|t| t / 1_000_000))
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "ts_us",
                Arc::new(TimestampMicrosecondArray::from(
                    times
                        .iter()
                        .map(|t| t.map(|t| t / 1000 * (t % 3)))
                        .collect::<Vec<_>>(),
                )),
            ),
            ("ts_ns", Arc::new(TimestampNanosecondArray::from(times))),
        ])
        .unwrap();
        // arrow-json's own encoders: decimals as numbers; as strings through arrow's display.
        let arrow_text = |quoted: bool| -> Vec<String> {
            let mut options = EncoderOptions::default().with_explicit_nulls(true);
            if quoted {
                options = options.with_encoder_factory(Arc::new(ArrowDecimalAsString));
            }
            let array = StructArray::from(batch.clone());
            let field: FieldRef = Arc::new(Field::new_struct(
                "",
                batch.schema().fields().clone(),
                false,
            ));
            let mut encoder = make_encoder(&field, &array, &options).unwrap();
            (0..batch.num_rows())
                .map(|row| {
                    let mut out = Vec::new();
                    encoder.encode(row, &mut out);
                    String::from_utf8(out).unwrap()
                })
                .collect()
        };
        for (format, quoted) in [
            (DecimalFormat::Number, false),
            (DecimalFormat::String, true),
        ] {
            let mut ours = EncodedRows::default();
            JsonEncoder::new(format).encode(&batch, &mut ours).unwrap();
            let expected = arrow_text(quoted);
            for (row, want) in expected.iter().enumerate() {
                assert_eq!(
                    std::str::from_utf8(ours.row(row)).unwrap(),
                    want,
                    "row {row}"
                );
            }
        }
    }

    /// arrow's display of any decimal, quoted (what the encoder wrote before its own text).
    #[derive(Debug)]
    struct ArrowDecimalAsString;

    impl EncoderFactory for ArrowDecimalAsString {
        fn make_default_encoder<'a>(
            &self,
            _field: &'a FieldRef,
            array: &'a dyn Array,
            _options: &'a EncoderOptions,
        ) -> std::result::Result<Option<NullableEncoder<'a>>, ArrowError> {
            if !matches!(array.data_type(), DataType::Decimal128(_, _)) {
                return Ok(None);
            }
            let formatter = ArrayFormatter::try_new(array, &FormatOptions::new())?;
            Ok(Some(NullableEncoder::new(
                Box::new(QuotedDisplay(formatter)),
                array.nulls().cloned(),
            )))
        }
    }

    fn payloads(rows: &[&str]) -> BinaryArray {
        BinaryArray::from_iter_values(rows.iter().map(|r| r.as_bytes()))
    }

    #[test]
    fn decimal_numbers_and_numeric_strings_decode_to_the_same_exact_value() {
        let mut decoder = JsonDecoder::new(schema()).unwrap();
        let decoded = decoder
            .decode(&payloads(&[
                r#"{"symbol":"A","price":150.2567,"quantity":100}"#,
                r#"{"symbol":"B","price":"150.2567","quantity":1}"#,
            ]))
            .unwrap();
        assert!(decoded.failures.is_empty());
        let prices = decoded
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(prices.value(0), 1_502_567);
        assert_eq!(prices.value(1), 1_502_567);
    }

    #[test]
    fn decimals_with_more_digits_than_the_column_are_bad_records_unless_rounding_is_asked_for() {
        let rows = payloads(&[
            r#"{"symbol":"A","price":150.25678,"quantity":1}"#,
            r#"{"symbol":"B","price":"150.25675","quantity":2}"#,
            r#"{"symbol":"C","price":"150.2567","quantity":3}"#,
            r#"{"symbol":"D","price":123456789012345.5,"quantity":4}"#,
        ]);
        let decoded = JsonDecoder::new(schema()).unwrap().decode(&rows).unwrap();
        let reasons: Vec<(usize, &str)> = decoded
            .failures
            .iter()
            .map(|f| (f.index, f.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0].0, 0);
        assert!(reasons[0]
            .1
            .starts_with("column 'price': 150.25678 has 5 decimal places, DECIMAL(18,4) keeps 4"));
        assert_eq!(reasons[1].0, 1);
        assert!(reasons[1]
            .1
            .starts_with("column 'price': 150.25675 has 5 decimal places"));
        assert_eq!(reasons[2].0, 3);
        assert!(reasons[2].1.starts_with("column 'price': 123456789012345.5 does not fit DECIMAL(18,4) (at most 14 digits before the point)"));
        let prices = decoded
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(prices.values().to_vec(), vec![1_502_567]);
        assert_eq!(
            decoded
                .keep
                .unwrap()
                .iter()
                .map(|k| k.unwrap())
                .collect::<Vec<_>>(),
            vec![false, false, true, false]
        );

        let decoded = JsonDecoder::new(schema())
            .unwrap()
            .with_decimal_rounding(DecimalRounding::HalfEven)
            .decode(&rows)
            .unwrap();
        assert_eq!(
            decoded.failures.len(),
            1,
            "integer overflow is never rounded"
        );
        let prices = decoded
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(
            prices.values().to_vec(),
            vec![1_502_568, 1_502_568, 1_502_567]
        );
    }

    #[test]
    fn decimals_inside_structs_and_lists_are_exact_too() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "order",
                DataType::Struct(
                    vec![Field::new("total", DataType::Decimal128(10, 2), true)].into(),
                ),
                true,
            ),
            Field::new(
                "fills",
                DataType::List(Arc::new(Field::new(
                    "item",
                    DataType::Decimal128(10, 2),
                    true,
                ))),
                true,
            ),
        ]));
        let decoded = JsonDecoder::new(schema)
            .unwrap()
            .decode(&payloads(&[
                r#"{"order":{"total":"10.50"},"fills":[1.25,2]}"#,
                r#"{"order":{"total":"10.505"},"fills":[]}"#,
                r#"{"order":{"total":1},"fills":[1.5, 2.125]}"#,
            ]))
            .unwrap();
        let reasons: Vec<(usize, &str)> = decoded
            .failures
            .iter()
            .map(|f| (f.index, f.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].0 == 1
                && reasons[0]
                    .1
                    .starts_with("column 'order.total': 10.505 has 3 decimal places")
        );
        assert!(
            reasons[1].0 == 2
                && reasons[1]
                    .1
                    .starts_with("column 'fills': 2.125 has 3 decimal places")
        );
        assert_eq!(decoded.batch.num_rows(), 1);
        let fills = decoded.batch.column(1).as_list::<i32>();
        let values = fills.value(0);
        assert_eq!(
            values
                .as_primitive::<arrow::datatypes::Decimal128Type>()
                .values()
                .to_vec(),
            vec![125, 200]
        );
    }

    #[test]
    fn bad_records_are_reported_and_good_ones_kept_in_order() {
        let mut decoder = JsonDecoder::new(schema()).unwrap();
        let decoded = decoder
            .decode(&payloads(&[
                r#"{"symbol":"A","price":1,"quantity":1}"#,
                r#"{"symbol":"B","price":"#,
                r#"{"symbol":"C","price":"abc","quantity":3}"#,
                r#"{"symbol":"D","price":4,"quantity":4}"#,
                r#"{"a":1}{"a":2}"#,
                "",
            ]))
            .unwrap();
        let failed: Vec<usize> = decoded.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, vec![1, 2, 4, 5]);
        assert!(
            decoded.failures[1]
                .reason
                .contains("column 'price': 'abc' is not a number"),
            "{:?}",
            decoded.failures
        );
        assert!(
            decoded.failures[0].reason.contains("truncated"),
            "{:?}",
            decoded.failures
        );
        let q = decoded
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(q.values().to_vec(), vec![1, 4]);
        assert_eq!(
            decoded
                .keep
                .unwrap()
                .iter()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>(),
            vec![true, false, false, true, false, false]
        );
        // The decoder is usable again after a bad batch.
        let next = decoder.decode(&payloads(&[r#"{"quantity":7}"#])).unwrap();
        assert_eq!(next.batch.num_rows(), 1);
        assert!(next.failures.is_empty());
    }

    #[test]
    fn decimals_are_encoded_as_exact_strings_or_numbers() {
        let mut decoder = JsonDecoder::new(schema()).unwrap();
        let batch = decoder
            .decode(&payloads(&[
                r#"{"symbol":"A","price":"-0.0100","quantity":null}"#,
            ]))
            .unwrap()
            .batch;
        let mut out = EncodedRows::default();
        JsonEncoder::new(DecimalFormat::String)
            .encode(&batch, &mut out)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(out.row(0)).unwrap(),
            r#"{"symbol":"A","price":"-0.0100","quantity":null}"#
        );
        let mut out = EncodedRows::default();
        JsonEncoder::new(DecimalFormat::Number)
            .encode(&batch, &mut out)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(out.row(0)).unwrap(),
            r#"{"symbol":"A","price":-0.0100,"quantity":null}"#
        );
    }

    #[test]
    fn inference_keeps_fractional_numbers_exact() {
        let rows = [
            br#"{"symbol":"A","price":150.25,"qty":3}"#.as_slice(),
            br#"{"symbol":"B","price":1.125,"qty":4,"amount":"10.50","at":"2024-01-01T00:00:00Z"}"#
                .as_slice(),
        ];
        let schema = infer_schema(rows.into_iter()).unwrap();
        assert_eq!(
            schema.field_with_name("price").unwrap().data_type(),
            &DataType::Decimal128(38, 3)
        );
        assert_eq!(
            schema.field_with_name("qty").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(
            schema.field_with_name("symbol").unwrap().data_type(),
            &DataType::Utf8
        );
        assert_eq!(
            schema.field_with_name("amount").unwrap().data_type(),
            &DataType::Decimal128(38, 2)
        );
        assert_eq!(
            schema.field_with_name("at").unwrap().data_type(),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)
        );
    }

    #[test]
    fn inference_keeps_every_sampled_digit() {
        let rows = [
            br#"{"rate":0.12345678901234567890123,"big":12345678901234567890.5}"#.as_slice(),
            br#"{"rate":"1.5","big":1.25}"#.as_slice(),
        ];
        let schema = infer_schema(rows.into_iter()).unwrap();
        assert_eq!(
            schema.field_with_name("rate").unwrap().data_type(),
            &DataType::Decimal128(38, 23),
            "no cap at 18 digits, and no f64 on the way"
        );
        assert_eq!(
            schema.field_with_name("big").unwrap().data_type(),
            &DataType::Decimal128(38, 2)
        );
    }
}
