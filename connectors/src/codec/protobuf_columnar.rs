//! The fast path of Protobuf decoding: messages read from the wire straight into Arrow.
//!
//! [`super::protobuf`] decodes each message into a prost-reflect `DynamicMessage` and bridges it
//! through JSON text; this module reads the wire format itself, driven by the descriptor, into
//! one builder per column ([`Level`], at any depth), for columns of singular scalars, enums, the
//! decimal message or `google.protobuf.Timestamp` (the natural types, any decimal precision and
//! scale, any timestamp unit), repeated fields (lists, packed or not) and nested messages
//! (structs, of the types the value path gives them). It gives the same values as the JSON
//! bridge: proto3 defaults for absent fields without presence, null for absent fields with
//! presence (a nested message too), an empty list for an absent repeated field, the last value
//! of a field written twice, an enum's name (its number when unknown), null for a NaN or
//! infinite float. Fields the query does not read — repeated ones, maps, nested messages at any
//! depth — are checked as prost-reflect decodes them and the JSON bridge writes them
//! ([`Nested`]), not decoded. Anything else in a batch — a malformed message, a wire type that
//! does not fit its field, a decimal that does not fit its column exactly, a group, a nested
//! message written twice (prost-reflect merges the two) — makes it give the batch back
//! (`None`), and the value-tree path decides, errors included. Map columns are read too, as
//! the value path has them: each entry's key and value defaulted when absent (a message value:
//! a default message), one value per key (the last written), entries ordered by the key's text
//! ([`Key`]). Maps of decimal or timestamp messages, a message value written twice in an entry
//! and a message value replaced by a later entry of its key are the value-tree path's.
//!
//! Encoding ([`RowWriter`]) is the same idea the other way: each row is written from the arrays
//! as the bytes prost-reflect writes for the `DynamicMessage` the value path builds (fields in
//! number order, defaults of fields without presence left out); a row it cannot write goes
//! through that path, which also names what is wrong with it.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use super::protobuf::{is_decimal, is_timestamp};
use super::scalar_builder::ScalarBuilder;
use super::text::{fits_precision, rescale};

/// Field numbers above this leave the message to the value-tree path (the lookup is a table).
const MAX_FIELD_NUMBER: u32 = 4096;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Decodes messages of one type into batches of the stream's columns.
pub(super) struct ColumnarProtobuf {
    columns: SchemaRef,
    /// The message's fields read into the columns.
    top: Level,
}

/// One message's fields read into columns: the stream's columns (the top level), or every
/// field of a nested message (a Struct column, or the Struct items of a list column).
struct Level {
    /// What each field number of the message is to this path (numbers past the end: unknown).
    fields: Vec<Entry>,
    reads: Vec<Read>,
    /// How each column is read.
    shapes: Vec<Shape>,
    /// The current message's value of each scalar column.
    slots: Vec<Slot>,
    /// The current message's occurrences of each list or struct column: where each value
    /// starts (after its key) and its wire type.
    seen: Vec<Vec<(usize, u8)>>,
    /// The current message's last field number set in each oneof (0: none).
    winners: Vec<u32>,
    /// A map column's entries of the current message, to order by key (reused).
    entries: Vec<(Key, Slot)>,
}

/// How a column is read.
enum Shape {
    Scalar,
    /// A repeated field: its items are scalars of the column's kind (`None`), or messages.
    List(Option<Box<Level>>),
    /// A message field.
    Struct(Box<Level>),
    /// A map field with keys of this kind: its values are scalars of the column's kind
    /// (`None`), or messages.
    Map(Scalar, Option<Box<Level>>),
}

/// A map entry's key as the value path writes it, to order entries by: a string key's bytes in
/// the message, or a number's or a bool's text.
#[derive(Clone, Copy)]
enum Key {
    Range(usize, usize),
    Inline([u8; 24], u8),
}

impl Key {
    /// The key a map entry's slot holds (a key field's value, or `Slot::Absent`: the default).
    fn of(slot: Slot, kind: &Scalar) -> Option<Key> {
        let inline = |text: &[u8]| {
            let mut buf = [0u8; 24];
            buf[..text.len()].copy_from_slice(text);
            Key::Inline(buf, text.len() as u8)
        };
        let mut digits = [0u8; 24];
        let mut number = |v: &dyn std::fmt::Display| {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut digits[..]);
            write!(cursor, "{v}").ok()?;
            let n = cursor.position() as usize;
            Some(inline(&digits[..n]))
        };
        Some(match (slot, kind) {
            (Slot::Text(start, end), _) => Key::Range(start, end),
            (Slot::I64(v), _) => number(&v)?,
            (Slot::U64(v), _) => number(&v)?,
            (Slot::Bool(b), _) => inline(if b { b"true" } else { b"false" }),
            (Slot::Absent, Scalar::String) => Key::Range(0, 0),
            (Slot::Absent, Scalar::Bool) => inline(b"false"),
            (Slot::Absent, _) => inline(b"0"),
            _ => return None,
        })
    }

    fn bytes<'a>(&'a self, message: &'a [u8]) -> &'a [u8] {
        match self {
            Key::Range(start, end) => &message[*start..*end],
            Key::Inline(buf, n) => &buf[..*n as usize],
        }
    }
}

/// The builder of one column, at any depth.
enum Builder {
    Scalar(ScalarBuilder),
    List {
        item: arrow::datatypes::FieldRef,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        items: Box<Builder>,
    },
    Struct {
        fields: arrow::datatypes::Fields,
        valid: Vec<bool>,
        children: Vec<Builder>,
    },
    Map {
        entries: arrow::datatypes::FieldRef,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        keys: ScalarBuilder,
        values: Box<Builder>,
    },
}

impl Builder {
    /// A builder of `rows` values of `data_type`, or `None` for a type this path does not build.
    fn new(data_type: &DataType, rows: usize) -> Option<Builder> {
        Some(match data_type {
            DataType::List(item) => Builder::List {
                item: item.clone(),
                offsets: {
                    let mut o = Vec::with_capacity(rows + 1);
                    o.push(0);
                    o
                },
                valid: Vec::with_capacity(rows),
                items: Box::new(Builder::new(item.data_type(), rows)?),
            },
            DataType::Struct(fields) => Builder::Struct {
                fields: fields.clone(),
                valid: Vec::with_capacity(rows),
                children: fields
                    .iter()
                    .map(|f| Builder::new(f.data_type(), rows))
                    .collect::<Option<_>>()?,
            },
            DataType::Map(entries, false) => {
                let DataType::Struct(pair) = entries.data_type() else {
                    return None;
                };
                if pair.len() != 2 || *pair[0].data_type() != DataType::Utf8 {
                    return None;
                }
                Builder::Map {
                    entries: entries.clone(),
                    offsets: vec![0],
                    valid: Vec::with_capacity(rows),
                    keys: ScalarBuilder::new(&DataType::Utf8, rows, rows * 8)?,
                    values: Box::new(Builder::new(pair[1].data_type(), rows)?),
                }
            }
            other => Builder::Scalar(ScalarBuilder::new(other, rows, rows * 8)?),
        })
    }

    fn push_null(&mut self) {
        match self {
            Builder::Scalar(b) => b.push_null(),
            Builder::List { offsets, valid, .. } | Builder::Map { offsets, valid, .. } => {
                offsets.push(*offsets.last().unwrap_or(&0));
                valid.push(false);
            }
            Builder::Struct {
                valid, children, ..
            } => {
                valid.push(false);
                children.iter_mut().for_each(Builder::push_null);
            }
        }
    }

    fn finish(self) -> Option<ArrayRef> {
        let nulls = |valid: Vec<bool>| {
            (!valid.iter().all(|v| *v)).then(|| arrow::buffer::NullBuffer::from(valid))
        };
        Some(match self {
            Builder::Scalar(b) => b.finish(),
            Builder::List {
                item,
                offsets,
                valid,
                items,
            } => std::sync::Arc::new(
                arrow::array::ListArray::try_new(
                    item,
                    arrow::buffer::OffsetBuffer::new(offsets.into()),
                    items.finish()?,
                    nulls(valid),
                )
                .ok()?,
            ),
            Builder::Map {
                entries,
                offsets,
                valid,
                keys,
                values,
            } => {
                let DataType::Struct(pair) = entries.data_type() else {
                    return None;
                };
                let pairs = arrow::array::StructArray::try_new(
                    pair.clone(),
                    vec![keys.finish(), values.finish()?],
                    None,
                )
                .ok()?;
                std::sync::Arc::new(
                    arrow::array::MapArray::try_new(
                        entries,
                        arrow::buffer::OffsetBuffer::new(offsets.into()),
                        pairs,
                        nulls(valid),
                        false,
                    )
                    .ok()?,
                )
            }
            Builder::Struct {
                fields,
                valid,
                children,
            } => std::sync::Arc::new(
                arrow::array::StructArray::try_new(
                    fields,
                    children
                        .into_iter()
                        .map(Builder::finish)
                        .collect::<Option<_>>()?,
                    nulls(valid),
                )
                .ok()?,
            ),
        })
    }
}

/// A field number of the message.
#[derive(Clone)]
struct Entry {
    role: Role,
    /// The oneof it belongs to, if any.
    oneof: Option<u16>,
}

#[derive(Clone)]
enum Role {
    /// Not in the message: skipped, as prost-reflect keeps it unread.
    Unknown,
    /// Read into this column.
    Column(u16),
    /// Not read, but checked as prost-reflect checks it (wire type, UTF-8, a decimal's or a
    /// timestamp's fields).
    Check(Scalar),
    /// A repeated, map or message field not read: checked as prost-reflect decodes it (and the
    /// JSON bridge writes it), element by element, message by message.
    Nested(Nested),
    /// Fields this path cannot check (groups, messages nested too deep, extensions): when
    /// present, the batch goes to the value path.
    Bail,
}

/// How a field not read as a column is checked, at any depth.
#[derive(Clone)]
enum Nested {
    /// A scalar, a decimal or a timestamp: as [`value`] reads it.
    Scalar(Scalar),
    /// A repeated number, bool or enum: one element per field, or packed in one LEN field.
    Packable(Scalar),
    /// A message (repeated or not; a map's entries are messages of a key and a value): its
    /// fields by number (`None`: unknown, skipped).
    Message(std::sync::Arc<Vec<Option<Nested>>>),
}

/// Messages nested deeper than this (recursive types) are left to the value path.
const MAX_CHECK_DEPTH: usize = 16;

/// The checks of each message type met, by full name (`None`: not checkable, or still being
/// built: a type met again inside itself is recursive, and left to the value path).
type Checked = std::collections::HashMap<String, Option<std::sync::Arc<Vec<Option<Nested>>>>>;

/// How field `field` is checked when not read, or `None` when this path cannot check it.
fn nested(field: &FieldDescriptor, depth: usize, checked: &mut Checked) -> Option<Nested> {
    if field.is_group() {
        return None;
    }
    if let Kind::Message(m) = field.kind() {
        if !is_decimal(&m) && !is_timestamp(&m) {
            return Some(Nested::Message(message_checks(&m, depth + 1, checked)?));
        }
    }
    let kind = scalar(field, &DataType::Null, false)?;
    let packable = field.is_list() && element_wire(&kind).is_some();
    Some(match packable {
        true => Nested::Packable(kind),
        false => Nested::Scalar(kind),
    })
}

/// The checks of each field of `message`, by number; each type built once (`checked`), so a
/// schema reusing types costs its size, not its fan-out to the power of its depth.
fn message_checks(
    message: &MessageDescriptor,
    depth: usize,
    checked: &mut Checked,
) -> Option<std::sync::Arc<Vec<Option<Nested>>>> {
    if let Some(done) = checked.get(message.full_name()) {
        return done.clone();
    }
    if depth > MAX_CHECK_DEPTH || message.extensions().len() > 0 {
        return None;
    }
    checked.insert(message.full_name().to_string(), None);
    let build = |checked: &mut Checked| {
        let mut fields: Vec<Option<Nested>> = Vec::new();
        for field in message.fields() {
            let number = field.number() as usize;
            if number > MAX_FIELD_NUMBER as usize {
                return None;
            }
            if fields.len() <= number {
                fields.resize(number + 1, None);
            }
            fields[number] = Some(nested(&field, depth, checked)?);
        }
        Some(std::sync::Arc::new(fields))
    };
    let built = build(checked);
    checked.insert(message.full_name().to_string(), built.clone());
    built
}

/// Whether `data_type` is the type the value path gives `field` (`protobuf::field_type`),
/// walked together with the declared type: bounded by its depth, so that a message type
/// holding itself ends.
fn value_type(data_type: &DataType, field: &FieldDescriptor) -> bool {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return false;
        };
        let value = entry.map_entry_value_field().kind();
        return match data_type {
            DataType::Map(entries, false)
                if entries.name() == "entries" && !entries.is_nullable() =>
            {
                match entries.data_type() {
                    DataType::Struct(pair) => {
                        pair.len() == 2
                            && pair[0].name() == "keys"
                            && *pair[0].data_type() == DataType::Utf8
                            && !pair[0].is_nullable()
                            && pair[1].name() == "values"
                            && pair[1].is_nullable()
                            && kind_type(pair[1].data_type(), &value)
                    }
                    _ => false,
                }
            }
            _ => false,
        };
    }
    if field.is_list() {
        return matches!(data_type, DataType::List(item)
            if item.name() == "item" && item.is_nullable() && kind_type(item.data_type(), &field.kind()));
    }
    kind_type(data_type, &field.kind())
}

/// Whether `data_type` is the value path's type of a value of `kind`.
fn kind_type(data_type: &DataType, kind: &Kind) -> bool {
    match kind {
        Kind::Message(m) if !is_decimal(m) && !is_timestamp(m) => match data_type {
            DataType::Struct(fields) => {
                fields.len() == m.fields().len()
                    && fields.iter().zip(m.fields()).all(|(f, field)| {
                        f.name() == field.name()
                            && f.is_nullable()
                            && value_type(f.data_type(), &field)
                    })
            }
            _ => false,
        },
        // Not a plain message: the value path's type of it is not recursive.
        other => *data_type == super::protobuf::kind_type(other),
    }
}

/// The wire type of one element of a packed field of `kind` (`None`: it cannot be packed).
fn element_wire(kind: &Scalar) -> Option<u8> {
    Some(match kind {
        Scalar::Int32
        | Scalar::Sint32
        | Scalar::Int64
        | Scalar::Sint64
        | Scalar::Uint32
        | Scalar::Uint64
        | Scalar::Bool
        | Scalar::Enum(_) => VARINT,
        Scalar::Sfixed32 | Scalar::Fixed32 | Scalar::Float => FIXED32,
        Scalar::Sfixed64 | Scalar::Fixed64 | Scalar::Double => FIXED64,
        _ => return None,
    })
}

/// Checks one occurrence of a field (sent with wire type `wire`) at `at`.
fn check(nested: &Nested, wire: u8, bytes: &[u8], at: &mut usize) -> Option<()> {
    match nested {
        Nested::Scalar(kind) => value(kind, wire, bytes, at).map(drop),
        Nested::Packable(kind) if wire == LEN => {
            let (start, end) = len(bytes, at)?;
            let (packed, element) = (&bytes[..end], element_wire(kind)?);
            let mut p = start;
            while p < end {
                value(kind, element, packed, &mut p)?;
            }
            Some(())
        }
        Nested::Packable(kind) => value(kind, wire, bytes, at).map(drop),
        Nested::Message(fields) => {
            if wire != LEN {
                return None;
            }
            let (start, end) = len(bytes, at)?;
            let message = &bytes[start..end];
            let mut p = 0;
            while p < message.len() {
                let (number, wire) = key(message, &mut p)?;
                match fields.get(number as usize).and_then(Option::as_ref) {
                    Some(field) => check(field, wire, message, &mut p)?,
                    None => skip(message, &mut p, wire)?,
                }
            }
            Some(())
        }
    }
}

/// How a column's field is read.
#[derive(Clone)]
struct Read {
    kind: Scalar,
    /// Absent means null (proto2 optional, proto3 `optional`, oneof members, messages);
    /// otherwise absent means the type's default.
    presence: bool,
    number: u32,
    oneof: Option<u16>,
}

#[derive(Clone)]
enum Scalar {
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Bool,
    Float,
    Double,
    String,
    /// Only checked, never a column here (the JSON bridge writes bytes as hex text).
    Bytes,
    Enum(EnumDescriptor),
    /// `Decimal { units; scale }`: the field numbers and kinds of its two fields (the column's
    /// builder knows its precision and scale).
    Decimal {
        units: (u32, Kind),
        scale: (u32, Kind),
    },
    /// `google.protobuf.Timestamp` (the column's builder knows its unit).
    Timestamp,
    /// A column the message has no field of: always null, as in the JSON bridge.
    Missing,
}

/// One value read from the wire, before it goes to its column.
#[derive(Clone, Copy)]
enum Slot {
    Absent,
    Null,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    /// A string's bytes in the message, already checked to be UTF-8.
    Text(usize, usize),
    /// An enum's number.
    Enum(i32),
    /// A decimal message's units and scale.
    Decimal(i64, i32),
    /// A timestamp message's nanoseconds since the epoch (every second fits an `i128`).
    Nanos(i128),
}

impl ColumnarProtobuf {
    /// A decoder of `message` into `columns`, or `None` when a column is not one this path reads.
    pub(super) fn new(message: &MessageDescriptor, columns: &SchemaRef) -> Option<Self> {
        Some(Self {
            columns: columns.clone(),
            top: Level::new(message, columns.fields(), true)?,
        })
    }

    /// The batch of `messages` (one row each), or `None` when the value-tree path must decide.
    pub(super) fn decode<'a>(
        &mut self,
        count: usize,
        messages: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> Option<RecordBatch> {
        let mut builders: Vec<Builder> = self
            .columns
            .fields()
            .iter()
            .map(|f| Builder::new(f.data_type(), count))
            .collect::<Option<_>>()?;
        for message in messages {
            let message = message?;
            self.top.read(message)?;
            self.top.push(&mut builders, message)?;
        }
        let arrays: Vec<ArrayRef> = builders
            .into_iter()
            .map(Builder::finish)
            .collect::<Option<_>>()?;
        RecordBatch::try_new(self.columns.clone(), arrays).ok()
    }
}

impl Level {
    /// The reading of `message` into `columns`: the stream's columns (`top`: a column may name
    /// no field, and be declared with another decimal precision or timestamp unit), or a
    /// nested message's fields, of their natural types. `None` when a column is not one this
    /// path reads.
    fn new(
        message: &MessageDescriptor,
        columns: &arrow::datatypes::Fields,
        top: bool,
    ) -> Option<Self> {
        // Extensions are decoded (and checked) by prost-reflect; left to it.
        if message.extensions().len() > 0 {
            return None;
        }
        let mut fields = Vec::new();
        let mut oneofs: Vec<String> = Vec::new();
        let mut checked = Checked::new();
        for field in message.fields() {
            let number = field.number();
            if number > MAX_FIELD_NUMBER {
                return None;
            }
            let role = match (field.is_list() || field.is_map(), field.kind()) {
                (false, Kind::Message(m)) if is_decimal(&m) || is_timestamp(&m) => {
                    match scalar(&field, &DataType::Null, false) {
                        Some(kind) => Role::Check(kind),
                        None => Role::Bail,
                    }
                }
                (false, kind) if !matches!(kind, Kind::Message(_)) => {
                    Role::Check(scalar(&field, &DataType::Null, false)?)
                }
                _ => nested(&field, 0, &mut checked).map_or(Role::Bail, Role::Nested),
            };
            let oneof = field.containing_oneof().map(|o| {
                let name = o.full_name().to_string();
                match oneofs.iter().position(|n| *n == name) {
                    Some(i) => i as u16,
                    None => {
                        oneofs.push(name);
                        (oneofs.len() - 1) as u16
                    }
                }
            });
            if fields.len() <= number as usize {
                fields.resize(
                    number as usize + 1,
                    Entry {
                        role: Role::Unknown,
                        oneof: None,
                    },
                );
            }
            fields[number as usize] = Entry { role, oneof };
        }
        let mut reads = Vec::new();
        let mut shapes = Vec::new();
        for (index, column) in columns.iter().enumerate() {
            if !column.is_nullable() || Builder::new(column.data_type(), 0).is_none() {
                return None;
            }
            let Some(field) = message.get_field_by_name(column.name()) else {
                if !top {
                    return None;
                }
                reads.push(Read {
                    kind: Scalar::Missing,
                    presence: true,
                    number: 0,
                    oneof: None,
                });
                shapes.push(Shape::Scalar);
                continue;
            };
            if field.is_group() {
                return None;
            }
            if field.is_map() {
                let Kind::Message(entry) = field.kind() else {
                    return None;
                };
                let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                if !value_type(column.data_type(), &field) {
                    return None;
                }
                let DataType::Map(entries, _) = column.data_type() else {
                    return None;
                };
                let DataType::Struct(pair) = entries.data_type() else {
                    return None;
                };
                // Scalar values, or messages read as structs (an absent value is a default
                // message, as on the value path); decimal and timestamp values are not read
                // here.
                let (value_kind, values) = match (value.kind(), pair[1].data_type()) {
                    (Kind::Message(m), DataType::Struct(fields))
                        if !is_decimal(&m) && !is_timestamp(&m) =>
                    {
                        (
                            Scalar::Missing,
                            Some(Box::new(Level::new(&m, fields, false)?)),
                        )
                    }
                    (Kind::Message(_), _) => return None,
                    (_, data_type) => (scalar(&value, data_type, true)?, None),
                };
                let key_kind = scalar(&key, &DataType::Null, false)?;
                let entry_number = &mut fields[field.number() as usize];
                entry_number.role = Role::Column(index as u16);
                reads.push(Read {
                    kind: value_kind,
                    presence: false,
                    number: field.number(),
                    oneof: None,
                });
                shapes.push(Shape::Map(key_kind, values));
                continue;
            }
            let message_kind = match field.kind() {
                Kind::Message(m) if !is_decimal(&m) && !is_timestamp(&m) => Some(m),
                _ => None,
            };
            let (kind, shape) = if field.is_list() || message_kind.is_some() {
                // Lists and structs: of the field's own type, as the value path has them.
                if !value_type(column.data_type(), &field) {
                    return None;
                }
                let level = |data_type: &DataType, m: &MessageDescriptor| match data_type {
                    DataType::Struct(fields) => Level::new(m, fields, false).map(Box::new),
                    _ => None,
                };
                match (column.data_type(), &message_kind) {
                    (DataType::List(item), Some(m)) => (
                        Scalar::Missing,
                        Shape::List(Some(level(item.data_type(), m)?)),
                    ),
                    (DataType::List(item), None) => {
                        (scalar(&field, item.data_type(), true)?, Shape::List(None))
                    }
                    (struct_type, Some(m)) => {
                        (Scalar::Missing, Shape::Struct(level(struct_type, m)?))
                    }
                    _ => return None,
                }
            } else {
                (scalar(&field, column.data_type(), true)?, Shape::Scalar)
            };
            let entry = &mut fields[field.number() as usize];
            entry.role = Role::Column(index as u16);
            reads.push(Read {
                kind,
                presence: field.supports_presence(),
                number: field.number(),
                oneof: entry.oneof,
            });
            shapes.push(shape);
        }
        Some(Self {
            fields,
            slots: vec![Slot::Absent; reads.len()],
            seen: vec![Vec::new(); reads.len()],
            reads,
            shapes,
            winners: vec![0; oneofs.len()],
            entries: Vec::new(),
        })
    }

    /// Reads one message's fields into `slots` and `seen`.
    fn read(&mut self, message: &[u8]) -> Option<()> {
        self.slots.fill(Slot::Absent);
        self.seen.iter_mut().for_each(Vec::clear);
        self.winners.fill(0);
        let mut at = 0;
        while at < message.len() {
            let (number, wire) = key(message, &mut at)?;
            let Some(entry) = self.fields.get(number as usize) else {
                skip(message, &mut at, wire)?;
                continue;
            };
            match &entry.role {
                Role::Unknown => skip(message, &mut at, wire)?,
                Role::Bail => return None,
                Role::Check(kind) => {
                    value(kind, wire, message, &mut at)?;
                }
                Role::Nested(nested) => check(nested, wire, message, &mut at)?,
                Role::Column(column) => {
                    let column = *column as usize;
                    let kind = &self.reads[column].kind;
                    match &self.shapes[column] {
                        Shape::Scalar => {
                            if matches!(kind, Scalar::Decimal { .. } | Scalar::Timestamp)
                                && !matches!(self.slots[column], Slot::Absent)
                            {
                                return None; // a message field written twice is merged: rare
                            }
                            self.slots[column] = value(kind, wire, message, &mut at)?;
                        }
                        // Read when the row is pushed; here only found and stepped over.
                        Shape::List(None) if wire != LEN => {
                            self.seen[column].push((at, wire));
                            value(kind, wire, message, &mut at)?;
                        }
                        _ if wire == LEN => {
                            self.seen[column].push((at, wire));
                            len(message, &mut at)?;
                        }
                        _ => return None,
                    }
                }
            }
            if let Some(oneof) = entry.oneof {
                self.winners[oneof as usize] = number;
            }
        }
        // A oneof holds only the member set last.
        for ((slot, seen), read) in self.slots.iter_mut().zip(&mut self.seen).zip(&self.reads) {
            if read
                .oneof
                .is_some_and(|o| self.winners[o as usize] != read.number)
            {
                *slot = Slot::Absent;
                seen.clear();
            }
        }
        Some(())
    }

    /// Reads `message` (a nested one) and appends it as a valid struct of `children`.
    fn append(
        &mut self,
        message: &[u8],
        valid: &mut Vec<bool>,
        children: &mut [Builder],
    ) -> Option<()> {
        self.read(message)?;
        self.push(children, message)?;
        valid.push(true);
        Some(())
    }

    /// Appends the message last [`Level::read`] to `builders`, a value per column.
    fn push(&mut self, builders: &mut [Builder], message: &[u8]) -> Option<()> {
        let Level {
            reads,
            shapes,
            slots,
            seen,
            entries,
            ..
        } = self;
        for (c, builder) in builders.iter_mut().enumerate() {
            match (&mut shapes[c], builder) {
                (Shape::Scalar, Builder::Scalar(b)) => push(b, slots[c], &reads[c], message)?,
                (
                    Shape::List(items),
                    Builder::List {
                        offsets,
                        valid,
                        items: item_builder,
                        ..
                    },
                ) => {
                    let mut count = 0usize;
                    for &(at, wire) in &seen[c] {
                        let mut p = at;
                        match (items.as_deref_mut(), &mut **item_builder) {
                            (None, Builder::Scalar(b)) => {
                                let kind = &reads[c].kind;
                                match (wire, element_wire(kind)) {
                                    (LEN, Some(element)) => {
                                        let (start, end) = len(message, &mut p)?;
                                        let packed = &message[..end];
                                        let mut q = start;
                                        while q < end {
                                            let slot = value(kind, element, packed, &mut q)?;
                                            push(b, slot, &reads[c], message)?;
                                            count += 1;
                                        }
                                    }
                                    _ => {
                                        let slot = value(kind, wire, message, &mut p)?;
                                        push(b, slot, &reads[c], message)?;
                                        count += 1;
                                    }
                                }
                            }
                            (
                                Some(level),
                                Builder::Struct {
                                    valid, children, ..
                                },
                            ) => {
                                let (start, end) = len(message, &mut p)?;
                                let item = &message[start..end];
                                level.append(item, valid, children)?;
                                count += 1;
                            }
                            _ => return None,
                        }
                    }
                    let last = *offsets.last()?;
                    offsets.push(last.checked_add(i32::try_from(count).ok()?)?);
                    // A repeated field is never null: absent, it is empty.
                    valid.push(true);
                }
                (
                    Shape::Struct(level),
                    Builder::Struct {
                        valid, children, ..
                    },
                ) => match seen[c].as_slice() {
                    [] => {
                        valid.push(false);
                        children.iter_mut().for_each(Builder::push_null);
                    }
                    &[(at, _)] => {
                        let mut p = at;
                        let (start, end) = len(message, &mut p)?;
                        let item = &message[start..end];
                        level.append(item, valid, children)?;
                    }
                    // A message field written twice is merged by prost-reflect: rare.
                    _ => return None,
                },
                (
                    Shape::Map(key_kind, level),
                    Builder::Map {
                        offsets,
                        valid,
                        keys,
                        values,
                        ..
                    },
                ) => {
                    entries.clear();
                    for &(at, _) in &seen[c] {
                        // An entry: its key (field 1) and value (field 2), the last of each
                        // written, defaults when absent; other fields skipped. A message value
                        // is kept as its bytes' range.
                        let mut p = at;
                        let (start, end) = len(message, &mut p)?;
                        let entry = &message[..end];
                        let (mut k, mut v) = (Slot::Absent, Slot::Absent);
                        let mut q = start;
                        while q < end {
                            match (key(entry, &mut q)?, level.is_some()) {
                                ((1, wire), _) => k = value(key_kind, wire, entry, &mut q)?,
                                ((2, wire), false) => {
                                    v = value(&reads[c].kind, wire, entry, &mut q)?
                                }
                                // A message value written twice is merged by prost-reflect.
                                ((2, LEN), true) if matches!(v, Slot::Absent) => {
                                    let (start, end) = len(entry, &mut q)?;
                                    v = Slot::Text(start, end);
                                }
                                ((2, _), true) => return None,
                                ((_, wire), _) => skip(entry, &mut q, wire)?,
                            }
                        }
                        entries.push((Key::of(k, key_kind)?, v));
                    }
                    // As the value path: one value per key (the last written), keys in order.
                    entries.sort_by(|a, b| a.0.bytes(message).cmp(b.0.bytes(message)));
                    let mut count = 0usize;
                    for i in 0..entries.len() {
                        let (k, v) = entries[i];
                        let later_twin = entries
                            .get(i + 1)
                            .is_some_and(|next| next.0.bytes(message) == k.bytes(message));
                        if later_twin {
                            // A message value is checked only as it is read: a replaced one
                            // (a repeated key: rare) is left to the value path, which checks it.
                            if level.is_some() {
                                return None;
                            }
                            continue;
                        }
                        let ScalarBuilder::Utf8(names) = keys else {
                            return None;
                        };
                        names.append_value(std::str::from_utf8(k.bytes(message)).ok()?);
                        match (level.as_deref_mut(), &mut **values) {
                            (None, Builder::Scalar(values)) => push(values, v, &reads[c], message)?,
                            (
                                Some(level),
                                Builder::Struct {
                                    valid, children, ..
                                },
                            ) => {
                                let item = match v {
                                    Slot::Text(start, end) => &message[start..end],
                                    _ => &[],
                                };
                                level.append(item, valid, children)?;
                            }
                            _ => return None,
                        }
                        count += 1;
                    }
                    let last = *offsets.last()?;
                    offsets.push(last.checked_add(i32::try_from(count).ok()?)?);
                    // A map field is never null: absent, it is empty.
                    valid.push(true);
                }
                _ => return None,
            }
        }
        Some(())
    }
}

/// The value of a field of kind `kind` at `at`, sent with wire type `wire`.
fn value(kind: &Scalar, wire: u8, message: &[u8], at: &mut usize) -> Option<Slot> {
    Some(match (kind, wire) {
        (Scalar::Int32, VARINT) => Slot::I64(varint(message, at)? as i32 as i64),
        (Scalar::Int64, VARINT) => Slot::I64(varint(message, at)? as i64),
        (Scalar::Sint32, VARINT) => {
            let v = varint(message, at)? as u32;
            Slot::I64(((v >> 1) as i32 ^ -((v & 1) as i32)) as i64)
        }
        (Scalar::Sint64, VARINT) => {
            let v = varint(message, at)?;
            Slot::I64((v >> 1) as i64 ^ -((v & 1) as i64))
        }
        (Scalar::Uint32, VARINT) => Slot::U64(varint(message, at)? as u32 as u64),
        (Scalar::Uint64, VARINT) => Slot::U64(varint(message, at)?),
        (Scalar::Bool, VARINT) => Slot::Bool(varint(message, at)? != 0),
        (Scalar::Enum(_), VARINT) => Slot::Enum(varint(message, at)? as i32),
        (Scalar::Sfixed32, FIXED32) => Slot::I64(fixed32(message, at)? as i32 as i64),
        (Scalar::Fixed32, FIXED32) => Slot::U64(fixed32(message, at)? as u64),
        (Scalar::Float, FIXED32) => float(f32::from_bits(fixed32(message, at)?) as f64),
        (Scalar::Sfixed64, FIXED64) => Slot::I64(fixed64(message, at)? as i64),
        (Scalar::Fixed64, FIXED64) => Slot::U64(fixed64(message, at)?),
        (Scalar::Double, FIXED64) => float(f64::from_bits(fixed64(message, at)?)),
        (Scalar::String, LEN) => {
            let (start, end) = len(message, at)?;
            std::str::from_utf8(&message[start..end]).ok()?;
            Slot::Text(start, end)
        }
        (Scalar::Bytes, LEN) => len(message, at).map(|_| Slot::Null)?,
        (Scalar::Decimal { units, scale }, LEN) => {
            let (start, end) = len(message, at)?;
            decimal(&message[start..end], units, scale)?
        }
        (Scalar::Timestamp, LEN) => {
            let (start, end) = len(message, at)?;
            timestamp(&message[start..end])?
        }
        _ => return None,
    })
}

/// A float as the JSON bridge writes it: null unless finite.
fn float(v: f64) -> Slot {
    if v.is_finite() {
        Slot::F64(v)
    } else {
        Slot::Null
    }
}

/// The kind of `field`, when this path reads it into `column` (or, unless `typed`, reads it at
/// all).
fn scalar(field: &FieldDescriptor, column: &DataType, typed: bool) -> Option<Scalar> {
    let kind = match field.kind() {
        Kind::Int32 => Scalar::Int32,
        Kind::Sint32 => Scalar::Sint32,
        Kind::Sfixed32 => Scalar::Sfixed32,
        Kind::Int64 => Scalar::Int64,
        Kind::Sint64 => Scalar::Sint64,
        Kind::Sfixed64 => Scalar::Sfixed64,
        Kind::Uint32 => Scalar::Uint32,
        Kind::Fixed32 => Scalar::Fixed32,
        Kind::Uint64 => Scalar::Uint64,
        Kind::Fixed64 => Scalar::Fixed64,
        Kind::Bool => Scalar::Bool,
        Kind::Float => Scalar::Float,
        Kind::Double => Scalar::Double,
        Kind::String => Scalar::String,
        Kind::Enum(e) => Scalar::Enum(e),
        Kind::Bytes if typed => return None,
        Kind::Bytes => Scalar::Bytes,
        Kind::Message(m) if is_timestamp(&m) => {
            if typed && !matches!(column, DataType::Timestamp(_, None)) {
                return None;
            }
            let number = |name: &str| m.get_field_by_name(name).map(|f| f.number());
            if number("seconds")? != 1 || number("nanos")? != 2 {
                return None;
            }
            Scalar::Timestamp
        }
        Kind::Message(m) if is_decimal(&m) => {
            if typed && !matches!(column, DataType::Decimal128(..)) {
                return None;
            }
            let units = m.get_field_by_name("units")?;
            let scale = m.get_field_by_name("scale")?;
            Scalar::Decimal {
                units: (units.number(), units.kind()),
                scale: (scale.number(), scale.kind()),
            }
        }
        Kind::Message(_) => return None,
    };
    let natural = match &kind {
        Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => DataType::Int32,
        Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => DataType::Int64,
        Scalar::Uint32 | Scalar::Fixed32 => DataType::UInt32,
        Scalar::Uint64 | Scalar::Fixed64 => DataType::UInt64,
        Scalar::Bool => DataType::Boolean,
        Scalar::Float => DataType::Float32,
        Scalar::Double => DataType::Float64,
        Scalar::String | Scalar::Enum(_) => DataType::Utf8,
        Scalar::Bytes => DataType::Binary,
        Scalar::Decimal { .. } | Scalar::Timestamp | Scalar::Missing => column.clone(),
    };
    (!typed || natural == *column).then_some(kind)
}

/// A `Decimal` message's value at its column's scale, exactly; `None` when it does not fit
/// exactly (the value-tree path then reports it or rounds it).
fn decimal(bytes: &[u8], units: &(u32, Kind), scale: &(u32, Kind)) -> Option<Slot> {
    let (mut u, mut s) = (0i64, 0i32);
    let mut at = 0;
    while at < bytes.len() {
        let (number, wire) = key(bytes, &mut at)?;
        if number == units.0 {
            u = signed(bytes, &mut at, wire, &units.1)?;
        } else if number == scale.0 {
            s = signed(bytes, &mut at, wire, &scale.1)? as i32;
        } else {
            skip(bytes, &mut at, wire)?;
        }
    }
    if !(-38..=38).contains(&s) {
        return None;
    }
    Some(Slot::Decimal(u, s))
}

/// A signed integer field of kind `kind` (int, sint or sfixed, 32 or 64 bits).
fn signed(bytes: &[u8], at: &mut usize, wire: u8, kind: &Kind) -> Option<i64> {
    Some(match (kind, wire) {
        (Kind::Int64, VARINT) => varint(bytes, at)? as i64,
        (Kind::Int32, VARINT) => varint(bytes, at)? as i32 as i64,
        (Kind::Sint64, VARINT) => {
            let v = varint(bytes, at)?;
            (v >> 1) as i64 ^ -((v & 1) as i64)
        }
        (Kind::Sint32, VARINT) => {
            let v = varint(bytes, at)? as u32;
            ((v >> 1) as i32 ^ -((v & 1) as i32)) as i64
        }
        (Kind::Sfixed64, FIXED64) => fixed64(bytes, at)? as i64,
        (Kind::Sfixed32, FIXED32) => fixed32(bytes, at)? as i32 as i64,
        _ => return None,
    })
}

/// A `google.protobuf.Timestamp`, when chrono can represent it.
fn timestamp(bytes: &[u8]) -> Option<Slot> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut at = 0;
    while at < bytes.len() {
        match key(bytes, &mut at)? {
            (1, VARINT) => seconds = varint(bytes, &mut at)? as i64,
            (2, VARINT) => nanos = varint(bytes, &mut at)? as i32,
            (1 | 2, _) => return None,
            (_, wire) => skip(bytes, &mut at, wire)?,
        }
    }
    // The value path goes through RFC 3339 text, which arrow-cast reads for years 1–9999 only.
    const FIRST: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..1_000_000_000).contains(&nanos) || !(FIRST..=LAST).contains(&seconds) {
        return None;
    }
    chrono::DateTime::from_timestamp(seconds, nanos as u32)?;
    Some(Slot::Nanos(seconds as i128 * 1_000_000_000 + nanos as i128))
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn fixed32(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let v = u32::from_le_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?);
    *at += 4;
    Some(v)
}

fn fixed64(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let v = u64::from_le_bytes(bytes.get(*at..*at + 8)?.try_into().ok()?);
    *at += 8;
    Some(v)
}

/// The range of a length-delimited field's bytes.
fn len(bytes: &[u8], at: &mut usize) -> Option<(usize, usize)> {
    let n = usize::try_from(varint(bytes, at)?).ok()?;
    let start = *at;
    let end = start.checked_add(n).filter(|e| *e <= bytes.len())?;
    *at = end;
    Some((start, end))
}

fn key(bytes: &[u8], at: &mut usize) -> Option<(u32, u8)> {
    let key = varint(bytes, at)?;
    let number = u32::try_from(key >> 3).ok()?;
    if number == 0 || key > u32::MAX as u64 {
        return None;
    }
    Some((number, (key & 7) as u8))
}

/// Skips a field this path does not read (groups are left to the value-tree path).
fn skip(bytes: &[u8], at: &mut usize, wire: u8) -> Option<()> {
    match wire {
        VARINT => varint(bytes, at).map(drop),
        FIXED64 => fixed64(bytes, at).map(drop),
        LEN => len(bytes, at).map(drop),
        FIXED32 => fixed32(bytes, at).map(drop),
        _ => None,
    }
}

/// Appends a row's value to `builder`: `slot`, or the field's default when it is absent.
fn push(builder: &mut ScalarBuilder, slot: Slot, read: &Read, message: &[u8]) -> Option<()> {
    let slot = match slot {
        Slot::Absent if read.presence => Slot::Null,
        Slot::Absent => match &read.kind {
            Scalar::String => Slot::Text(0, 0),
            Scalar::Enum(e) => Slot::Enum(e.default_value().number()),
            Scalar::Bool => Slot::Bool(false),
            Scalar::Float | Scalar::Double => Slot::F64(0.0),
            Scalar::Uint32 | Scalar::Uint64 | Scalar::Fixed32 | Scalar::Fixed64 => Slot::U64(0),
            Scalar::Decimal { .. } | Scalar::Timestamp | Scalar::Missing => Slot::Null,
            _ => Slot::I64(0),
        },
        other => other,
    };
    match (builder, slot) {
        (ScalarBuilder::Int32(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Int64(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::UInt32(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::UInt64(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Float32(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Float64(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Boolean(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Utf8(b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Decimal128(b, ..), Slot::Null) => b.append_null(),
        (ScalarBuilder::Timestamp(_, b), Slot::Null) => b.append_null(),
        (ScalarBuilder::Int32(b), Slot::I64(v)) => b.append_value(v as i32),
        (ScalarBuilder::Int64(b), Slot::I64(v)) => b.append_value(v),
        (ScalarBuilder::UInt32(b), Slot::U64(v)) => b.append_value(v as u32),
        (ScalarBuilder::UInt64(b), Slot::U64(v)) => b.append_value(v),
        (ScalarBuilder::Float32(b), Slot::F64(v)) => b.append_value(v as f32),
        (ScalarBuilder::Float64(b), Slot::F64(v)) => b.append_value(v),
        (ScalarBuilder::Boolean(b), Slot::Bool(v)) => b.append_value(v),
        (ScalarBuilder::Utf8(b), Slot::Text(start, end)) => {
            b.append_value(std::str::from_utf8(&message[start..end]).ok()?)
        }
        (ScalarBuilder::Utf8(b), Slot::Enum(n)) => match &read.kind {
            Scalar::Enum(e) => match e.get_value(n) {
                Some(value) => b.append_value(value.name()),
                None => b.append_value(n.to_string()),
            },
            _ => return None,
        },
        (ScalarBuilder::Decimal128(b, precision, column_scale), Slot::Decimal(units, scale)) => {
            let v = rescale(units as i128, scale, *column_scale as i32)?;
            if !fits_precision(v, *precision as u32) {
                return None;
            }
            b.append_value(v)
        }
        (ScalarBuilder::Timestamp(unit, b), Slot::Nanos(nanos)) => {
            let v = match unit {
                TimeUnit::Second => nanos.div_euclid(1_000_000_000),
                TimeUnit::Millisecond => nanos.div_euclid(1_000_000),
                TimeUnit::Microsecond => nanos.div_euclid(1_000),
                TimeUnit::Nanosecond => nanos,
            };
            b.append_value(i64::try_from(v).ok()?)
        }
        _ => return None,
    }
    Some(())
}

/// The fields of an output message in number order (the order prost-reflect writes them), with
/// their result columns and how each is written, for writing rows straight from the arrays.
pub(super) struct RowWriter<'a> {
    fields: Vec<(Plan, Option<&'a ArrayRef>)>,
    /// Indexes in `fields` of the members of each real oneof.
    oneofs: Vec<Vec<usize>>,
    /// A nested message's bytes, before its length is known.
    scratch: Vec<u8>,
}

/// How one field is written, worked out once per batch.
enum Plan {
    /// Lists, maps, other messages: rows holding a value go to the value path.
    ValuePath,
    Double(Head),
    Float(Head),
    /// int, sint or sfixed; `narrow`: 32 bits.
    Signed(Head, Kind, bool),
    /// uint or fixed; `wide`: 64 bits, `fixed`: fixed-width.
    Unsigned(Head, bool, bool),
    Bool(Head),
    String(Head),
    Bytes(Head),
    /// The enum and its default value's number.
    Enum(Head, EnumDescriptor, i32),
    /// `google.protobuf.Timestamp`'s seconds and nanos.
    Timestamp(Head, Sub, Sub),
    /// The decimal message's units and scale.
    Decimal(Head, Sub, Sub),
}

/// A field's number and whether it has presence (without it, a default is not written).
#[derive(Clone, Copy)]
struct Head {
    number: u32,
    presence: bool,
}

/// A signed integer field of a nested message.
struct Sub {
    head: Head,
    kind: Kind,
}

impl Plan {
    fn of(field: &FieldDescriptor) -> Plan {
        let head = Head {
            number: field.number(),
            presence: field.supports_presence(),
        };
        let sub = |m: &MessageDescriptor, name: &str| {
            m.get_field_by_name(name).map(|f| Sub {
                head: Head {
                    number: f.number(),
                    presence: f.supports_presence(),
                },
                kind: f.kind(),
            })
        };
        if field.is_list() || field.is_map() {
            return Plan::ValuePath;
        }
        match field.kind() {
            Kind::Double => Plan::Double(head),
            Kind::Float => Plan::Float(head),
            k @ (Kind::Int32 | Kind::Sint32 | Kind::Sfixed32) => Plan::Signed(head, k, true),
            k @ (Kind::Int64 | Kind::Sint64 | Kind::Sfixed64) => Plan::Signed(head, k, false),
            Kind::Uint32 => Plan::Unsigned(head, false, false),
            Kind::Fixed32 => Plan::Unsigned(head, false, true),
            Kind::Uint64 => Plan::Unsigned(head, true, false),
            Kind::Fixed64 => Plan::Unsigned(head, true, true),
            Kind::Bool => Plan::Bool(head),
            Kind::String => Plan::String(head),
            Kind::Bytes => Plan::Bytes(head),
            Kind::Enum(e) => {
                let default = e.default_value().number();
                Plan::Enum(head, e, default)
            }
            Kind::Message(m) if is_timestamp(&m) => match (sub(&m, "seconds"), sub(&m, "nanos")) {
                (Some(s), Some(n)) => Plan::Timestamp(head, s, n),
                _ => Plan::ValuePath,
            },
            Kind::Message(m) if is_decimal(&m) => match (sub(&m, "units"), sub(&m, "scale")) {
                (Some(u), Some(s)) => Plan::Decimal(head, u, s),
                _ => Plan::ValuePath,
            },
            Kind::Message(_) => Plan::ValuePath,
        }
    }
}

impl<'a> RowWriter<'a> {
    pub(super) fn new(message: &MessageDescriptor, batch: &'a RecordBatch) -> Self {
        let mut fields: Vec<_> = message.fields().collect();
        fields.sort_by_key(|f| f.number());
        let oneofs = message
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| {
                let members: Vec<u32> = o.fields().map(|f| f.number()).collect();
                (0..fields.len())
                    .filter(|&i| members.contains(&fields[i].number()))
                    .collect()
            })
            .collect();
        Self {
            fields: fields
                .iter()
                .map(|f| (Plan::of(f), batch.column_by_name(f.name())))
                .collect(),
            oneofs,
            scratch: Vec::new(),
        }
    }

    /// Writes row `row` as the message bytes prost-reflect writes for the `DynamicMessage`
    /// [`super::protobuf`] builds; `false` (with `out` partly written) where that path must
    /// decide: lists, maps, nested messages, text conversions, values that do not fit, two
    /// members of one oneof set.
    pub(super) fn write(&mut self, row: usize, out: &mut Vec<u8>) -> bool {
        let set = |i: usize| self.fields[i].1.is_some_and(|c| !c.is_null(row));
        if self
            .oneofs
            .iter()
            .any(|members| members.iter().filter(|&&i| set(i)).count() > 1)
        {
            return false;
        }
        let scratch = &mut self.scratch;
        self.fields.iter().all(|(plan, column)| match column {
            Some(array) if !array.is_null(row) => {
                write_value(plan, array.as_ref(), row, out, scratch)
            }
            _ => true,
        })
    }
}

/// Writes a field with the value of `array[row]` as `plan` says; a field without presence
/// holding its default is not written, as prost-reflect does.
fn write_value(
    plan: &Plan,
    array: &dyn arrow::array::Array,
    row: usize,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    use super::cell::{epoch_nanos_at, float_at, integer_at};
    use arrow::array::AsArray;
    use arrow::datatypes::{Decimal128Type, UInt64Type};
    let int = || integer_at(array, row);
    match plan {
        Plan::ValuePath => return false,
        Plan::Double(h) => match float_at(array, row) {
            Some(v) if h.presence || v != 0.0 => {
                put_key(out, h.number, FIXED64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Some(_) => {}
            None => return false,
        },
        Plan::Float(h) => match float_at(array, row).map(|v| v as f32) {
            Some(v) if h.presence || v != 0.0 => {
                put_key(out, h.number, FIXED32);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Some(_) => {}
            None => return false,
        },
        Plan::Signed(h, kind, narrow) => {
            let Some(v) = int() else { return false };
            if *narrow && i32::try_from(v).is_err() {
                return false;
            }
            put_signed(out, *h, kind, v);
        }
        Plan::Unsigned(h, wide, fixed) => {
            let v = match (wide, array.data_type()) {
                (true, DataType::UInt64) => array.as_primitive::<UInt64Type>().value(row),
                (true, _) => match int().and_then(|v| u64::try_from(v).ok()) {
                    Some(v) => v,
                    None => return false,
                },
                (false, _) => match int().and_then(|v| u32::try_from(v).ok()) {
                    Some(v) => v as u64,
                    None => return false,
                },
            };
            if h.presence || v != 0 {
                match (wide, fixed) {
                    (_, false) => {
                        put_key(out, h.number, VARINT);
                        put_varint(out, v);
                    }
                    (false, true) => {
                        put_key(out, h.number, FIXED32);
                        out.extend_from_slice(&(v as u32).to_le_bytes());
                    }
                    (true, true) => {
                        put_key(out, h.number, FIXED64);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        Plan::Bool(h) => match array.as_boolean_opt().map(|b| b.value(row)) {
            Some(v) if h.presence || v => {
                put_key(out, h.number, VARINT);
                out.push(v as u8);
            }
            Some(_) => {}
            None => return false,
        },
        Plan::String(h) => match array.as_string_opt::<i32>().map(|s| s.value(row)) {
            Some(v) if h.presence || !v.is_empty() => put_bytes(out, h.number, v.as_bytes()),
            Some(_) => {}
            None => return false,
        },
        Plan::Bytes(h) => match array.as_binary_opt::<i32>().map(|b| b.value(row)) {
            Some(v) if h.presence || !v.is_empty() => put_bytes(out, h.number, v),
            Some(_) => {}
            None => return false,
        },
        Plan::Enum(h, e, default) => {
            let Some(name) = array.as_string_opt::<i32>().map(|s| s.value(row)) else {
                return false;
            };
            let Some(value) = e.get_value_by_name(name) else {
                return false;
            };
            if h.presence || value.number() != *default {
                put_key(out, h.number, VARINT);
                put_varint(out, value.number() as i64 as u64);
            }
        }
        Plan::Timestamp(h, seconds, nanos) => {
            let Some(t) = epoch_nanos_at(array, row) else {
                return false;
            };
            scratch.clear();
            let s = t.div_euclid(1_000_000_000) as i64;
            let n = t.rem_euclid(1_000_000_000) as i64;
            put_signed(scratch, seconds.head, &seconds.kind, s);
            put_signed(scratch, nanos.head, &nanos.kind, n);
            put_bytes(out, h.number, scratch);
        }
        Plan::Decimal(h, units, scale) => {
            let (unscaled, s) = match array.data_type() {
                DataType::Decimal128(_, s) => {
                    (array.as_primitive::<Decimal128Type>().value(row), *s as i64)
                }
                _ => match int() {
                    Some(v) => (v as i128, 0),
                    None => return false,
                },
            };
            let Ok(u) = i64::try_from(unscaled) else {
                return false;
            };
            scratch.clear();
            // In field-number order, as prost-reflect writes them.
            let mut fields = [(units, u), (scale, s)];
            fields.sort_by_key(|(sub, _)| sub.head.number);
            for (sub, v) in fields {
                put_signed(scratch, sub.head, &sub.kind, v);
            }
            put_bytes(out, h.number, scratch);
        }
    }
    true
}

/// A signed integer field (int, sint or sfixed; 32 or 64 bits; `v` fits the width).
fn put_signed(out: &mut Vec<u8>, head: Head, kind: &Kind, v: i64) {
    let Head { number, presence } = head;
    if !presence && v == 0 {
        return;
    }
    match kind {
        Kind::Int32 | Kind::Int64 => {
            put_key(out, number, VARINT);
            put_varint(out, v as u64);
        }
        Kind::Sint32 => {
            put_key(out, number, VARINT);
            let v = v as i32;
            put_varint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
        }
        Kind::Sint64 => {
            put_key(out, number, VARINT);
            put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
        }
        Kind::Sfixed32 => {
            put_key(out, number, FIXED32);
            out.extend_from_slice(&(v as i32).to_le_bytes());
        }
        _ => {
            put_key(out, number, FIXED64);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, ((number as u64) << 3) | wire as u64);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_key(out, number, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::protobuf::{arrow_schema, load_message, ProtobufDecoder, ProtobufEncoder};
    use crate::codec::testing::Rng;
    use crate::codec::EncodedRows;
    use arrow::array::{Array, AsArray, BinaryArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    const PROTO: &str = r#"syntax = "proto3";
package flat;
import "google/protobuf/timestamp.proto";
message Decimal { int64 units = 1; int32 scale = 2; }
enum Side { SIDE_UNKNOWN = 0; BUY = 1; SELL = 2; }
message Inner { int32 x = 1; }
message Flat {
  int32 i32 = 1; sint32 s32 = 2; sfixed32 f32 = 3; int64 i64 = 4; sint64 s64 = 5;
  sfixed64 f64 = 6; uint32 u32 = 7; fixed32 x32 = 8; uint64 u64 = 9; fixed64 x64 = 10;
  bool flag = 11; float ratio = 12; double score = 13; string name = 14; Side side = 15;
  Decimal price = 16; google.protobuf.Timestamp at = 17; optional int64 maybe = 18;
  oneof choice { string text = 19; int32 number = 20; }
  bytes blob = 21; repeated int32 many = 22; Inner inner = 23;
  map<string, int64> counts = 24; repeated Inner inners = 25;
  Deep deep = 26; repeated Deep deeps = 27;
  map<int32, string> labels = 28; map<bool, Side> flags = 29; map<string, Inner> by_name = 30;
  map<string, Deep> deep_by = 32; map<string, Decimal> prices = 33;
}
message Deep {
  string s = 1; repeated double ds = 2; Inner in = 3; optional int64 o = 4; Side side = 5;
  Decimal d = 6; google.protobuf.Timestamp t = 7; repeated Inner ins = 8;
  repeated string names = 9; oneof pick { int32 a = 10; string b = 11; }
}
"#;

    fn message() -> MessageDescriptor {
        load(PROTO, "flat", "flat.Flat")
    }

    fn load(text: &str, file: &str, message: &str) -> MessageDescriptor {
        // A folder per call: tests running at once must not read each other's half-written file.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("velo-{file}-proto-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{file}.proto"));
        std::fs::write(&path, text).unwrap();
        let loaded = load_message(&path, message).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    /// The message's columns the columnar path reads, the decimal as DECIMAL(18,4) and the
    /// timestamp in milliseconds.
    fn columns(message: &MessageDescriptor) -> SchemaRef {
        let fields: Vec<Field> = arrow_schema(message)
            .fields()
            .iter()
            .filter(|f| {
                !matches!(
                    f.name().as_str(),
                    "blob"
                        | "many"
                        | "inner"
                        | "counts"
                        | "inners"
                        | "deep"
                        | "deeps"
                        | "labels"
                        | "flags"
                        | "by_name"
                        | "deep_by"
                        | "prices"
                )
            })
            .map(|f| match f.name().as_str() {
                "price" => Field::new("price", DataType::Decimal128(18, 4), true),
                "at" => Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
                _ => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// One field of `Flat` with a random value (sometimes of the wrong wire type).
    fn field(rng: &mut Rng, out: &mut Vec<u8>) {
        let number = 1 + rng.next(32) as u32;
        let mut wire = match number {
            3 | 8 | 12 => FIXED32,
            6 | 10 | 13 => FIXED64,
            14 | 16 | 17 | 19 | 21 | 23..=30 | 32 => LEN,
            // Repeated numbers: packed or one by one.
            22 if rng.next(2) == 0 => LEN,
            31 => VARINT, // not in the message
            _ => VARINT,
        };
        if rng.next(40) == 0 {
            wire = [VARINT, FIXED64, LEN, FIXED32][rng.next(4) as usize];
        }
        put_key(out, number, wire);
        match wire {
            VARINT => put_varint(out, rng.wide()),
            FIXED64 => {
                let v = [rng.wide(), f64::NAN.to_bits(), (-2.5f64).to_bits()][rng.next(3) as usize];
                out.extend_from_slice(&v.to_le_bytes())
            }
            FIXED32 => {
                let v = [rng.wide() as u32, f32::INFINITY.to_bits(), 0.1f32.to_bits()]
                    [rng.next(3) as usize];
                out.extend_from_slice(&v.to_le_bytes())
            }
            _ => {
                let mut inner = Vec::new();
                match number {
                    16 => {
                        // Decimal: units, scale (sometimes absurd or inexact for scale 4)
                        put_key(&mut inner, 1, VARINT);
                        put_varint(&mut inner, rng.wide());
                        put_key(&mut inner, 2, VARINT);
                        put_varint(&mut inner, [0, 2, 4, 6, 40, u64::MAX][rng.next(6) as usize]);
                    }
                    17 => {
                        put_key(&mut inner, 1, VARINT);
                        put_varint(
                            &mut inner,
                            [0, 1_704_067_200, u64::MAX - 86_400 * 400][rng.next(3) as usize],
                        );
                        put_key(&mut inner, 2, VARINT);
                        put_varint(
                            &mut inner,
                            [0, 5, 999_999_999, 1_500_000_000, u64::MAX][rng.next(5) as usize],
                        );
                    }
                    14 | 19 => inner.extend_from_slice(
                        [&b"abc"[..], "é\"".as_bytes(), b"\xff\xfe", b""][rng.next(4) as usize],
                    ),
                    22 => {
                        // Packed varints, sometimes cut inside the last one.
                        for _ in 0..rng.next(4) {
                            put_varint(&mut inner, rng.wide());
                        }
                        if rng.next(6) == 0 {
                            inner.push(0x80);
                        }
                    }
                    23 | 25 => inner.extend_from_slice(
                        [
                            &[8, 1][..],
                            &[8, 0x96, 0x01, 0x12, 1, b'z'], // x, then an unknown string
                            &[0x0d, 1, 2, 3, 4],             // x as fixed32: wrong wire type
                            &[8],                            // cut
                            &[],
                        ][rng.next(5) as usize],
                    ),
                    24 | 28 | 29 | 30 | 32 => {
                        // A map entry: key and value, each sometimes absent, written twice,
                        // of the wrong wire type or not UTF-8; sometimes an unknown field.
                        for _ in 0..rng.next(3) {
                            match (number, rng.next(5)) {
                                (_, 0) => {}
                                (24 | 30 | 32, _) => {
                                    let key: &[u8] =
                                        [&b"k"[..], b"j", b"\xc3", b""][rng.next(4) as usize];
                                    put_key(&mut inner, 1, LEN);
                                    put_varint(&mut inner, key.len() as u64);
                                    inner.extend_from_slice(key);
                                }
                                (28, _) => {
                                    put_key(&mut inner, 1, VARINT);
                                    put_varint(
                                        &mut inner,
                                        [9, 10, u64::MAX, 100][rng.next(4) as usize],
                                    );
                                }
                                (_, _) => {
                                    put_key(&mut inner, 1, VARINT);
                                    put_varint(&mut inner, rng.next(3));
                                }
                            }
                        }
                        for _ in 0..rng.next(3) {
                            match (number, rng.next(6)) {
                                (_, 0) => {
                                    put_key(&mut inner, 2, FIXED32); // the wrong wire type
                                    inner.extend_from_slice(&[0; 4]);
                                }
                                (_, 1) => {
                                    put_key(&mut inner, 3, VARINT); // not in an entry
                                    put_varint(&mut inner, 1);
                                }
                                (28, _) => {
                                    let text: &[u8] =
                                        [&b"x"[..], b"", b"\xff"][rng.next(3) as usize];
                                    put_key(&mut inner, 2, LEN);
                                    put_varint(&mut inner, text.len() as u64);
                                    inner.extend_from_slice(text);
                                }
                                (30, _) => {
                                    // An Inner: set, with an unknown field, of the wrong wire
                                    // type, cut, or empty (a default message).
                                    let value: &[u8] = [
                                        &[8, 3][..],
                                        &[8, 0x96, 0x01, 0x12, 1, b'z'],
                                        &[0x0d, 1, 2, 3, 4],
                                        &[8],
                                        &[],
                                    ][rng.next(5) as usize];
                                    put_key(&mut inner, 2, LEN);
                                    put_varint(&mut inner, value.len() as u64);
                                    inner.extend_from_slice(value);
                                }
                                (32, _) => {
                                    let mut deep = Vec::new();
                                    for _ in 0..rng.next(5) {
                                        deep_field(rng, &mut deep);
                                    }
                                    put_key(&mut inner, 2, LEN);
                                    put_varint(&mut inner, deep.len() as u64);
                                    inner.extend_from_slice(&deep);
                                }
                                (_, _) => {
                                    put_key(&mut inner, 2, VARINT);
                                    put_varint(&mut inner, rng.next(4));
                                }
                            }
                        }
                    }
                    26 | 27 => {
                        for _ in 0..rng.next(6) {
                            deep_field(rng, &mut inner);
                        }
                    }
                    _ => inner.extend_from_slice(&[8, 1]),
                }
                put_varint(out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
        }
    }

    /// One field of `Deep` with a random value (sometimes of the wrong wire type, or cut).
    fn deep_field(rng: &mut Rng, out: &mut Vec<u8>) {
        let number = 1 + rng.next(12) as u32;
        let mut wire = match number {
            1 | 3 | 6 | 7 | 8 | 9 | 11 => LEN,
            2 if rng.next(2) == 0 => LEN,
            2 => FIXED64,
            _ => VARINT, // 4, 5, 10, and 12: not in the message
        };
        if rng.next(50) == 0 {
            wire = [VARINT, FIXED64, LEN, FIXED32][rng.next(4) as usize];
        }
        put_key(out, number, wire);
        match wire {
            VARINT => put_varint(out, [rng.wide(), 1, 0][rng.next(3) as usize]),
            FIXED64 => {
                let v = [(rng.signed() as f64 / 3.0).to_bits(), f64::NAN.to_bits()]
                    [rng.next(2) as usize];
                out.extend_from_slice(&v.to_le_bytes())
            }
            FIXED32 => out.extend_from_slice(&(rng.wide() as u32).to_le_bytes()),
            _ => {
                let mut inner = Vec::new();
                match number {
                    2 => {
                        for _ in 0..rng.next(3) {
                            inner.extend_from_slice(&(rng.signed() as f64 / 7.0).to_le_bytes());
                        }
                        if rng.next(8) == 0 {
                            inner.push(1); // not a whole double
                        }
                    }
                    3 | 8 => inner.extend_from_slice(
                        [
                            &[8, 1][..],
                            &[8, 0xff, 0x01],
                            &[],
                            &[0x0d, 1, 2, 3, 4],
                            &[8],
                        ][rng.next(5) as usize],
                    ),
                    6 => {
                        put_key(&mut inner, 1, VARINT);
                        put_varint(&mut inner, rng.next(1_000_000));
                        put_key(&mut inner, 2, VARINT);
                        put_varint(&mut inner, [2, 4, 40][rng.next(3) as usize]);
                    }
                    7 => {
                        put_key(&mut inner, 1, VARINT);
                        put_varint(&mut inner, [0, 1_704_067_200][rng.next(2) as usize]);
                    }
                    _ => inner.extend_from_slice(
                        [&b"abc"[..], "é".as_bytes(), b"\xff", b""][rng.next(4) as usize],
                    ),
                }
                put_varint(out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
        }
    }

    /// The property that makes the columnar path safe: the decoder gives exactly what the
    /// value-tree path alone gives, batch, failures and all. Returns whether it was taken.
    fn check(message: &MessageDescriptor, columns: &SchemaRef, payloads: &[&[u8]]) -> bool {
        let input = BinaryArray::from_iter_values(payloads.iter().copied());
        let both = ProtobufDecoder::new(message.clone(), columns.clone())
            .unwrap()
            .decode(&input)
            .unwrap();
        let values = ProtobufDecoder::values_only(message.clone(), columns.clone())
            .unwrap()
            .decode(&input)
            .unwrap();
        for (i, f) in values.batch.schema().fields().iter().enumerate() {
            if both.batch.num_columns() == values.batch.num_columns() {
                assert_eq!(
                    both.batch.column(i),
                    values.batch.column(i),
                    "column {} of {payloads:?}",
                    f.name()
                );
            }
        }
        assert_eq!(both.batch, values.batch, "{payloads:?}");
        for (a, b) in both.batch.columns().iter().zip(values.batch.columns()) {
            crate::codec::avro_columnar::tests::assert_children_equal(a, b);
        }
        assert_eq!(both.keep, values.keep, "{payloads:?}");
        assert_eq!(both.failures, values.failures, "{payloads:?}");
        ColumnarProtobuf::new(message, columns)
            .unwrap()
            .decode(input.len(), input.iter())
            .is_some()
    }

    /// `total` random `Flat` messages of up to `fields` fields (one in `cut` cut short), each
    /// checked against the value path alone; those the columnar path took.
    fn taken_messages(
        message: &MessageDescriptor,
        columns: &SchemaRef,
        rng: &mut Rng,
        total: usize,
        fields: u64,
        cut: Option<u64>,
    ) -> Vec<Vec<u8>> {
        let mut good = Vec::new();
        for _ in 0..total {
            let mut bytes = Vec::new();
            for _ in 0..rng.next(fields) {
                field(rng, &mut bytes);
            }
            if cut.is_some_and(|odds| rng.next(odds) == 0) {
                bytes.truncate(rng.next(bytes.len() as u64 + 1) as usize);
            }
            if check(message, columns, &[&bytes]) {
                good.push(bytes);
            }
        }
        good
    }

    #[test]
    fn random_messages_decode_columnar_to_the_value_paths_batch() {
        let message = message();
        let columns = columns(&message);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let total = 6000;
        let good = taken_messages(&message, &columns, &mut rng, total, 12, Some(15));
        let taken = good.len();
        assert!(taken > total / 5 && taken < total, "{taken} of {total}");
        // The accepted messages as one batch, and a projection of three columns.
        let good: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        assert!(check(&message, &columns, &good));
        let some = Arc::new(Schema::new(vec![
            columns.field_with_name("price").unwrap().clone(),
            columns.field_with_name("side").unwrap().clone(),
            columns.field_with_name("maybe").unwrap().clone(),
        ]));
        assert!(check(&message, &some, &good));
        // A declared column the message has no field of is null.
        let extra = Arc::new(Schema::new(vec![
            columns.field_with_name("name").unwrap().clone(),
            Field::new("trade_id", DataType::Utf8, true),
        ]));
        assert!(check(&message, &extra, &good));
        assert!(check(&message, &columns, &[]));
        assert!(check(&message, &columns, &[b""]));
    }

    /// Encodes `batch` both ways; the bytes, row ends and failures must be identical.
    /// Returns the rows and which of them failed.
    fn check_encode(message: &MessageDescriptor, batch: &RecordBatch) -> (EncodedRows, Vec<usize>) {
        let encoder = ProtobufEncoder::new(message.clone());
        let (mut direct, mut values) = (EncodedRows::default(), EncodedRows::default());
        let failures = encoder.encode(batch, &mut direct).unwrap();
        assert_eq!(failures, encoder.encode_values(batch, &mut values).unwrap());
        assert_eq!(direct.ends, values.ends);
        assert_eq!(direct.bytes, values.bytes);
        (direct, failures.iter().map(|f| f.row).collect())
    }

    #[test]
    fn rows_encode_straight_from_arrays_to_prost_reflects_bytes() {
        let message = message();
        let columns = columns(&message);
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut good = Vec::new();
        while good.len() < 300 {
            let mut bytes = Vec::new();
            for _ in 0..rng.next(12) {
                field(&mut rng, &mut bytes);
            }
            let one = BinaryArray::from_iter_values([&bytes]);
            if ColumnarProtobuf::new(&message, &columns)
                .unwrap()
                .decode(1, one.iter())
                .is_some()
            {
                good.push(bytes);
            }
        }
        let input = BinaryArray::from_iter_values(good.iter());
        let batch = ProtobufDecoder::new(message.clone(), columns.clone())
            .unwrap()
            .decode(&input)
            .unwrap()
            .batch;
        let (out, failed) = check_encode(&message, &batch);
        // Every row but those no path can write (an enum number the enum does not name, read
        // back as its digits) was written straight from the arrays.
        assert!(failed.len() < batch.num_rows() / 4, "{failed:?}");
        let mut writer = RowWriter::new(&message, &batch);
        for row in (0..batch.num_rows()).filter(|r| !failed.contains(r)) {
            let mut bytes = Vec::new();
            assert!(writer.write(row, &mut bytes), "row {row}");
            assert_eq!(bytes, out.row(row));
        }
    }

    #[test]
    fn conversions_oneofs_and_values_that_do_not_fit_encode_as_the_value_path_does() {
        use arrow::array::{
            BooleanArray, Decimal128Array, Float64Array, Int64Array, StringArray,
            TimestampMillisecondArray, UInt64Array,
        };
        let message = message();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "i32",
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(i64::MAX),
                    None,
                    Some(-7),
                ])) as ArrayRef,
            ),
            (
                "s32",
                Arc::new(Int64Array::from(vec![-1, 0, i32::MIN as i64, 5])),
            ),
            (
                "u32",
                Arc::new(Int64Array::from(vec![0, -1, 4_000_000_000, 1])),
            ),
            ("u64", Arc::new(UInt64Array::from(vec![u64::MAX, 0, 1, 2]))),
            ("x64", Arc::new(Int64Array::from(vec![1, 0, -1, 3]))),
            (
                "flag",
                Arc::new(BooleanArray::from(vec![
                    Some(false),
                    Some(true),
                    None,
                    Some(true),
                ])),
            ),
            (
                "ratio",
                Arc::new(Float64Array::from(vec![-0.0, 0.1, f64::NAN, 1e300])),
            ),
            (
                "score",
                Arc::new(Float64Array::from(vec![0.0, -0.0, f64::INFINITY, 2.5])),
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![
                    Some(""),
                    Some("é"),
                    None,
                    Some("x"),
                ])),
            ),
            (
                "side",
                Arc::new(StringArray::from(vec![
                    Some("SIDE_UNKNOWN"),
                    Some("SELL"),
                    Some("HOLD"),
                    None,
                ])),
            ),
            (
                "price",
                Arc::new(
                    Decimal128Array::from(vec![Some(0), Some(-12345), Some(i128::MAX / 10), None])
                        .with_precision_and_scale(38, 4)
                        .unwrap(),
                ),
            ),
            (
                "at",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(0),
                    Some(-1),
                    None,
                    Some(1_704_067_200_123),
                ])),
            ),
            (
                "maybe",
                Arc::new(Int64Array::from(vec![Some(0), None, Some(3), Some(0)])),
            ),
            (
                "text",
                Arc::new(StringArray::from(vec![
                    Some("t"),
                    None,
                    Some(""),
                    Some("both"),
                ])),
            ),
            (
                "number",
                Arc::new(Int64Array::from(vec![None, Some(0), None, Some(9)])),
            ),
        ])
        .unwrap();
        let (out, failed) = check_encode(&message, &batch);
        assert_eq!(out.len(), 4);
        // i32 too large (row 1) and an unknown enum name (row 2) fail on both paths; row 3 sets
        // two members of a oneof, which only the value path writes (the last one wins).
        assert_eq!(failed, vec![1, 2]);
    }

    /// Messages shaped like the decimal message but not one, a decimal message with its fields
    /// in the other order, and timestamps past what RFC 3339 text carries.
    #[test]
    fn look_alike_messages_field_order_and_far_timestamps_follow_the_value_path() {
        use arrow::array::Decimal128Array;
        let odd = load(
            r#"syntax = "proto3";
package odd;
import "google/protobuf/timestamp.proto";
message NotDecimal { int32 units = 1; int32 scale = 2; }
message Decimal { int32 scale = 1; int64 units = 2; }
message Odd { NotDecimal nd = 1; Decimal d = 2; google.protobuf.Timestamp at = 3; }
"#,
            "odd",
            "odd.Odd",
        );
        let decimal = |name: &str| Field::new(name, DataType::Decimal128(18, 4), true);
        let nd = Arc::new(Schema::new(vec![decimal("nd")]));
        assert!(ColumnarProtobuf::new(&odd, &nd).is_none());
        let columns = Arc::new(Schema::new(vec![
            decimal("d"),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let message = |seconds: u64| {
            let mut d = Vec::new();
            put_key(&mut d, 1, VARINT);
            put_varint(&mut d, 2); // scale 2
            put_key(&mut d, 2, VARINT);
            put_varint(&mut d, 12345); // units
            let mut at = Vec::new();
            put_key(&mut at, 1, VARINT);
            put_varint(&mut at, seconds);
            let mut out = Vec::new();
            put_bytes(&mut out, 2, &d);
            put_bytes(&mut out, 3, &at);
            out
        };
        let near = message(1_704_067_200);
        assert!(check(&odd, &columns, &[&near]));
        for far in [253_402_300_800u64, (-62_135_596_801i64) as u64] {
            assert!(!check(&odd, &columns, &[&near, &message(far)]), "{far}");
        }
        let batch = RecordBatch::try_from_iter(vec![
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(-12345), Some(0), None])
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ) as ArrayRef,
            ),
            (
                "nd",
                Arc::new(
                    Decimal128Array::from(vec![None, Some(7), None])
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
            ),
        ])
        .unwrap();
        let (_, failed) = check_encode(&odd, &batch);
        assert_eq!(failed, vec![1]); // a DECIMAL column is no NotDecimal message
    }

    #[test]
    fn list_and_struct_columns_decode_columnar_to_the_value_paths_batch() {
        let message = message();
        let all = arrow_schema(&message);
        let nested = Arc::new(Schema::new(
            [
                "i32", "many", "inner", "inners", "deep", "deeps", "name", "counts", "labels",
                "flags", "by_name", "deep_by",
            ]
            .iter()
            .map(|n| all.field_with_name(n).unwrap().clone())
            .collect::<Vec<_>>(),
        ));
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let total = 4000;
        let good = taken_messages(&message, &nested, &mut rng, total, 10, None);
        let taken = good.len();
        assert!(taken > total / 10 && taken < total, "{taken} of {total}");
        let good: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        assert!(check(&message, &nested, &good));
        // Maps of messages were taken with entries in them, message values set and default.
        let batch = ColumnarProtobuf::new(&message, &nested)
            .unwrap()
            .decode(good.len(), good.iter().map(|b| Some(*b)))
            .unwrap();
        let values = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_map()
                .values()
                .clone()
        };
        let by_name = values("by_name");
        let xs = by_name
            .as_struct()
            .column_by_name("x")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int32Type>();
        let xs: std::collections::BTreeSet<i32> = xs.iter().flatten().collect();
        assert_eq!(
            xs,
            [0, 3, 150].into(),
            "Inner.x of {} entries",
            by_name.len()
        );
        let deep_by = values("deep_by");
        let deep_by = deep_by.as_struct();
        let inner = deep_by.column_by_name("in").unwrap();
        let with_inner = inner.len() - inner.logical_null_count();
        let named = deep_by.column_by_name("s").unwrap().as_string::<i32>();
        let named = named.iter().flatten().filter(|s| !s.is_empty()).count();
        let entries = deep_by.len();
        assert!(
            entries > 50 && with_inner > 0 && named > 0,
            "{entries} Deep values, {with_inner} with `in`, {named} with `s`"
        );
        // A struct column written twice (merged by prost-reflect) goes to the value path.
        let mut twice = Vec::new();
        for _ in 0..2 {
            put_key(&mut twice, 23, LEN);
            twice.extend_from_slice(&[2, 8, 1]);
        }
        assert!(!check(&message, &nested, &[&twice]));
    }

    #[test]
    fn unread_repeated_map_and_message_fields_are_checked_not_sent_to_the_value_path() {
        let message = message();
        let columns = columns(&message);
        let with = |field: u32, wire: u8, body: &[u8]| {
            let mut out = vec![8, 7]; // i32 = 7
            put_key(&mut out, field, wire);
            if wire == LEN {
                put_varint(&mut out, body.len() as u64);
            }
            out.extend_from_slice(body);
            out
        };
        let map_entry = |key: &[u8]| {
            let mut e = vec![0x0a, key.len() as u8];
            e.extend_from_slice(key);
            e.extend_from_slice(&[0x10, 5]);
            e
        };
        let good = [
            with(22, LEN, &[1, 0x96, 0x01, 3]),    // packed
            with(22, VARINT, &[0x96, 0x01]),       // one by one
            with(23, LEN, &[8, 1, 0x12, 1, b'z']), // an unknown field inside
            with(24, LEN, &map_entry(b"key")),
            with(25, LEN, &[8, 0x7f]),
        ];
        for bytes in &good {
            assert!(check(&message, &columns, &[bytes]), "{bytes:?}");
        }
        let bad = [
            with(22, LEN, &[1, 0x96]),          // a packed varint cut short
            with(22, FIXED32, &[1, 2, 3, 4]),   // an int32 as fixed32
            with(23, LEN, &[0x0d, 1, 2, 3, 4]), // Inner.x as fixed32
            with(23, VARINT, &[1]),             // a message as a varint
            with(24, LEN, &map_entry(b"\xff")), // a key that is not UTF-8
            with(25, LEN, &[8]),                // cut inside
        ];
        for bytes in &bad {
            assert!(!check(&message, &columns, &[bytes]), "{bytes:?}");
        }
    }

    #[test]
    fn map_columns_order_keys_as_text_and_keep_the_last_value_of_a_key() {
        let message = message();
        let all = arrow_schema(&message);
        let labels = Arc::new(Schema::new(vec![all
            .field_with_name("labels")
            .unwrap()
            .clone()]));
        let mut bytes = Vec::new();
        for (key, text) in [(9u64, "a"), (10, "b"), (9, "c")] {
            let mut entry = Vec::new();
            put_key(&mut entry, 1, VARINT);
            put_varint(&mut entry, key);
            put_key(&mut entry, 2, LEN);
            put_varint(&mut entry, 1);
            entry.extend_from_slice(text.as_bytes());
            put_key(&mut bytes, 28, LEN);
            put_varint(&mut bytes, entry.len() as u64);
            bytes.extend_from_slice(&entry);
        }
        assert!(check(&message, &labels, &[&bytes, b""]));
        let batch = ColumnarProtobuf::new(&message, &labels)
            .unwrap()
            .decode(1, [Some(bytes.as_slice())].into_iter())
            .unwrap();
        let map = batch.column(0).as_map();
        let keys: Vec<&str> = map.keys().as_string::<i32>().iter().flatten().collect();
        let values: Vec<&str> = map.values().as_string::<i32>().iter().flatten().collect();
        assert_eq!((keys, values), (vec!["10", "9"], vec!["b", "c"]));
    }

    #[test]
    fn a_message_type_holding_itself_is_left_to_the_value_path_without_recursing_forever() {
        let text = r#"syntax = "proto3";
package tree;
message Node { int64 id = 1; Node parent = 2; repeated Node kids = 3; }
message Wide {
  Wide a = 1; Wide b = 2; Wide c = 3; Wide d = 4; Wide e = 5; Wide f = 6; Wide g = 7;
  Wide h = 8; Wide i = 9; Wide j = 10; int64 x = 11;
}
"#;
        let node = load(text, "tree", "tree.Node");
        let id = Field::new("id", DataType::Int64, true);
        let parent = Field::new("parent", DataType::Struct(vec![id.clone()].into()), true);
        let declared = Arc::new(Schema::new(vec![id.clone(), parent]));
        assert!(ColumnarProtobuf::new(&node, &declared).is_none());
        // Reading `id` alone: a message with a parent goes to the value path, one without
        // does not.
        let only_id = Arc::new(Schema::new(vec![id]));
        let alone = [8, 5];
        let with_parent = [8, 5, 0x12, 2, 8, 4];
        assert!(check(&node, &only_id, &[&alone]));
        assert!(!check(&node, &only_id, &[&alone, &with_parent]));
        // Ten fields of its own type: built once, not ten to the sixteenth times.
        let wide = load(text, "tree", "tree.Wide");
        let x = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        assert!(check(&wide, &x, &[&[0x58, 3]]));
    }

    #[test]
    fn bytes_and_decimal_valued_map_columns_have_no_columnar_path() {
        let message = message();
        let all = arrow_schema(&message);
        for name in ["blob", "prices"] {
            let one = Arc::new(Schema::new(vec![all
                .field_with_name(name)
                .unwrap()
                .clone()]));
            assert!(ColumnarProtobuf::new(&message, &one).is_none(), "{name}");
        }
        // A column declared with another type than the field's, at the top or inside a list.
        let wrong = Arc::new(Schema::new(vec![Field::new("i32", DataType::Int64, true)]));
        assert!(ColumnarProtobuf::new(&message, &wrong).is_none());
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let wrong = Arc::new(Schema::new(vec![Field::new(
            "many",
            DataType::List(item),
            true,
        )]));
        assert!(ColumnarProtobuf::new(&message, &wrong).is_none());
    }
}
