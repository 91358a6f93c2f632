//! Avro ↔ Arrow.
//!
//! Schemas come from `.avsc` files (or are derived from a result's Arrow schema for output).
//! Records map to Arrow as: record → Struct (the top-level record → the stream's columns),
//! array → List, map → Map, enum → Utf8, union with null → nullable, `decimal` on `bytes` or
//! `fixed` → `Decimal128(precision, scale)`, `timestamp-millis`/`-micros` → Timestamp,
//! `date` → Date32, `uuid` → Utf8, `bytes`/`fixed` → Binary.
//!
//! Decoding takes the columnar fast path of [`super::avro_columnar`] (arrow-avro) for flat
//! records, batch by batch. Otherwise it reads each datum with apache-avro and bridges it through
//! exact JSON text into the column decoder of [`super::json`] (decimals travel as their exact
//! digits), so a record that does not match its schema is reported by index with the reason,
//! like bad JSON. Encoding builds
//! one Avro datum per row; decimals are rescaled exactly to the output schema's scale, and a
//! value that would lose digits or does not fit the precision is an error for that row, never
//! a silent truncation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::schema::{DecimalSchema, RecordSchema, Schema as AvroSchema, UnionSchema};
use apache_avro::types::Value;
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Fields, Float32Type, Float64Type, Schema,
    SchemaRef, TimeUnit,
};

use super::avro_columnar::{write_field, ColumnarAvro};
use super::bridge::JsonBridge;
use super::cell::{epoch_micros_at, epoch_nanos_at, float_at, integer_at};
use super::text::{
    fits_precision, i128_from_be_bytes, i128_to_be_bytes, rescale, write_decimal, write_hex,
    write_json_string,
};
use super::{Decoded, EncodedRows};
use crate::registry::{frame_header, split_frame, Lookup, SchemaRegistry};
use crate::{ConnectorError, Result};

/// Reads and parses an `.avsc` file; errors name the file, and the line and column for JSON
/// syntax errors.
pub fn load_schema(path: &Path) -> Result<AvroSchema> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectorError::File {
        path: path.to_path_buf(),
        source,
    })?;
    parse_schema(&text).map_err(|why| ConnectorError::Schema {
        path: path.display().to_string(),
        reason: why,
    })
}

/// Parses Avro schema text.
pub fn parse_schema(text: &str) -> std::result::Result<AvroSchema, String> {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
        return Err(format!("line {}, column {}: {e}", e.line(), e.column()));
    }
    AvroSchema::parse_str(text).map_err(|e| e.to_string())
}

fn nullable_inner(union: &UnionSchema) -> Option<&AvroSchema> {
    let variants = union.variants();
    if variants.len() == 2 && union.is_nullable() {
        variants.iter().find(|v| !matches!(v, AvroSchema::Null))
    } else {
        None
    }
}

/// The Arrow type of an Avro schema (and whether it is nullable).
fn arrow_type(schema: &AvroSchema) -> std::result::Result<(DataType, bool), String> {
    Ok(match schema {
        AvroSchema::Null => (DataType::Null, true),
        AvroSchema::Boolean => (DataType::Boolean, false),
        AvroSchema::Int => (DataType::Int32, false),
        AvroSchema::Long => (DataType::Int64, false),
        AvroSchema::Float => (DataType::Float32, false),
        AvroSchema::Double => (DataType::Float64, false),
        AvroSchema::Bytes | AvroSchema::Fixed(_) => (DataType::Binary, false),
        AvroSchema::String | AvroSchema::Uuid | AvroSchema::Enum(_) => (DataType::Utf8, false),
        AvroSchema::Decimal(DecimalSchema {
            precision, scale, ..
        }) => {
            if *precision == 0 || *precision > 38 {
                return Err(format!("decimal precision {precision} is outside 1..=38"));
            }
            (DataType::Decimal128(*precision as u8, *scale as i8), false)
        }
        AvroSchema::Date => (DataType::Date32, false),
        AvroSchema::TimestampMillis | AvroSchema::LocalTimestampMillis => {
            (DataType::Timestamp(TimeUnit::Millisecond, None), false)
        }
        AvroSchema::TimestampMicros | AvroSchema::LocalTimestampMicros => {
            (DataType::Timestamp(TimeUnit::Microsecond, None), false)
        }
        AvroSchema::TimestampNanos | AvroSchema::LocalTimestampNanos => {
            (DataType::Timestamp(TimeUnit::Nanosecond, None), false)
        }
        AvroSchema::TimeMillis => (DataType::Time32(TimeUnit::Millisecond), false),
        AvroSchema::TimeMicros => (DataType::Time64(TimeUnit::Microsecond), false),
        AvroSchema::Array(a) => {
            let (t, n) = arrow_type(&a.items)?;
            (DataType::List(Arc::new(Field::new("item", t, n))), false)
        }
        AvroSchema::Map(m) => {
            let (t, n) = arrow_type(&m.types)?;
            let entries = Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", t, n),
            ]);
            (
                DataType::Map(
                    Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                ),
                false,
            )
        }
        AvroSchema::Record(r) => (DataType::Struct(record_fields(r)?), false),
        AvroSchema::Union(u) => match nullable_inner(u) {
            Some(inner) => (arrow_type(inner)?.0, true),
            None => return Err("unions other than [\"null\", T] are not supported".into()),
        },
        other => return Err(format!("Avro type {other:?} is not supported")),
    })
}

fn record_fields(record: &RecordSchema) -> std::result::Result<Fields, String> {
    record
        .fields
        .iter()
        .map(|f| {
            let (t, nullable) =
                arrow_type(&f.schema).map_err(|e| format!("field '{}': {e}", f.name))?;
            Ok(Field::new(&f.name, t, nullable))
        })
        .collect()
}

/// The stream columns of a record schema.
pub fn arrow_schema(schema: &AvroSchema) -> Result<SchemaRef> {
    match schema {
        AvroSchema::Record(r) => Ok(Arc::new(Schema::new(
            record_fields(r).map_err(ConnectorError::Config)?,
        ))),
        _ => Err(ConnectorError::Config(
            "the Avro schema of a stream must be a record".into(),
        )),
    }
}

/// Writes an Avro value as JSON text following its schema (decimals as exact digits).
pub(crate) fn write_value(
    out: &mut Vec<u8>,
    value: &Value,
    schema: &AvroSchema,
) -> std::result::Result<(), String> {
    match (value, schema) {
        (Value::Null, _) => out.extend_from_slice(b"null"),
        (Value::Union(_, inner), AvroSchema::Union(u)) => {
            let branch = u
                .variants()
                .iter()
                .find(|v| !matches!(v, AvroSchema::Null))
                .ok_or("a union with only null")?;
            write_value(out, inner, branch)?
        }
        (Value::Union(_, inner), other) => write_value(out, inner, other)?,
        (Value::Boolean(b), _) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        (Value::Int(v), _) | (Value::Date(v), _) | (Value::TimeMillis(v), _) => {
            out.extend_from_slice(v.to_string().as_bytes())
        }
        (Value::Long(v), _)
        | (Value::TimeMicros(v), _)
        | (Value::TimestampMillis(v), _)
        | (Value::TimestampMicros(v), _)
        | (Value::TimestampNanos(v), _)
        | (Value::LocalTimestampMillis(v), _)
        | (Value::LocalTimestampMicros(v), _)
        | (Value::LocalTimestampNanos(v), _) => out.extend_from_slice(v.to_string().as_bytes()),
        (Value::Float(v), _) if v.is_finite() => out.extend_from_slice(v.to_string().as_bytes()),
        (Value::Double(v), _) if v.is_finite() => out.extend_from_slice(v.to_string().as_bytes()),
        (Value::Float(_), _) | (Value::Double(_), _) => out.extend_from_slice(b"null"),
        (Value::String(s), _) | (Value::Enum(_, s), _) => write_json_string(out, s),
        (Value::Uuid(u), _) => write_json_string(out, &u.to_string()),
        (Value::Decimal(d), AvroSchema::Decimal(ds)) => {
            let bytes = Vec::<u8>::try_from(d).map_err(|e| e.to_string())?;
            let unscaled = i128_from_be_bytes(&bytes).ok_or("the decimal does not fit 128 bits")?;
            if !fits_precision(unscaled, ds.precision as u32) {
                return Err(format!(
                    "the decimal {unscaled}e-{} is wider than its precision {}",
                    ds.scale, ds.precision
                ));
            }
            out.push(b'"');
            write_decimal(out, unscaled, ds.scale as i32);
            out.push(b'"');
        }
        (Value::Bytes(b), _) | (Value::Fixed(_, b), _) => write_hex(out, b),
        (Value::Array(items), AvroSchema::Array(a)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, &a.items)?;
            }
            out.push(b']');
        }
        (Value::Map(entries), AvroSchema::Map(m)) => {
            out.push(b'{');
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, k);
                out.push(b':');
                write_value(out, &entries[k], &m.types)?;
            }
            out.push(b'}');
        }
        (Value::Record(fields), AvroSchema::Record(r)) => {
            out.push(b'{');
            for (i, ((name, v), f)) in fields.iter().zip(&r.fields).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, name);
                out.push(b':');
                write_value(out, v, &f.schema)?;
            }
            out.push(b'}');
        }
        (v, s) => return Err(format!("value {v:?} does not match schema {s:?}")),
    }
    Ok(())
}

/// Decodes Avro datums into batches of the schema's columns.
pub struct AvroDecoder {
    writer: AvroSchema,
    bridge: JsonBridge,
    /// Confluent wire format: writer schemas come from the registry by id.
    registry: Option<Arc<SchemaRegistry>>,
    writers: HashMap<u32, AvroSchema>,
    /// The columnar path for `writer` (raw datums), where its records are flat.
    columnar: Option<ColumnarAvro>,
    /// The columnar path per registry schema id, where its records are flat.
    columnar_by_id: HashMap<u32, Option<ColumnarAvro>>,
}

/// The longest byte string, string, array or map block an Avro datum may announce: a length
/// read from a (possibly bad) record is checked against it before anything is allocated for it.
/// (A Kafka record is at most about 1 MB by default; its values fit.)
pub const MAX_AVRO_LENGTH: usize = 1024 * 1024;

impl AvroDecoder {
    /// A decoder of datums written with `writer`, producing `columns` (a subset of the
    /// record's fields, or all of them).
    pub fn new(writer: AvroSchema, columns: SchemaRef) -> Result<Self> {
        // The library's limit is process-wide and set once.
        apache_avro::util::max_allocation_bytes(MAX_AVRO_LENGTH);
        Ok(Self {
            columnar: ColumnarAvro::new(&writer, &columns),
            writer,
            bridge: JsonBridge::new(columns)?,
            registry: None,
            writers: HashMap::new(),
            columnar_by_id: HashMap::new(),
        })
    }

    /// The same decoder without the columnar path: the oracle of its tests.
    #[cfg(test)]
    pub(super) fn values_only(writer: AvroSchema, columns: SchemaRef) -> Result<Self> {
        Ok(Self {
            columnar: None,
            ..Self::new(writer, columns)?
        })
    }

    /// Rounds decimals instead of refusing them (see [`super::decimal::DecimalRounding`]).
    pub fn set_decimal_rounding(&mut self, rounding: super::decimal::DecimalRounding) {
        self.bridge.set_decimal_rounding(rounding);
    }

    /// Reads the Confluent wire format, fetching each record's writer schema by id.
    pub fn with_registry(mut self, registry: Arc<SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Decodes one datum per payload; bad ones are reported and left out.
    pub fn decode(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        if let Some(batch) = self.decode_columnar(payloads) {
            return Ok(Decoded {
                batch,
                keep: None,
                failures: Vec::new(),
            });
        }
        self.decode_values(payloads)
    }

    /// The columnar path: the whole batch, or `None` when the value-tree path must decide.
    fn decode_columnar(&mut self, payloads: &BinaryArray) -> Option<RecordBatch> {
        let count = payloads.len();
        if self.registry.is_none() {
            return self.columnar.as_mut()?.decode(count, payloads.iter());
        }
        // Registry framing: every record must carry the same schema id, already fetched.
        let id = split_frame(payloads.iter().next()??).ok()?.0;
        let columns = self.bridge.columns();
        // A schema id not fetched yet is fetched by the value path first.
        let writer = self.writers.get(&id)?;
        let columnar = self
            .columnar_by_id
            .entry(id)
            .or_insert_with(|| ColumnarAvro::new(writer, columns))
            .as_mut()?;
        let bodies = payloads.iter().map(|p| match split_frame(p?) {
            Ok((this, body)) if this == id => Some(body),
            _ => None,
        });
        columnar.decode(count, bodies)
    }

    fn decode_values(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        for i in 0..payloads.len() {
            if payloads.is_null(i) {
                self.bridge
                    .fail(i, "record has no value (tombstone)".into());
                continue;
            }
            let mut bytes = payloads.value(i);
            let writer = match &self.registry {
                None => &self.writer,
                Some(registry) => {
                    let (id, rest) = match split_frame(bytes) {
                        Ok(split) => split,
                        Err(why) => {
                            self.bridge.fail(i, format!("invalid Avro: {why}"));
                            continue;
                        }
                    };
                    bytes = rest;
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.writers.entry(id)
                    {
                        match registry.schema_by_id(id) {
                            Ok(text) => match parse_schema(&text) {
                                Ok(schema) => {
                                    slot.insert(schema);
                                }
                                Err(why) => {
                                    self.bridge.fail(
                                        i,
                                        format!("schema id {id} is not a valid Avro schema: {why}"),
                                    );
                                    continue;
                                }
                            },
                            Err(Lookup::Unknown) => {
                                self.bridge.fail(i, format!("unknown schema id {id}"));
                                continue;
                            }
                            Err(Lookup::Unreachable(e)) => return Err(e),
                        }
                    }
                    &self.writers[&id]
                }
            };
            let value = match apache_avro::from_avro_datum(writer, &mut bytes, None) {
                Ok(v) => v,
                Err(e) => {
                    self.bridge.fail(i, format!("invalid Avro: {e}"));
                    continue;
                }
            };
            if !bytes.is_empty() {
                self.bridge.fail(
                    i,
                    format!(
                        "invalid Avro: {} bytes after the end of the record",
                        bytes.len()
                    ),
                );
                continue;
            }
            self.bridge.scratch.clear();
            if let Err(why) = write_value(&mut self.bridge.scratch, &value, writer) {
                self.bridge.fail(i, format!("invalid Avro: {why}"));
                continue;
            }
            self.bridge.accept_scratch(i);
        }
        self.bridge.finish(payloads.len())
    }
}

/// A row that could not be encoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeFailure {
    pub row: usize,
    pub reason: String,
}

/// Encodes rows as Avro datums of a record schema.
pub struct AvroEncoder {
    schema: AvroSchema,
    /// Bytes in front of every datum (the Confluent header when a registry is used).
    prefix: Vec<u8>,
}

impl AvroEncoder {
    /// An encoder for `schema` (a record whose fields name result columns).
    pub fn new(schema: AvroSchema, result: &Schema) -> Result<Self> {
        let AvroSchema::Record(record) = &schema else {
            return Err(ConnectorError::Config(
                "the output Avro schema must be a record".into(),
            ));
        };
        for f in &record.fields {
            let nullable = matches!(&f.schema, AvroSchema::Union(u) if u.is_nullable());
            if result.field_with_name(&f.name).is_err() && !nullable && f.default.is_none() {
                return Err(ConnectorError::Config(format!(
                    "the output Avro schema's field '{}' is not a column of the result (columns: {})",
                    f.name,
                    result.fields().iter().map(|c| c.name().as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(Self {
            schema,
            prefix: Vec::new(),
        })
    }

    /// Writes the Confluent wire format: registers the schema under `subject` and puts its id
    /// in front of every datum.
    pub fn with_registry(mut self, registry: &SchemaRegistry, subject: &str) -> Result<Self> {
        // The full schema (the canonical form would drop logical types such as decimal).
        let text = serde_json::to_string(&self.schema)
            .map_err(|e| ConnectorError::Config(format!("serialising the Avro schema: {e}")))?;
        let id = registry.register(subject, &text, "AVRO")?;
        self.prefix = frame_header(id).to_vec();
        Ok(self)
    }

    /// The schema the datums follow.
    pub fn schema(&self) -> &AvroSchema {
        &self.schema
    }

    /// Appends one datum per row to `out`; rows that cannot be encoded are returned and left
    /// out (their place in `out` is empty). Flat records are written straight from the arrays
    /// ([`super::avro_columnar::write_field`]); a row that path does not write (a nested value,
    /// a value that does not fit) is built as an apache-avro value, which also names what is
    /// wrong with it.
    pub fn encode(&self, batch: &RecordBatch, out: &mut EncodedRows) -> Result<Vec<EncodeFailure>> {
        Ok(self.encode_rows(batch, out, true))
    }

    /// [`AvroEncoder::encode`] through apache-avro values only: the oracle of its tests.
    #[cfg(test)]
    pub(super) fn encode_values(
        &self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
    ) -> Vec<EncodeFailure> {
        self.encode_rows(batch, out, false)
    }

    fn encode_rows(
        &self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
        direct: bool,
    ) -> Vec<EncodeFailure> {
        let (record, columns) = self.columns(batch);
        out.bytes
            .reserve(batch.num_rows() * (self.prefix.len() + 16 * columns.len()));
        out.push_rows(
            batch.num_rows(),
            &self.prefix,
            |row, bytes| {
                direct
                    && record.fields.iter().zip(&columns).all(|(field, column)| {
                        write_field(column.map(|c| c.as_ref()), row, &field.schema, bytes)
                    })
            },
            |row, bytes| {
                let value = record_value(record, &columns, row)?;
                let datum =
                    apache_avro::to_avro_datum(&self.schema, value).map_err(|e| e.to_string())?;
                bytes.extend_from_slice(&datum);
                Ok(())
            },
        )
    }

    /// Calls `f` with each row's Avro record value, or the reason it cannot be one.
    pub fn for_each_value(
        &self,
        batch: &RecordBatch,
        mut f: impl FnMut(usize, std::result::Result<Value, String>),
    ) {
        let (record, columns) = self.columns(batch);
        for row in 0..batch.num_rows() {
            f(row, record_value(record, &columns, row));
        }
    }

    /// The output record, and the result column of each of its fields (`None`: not there).
    fn columns<'a>(&self, batch: &'a RecordBatch) -> (&RecordSchema, Vec<Option<&'a ArrayRef>>) {
        let AvroSchema::Record(record) = &self.schema else {
            unreachable!("checked in new")
        };
        let columns = record
            .fields
            .iter()
            .map(|field| batch.column_by_name(&field.name))
            .collect();
        (record, columns)
    }
}

/// Row `row` of `columns` (one per field of `record`; `None`: not in the result) as an Avro
/// record value, or the reason it cannot be one.
fn record_value(
    record: &RecordSchema,
    columns: &[Option<&ArrayRef>],
    row: usize,
) -> std::result::Result<Value, String> {
    record
        .fields
        .iter()
        .zip(columns)
        .map(|(field, c)| {
            let v = match c {
                Some(array) => to_value(array.as_ref(), row, &field.schema)
                    .map_err(|why| format!("column '{}': {why}", field.name))?,
                None => null_for(&field.schema),
            };
            Ok((field.name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, String>>()
        .map(Value::Record)
}

fn null_for(schema: &AvroSchema) -> Value {
    match schema {
        AvroSchema::Union(u) => {
            let index = u
                .variants()
                .iter()
                .position(|v| matches!(v, AvroSchema::Null))
                .unwrap_or(0);
            Value::Union(index as u32, Box::new(Value::Null))
        }
        _ => Value::Null,
    }
}

/// The Avro value of `array[row]` for `schema`.
fn to_value(
    array: &dyn Array,
    row: usize,
    schema: &AvroSchema,
) -> std::result::Result<Value, String> {
    if let AvroSchema::Union(u) = schema {
        if array.is_null(row) {
            return Ok(null_for(schema));
        }
        let (index, inner) = u
            .variants()
            .iter()
            .enumerate()
            .find(|(_, v)| !matches!(v, AvroSchema::Null))
            .ok_or("a union with only null")?;
        return Ok(Value::Union(
            index as u32,
            Box::new(to_value(array, row, inner)?),
        ));
    }
    if array.is_null(row) {
        return Err("NULL for a field that is not nullable".into());
    }
    let int = |array: &dyn Array| integer_at(array, row);
    let millis =
        |array: &dyn Array| epoch_nanos_at(array, row).map(|n| n.div_euclid(1_000_000) as i64);
    let mismatch = || {
        format!(
            "a {} column cannot be written as Avro {schema:?}",
            array.data_type()
        )
    };
    Ok(match schema {
        AvroSchema::Boolean => {
            Value::Boolean(array.as_boolean_opt().ok_or_else(mismatch)?.value(row))
        }
        AvroSchema::Int => Value::Int(
            i32::try_from(int(array).ok_or_else(mismatch)?)
                .map_err(|_| "the value does not fit an Avro int")?,
        ),
        AvroSchema::Long => Value::Long(int(array).ok_or_else(mismatch)?),
        AvroSchema::Float => Value::Float(match array.data_type() {
            DataType::Float32 => array.as_primitive::<Float32Type>().value(row),
            DataType::Float64 => array.as_primitive::<Float64Type>().value(row) as f32,
            _ => return Err(mismatch()),
        }),
        AvroSchema::Double => Value::Double(float_at(array, row).ok_or_else(mismatch)?),
        AvroSchema::String | AvroSchema::Uuid => Value::String(match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
            DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
            DataType::Utf8View => array.as_string_view().value(row).to_string(),
            _ => arrow::util::display::array_value_to_string(array, row)
                .map_err(|e| e.to_string())?,
        }),
        AvroSchema::Enum(e) => {
            let symbol = arrow::util::display::array_value_to_string(array, row)
                .map_err(|e| e.to_string())?;
            let index = e
                .symbols
                .iter()
                .position(|s| *s == symbol)
                .ok_or_else(|| format!("'{symbol}' is not a symbol of enum {}", e.name))?;
            Value::Enum(index as u32, symbol)
        }
        AvroSchema::Bytes => Value::Bytes(
            array
                .as_binary_opt::<i32>()
                .ok_or_else(mismatch)?
                .value(row)
                .to_vec(),
        ),
        AvroSchema::Decimal(ds) => {
            let (unscaled, scale) = match array.data_type() {
                DataType::Decimal128(_, s) => {
                    (array.as_primitive::<Decimal128Type>().value(row), *s as i32)
                }
                _ => (int(array).ok_or_else(mismatch)? as i128, 0),
            };
            let v = rescale(unscaled, scale, ds.scale as i32).ok_or_else(|| {
                let mut text = Vec::new();
                write_decimal(&mut text, unscaled, scale);
                format!(
                    "{} cannot be written with scale {} without losing digits",
                    String::from_utf8_lossy(&text),
                    ds.scale
                )
            })?;
            if !fits_precision(v, ds.precision as u32) {
                let mut text = Vec::new();
                write_decimal(&mut text, unscaled, scale);
                return Err(format!(
                    "{} does not fit decimal({}, {})",
                    String::from_utf8_lossy(&text),
                    ds.precision,
                    ds.scale
                ));
            }
            let mut bytes = i128_to_be_bytes(v);
            if let AvroSchema::Fixed(f) = ds.inner.as_ref() {
                if bytes.len() > f.size {
                    return Err(format!(
                        "the decimal needs {} bytes, the fixed type has {}",
                        bytes.len(),
                        f.size
                    ));
                }
                let fill = if v < 0 { 0xFF } else { 0 };
                let mut sized = vec![fill; f.size - bytes.len()];
                sized.extend_from_slice(&bytes);
                bytes = sized;
            }
            Value::Decimal(apache_avro::Decimal::from(bytes))
        }
        AvroSchema::Date => Value::Date(match array.data_type() {
            DataType::Date32 => array.as_primitive::<Date32Type>().value(row),
            _ => millis(array).ok_or_else(mismatch)?.div_euclid(86_400_000) as i32,
        }),
        AvroSchema::TimestampMillis => Value::TimestampMillis(millis(array).ok_or_else(mismatch)?),
        AvroSchema::LocalTimestampMillis => {
            Value::LocalTimestampMillis(millis(array).ok_or_else(mismatch)?)
        }
        AvroSchema::TimestampMicros | AvroSchema::LocalTimestampMicros => {
            let micros = epoch_micros_at(array, row).ok_or_else(mismatch)?;
            let micros = i64::try_from(micros)
                .map_err(|_| "the timestamp is out of range for microseconds")?;
            if matches!(schema, AvroSchema::TimestampMicros) {
                Value::TimestampMicros(micros)
            } else {
                Value::LocalTimestampMicros(micros)
            }
        }
        AvroSchema::Record(r) => {
            let s = array.as_struct_opt().ok_or_else(mismatch)?;
            let fields = r
                .fields
                .iter()
                .map(|f| {
                    let v = match s.column_by_name(&f.name) {
                        Some(c) => to_value(c.as_ref(), row, &f.schema)?,
                        None => null_for(&f.schema),
                    };
                    Ok((f.name.clone(), v))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Value::Record(fields)
        }
        AvroSchema::Array(a) => {
            let list = array.as_list_opt::<i32>().ok_or_else(mismatch)?;
            let items = list.value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| to_value(items.as_ref(), i, &a.items))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        other => return Err(format!("writing Avro {other:?} is not supported")),
    })
}

/// An Avro record schema for a result's Arrow schema: decimals as `bytes` with
/// `logicalType: decimal`, timestamps as `timestamp-millis` (or `-micros` for finer units),
/// nullable columns as `["null", T]`.
pub fn derive_schema(result: &Schema, name: &str) -> Result<AvroSchema> {
    fn avro_type(t: &DataType, name: &str) -> std::result::Result<serde_json::Value, String> {
        use serde_json::json;
        Ok(match t {
            DataType::Boolean => json!("boolean"),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => json!("int"),
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => json!("long"),
            DataType::Float32 => json!("float"),
            DataType::Float64 => json!("double"),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
            DataType::Binary | DataType::LargeBinary => json!("bytes"),
            DataType::Decimal128(p, s) => {
                json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s})
            }
            DataType::Date32 | DataType::Date64 => json!({"type": "int", "logicalType": "date"}),
            DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, _) => {
                json!({"type": "long", "logicalType": "timestamp-millis"})
            }
            DataType::Timestamp(_, _) => json!({"type": "long", "logicalType": "timestamp-micros"}),
            DataType::Struct(fields) => {
                json!({"type": "record", "name": name, "fields": fields.iter().map(|f| field(f, &format!("{name}_{}", f.name()))).collect::<std::result::Result<Vec<_>, _>>()?})
            }
            DataType::List(item) => {
                json!({"type": "array", "items": nullable(item.data_type(), item.is_nullable(), &format!("{name}_item"))?})
            }
            other => return Err(format!("a {other} column cannot be written as Avro")),
        })
    }
    fn nullable(
        t: &DataType,
        is_nullable: bool,
        name: &str,
    ) -> std::result::Result<serde_json::Value, String> {
        let inner = avro_type(t, name)?;
        Ok(if is_nullable {
            serde_json::json!(["null", inner])
        } else {
            inner
        })
    }
    fn field(f: &Field, name: &str) -> std::result::Result<serde_json::Value, String> {
        let mut v = serde_json::json!({"name": f.name(), "type": nullable(f.data_type(), f.is_nullable(), name)?});
        if f.is_nullable() {
            v["default"] = serde_json::Value::Null;
        }
        Ok(v)
    }
    let fields = result
        .fields()
        .iter()
        .map(|f| field(f, &format!("{name}_{}", f.name())))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(ConnectorError::Config)?;
    let text = serde_json::json!({"type": "record", "name": name, "fields": fields}).to_string();
    AvroSchema::parse_str(&text)
        .map_err(|e| ConnectorError::Config(format!("derived Avro schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::TimestampMillisecondType;

    const TRADES: &str = r#"{"type":"record","name":"Trade","fields":[
        {"name":"symbol","type":"string"},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
        {"name":"quantity","type":"long"},
        {"name":"note","type":["null","string"],"default":null},
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

    fn batch(prices: &[i128]) -> RecordBatch {
        let n = prices.len();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("symbol", DataType::Utf8, false),
                Field::new("price", DataType::Decimal128(18, 4), false),
                Field::new("quantity", DataType::Int64, false),
                Field::new("note", DataType::Utf8, true),
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    false,
                ),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["X"; n])),
                Arc::new(
                    Decimal128Array::from(prices.to_vec())
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![7; n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(TimestampMillisecondArray::from(vec![1_704_067_200_000; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn decimals_round_trip_exactly_through_avro() {
        let schema = parse_schema(TRADES).unwrap();
        let prices = [-5000i128, -1, 0, 1_502_567, 999_999_999_999_999_999];
        let input = batch(&prices);
        let mut rows = EncodedRows::default();
        let failures = AvroEncoder::new(schema.clone(), &input.schema())
            .unwrap()
            .encode(&input, &mut rows)
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        let payloads = BinaryArray::from_iter_values(rows.iter());
        let mut decoder = AvroDecoder::new(schema.clone(), arrow_schema(&schema).unwrap()).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
        let got = decoded.batch.column(1).as_primitive::<Decimal128Type>();
        assert_eq!(got.values().to_vec(), prices.to_vec());
        assert_eq!(
            decoded
                .batch
                .column(4)
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            1_704_067_200_000
        );
        assert!(decoded.batch.column(3).is_null(0));
    }

    #[test]
    fn a_block_count_no_record_could_hold_is_a_bad_record_without_the_allocation() {
        let schema = parse_schema(
            r#"{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":"long"}}]}"#,
        )
        .unwrap();
        // A block of 2^28 longs (zig-zag varint), then nothing: below the library's own limit, its
        // items would reserve gigabytes.
        let mut datum = Vec::new();
        let mut n: u64 = (1u64 << 28) << 1;
        while n >= 0x80 {
            datum.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        datum.push(n as u8);
        let payloads = BinaryArray::from_iter_values([datum]);
        let mut decoder = AvroDecoder::new(schema.clone(), arrow_schema(&schema).unwrap()).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert_eq!(decoded.batch.num_rows(), 0);
        assert_eq!(decoded.failures.len(), 1, "{:?}", decoded.failures);
    }

    #[test]
    fn decimals_are_rescaled_on_write_and_overflow_is_a_row_error() {
        let schema = parse_schema(&TRADES.replace(
            "\"precision\":18,\"scale\":4",
            "\"precision\":6,\"scale\":5",
        ))
        .unwrap();
        // 1.2000 → scale 5 → 120000 unscaled (fits 6 digits); 99.9999 → 9999990 (7 digits): error.
        let input = batch(&[12_000, 999_999]);
        let mut rows = EncodedRows::default();
        let failures = AvroEncoder::new(schema.clone(), &input.schema())
            .unwrap()
            .encode(&input, &mut rows)
            .unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].row, 1);
        assert!(
            failures[0]
                .reason
                .contains("99.9999 does not fit decimal(6, 5)"),
            "{failures:?}"
        );
        let mut decoder = AvroDecoder::new(schema.clone(), arrow_schema(&schema).unwrap()).unwrap();
        let decoded = decoder
            .decode(&BinaryArray::from_iter_values([rows.row(0)]))
            .unwrap();
        assert_eq!(
            decoded
                .batch
                .column(1)
                .as_primitive::<Decimal128Type>()
                .value(0),
            120_000
        );
    }

    #[test]
    fn bad_datums_are_reported_by_index() {
        let schema = parse_schema(TRADES).unwrap();
        let input = batch(&[1]);
        let mut rows = EncodedRows::default();
        AvroEncoder::new(schema.clone(), &input.schema())
            .unwrap()
            .encode(&input, &mut rows)
            .unwrap();
        let good = rows.row(0).to_vec();
        let truncated = good[..good.len() - 3].to_vec();
        let mut trailing = good.clone();
        trailing.push(7);
        let payloads = BinaryArray::from_iter_values([
            good.as_slice(),
            truncated.as_slice(),
            trailing.as_slice(),
        ]);
        let mut decoder = AvroDecoder::new(schema.clone(), arrow_schema(&schema).unwrap()).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert_eq!(decoded.batch.num_rows(), 1);
        let failed: Vec<usize> = decoded.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, vec![1, 2]);
        assert!(
            decoded.failures[1].reason.contains("bytes after the end"),
            "{:?}",
            decoded.failures
        );
    }

    #[test]
    fn nested_records_arrays_maps_enums_uuids_dates_and_fixed_decimals_decode() {
        use crate::codec::JsonEncoder;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/orders.avsc");
        let schema = load_schema(&path).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::Long(7)),
            (
                "amount".into(),
                Value::Decimal(apache_avro::Decimal::from(vec![
                    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x9C,
                ])),
            ),
            ("status".into(), Value::Enum(1, "SHIPPED".into())),
            (
                "ship_to".into(),
                Value::Record(vec![
                    ("city".into(), Value::String("Kent".into())),
                    ("country".into(), Value::String("UK".into())),
                ]),
            ),
            (
                "tags".into(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            (
                "counts".into(),
                Value::Map([("x".to_string(), Value::Long(2))].into_iter().collect()),
            ),
            (
                "ref".into(),
                Value::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap()),
            ),
            ("day".into(), Value::Date(19_723)),
            (
                "placed_at".into(),
                Value::TimestampMicros(1_704_067_200_000_001),
            ),
        ]);
        let datum = apache_avro::to_avro_datum(&schema, value).unwrap();
        let mut decoder = AvroDecoder::new(schema.clone(), arrow_schema(&schema).unwrap()).unwrap();
        let decoded = decoder
            .decode(&BinaryArray::from_iter_values([datum.as_slice()]))
            .unwrap();
        assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
        let mut rows = EncodedRows::default();
        JsonEncoder::default()
            .encode(&decoded.batch, &mut rows)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(rows.row(0)).unwrap(),
            r#"{"id":7,"amount":"-1.00","status":"SHIPPED","ship_to":{"city":"Kent","country":"UK"},"tags":["a","b"],"counts":{"x":2},"ref":"67e55044-10b1-426f-9247-bb680e5fe0c8","day":"2024-01-01","placed_at":"2024-01-01T00:00:00.000001"}"#
        );
    }

    #[test]
    fn a_decimal_wider_than_its_precision_is_a_bad_record() {
        let narrow = parse_schema(&TRADES.replace("\"precision\":18", "\"precision\":5")).unwrap();
        let wide = parse_schema(TRADES).unwrap();
        let input = batch(&[1_502_567]); // 150.2567: 7 digits, more than precision 5
        let mut rows = EncodedRows::default();
        AvroEncoder::new(wide, &input.schema())
            .unwrap()
            .encode(&input, &mut rows)
            .unwrap();
        let mut decoder = AvroDecoder::new(narrow.clone(), arrow_schema(&narrow).unwrap()).unwrap();
        let decoded = decoder
            .decode(&BinaryArray::from_iter_values(rows.iter()))
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 0);
        assert!(
            decoded.failures[0]
                .reason
                .contains("wider than its precision 5"),
            "{:?}",
            decoded.failures
        );
    }

    #[test]
    fn a_decimal_with_more_digits_than_the_declared_column_is_a_bad_record_or_rounded() {
        // Written with scale 4, read into a column declared DECIMAL(18,2).
        let writer = parse_schema(TRADES).unwrap();
        let input = batch(&[1_502_567, 1_502_500]); // 150.2567, 150.2500
        let mut rows = EncodedRows::default();
        AvroEncoder::new(writer.clone(), &input.schema())
            .unwrap()
            .encode(&input, &mut rows)
            .unwrap();
        let mut columns = arrow_schema(&writer).unwrap().as_ref().clone();
        let price = columns.index_of("price").unwrap();
        let mut fields: Vec<Field> = columns
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[price] = Field::new("price", DataType::Decimal128(18, 2), true);
        columns = Schema::new(fields);
        let payloads = BinaryArray::from_iter_values(rows.iter());
        let mut decoder = AvroDecoder::new(writer.clone(), Arc::new(columns.clone())).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert_eq!(decoded.failures.len(), 1);
        assert_eq!(decoded.failures[0].index, 0);
        assert!(
            decoded.failures[0]
                .reason
                .contains("column 'price': 150.2567 has 4 decimal places, DECIMAL(18,2) keeps 2"),
            "{:?}",
            decoded.failures
        );
        let mut decoder = AvroDecoder::new(writer, Arc::new(columns)).unwrap();
        decoder.set_decimal_rounding(crate::codec::decimal::DecimalRounding::HalfUp);
        let decoded = decoder.decode(&payloads).unwrap();
        assert!(decoded.failures.is_empty());
        let prices = decoded
            .batch
            .column(price)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(prices.values().to_vec(), vec![15_026, 15_025]);
    }

    #[test]
    fn a_schema_file_that_does_not_parse_names_line_and_column() {
        let err = parse_schema("{\"type\": \"record\",\n  \"name\": }").unwrap_err();
        assert!(err.starts_with("line 2, column"), "{err}");
    }

    #[test]
    fn derived_schemas_keep_decimals_as_bytes_decimal() {
        let schema = derive_schema(&batch(&[1]).schema(), "velo_result").unwrap();
        let AvroSchema::Record(record) = &schema else {
            panic!("{schema:?}")
        };
        let price = &record.fields[1].schema;
        assert!(
            matches!(price, AvroSchema::Decimal(d) if d.precision == 18 && d.scale == 4 && matches!(*d.inner, AvroSchema::Bytes)),
            "{price:?}"
        );
        assert!(matches!(&record.fields[3].schema, AvroSchema::Union(u) if u.is_nullable()));
        assert!(matches!(
            &record.fields[4].schema,
            AvroSchema::TimestampMillis
        ));
    }
}
