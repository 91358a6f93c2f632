//! Protobuf ↔ Arrow, with `.proto` files compiled at run time (protox; imports such as
//! `google/protobuf/timestamp.proto` resolve from the file's folder and protox's built-ins).
//!
//! Mapping: scalars → their Arrow types (uint32/uint64 → UInt32/UInt64), enum → Utf8 (the
//! value's name), nested message → Struct, repeated → List, map → Map (keys as text), oneof
//! members → nullable columns, `google.protobuf.Timestamp` → Timestamp(ns), and the decimal
//! message `Decimal { int64 units = 1; int32 scale = 2; }` (any message with exactly those two
//! fields) → Decimal128. A decimal's value carries its own scale, so the column's type comes
//! from the stream's declared columns (`--schema`, `CREATE STREAM (… price DECIMAL(18,4) …)`);
//! undeclared, it is `DECIMAL(38, 10)`. Values are converted exactly; one that would lose digits
//! is an error for its record.
//!
//! Decoding reads flat messages straight from the wire into Arrow ([`super::protobuf_columnar`]),
//! batch by batch; other messages, and batches that path gives back, are bridged through exact
//! JSON text into [`super::json`], like Avro.
//! Encoding builds one `DynamicMessage` per row; decimals are written with the column's scale.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Fields, Schema, SchemaRef, TimeUnit, UInt64Type,
};
use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use super::avro::EncodeFailure;
use super::bridge::JsonBridge;
use super::cell::{epoch_nanos_at, float_at, integer_at};
use super::protobuf_columnar::{ColumnarProtobuf, RowWriter};
use super::text::{rescale, write_decimal, write_hex, write_json_string};
use super::{Decoded, EncodedRows};
use crate::registry::{
    frame_header, message_indexes, skip_message_indexes, split_frame, Lookup, SchemaRegistry,
};
use crate::{ConnectorError, Result};

/// Scale of Decimal message columns whose type is not declared.
pub const DEFAULT_DECIMAL_SCALE: i8 = 10;

/// A protox error with the line and column of its first label, when it has one
/// (`trades.proto:3:11: expected an integer, but found ';'`).
fn located(e: &protox::Error, dir: &Path) -> String {
    fn first_label(d: &dyn miette::Diagnostic) -> Option<usize> {
        d.labels()
            .and_then(|mut labels| labels.next())
            .map(|l| l.offset())
            .or_else(|| d.diagnostic_source().and_then(first_label))
            .or_else(|| d.related().and_then(|mut r| r.find_map(first_label)))
    }
    let location = e.file().and_then(|file| {
        let offset = first_label(e)?;
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Some(format!("{file}:{line}:{column}: "))
    });
    format!("{}{e}", location.unwrap_or_default())
}

/// Compiles `proto_file` (with its imports) and finds `message` (`package.Message`).
/// `message` empty: the file's only top-level message (an error naming them when it has several).
pub fn load_message(proto_file: &Path, message: &str) -> Result<MessageDescriptor> {
    let dir = proto_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = proto_file
        .file_name()
        .ok_or_else(|| ConnectorError::Schema {
            path: proto_file.display().to_string(),
            reason: "not a file".into(),
        })?;
    let schema_error = |reason: String| ConnectorError::Schema {
        path: proto_file.display().to_string(),
        reason,
    };
    let mut compiler = protox::Compiler::new([dir]).map_err(|e| schema_error(e.to_string()))?;
    compiler.include_imports(true);
    compiler
        .open_file(name)
        .map_err(|e| schema_error(located(&e, dir)))?;
    let pool = compiler.descriptor_pool();
    if message.is_empty() {
        // No message named: the file's only top-level message, when it has one.
        let defined: Vec<MessageDescriptor> = pool
            .get_file_by_name(&name.to_string_lossy())
            .map(|f| f.messages().collect())
            .unwrap_or_default();
        return match defined.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(schema_error(format!(
                "the file defines {} messages ({}): name one with --proto-message",
                defined.len(),
                defined
                    .iter()
                    .map(|m| m.full_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    pool.get_message_by_name(message).ok_or_else(|| {
        let mut known: Vec<String> = pool
            .all_messages()
            .map(|m| m.full_name().to_string())
            .filter(|n| !n.starts_with("google.protobuf."))
            .collect();
        known.sort();
        schema_error(format!(
            "no message '{message}' (messages: {})",
            known.join(", ")
        ))
    })
}

/// The serialized `FileDescriptorSet` of `proto_file` and its imports (for other tools).
pub fn descriptor_set(proto_file: &Path) -> Result<Vec<u8>> {
    let dir = proto_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let schema_error = |reason: String| ConnectorError::Schema {
        path: proto_file.display().to_string(),
        reason,
    };
    let mut compiler = protox::Compiler::new([dir]).map_err(|e| schema_error(e.to_string()))?;
    compiler.include_imports(true);
    compiler
        .open_file(proto_file.file_name().unwrap_or_default())
        .map_err(|e| schema_error(located(&e, dir)))?;
    Ok(compiler.file_descriptor_set().encode_to_vec())
}

pub(super) fn is_decimal(m: &MessageDescriptor) -> bool {
    let fields: Vec<FieldDescriptor> = m.fields().collect();
    fields.len() == 2
        && fields.iter().any(|f| {
            f.name() == "units" && matches!(f.kind(), Kind::Int64 | Kind::Sint64 | Kind::Sfixed64)
        })
        && fields.iter().any(|f| {
            f.name() == "scale" && matches!(f.kind(), Kind::Int32 | Kind::Sint32 | Kind::Sfixed32)
        })
}

pub(super) fn is_timestamp(m: &MessageDescriptor) -> bool {
    m.full_name() == "google.protobuf.Timestamp"
}

pub(super) fn kind_type(kind: &Kind) -> DataType {
    match kind {
        Kind::Double => DataType::Float64,
        Kind::Float => DataType::Float32,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 => DataType::UInt32,
        Kind::Uint64 | Kind::Fixed64 => DataType::UInt64,
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(m) if is_decimal(m) => DataType::Decimal128(38, DEFAULT_DECIMAL_SCALE),
        Kind::Message(m) if is_timestamp(m) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Kind::Message(m) => DataType::Struct(message_fields(m)),
    }
}

fn field_type(f: &FieldDescriptor) -> (DataType, bool) {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            unreachable!("maps are messages")
        };
        let value = entry.map_entry_value_field();
        let entries = Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", kind_type(&value.kind()), true),
        ]);
        return (
            DataType::Map(
                Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                false,
            ),
            true,
        );
    }
    let t = kind_type(&f.kind());
    if f.is_list() {
        return (DataType::List(Arc::new(Field::new("item", t, true))), true);
    }
    (t, true)
}

fn message_fields(m: &MessageDescriptor) -> Fields {
    m.fields()
        .map(|f| {
            let (t, nullable) = field_type(&f);
            Field::new(f.name(), t, nullable)
        })
        .collect()
}

/// The stream columns of a message.
pub fn arrow_schema(message: &MessageDescriptor) -> SchemaRef {
    Arc::new(Schema::new(message_fields(message)))
}

/// Writes a message as JSON text (decimals as exact digits, timestamps as RFC 3339).
fn write_message(out: &mut Vec<u8>, m: &DynamicMessage) -> std::result::Result<(), String> {
    let desc = m.descriptor();
    if is_decimal(&desc) {
        let units = match m.get_field_by_name("units").as_deref() {
            Some(Value::I64(v)) => *v,
            _ => 0,
        };
        let scale = match m.get_field_by_name("scale").as_deref() {
            Some(Value::I32(v)) => *v,
            _ => 0,
        };
        // No DECIMAL column holds more than 38 digits on either side of the point.
        if !(-38..=38).contains(&scale) {
            return Err(format!(
                "a Decimal's scale is {scale}, outside -38..=38 (no DECIMAL column can hold it)"
            ));
        }
        out.push(b'"');
        write_decimal(out, units as i128, scale);
        out.push(b'"');
        return Ok(());
    }
    if is_timestamp(&desc) {
        let seconds = match m.get_field_by_name("seconds").as_deref() {
            Some(Value::I64(v)) => *v,
            _ => 0,
        };
        let nanos = match m.get_field_by_name("nanos").as_deref() {
            Some(Value::I32(v)) => *v as i64,
            _ => 0,
        };
        // RFC 3339 text, which the column decoder reads into any timestamp unit.
        let time = chrono::DateTime::from_timestamp(seconds, nanos as u32)
            .ok_or("the timestamp is out of range")?;
        write_json_string(
            out,
            &time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
        return Ok(());
    }
    out.push(b'{');
    for (i, f) in desc.fields().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, f.name());
        out.push(b':');
        let present = !f.supports_presence() || m.has_field(&f);
        if !present {
            out.extend_from_slice(b"null");
            continue;
        }
        write_value(out, &m.get_field(&f), &f.kind())?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, v: &Value, kind: &Kind) -> std::result::Result<(), String> {
    match v {
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I32(x) => out.extend_from_slice(x.to_string().as_bytes()),
        Value::I64(x) => out.extend_from_slice(x.to_string().as_bytes()),
        Value::U32(x) => out.extend_from_slice(x.to_string().as_bytes()),
        Value::U64(x) => out.extend_from_slice(x.to_string().as_bytes()),
        Value::F32(x) if x.is_finite() => out.extend_from_slice(x.to_string().as_bytes()),
        Value::F64(x) if x.is_finite() => out.extend_from_slice(x.to_string().as_bytes()),
        Value::F32(_) | Value::F64(_) => out.extend_from_slice(b"null"),
        Value::String(s) => write_json_string(out, s),
        Value::Bytes(b) => write_hex(out, b),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(value) => write_json_string(out, value.name()),
                None => out.extend_from_slice(n.to_string().as_bytes()),
            },
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        Value::Message(m) => write_message(out, m)?,
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, kind)?;
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut keys: Vec<(String, &Value)> = entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(x) => x.to_string(),
                        MapKey::I64(x) => x.to_string(),
                        MapKey::U32(x) => x.to_string(),
                        MapKey::U64(x) => x.to_string(),
                        MapKey::String(s) => s.clone(),
                    };
                    (key, v)
                })
                .collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(b'{');
            for (i, (k, v)) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, &k);
                out.push(b':');
                write_value(out, v, &value_kind)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Decodes Protobuf messages into batches.
pub struct ProtobufDecoder {
    message: MessageDescriptor,
    bridge: JsonBridge,
    /// Confluent wire format: records carry a registry schema id and message indexes.
    registry: Option<Arc<SchemaRegistry>>,
    /// The columnar path, where the columns are ones it reads.
    columnar: Option<ColumnarProtobuf>,
}

impl ProtobufDecoder {
    /// A decoder of `message` payloads producing `columns`.
    pub fn new(message: MessageDescriptor, columns: SchemaRef) -> Result<Self> {
        Ok(Self {
            columnar: ColumnarProtobuf::new(&message, &columns),
            message,
            bridge: JsonBridge::new(columns)?,
            registry: None,
        })
    }

    /// The same decoder without the columnar path: the oracle of its tests.
    #[cfg(test)]
    pub(super) fn values_only(message: MessageDescriptor, columns: SchemaRef) -> Result<Self> {
        Ok(Self {
            columnar: None,
            ..Self::new(message, columns)?
        })
    }

    /// Rounds decimals instead of refusing them (see [`super::decimal::DecimalRounding`]).
    pub fn set_decimal_rounding(&mut self, rounding: super::decimal::DecimalRounding) {
        self.bridge.set_decimal_rounding(rounding);
    }

    /// Reads the Confluent wire format (the ids must be known to the registry; records are
    /// decoded with this decoder's message type).
    pub fn with_registry(mut self, registry: Arc<SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The message bytes of record `bytes`, after the Confluent framing when there is one.
    fn unframe<'a>(&self, bytes: &'a [u8]) -> Result<std::result::Result<&'a [u8], String>> {
        let Some(registry) = &self.registry else {
            return Ok(Ok(bytes));
        };
        let (id, rest) = match split_frame(bytes) {
            Ok(split) => split,
            Err(why) => return Ok(Err(why)),
        };
        match registry.schema_by_id(id) {
            Ok(_) => Ok(skip_message_indexes(rest)),
            Err(Lookup::Unknown) => Ok(Err(format!("unknown schema id {id}"))),
            Err(Lookup::Unreachable(e)) => Err(e),
        }
    }

    /// Decodes one message per payload; bad ones are reported and left out.
    pub fn decode(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        if let Some(batch) = self.decode_columnar(payloads)? {
            return Ok(Decoded {
                batch,
                keep: None,
                failures: Vec::new(),
            });
        }
        self.decode_values(payloads)
    }

    /// The columnar path: the whole batch, or `None` when the value-tree path must decide.
    fn decode_columnar(&mut self, payloads: &BinaryArray) -> Result<Option<RecordBatch>> {
        if self.columnar.is_none() {
            return Ok(None);
        }
        let count = payloads.len();
        if self.registry.is_none() {
            let columnar = self.columnar.as_mut().expect("checked above");
            return Ok(columnar.decode(count, payloads.iter()));
        }
        let mut messages = Vec::with_capacity(count);
        for payload in payloads.iter() {
            match payload.map(|p| self.unframe(p)).transpose()? {
                Some(Ok(message)) => messages.push(Some(message)),
                _ => return Ok(None),
            }
        }
        let columnar = self.columnar.as_mut().expect("checked above");
        Ok(columnar.decode(count, messages.into_iter()))
    }

    fn decode_values(&mut self, payloads: &BinaryArray) -> Result<Decoded> {
        for i in 0..payloads.len() {
            if payloads.is_null(i) {
                self.bridge
                    .fail(i, "record has no value (tombstone)".into());
                continue;
            }
            let bytes = match self.unframe(payloads.value(i))? {
                Ok(b) => b,
                Err(why) => {
                    self.bridge.fail(i, format!("invalid Protobuf: {why}"));
                    continue;
                }
            };
            let message = match DynamicMessage::decode(self.message.clone(), bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.bridge.fail(i, format!("invalid Protobuf: {e}"));
                    continue;
                }
            };
            self.bridge.scratch.clear();
            if let Err(why) = write_message(&mut self.bridge.scratch, &message) {
                self.bridge.fail(i, format!("invalid Protobuf: {why}"));
                continue;
            }
            self.bridge.accept_scratch(i);
        }
        self.bridge.finish(payloads.len())
    }
}

/// Encodes rows as messages.
pub struct ProtobufEncoder {
    message: MessageDescriptor,
    /// Bytes in front of every message (Confluent header and message indexes with a registry).
    prefix: Vec<u8>,
}

impl ProtobufEncoder {
    /// An encoder of `message` from result columns of the same names.
    pub fn new(message: MessageDescriptor) -> Self {
        Self {
            message,
            prefix: Vec::new(),
        }
    }

    /// Writes the Confluent wire format: registers `proto_text` (the `.proto` file declaring
    /// the message) under `subject` and frames every message with its id and message index.
    pub fn with_registry(
        mut self,
        registry: &SchemaRegistry,
        subject: &str,
        proto_text: &str,
    ) -> Result<Self> {
        let id = registry.register(subject, proto_text, "PROTOBUF")?;
        let index = self
            .message
            .parent_file()
            .messages()
            .position(|m| m.full_name() == self.message.full_name())
            .unwrap_or(0);
        self.prefix = frame_header(id).to_vec();
        self.prefix.extend(message_indexes(index));
        Ok(self)
    }

    /// Appends one message per row to `out`; rows that cannot be encoded are returned and
    /// left out (their place in `out` is empty).
    pub fn encode(&self, batch: &RecordBatch, out: &mut EncodedRows) -> Result<Vec<EncodeFailure>> {
        self.encode_rows(batch, out, true)
    }

    /// [`ProtobufEncoder::encode`] through `DynamicMessage`s only: the oracle of its tests.
    #[cfg(test)]
    pub(super) fn encode_values(
        &self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
    ) -> Result<Vec<EncodeFailure>> {
        self.encode_rows(batch, out, false)
    }

    /// Rows are written straight from the arrays where [`RowWriter`] can (`direct`), through a
    /// `DynamicMessage` otherwise, which also names what is wrong with a row.
    fn encode_rows(
        &self,
        batch: &RecordBatch,
        out: &mut EncodedRows,
        direct: bool,
    ) -> Result<Vec<EncodeFailure>> {
        let columns: Vec<(FieldDescriptor, Option<&ArrayRef>)> = self
            .message
            .fields()
            .map(|f| {
                let c = batch.column_by_name(f.name());
                (f, c)
            })
            .collect();
        let mut writer = direct.then(|| RowWriter::new(&self.message, batch));
        Ok(out.push_rows(
            batch.num_rows(),
            &self.prefix,
            |row, bytes| writer.as_mut().is_some_and(|w| w.write(row, bytes)),
            |row, bytes| {
                let mut m = DynamicMessage::new(self.message.clone());
                for (f, c) in &columns {
                    let Some(array) = c else { continue };
                    if array.is_null(row) {
                        continue;
                    }
                    let v = to_value(array.as_ref(), row, f)
                        .map_err(|why| format!("column '{}': {why}", f.name()))?;
                    m.set_field(f, v);
                }
                // Writing into a `Vec` cannot run out of room.
                m.encode(bytes).map_err(|e| e.to_string())
            },
        ))
    }
}

fn to_value(
    array: &dyn Array,
    row: usize,
    f: &FieldDescriptor,
) -> std::result::Result<Value, String> {
    if f.is_list() {
        let list = array.as_list_opt::<i32>().ok_or("expected a list column")?;
        let items = list.value(row);
        return (0..items.len())
            .filter(|&i| !items.is_null(i))
            .map(|i| scalar(items.as_ref(), i, &f.kind()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Value::List);
    }
    if f.is_map() {
        return Err("writing Protobuf maps is not supported yet".into());
    }
    scalar(array, row, &f.kind())
}

fn scalar(array: &dyn Array, row: usize, kind: &Kind) -> std::result::Result<Value, String> {
    let int = || integer_at(array, row);
    let float = || float_at(array, row);
    let text =
        || arrow::util::display::array_value_to_string(array, row).map_err(|e| e.to_string());
    let mismatch = || {
        format!(
            "a {} column cannot be written as Protobuf {kind:?}",
            array.data_type()
        )
    };
    let narrow = |v: i64| i32::try_from(v).map_err(|_| format!("{v} does not fit a 32-bit field"));
    Ok(match kind {
        Kind::Double => Value::F64(float().ok_or_else(mismatch)?),
        Kind::Float => Value::F32(float().ok_or_else(mismatch)? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(narrow(int().ok_or_else(mismatch)?)?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int().ok_or_else(mismatch)?),
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(u32::try_from(int().ok_or_else(mismatch)?).map_err(|e| e.to_string())?)
        }
        Kind::Uint64 | Kind::Fixed64 => Value::U64(match array.data_type() {
            DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row),
            _ => u64::try_from(int().ok_or_else(mismatch)?).map_err(|e| e.to_string())?,
        }),
        Kind::Bool => Value::Bool(array.as_boolean_opt().ok_or_else(mismatch)?.value(row)),
        Kind::String => Value::String(text()?),
        Kind::Bytes => Value::Bytes(
            array
                .as_binary_opt::<i32>()
                .ok_or_else(mismatch)?
                .value(row)
                .to_vec()
                .into(),
        ),
        Kind::Enum(e) => {
            let name = text()?;
            Value::EnumNumber(
                e.get_value_by_name(&name)
                    .ok_or_else(|| format!("'{name}' is not a value of enum {}", e.full_name()))?
                    .number(),
            )
        }
        Kind::Message(m) if is_decimal(m) => {
            let (unscaled, scale) = match array.data_type() {
                DataType::Decimal128(_, s) => {
                    (array.as_primitive::<Decimal128Type>().value(row), *s as i32)
                }
                _ => (int().ok_or_else(mismatch)? as i128, 0),
            };
            let units = i64::try_from(rescale(unscaled, scale, scale).unwrap_or(unscaled))
                .map_err(|_| {
                    let mut t = Vec::new();
                    write_decimal(&mut t, unscaled, scale);
                    format!(
                        "{} does not fit the decimal message's int64 units",
                        String::from_utf8_lossy(&t)
                    )
                })?;
            let mut d = DynamicMessage::new(m.clone());
            d.set_field_by_name("units", Value::I64(units));
            d.set_field_by_name("scale", Value::I32(scale));
            Value::Message(d)
        }
        Kind::Message(m) if is_timestamp(m) => {
            let nanos = epoch_nanos_at(array, row).ok_or_else(mismatch)?;
            let mut t = DynamicMessage::new(m.clone());
            t.set_field_by_name(
                "seconds",
                Value::I64(nanos.div_euclid(1_000_000_000) as i64),
            );
            t.set_field_by_name("nanos", Value::I32(nanos.rem_euclid(1_000_000_000) as i32));
            Value::Message(t)
        }
        Kind::Message(m) => {
            let s = array.as_struct_opt().ok_or_else(mismatch)?;
            let mut nested = DynamicMessage::new(m.clone());
            for f in m.fields() {
                if let Some(c) = s.column_by_name(f.name()) {
                    if !c.is_null(row) {
                        nested.set_field(&f, to_value(c.as_ref(), row, &f)?);
                    }
                }
            }
            Value::Message(nested)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::TimestampMillisecondType;

    fn trades() -> MessageDescriptor {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/trades.proto");
        load_message(&path, "velostream.examples.Trade").unwrap()
    }

    #[test]
    fn decimals_and_timestamps_round_trip_exactly() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(18, 4), true),
            Field::new("quantity", DataType::Int64, true),
            Field::new("side", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let prices = vec![-5000i128, -1, 0, 999_999_999_999_999_999, 1_502_567];
        let n = prices.len();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["X"; n])),
                Arc::new(
                    Decimal128Array::from(prices.clone())
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![3; n])),
                Arc::new(StringArray::from(vec!["SELL"; n])),
                Arc::new(TimestampMillisecondArray::from(vec![1_704_067_200_123; n])),
            ],
        )
        .unwrap();
        let mut rows = EncodedRows::default();
        let failures = ProtobufEncoder::new(trades())
            .encode(&batch, &mut rows)
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        let payloads = BinaryArray::from_iter_values(rows.iter());
        // Declared columns choose the decimal's scale and the timestamp unit.
        let mut decoder = ProtobufDecoder::new(trades(), schema).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
        assert_eq!(
            decoded
                .batch
                .column(1)
                .as_primitive::<Decimal128Type>()
                .values()
                .to_vec(),
            prices
        );
        assert_eq!(decoded.batch.column(3).as_string::<i32>().value(0), "SELL");
        assert_eq!(
            decoded
                .batch
                .column(4)
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            1_704_067_200_123
        );
    }

    #[test]
    fn a_decimal_with_an_absurd_scale_is_a_bad_record_not_gigabytes_of_text() {
        let message = trades();
        let price = message.get_field_by_name("price").unwrap();
        let Kind::Message(decimal) = price.kind() else {
            panic!("price is a message")
        };
        let mut d = DynamicMessage::new(decimal);
        d.set_field_by_name("units", Value::I64(5));
        d.set_field_by_name("scale", Value::I32(i32::MAX));
        let mut trade = DynamicMessage::new(message.clone());
        trade.set_field_by_name("price", Value::Message(d));
        let payloads = BinaryArray::from_iter_values([trade.encode_to_vec()]);
        let mut decoder = ProtobufDecoder::new(message.clone(), arrow_schema(&message)).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert_eq!(decoded.batch.num_rows(), 0);
        assert!(
            decoded.failures[0].reason.contains("scale is 2147483647"),
            "{:?}",
            decoded.failures
        );
    }

    #[test]
    fn a_decimal_with_more_digits_than_its_column_is_a_bad_record() {
        let message = trades();
        let price = message.get_field_by_name("price").unwrap();
        let Kind::Message(decimal) = price.kind() else {
            panic!("price is a message")
        };
        let payloads =
            BinaryArray::from_iter_values([(1i64, 12i32), (1_500, 12)].map(|(units, scale)| {
                let mut d = DynamicMessage::new(decimal.clone());
                d.set_field_by_name("units", Value::I64(units));
                d.set_field_by_name("scale", Value::I32(scale));
                let mut trade = DynamicMessage::new(message.clone());
                trade.set_field_by_name("price", Value::Message(d));
                trade.encode_to_vec()
            }));
        // The derived column is DECIMAL(38,10): 1e-12 does not fit, 1.5e-9 does.
        let mut decoder = ProtobufDecoder::new(message.clone(), arrow_schema(&message)).unwrap();
        let decoded = decoder.decode(&payloads).unwrap();
        assert_eq!(decoded.batch.num_rows(), 1);
        assert_eq!(decoded.failures[0].index, 0);
        assert!(
            decoded.failures[0].reason.contains(
                "column 'price': 0.000000000001 has 12 decimal places, DECIMAL(38,10) keeps 10"
            ),
            "{:?}",
            decoded.failures
        );
    }

    #[test]
    fn derived_columns_and_bad_messages() {
        let schema = arrow_schema(&trades());
        assert_eq!(
            schema.field_with_name("price").unwrap().data_type(),
            &DataType::Decimal128(38, 10)
        );
        assert_eq!(
            schema.field_with_name("ts").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
        let mut decoder = ProtobufDecoder::new(trades(), schema).unwrap();
        let decoded = decoder
            .decode(&BinaryArray::from_iter_values([&[0x0a, 0x05, b'a'][..]]))
            .unwrap();
        assert_eq!(decoded.failures.len(), 1);
        assert!(
            decoded.failures[0].reason.starts_with("invalid Protobuf"),
            "{:?}",
            decoded.failures
        );
    }

    #[test]
    fn nested_repeated_map_enum_oneof_decimal_and_timestamp_fields_decode() {
        use crate::codec::JsonEncoder;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/orders.proto");
        let order = load_message(&path, "velostream.examples.Order").unwrap();
        let mut m = DynamicMessage::new(order.clone());
        m.set_field_by_name("id", Value::I64(7));
        let Kind::Message(money) = order.get_field_by_name("amount").unwrap().kind() else {
            panic!()
        };
        let mut amount = DynamicMessage::new(money);
        amount.set_field_by_name("units", Value::I64(-150));
        amount.set_field_by_name("scale", Value::I32(2));
        m.set_field_by_name("amount", Value::Message(amount));
        m.set_field_by_name("status", Value::EnumNumber(2));
        let Kind::Message(address) = order.get_field_by_name("ship_to").unwrap().kind() else {
            panic!()
        };
        let mut ship_to = DynamicMessage::new(address);
        ship_to.set_field_by_name("city", Value::String("Kent".into()));
        m.set_field_by_name("ship_to", Value::Message(ship_to));
        m.set_field_by_name(
            "tags",
            Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
        );
        m.set_field_by_name(
            "counts",
            Value::Map(
                [(MapKey::String("x".into()), Value::I64(2))]
                    .into_iter()
                    .collect(),
            ),
        );
        m.set_field_by_name("iban", Value::String("DE00".into()));
        let Kind::Message(ts) = order.get_field_by_name("placed_at").unwrap().kind() else {
            panic!()
        };
        let mut placed = DynamicMessage::new(ts);
        placed.set_field_by_name("seconds", Value::I64(1_704_067_200));
        placed.set_field_by_name("nanos", Value::I32(5));
        m.set_field_by_name("placed_at", Value::Message(placed));
        let bytes = m.encode_to_vec();
        let mut decoder = ProtobufDecoder::new(order.clone(), arrow_schema(&order)).unwrap();
        let decoded = decoder
            .decode(&BinaryArray::from_iter_values([bytes.as_slice()]))
            .unwrap();
        assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
        let mut rows = EncodedRows::default();
        JsonEncoder::default()
            .encode(&decoded.batch, &mut rows)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(rows.row(0)).unwrap(),
            r#"{"id":7,"amount":"-1.5000000000","status":"SHIPPED","ship_to":{"city":"Kent","country":""},"tags":["a","b"],"counts":{"x":2},"card":null,"iban":"DE00","placed_at":"2024-01-01T00:00:00.000000005"}"#
        );
    }

    #[test]
    fn a_proto_file_that_does_not_parse_names_file_line_and_reason() {
        let dir = std::env::temp_dir().join(format!("velo-proto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.proto");
        std::fs::write(
            &path,
            "syntax = \"proto3\";\nmessage M {\n  int64 x = ;\n}\n",
        )
        .unwrap();
        let err = load_message(&path, "M").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("schema file {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("bad.proto:3:"), "{err}");
    }

    #[test]
    fn an_unknown_message_lists_the_known_ones() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/trades.proto");
        let err = load_message(&path, "Nope").unwrap_err().to_string();
        assert!(err.contains("no message 'Nope' (messages: velostream.examples.Decimal, velostream.examples.Trade"), "{err}");
    }

    #[test]
    fn without_a_message_name_the_files_only_message_is_taken() {
        let dir = std::env::temp_dir().join(format!("velo-proto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = dir.join("tick.proto");
        std::fs::write(
            &one,
            "syntax = \"proto3\";\npackage t;\nmessage Tick { string sym = 1; int64 n = 2; }\n",
        )
        .unwrap();
        assert_eq!(load_message(&one, "").unwrap().full_name(), "t.Tick");
        let several = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/trades.proto");
        let err = load_message(&several, "").unwrap_err().to_string();
        assert!(
            err.contains("defines 2 messages (velostream.examples.Decimal, velostream.examples.Trade): name one with --proto-message"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
