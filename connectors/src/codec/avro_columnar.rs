//! The fast path of Avro decoding: arrow-avro's columnar decoder.
//!
//! [`super::avro`] reads each datum into an apache-avro value tree and bridges it through JSON
//! text; that tree is most of its cost. arrow-avro decodes datums straight into Arrow arrays.
//! This module runs it for writer schemas that are records of scalars (primitives, enums, fixed,
//! decimals, dates, times, timestamps), arrays, maps and nested records of those, each possibly
//! in a union with null, whose Arrow types are the stream's columns' types or one cheap
//! conversion away (a UTC timestamp → a timestamp without zone, a dictionary of strings →
//! strings, fixed → binary; inside arrays, maps and records too, with the value path's field
//! names: [`retype`]). The value path's semantics are kept where arrow-avro differs: the fields
//! of a NULL record are NULL, a map's entries are ordered by key with the last of a repeated key
//! ([`sorted_map`]), a decimal too wide for its precision refuses the record wherever it is.
//! Other unions and uuids stay on the value-tree path; so does any batch arrow-avro does not
//! decode whole — a bad datum, trailing bytes, a decimal wider than its precision — so the
//! errors users see are the value-tree path's, record by record.
//!
//! Encoding ([`write_field`]) writes flat records straight from the arrays, byte for byte what
//! apache-avro writes for the value the value path builds; a row it cannot write goes through
//! that path, which also names what is wrong with it.
//!
//! arrow-avro reads some bytes more leniently than apache-avro (a boolean byte of 2 is `true`,
//! a union branch of −1 is not null, no length limit), so each datum is first checked as
//! apache-avro would read it ([`valid`]); one that fails sends the batch to the value path.

use std::sync::Arc;

use apache_avro::schema::Schema as AvroSchema;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema as ArrowAvroSchema, Fingerprint, SchemaStore};

use crate::registry::frame_header;

/// The schema id the datums of one writer schema are framed with for arrow-avro.
const FRAME_ID: u32 = 0;

/// Decodes datums of one writer schema into batches of the stream's columns.
pub(super) struct ColumnarAvro {
    columns: SchemaRef,
    /// Each datum is checked first (see [`valid`]).
    checks: Vec<Check>,
    writer: String,
    /// For each column: its index in arrow-avro's batch and how it is converted.
    take: Vec<(usize, Convert)>,
    /// `None` after a batch it could not decode whole (its builders then hold part of a row).
    decoder: Option<Decoder>,
    capacity: usize,
    /// One datum behind the Confluent frame arrow-avro's streaming decoder reads.
    frame: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum Convert {
    Same,
    /// A timestamp in UTC → the same instants without a zone.
    DropZone,
    /// Dictionary-encoded enum symbols or fixed bytes → the column's type, by `cast`.
    Cast,
    /// A decimal whose digits are checked against its precision.
    CheckPrecision(u8),
    /// A column the writer's record has no field of: null, as on the value-tree path.
    Null,
    /// An array or a record: the same layout with the column's field names and types, each
    /// value converted as a column would be ([`retype`]).
    Retype,
}

impl ColumnarAvro {
    /// A decoder for datums written with `writer`, or `None` when its records are not ones this
    /// path reads.
    pub(super) fn new(writer: &AvroSchema, columns: &SchemaRef) -> Option<Self> {
        let checks = checks(writer)?;
        // Through a JSON value: apache-avro writes some keys of a fixed decimal twice.
        let text = serde_json::to_value(writer).ok()?.to_string();
        let decoder = build(&text, 1).ok()?;
        let decoded = decoder.schema();
        let take = columns
            .fields()
            .iter()
            .map(|column| {
                let Some((index, field)) = decoded.column_with_name(column.name()) else {
                    return column.is_nullable().then_some((0, Convert::Null));
                };
                let convert = match (field.data_type(), column.data_type()) {
                    (DataType::List(_), DataType::List(_))
                    | (DataType::Struct(_), DataType::Struct(_))
                    | (DataType::Map(..), DataType::Map(..)) => Convert::Retype,
                    (DataType::Decimal128(p, s), DataType::Decimal128(q, t))
                        if (p, s) == (q, t) =>
                    {
                        Convert::CheckPrecision(*p)
                    }
                    (from, to) if from == to => Convert::Same,
                    (DataType::Timestamp(u, Some(tz)), DataType::Timestamp(v, None))
                        if u == v && matches!(tz.as_ref(), "+00:00" | "UTC") =>
                    {
                        Convert::DropZone
                    }
                    (DataType::Dictionary(_, v), DataType::Utf8) if **v == DataType::Utf8 => {
                        Convert::Cast
                    }
                    (DataType::FixedSizeBinary(_), DataType::Binary) => Convert::Cast,
                    _ => return None,
                };
                Some((index, convert))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            columns: columns.clone(),
            checks,
            writer: text,
            take,
            decoder: Some(decoder),
            capacity: 1,
            frame: frame_header(FRAME_ID).to_vec(),
        })
    }

    /// The batch of `datums` (unframed Avro bodies, one row each), or `None` when the value-tree
    /// path must decide.
    pub(super) fn decode<'a>(
        &mut self,
        count: usize,
        datums: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> Option<RecordBatch> {
        let batch = self.decode_whole(count, datums);
        if batch.is_none() {
            self.decoder = None;
        }
        batch
    }

    fn decode_whole<'a>(
        &mut self,
        count: usize,
        datums: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> Option<RecordBatch> {
        if count > self.capacity || self.decoder.is_none() {
            self.capacity = self.capacity.max(count.next_power_of_two());
            self.decoder = Some(build(&self.writer, self.capacity).ok()?);
        }
        let decoder = self.decoder.as_mut()?;
        for datum in datums {
            let datum = datum?;
            if !valid(&self.checks, datum) {
                return None;
            }
            self.frame.truncate(5);
            self.frame.extend_from_slice(datum);
            let room = decoder.capacity();
            let read = decoder.decode(&self.frame).ok()?;
            if read != self.frame.len() || decoder.capacity() + 1 != room {
                return None;
            }
        }
        let Some(decoded) = decoder.flush().ok()? else {
            return Some(RecordBatch::new_empty(self.columns.clone()));
        };
        let arrays = self
            .take
            .iter()
            .zip(self.columns.fields())
            .map(|(&(index, convert), column)| {
                if convert == Convert::Null {
                    let rows = decoded.num_rows();
                    return Some(arrow::array::new_null_array(column.data_type(), rows));
                }
                let array = decoded.column(index);
                Some(match convert {
                    Convert::Same | Convert::Null => array.clone(),
                    Convert::DropZone => drop_zone(array),
                    Convert::Cast => cast(array, column.data_type()).ok()?,
                    Convert::CheckPrecision(p) => {
                        let decimals = array.as_primitive::<arrow::datatypes::Decimal128Type>();
                        decimals.validate_decimal_precision(p).ok()?;
                        array.clone()
                    }
                    Convert::Retype => retype(array, column.data_type())?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        RecordBatch::try_new(self.columns.clone(), arrays).ok()
    }
}

fn build(writer: &str, capacity: usize) -> Result<Decoder, arrow::error::ArrowError> {
    let mut store = SchemaStore::new_with_type(arrow_avro::schema::FingerprintAlgorithm::Id);
    store.set(
        Fingerprint::Id(FRAME_ID),
        ArrowAvroSchema::new(writer.to_string()),
    )?;
    ReaderBuilder::new()
        .with_batch_size(capacity)
        .with_writer_schema_store(store)
        .build_decoder()
}

/// `array` (an array or record column as arrow-avro decodes it) as type `to`, the value path's:
/// the same offsets and validity, items and fields converted as columns are (a UTC timestamp
/// loses its zone, enum symbols become strings, fixed bytes binary, decimals are checked
/// against their precision); `None` when they do not fit (the value path then decides).
fn retype(array: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
    use arrow::array::{ListArray, StructArray};
    Some(match (array.data_type(), to) {
        (DataType::List(_), DataType::List(item)) => {
            let list = array.as_list::<i32>();
            let values = retype(list.values(), item.data_type())?;
            Arc::new(
                ListArray::try_new(
                    item.clone(),
                    list.offsets().clone(),
                    values,
                    list.nulls().cloned(),
                )
                .ok()?,
            )
        }
        (DataType::Struct(from), DataType::Struct(fields)) => {
            let record = array.as_struct();
            let same_names = from.len() == fields.len()
                && from.iter().zip(fields).all(|(a, b)| a.name() == b.name());
            if !same_names {
                return None;
            }
            let columns = record
                .columns()
                .iter()
                .zip(fields)
                .map(|(c, f)| {
                    let c = retype(c, f.data_type())?;
                    match record.nulls() {
                        Some(parent) => null_under(c, parent),
                        None => Some(c),
                    }
                })
                .collect::<Option<Vec<_>>>()?;
            // Refuses NULLs in a field the value path has as not nullable.
            Arc::new(StructArray::try_new(fields.clone(), columns, record.nulls().cloned()).ok()?)
        }
        (DataType::Map(..), DataType::Map(entries, sorted)) => sorted_map(array, entries, *sorted)?,
        (DataType::Decimal128(p, s), DataType::Decimal128(q, t)) if (p, s) == (q, t) => {
            let decimals = array.as_primitive::<arrow::datatypes::Decimal128Type>();
            decimals.validate_decimal_precision(*p).ok()?;
            array.clone()
        }
        (DataType::Timestamp(u, Some(tz)), DataType::Timestamp(v, None))
            if u == v && matches!(tz.as_ref(), "+00:00" | "UTC") =>
        {
            drop_zone(array)
        }
        (DataType::Dictionary(_, v), DataType::Utf8) if **v == DataType::Utf8 => {
            cast(array, to).ok()?
        }
        (DataType::FixedSizeBinary(_), DataType::Binary) => cast(array, to).ok()?,
        (from, to) if from == to && !from.is_nested() => array.clone(),
        _ => return None,
    })
}

/// A map column as the value path has it: each map's entries ordered by key, and of a key
/// written twice the last value only (apache-avro reads a map into a hash map, and the JSON
/// bridge writes its keys in order); entries named as `entries` names them.
fn sorted_map(
    array: &ArrayRef,
    entries: &arrow::datatypes::FieldRef,
    sorted: bool,
) -> Option<ArrayRef> {
    use arrow::array::{MapArray, StructArray, UInt32Array};
    let map = array.as_map();
    let DataType::Struct(names) = entries.data_type() else {
        return None;
    };
    let keys = map.keys().as_string_opt::<i32>()?;
    let offsets = map.value_offsets();
    let mut order: Vec<u32> = Vec::with_capacity(keys.len());
    let mut ends: Vec<i32> = Vec::with_capacity(map.len() + 1);
    ends.push(0);
    let mut run: Vec<usize> = Vec::new();
    for row in 0..map.len() {
        run.clear();
        run.extend(offsets[row] as usize..offsets[row + 1] as usize);
        // Stable: a key written twice keeps its wire order, and the last one stays.
        run.sort_by(|a, b| keys.value(*a).cmp(keys.value(*b)));
        for (i, &entry) in run.iter().enumerate() {
            let later_twin = run
                .get(i + 1)
                .is_some_and(|&next| keys.value(next) == keys.value(entry));
            if !later_twin {
                order.push(entry as u32);
            }
        }
        ends.push(i32::try_from(order.len()).ok()?);
    }
    let picked = arrow::compute::take(map.entries(), &UInt32Array::from(order), None).ok()?;
    let picked = picked.as_struct();
    if picked.num_columns() != 2 || names.len() != 2 {
        return None;
    }
    let columns = vec![
        retype(picked.column(0), names[0].data_type())?,
        retype(picked.column(1), names[1].data_type())?,
    ];
    let entries_array = StructArray::try_new(names.clone(), columns, None).ok()?;
    Some(Arc::new(
        MapArray::try_new(
            entries.clone(),
            arrow::buffer::OffsetBuffer::new(ends.into()),
            entries_array,
            map.nulls().cloned(),
            sorted,
        )
        .ok()?,
    ))
}

/// `array`, a field of a record, NULL wherever the record is (`parent`), at any depth: the
/// value path has every field of a NULL record NULL, where arrow-avro leaves defaults.
fn null_under(array: ArrayRef, parent: &arrow::buffer::NullBuffer) -> Option<ArrayRef> {
    let nulls = arrow::buffer::NullBuffer::union(array.nulls(), Some(parent))?;
    Some(match array.data_type() {
        DataType::Struct(fields) => {
            let record = array.as_struct();
            let children = record
                .columns()
                .iter()
                .map(|c| null_under(c.clone(), &nulls))
                .collect::<Option<Vec<_>>>()?;
            Arc::new(
                arrow::array::StructArray::try_new(fields.clone(), children, Some(nulls)).ok()?,
            )
        }
        _ => arrow::array::make_array(
            array
                .to_data()
                .into_builder()
                .nulls(Some(nulls))
                .build()
                .ok()?,
        ),
    })
}

fn drop_zone(array: &ArrayRef) -> ArrayRef {
    use arrow::datatypes::{
        TimestampMicrosecondType as Us, TimestampMillisecondType as Ms,
        TimestampNanosecondType as Ns, TimestampSecondType as S,
    };
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => Arc::new(
            array
                .as_primitive::<S>()
                .clone()
                .with_timezone_opt(None::<String>),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Arc::new(
            array
                .as_primitive::<Ms>()
                .clone()
                .with_timezone_opt(None::<String>),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Arc::new(
            array
                .as_primitive::<Us>()
                .clone()
                .with_timezone_opt(None::<String>),
        ),
        _ => Arc::new(
            array
                .as_primitive::<Ns>()
                .clone()
                .with_timezone_opt(None::<String>),
        ),
    }
}

/// How one field of a datum is checked before arrow-avro reads it: as strictly as apache-avro
/// reads it (and the value path takes it), so that arrow-avro's leniencies never decide.
enum Check {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// An enum of this many symbols.
    Enum(usize),
    /// Fixed bytes of this size.
    Fixed(usize),
    /// A decimal on fixed bytes of `size`, or on `bytes` (at most 16 of them), whose digits
    /// fit `precision`.
    Decimal {
        size: Option<usize>,
        precision: u32,
    },
    /// A union of null (branch `null`) and one other type.
    Nullable {
        null: u64,
        inner: Box<Check>,
    },
    /// An array of items, in blocks.
    Array(Box<Check>),
    /// A map: blocks of string keys, each with a value.
    Map(Box<Check>),
    /// A record of these fields, in order.
    Record(Vec<Check>),
}

/// The checks of a record whose fields are scalars, arrays, maps, records, or unions of null
/// and one of those; `None` for any other schema.
fn checks(schema: &AvroSchema) -> Option<Vec<Check>> {
    fn check(schema: &AvroSchema) -> Option<Check> {
        use AvroSchema as S;
        Some(match schema {
            S::Boolean => Check::Boolean,
            S::Int | S::Date | S::TimeMillis => Check::Int,
            S::Long
            | S::TimeMicros
            | S::TimestampMillis
            | S::TimestampMicros
            | S::TimestampNanos
            | S::LocalTimestampMillis
            | S::LocalTimestampMicros
            | S::LocalTimestampNanos => Check::Long,
            S::Float => Check::Float,
            S::Double => Check::Double,
            S::Bytes => Check::Bytes,
            S::String => Check::String,
            S::Enum(e) => Check::Enum(e.symbols.len()),
            S::Fixed(f) => Check::Fixed(f.size),
            // Its digits are checked against its precision wherever it is, read or not: the
            // value path writes every field and refuses a record with a decimal too wide.
            S::Decimal(d) => match d.inner.as_ref() {
                S::Fixed(f) if f.size <= 16 => Check::Decimal {
                    size: Some(f.size),
                    precision: d.precision as u32,
                },
                S::Bytes => Check::Decimal {
                    size: None,
                    precision: d.precision as u32,
                },
                _ => return None,
            },
            S::Array(a) => Check::Array(Box::new(check(&a.items)?)),
            S::Map(m) => Check::Map(Box::new(check(&m.types)?)),
            S::Record(r) => Check::Record(
                r.fields
                    .iter()
                    .map(|f| check(&f.schema))
                    .collect::<Option<_>>()?,
            ),
            S::Union(u) => {
                let v = u.variants();
                let null = v.iter().position(|s| matches!(s, AvroSchema::Null))?;
                if v.len() != 2 {
                    return None;
                }
                Check::Nullable {
                    null: null as u64,
                    inner: Box::new(check(&v[1 - null])?),
                }
            }
            _ => return None,
        })
    }
    let AvroSchema::Record(record) = schema else {
        return None;
    };
    record.fields.iter().map(|f| check(&f.schema)).collect()
}

/// Whether `datum` is exactly one record of `checks`, read as apache-avro reads it: union
/// branches and enum indexes in range, booleans 0 or 1, ints within 32 bits, lengths within
/// the datum and [`super::avro::MAX_AVRO_LENGTH`], strings UTF-8, floats finite (the value path
/// turns a NaN into null), nothing after the end.
fn valid(checks: &[Check], datum: &[u8]) -> bool {
    fn long(b: &[u8], at: &mut usize) -> Option<i64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }
    fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
        let bytes = b.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(bytes)
    }
    fn length(b: &[u8], at: &mut usize) -> Option<usize> {
        usize::try_from(long(b, at)?)
            .ok()
            .filter(|n| *n <= super::avro::MAX_AVRO_LENGTH)
    }
    fn one(check: &Check, b: &[u8], at: &mut usize) -> Option<()> {
        match check {
            Check::Boolean => (take(b, at, 1)?[0] <= 1).then_some(()),
            Check::Int => i32::try_from(long(b, at)?).ok().map(drop),
            Check::Long => long(b, at).map(drop),
            Check::Float => {
                let v = f32::from_le_bytes(take(b, at, 4)?.try_into().ok()?);
                v.is_finite().then_some(())
            }
            Check::Double => {
                let v = f64::from_le_bytes(take(b, at, 8)?.try_into().ok()?);
                v.is_finite().then_some(())
            }
            Check::Bytes => {
                let n = length(b, at)?;
                take(b, at, n).map(drop)
            }
            Check::String => {
                let n = length(b, at)?;
                std::str::from_utf8(take(b, at, n)?).ok().map(drop)
            }
            Check::Enum(symbols) => {
                let i = long(b, at)?;
                (0..*symbols as i64).contains(&i).then_some(())
            }
            Check::Fixed(size) => take(b, at, *size).map(drop),
            Check::Decimal { size, precision } => {
                let n = match size {
                    Some(size) => *size,
                    None => length(b, at).filter(|n| (1..=16).contains(n))?,
                };
                let digits = super::text::i128_from_be_bytes(take(b, at, n)?)?;
                super::text::fits_precision(digits, *precision).then_some(())
            }
            Check::Nullable { null, inner } => match long(b, at)? {
                branch if branch as u64 == *null => Some(()),
                branch if branch as u64 == 1 - *null => one(inner, b, at),
                _ => None,
            },
            Check::Array(_) | Check::Map(_) => {
                // Blocks of `count` items (a negative count is followed by the block's size
                // in bytes), until a count of 0; a map's items are a string key and a value.
                let (item, keyed) = match check {
                    Check::Array(item) => (item, false),
                    Check::Map(value) => (value, true),
                    _ => unreachable!("an array or a map"),
                };
                let mut items = 0usize;
                loop {
                    let count = long(b, at)?;
                    if count == 0 {
                        return Some(());
                    }
                    if count < 0 {
                        length(b, at)?;
                    }
                    items = items.checked_add(count.unsigned_abs() as usize)?;
                    if items > super::avro::MAX_AVRO_LENGTH {
                        return None;
                    }
                    for _ in 0..count.unsigned_abs() {
                        if keyed {
                            one(&Check::String, b, at)?;
                        }
                        one(item, b, at)?;
                    }
                }
            }
            Check::Record(fields) => fields.iter().try_for_each(|f| one(f, b, at)),
        }
    }
    let mut at = 0;
    checks.iter().all(|c| one(c, datum, &mut at).is_some()) && at == datum.len()
}

/// Writes `array[row]` (`None`: a field the result has no column of) as the Avro binary of
/// `schema`, byte for byte what apache-avro writes for the value [`super::avro`] builds; `false`
/// (with `out` partly written) where that path must decide: nested types, values converted
/// through display text, values that do not fit (whose errors it names).
pub(super) fn write_field(
    array: Option<&dyn Array>,
    row: usize,
    schema: &AvroSchema,
    out: &mut Vec<u8>,
) -> bool {
    use super::cell::{epoch_micros_at, epoch_nanos_at, float_at, integer_at};
    use super::text::{fits_precision, i128_to_be_bytes, rescale};
    use arrow::datatypes::{Date32Type, Decimal128Type, Float32Type, Float64Type};
    let null = array.is_none_or(|a| a.is_null(row));
    if let AvroSchema::Union(u) = schema {
        let variants = u.variants();
        let is_null = |v: &AvroSchema| matches!(v, AvroSchema::Null);
        if null {
            let Some(index) = variants.iter().position(is_null) else {
                return false;
            };
            long(out, index as i64);
            return true;
        }
        let Some(index) = variants.iter().position(|v| !is_null(v)) else {
            return false;
        };
        long(out, index as i64);
        return write_field(array, row, &variants[index], out);
    }
    let Some(array) = array.filter(|_| !null) else {
        return false;
    };
    let millis = || epoch_nanos_at(array, row).map(|n| n.div_euclid(1_000_000) as i64);
    match schema {
        AvroSchema::Boolean => match array.as_boolean_opt() {
            Some(b) => out.push(b.value(row) as u8),
            None => return false,
        },
        AvroSchema::Int => match integer_at(array, row).and_then(|v| i32::try_from(v).ok()) {
            Some(v) => long(out, v as i64),
            None => return false,
        },
        AvroSchema::Long => match integer_at(array, row) {
            Some(v) => long(out, v),
            None => return false,
        },
        AvroSchema::Float => match array.data_type() {
            DataType::Float32 => {
                let v = array.as_primitive::<Float32Type>().value(row);
                out.extend_from_slice(&v.to_le_bytes())
            }
            DataType::Float64 => {
                let v = array.as_primitive::<Float64Type>().value(row) as f32;
                out.extend_from_slice(&v.to_le_bytes())
            }
            _ => return false,
        },
        AvroSchema::Double => match float_at(array, row) {
            Some(v) => out.extend_from_slice(&v.to_le_bytes()),
            None => return false,
        },
        AvroSchema::String => match array.data_type() {
            DataType::Utf8 => bytes(out, array.as_string::<i32>().value(row).as_bytes()),
            DataType::LargeUtf8 => bytes(out, array.as_string::<i64>().value(row).as_bytes()),
            DataType::Utf8View => bytes(out, array.as_string_view().value(row).as_bytes()),
            _ => return false,
        },
        AvroSchema::Enum(e) => {
            let Some(text) = array.as_string_opt::<i32>() else {
                return false;
            };
            match e.symbols.iter().position(|s| s == text.value(row)) {
                Some(index) => long(out, index as i64),
                None => return false,
            }
        }
        AvroSchema::Bytes => match array.as_binary_opt::<i32>() {
            Some(b) => bytes(out, b.value(row)),
            None => return false,
        },
        AvroSchema::Decimal(ds) => {
            let (unscaled, scale) = match array.data_type() {
                DataType::Decimal128(_, s) => {
                    (array.as_primitive::<Decimal128Type>().value(row), *s as i32)
                }
                _ => match integer_at(array, row) {
                    Some(v) => (v as i128, 0),
                    None => return false,
                },
            };
            let Some(v) = rescale(unscaled, scale, ds.scale as i32) else {
                return false;
            };
            if !fits_precision(v, ds.precision as u32) {
                return false;
            }
            let digits = i128_to_be_bytes(v);
            match ds.inner.as_ref() {
                AvroSchema::Fixed(f) if digits.len() <= f.size => {
                    let fill = if v < 0 { 0xFF } else { 0 };
                    out.extend(std::iter::repeat_n(fill, f.size - digits.len()));
                    out.extend_from_slice(&digits);
                }
                AvroSchema::Bytes => bytes(out, &digits),
                _ => return false,
            }
        }
        AvroSchema::Date => match array.data_type() {
            DataType::Date32 => long(out, array.as_primitive::<Date32Type>().value(row) as i64),
            _ => match millis() {
                Some(ms) => long(out, ms.div_euclid(86_400_000) as i32 as i64),
                None => return false,
            },
        },
        AvroSchema::TimestampMillis | AvroSchema::LocalTimestampMillis => match millis() {
            Some(ms) => long(out, ms),
            None => return false,
        },
        AvroSchema::TimestampMicros | AvroSchema::LocalTimestampMicros => {
            let micros = epoch_micros_at(array, row).and_then(|us| i64::try_from(us).ok());
            let Some(micros) = micros else {
                return false;
            };
            long(out, micros)
        }
        _ => return false,
    }
    true
}

/// An Avro `int` or `long`: zigzag, then a varint.
fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro `bytes` or `string`: the length, then the bytes.
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::avro::{arrow_schema, parse_schema, AvroDecoder};
    use crate::codec::testing::Rng;
    use crate::codec::EncodedRows;
    use apache_avro::types::Value;
    use arrow::array::BinaryArray;
    use arrow::datatypes::Schema;

    const FLAT: &str = r#"{"type":"record","name":"Everything","fields":[
        {"name":"flag","type":"boolean"},
        {"name":"small","type":"int"},
        {"name":"big","type":"long"},
        {"name":"ratio","type":"float"},
        {"name":"score","type":["null","double"],"default":null},
        {"name":"blob","type":"bytes"},
        {"name":"name","type":"string"},
        {"name":"note","type":["string","null"]},
        {"name":"side","type":{"type":"enum","name":"Side","symbols":["BUY","SELL"]}},
        {"name":"tag","type":{"type":"fixed","name":"Tag","size":3}},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
        {"name":"cost","type":["null",{"type":"fixed","name":"Cost","size":8,"logicalType":"decimal","precision":18,"scale":4}]},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"at_us","type":["null",{"type":"long","logicalType":"timestamp-micros"}]},
        {"name":"local","type":{"type":"long","logicalType":"local-timestamp-millis"}},
        {"name":"clock","type":{"type":"int","logicalType":"time-millis"}}]}"#;

    /// `digits` as big-endian two's complement: `size` bytes, or as few as hold it.
    fn decimal(digits: i128, size: Option<usize>) -> Value {
        let bytes = digits.to_be_bytes();
        let mut start = 16 - size.unwrap_or(16);
        if size.is_none() {
            let sign = if digits < 0 { 0xff } else { 0 };
            while start < 15 && bytes[start] == sign && (bytes[start + 1] ^ sign) & 0x80 == 0 {
                start += 1;
            }
        }
        Value::Decimal(apache_avro::Decimal::from(bytes[start..].to_vec()))
    }

    fn record(rng: &mut Rng) -> Value {
        let nullable = |rng: &mut Rng, v: Value| {
            if rng.next(3) == 0 {
                Value::Union(0, Box::new(Value::Null))
            } else {
                Value::Union(1, Box::new(v))
            }
        };
        let note = if rng.next(3) == 0 {
            Value::Union(1, Box::new(Value::Null))
        } else {
            Value::Union(
                0,
                Box::new(Value::String("é\"\\".repeat(rng.next(3) as usize))),
            )
        };
        let score = Value::Double(rng.signed() as f64 / 7.0);
        let score = nullable(rng, score);
        let cost = decimal(rng.signed() as i128 % 10i128.pow(17), Some(8));
        let cost = nullable(rng, cost);
        let at_us = Value::TimestampMicros(rng.signed() / 3);
        let at_us = nullable(rng, at_us);
        Value::Record(vec![
            ("flag".into(), Value::Boolean(rng.next(2) == 1)),
            ("small".into(), Value::Int(rng.signed() as i32)),
            ("big".into(), Value::Long(rng.signed())),
            ("ratio".into(), Value::Float(rng.signed() as f32 / 3.0)),
            ("score".into(), score),
            (
                "blob".into(),
                Value::Bytes(vec![0xff; rng.next(4) as usize]),
            ),
            ("name".into(), Value::String(format!("n{}", rng.next(1000)))),
            ("note".into(), note),
            ("side".into(), {
                let i = rng.next(2) as u32;
                Value::Enum(i, ["BUY", "SELL"][i as usize].into())
            }),
            (
                "tag".into(),
                Value::Fixed(3, vec![rng.next(256) as u8, 0, 7]),
            ),
            (
                "price".into(),
                decimal(rng.signed() as i128 % 1_000_000_000, None),
            ),
            ("cost".into(), cost),
            ("day".into(), Value::Date(rng.signed() as i32 % 100_000)),
            ("at".into(), Value::TimestampMillis(rng.signed() / 1000)),
            ("at_us".into(), at_us),
            (
                "local".into(),
                Value::LocalTimestampMillis(rng.signed() / 1000),
            ),
            (
                "clock".into(),
                Value::TimeMillis(rng.next(86_400_000) as i32),
            ),
        ])
    }

    fn datum(schema: &AvroSchema, value: Value) -> Vec<u8> {
        apache_avro::to_avro_datum(schema, value).unwrap()
    }

    /// The property that makes the columnar path safe: the decoder gives exactly what the
    /// value-tree path alone gives, batch, failures and all. Returns whether it was taken.
    fn check(schema: &AvroSchema, columns: &SchemaRef, payloads: &[&[u8]]) -> bool {
        let input = BinaryArray::from_iter_values(payloads.iter().copied());
        let both = AvroDecoder::new(schema.clone(), columns.clone())
            .unwrap()
            .decode(&input)
            .unwrap();
        let values = AvroDecoder::values_only(schema.clone(), columns.clone())
            .unwrap()
            .decode(&input)
            .unwrap();
        assert_eq!(both.batch, values.batch);
        for (a, b) in both.batch.columns().iter().zip(values.batch.columns()) {
            assert_children_equal(a, b);
        }
        assert_eq!(both.keep, values.keep);
        assert_eq!(both.failures, values.failures);
        ColumnarAvro::new(schema, columns)
            .unwrap()
            .decode(input.len(), input.iter())
            .is_some()
    }

    /// The fields of records and the items of lists of `a` and `b` compared as arrays of their
    /// own: array equality skips what lies under a NULL record, a query reading the field does
    /// not.
    pub(crate) fn assert_children_equal(a: &ArrayRef, b: &ArrayRef) {
        match (a.data_type(), b.data_type()) {
            (DataType::Struct(_), DataType::Struct(_)) => {
                for (x, y) in a.as_struct().columns().iter().zip(b.as_struct().columns()) {
                    assert_eq!(x, y);
                    assert_children_equal(x, y);
                }
            }
            (DataType::List(_), DataType::List(_)) => {
                assert_children_equal(a.as_list::<i32>().values(), b.as_list::<i32>().values())
            }
            _ => {}
        }
    }

    #[test]
    fn flat_records_decode_columnar_to_the_value_paths_batch() {
        let schema = parse_schema(FLAT).unwrap();
        let columns = arrow_schema(&schema).unwrap();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let rows: Vec<Vec<u8>> = (0..500).map(|_| datum(&schema, record(&mut rng))).collect();
        let rows: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        assert!(check(&schema, &columns, &rows));
        assert!(check(&schema, &columns, &rows[..1]));
        assert!(check(&schema, &columns, &[]));
        // A projection: the columns a query reads, in its order.
        let some = Arc::new(Schema::new(vec![
            columns.field_with_name("price").unwrap().clone(),
            columns.field_with_name("name").unwrap().clone(),
            columns.field_with_name("at").unwrap().clone(),
        ]));
        assert!(check(&schema, &some, &rows));
        // A declared column the writer's record has no field of is null.
        let extra = Arc::new(Schema::new(vec![
            columns.field_with_name("name").unwrap().clone(),
            arrow::datatypes::Field::new("trade_id", DataType::Utf8, true),
        ]));
        assert!(check(&schema, &extra, &rows));
    }

    /// Encodes `batch` both ways; the bytes, row ends and failures must be identical.
    fn check_encode(schema: &AvroSchema, batch: &RecordBatch) -> EncodedRows {
        use crate::codec::avro::AvroEncoder;
        let encoder = AvroEncoder::new(schema.clone(), &batch.schema()).unwrap();
        let (mut direct, mut values) = (EncodedRows::default(), EncodedRows::default());
        let failures = encoder.encode(batch, &mut direct).unwrap();
        assert_eq!(failures, encoder.encode_values(batch, &mut values));
        assert_eq!(direct.ends, values.ends);
        assert_eq!(direct.bytes, values.bytes);
        direct
    }

    #[test]
    fn flat_records_encode_straight_from_arrays_to_apache_avros_bytes() {
        let schema = parse_schema(FLAT).unwrap();
        let columns = arrow_schema(&schema).unwrap();
        let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
        let rows: Vec<Vec<u8>> = (0..500).map(|_| datum(&schema, record(&mut rng))).collect();
        let input = BinaryArray::from_iter_values(rows.iter());
        let mut decoder = AvroDecoder::new(schema.clone(), columns).unwrap();
        let batch = decoder.decode(&input).unwrap().batch;
        // FLAT's fixed `tag` and time `clock` are not written by either path (row errors).
        let out = check_encode(&schema, &batch);
        assert_eq!(out.len(), rows.len());
        let writable = parse_schema(
            &FLAT
                .replace(
                    r#"{"name":"tag","type":{"type":"fixed","name":"Tag","size":3}},"#,
                    "",
                )
                .replace(
                    r#",
        {"name":"clock","type":{"type":"int","logicalType":"time-millis"}}"#,
                    "",
                ),
        )
        .unwrap();
        let out = check_encode(&writable, &batch);
        // …and every row of it was written straight from the arrays.
        let AvroSchema::Record(record) = &writable else {
            unreachable!()
        };
        for row in 0..batch.num_rows() {
            let mut bytes = Vec::new();
            for field in &record.fields {
                let column = batch.column_by_name(&field.name).map(|c| c.as_ref());
                assert!(
                    write_field(column, row, &field.schema, &mut bytes),
                    "{}",
                    field.name
                );
            }
            assert_eq!(bytes, out.row(row));
        }
        let back = AvroDecoder::new(writable.clone(), arrow_schema(&writable).unwrap())
            .unwrap()
            .decode(&BinaryArray::from_iter_values(out.iter()))
            .unwrap();
        assert!(back.failures.is_empty());
        assert_eq!(back.batch.num_rows(), rows.len());
    }

    #[test]
    fn conversions_and_values_that_do_not_fit_encode_as_the_value_path_does() {
        use arrow::array::{
            Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
            TimestampNanosecondArray,
        };
        let schema = parse_schema(
            r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":["null","int"]},
            {"name":"d","type":["null",{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}]},
            {"name":"e","type":{"type":"enum","name":"Side","symbols":["BUY","SELL"]}},
            {"name":"t","type":{"type":"long","logicalType":"timestamp-micros"}},
            {"name":"f","type":"float"},
            {"name":"b","type":"long"},
            {"name":"missing","type":["null","string"],"default":null}]}"#,
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "a",
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(i64::MAX),
                    None,
                    Some(-5),
                ])) as ArrayRef,
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(12345),
                        Some(12340),
                        None,
                        Some(-99_999_999_900),
                    ])
                    .with_precision_and_scale(18, 4)
                    .unwrap(),
                ),
            ),
            (
                "e",
                Arc::new(StringArray::from(vec![
                    Some("BUY"),
                    Some("HOLD"),
                    Some("SELL"),
                    None,
                ])),
            ),
            (
                "t",
                Arc::new(TimestampNanosecondArray::from(vec![-1, 1_999, 0, i64::MAX])),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![0.1, f64::MAX, -0.0, f64::NAN])),
            ),
            (
                "b",
                Arc::new(Int32Array::from(vec![i32::MIN, 0, 7, i32::MAX])),
            ),
        ])
        .unwrap();
        let out = check_encode(&schema, &batch);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_batch_with_a_bad_datum_is_left_to_the_value_path() {
        let schema = parse_schema(FLAT).unwrap();
        let columns = arrow_schema(&schema).unwrap();
        let mut rng = Rng(7);
        let good = datum(&schema, record(&mut rng));
        let mut bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
            b"\x02not avro at all".to_vec(),
        ];
        // A decimal wider than its precision (9 digits): 10^9.
        let mut wide = record(&mut rng);
        if let Value::Record(fields) = &mut wide {
            fields[10].1 = decimal(1_000_000_000, None);
        }
        bad.push(datum(&schema, wide));
        for datum in &bad {
            assert!(
                !check(&schema, &columns, &[good.as_slice(), datum]),
                "{datum:?}"
            );
        }
        // Every truncation of a good datum.
        for end in 0..good.len() {
            assert!(!check(&schema, &columns, &[&good[..end]]), "{end}");
        }
        assert!(check(&schema, &columns, &[good.as_slice()]));
    }

    /// Bytes arrow-avro would read leniently are checked first, so the value path decides.
    #[test]
    fn datums_apache_avro_refuses_or_the_value_path_nulls_are_left_to_it() {
        let schema = parse_schema(
            r#"{"type":"record","name":"S","fields":[{"name":"b","type":"boolean"},
            {"name":"n","type":["null","long"]},{"name":"d","type":"double"},
            {"name":"s","type":"string"}]}"#,
        )
        .unwrap();
        let columns = arrow_schema(&schema).unwrap();
        let datum = |b: u8, branch: u8, d: f64, s: &[u8]| {
            let mut out = vec![b, branch, 0x04];
            out.extend_from_slice(&d.to_le_bytes());
            super::bytes(&mut out, s);
            out
        };
        let ok = datum(1, 2, 1.5, b"x");
        assert!(check(&schema, &columns, &[&ok]));
        let trailing = [ok.as_slice(), &[0, 0, 0, 0, 0]].concat();
        for bad in [
            datum(2, 2, 1.5, b"x"),                       // a boolean byte of 2
            datum(1, 1, 1.5, b"x"),                       // union branch -1
            datum(1, 4, 1.5, b"x"),                       // union branch 2
            datum(1, 2, f64::NAN, b"x"),                  // NaN: null on the value path
            datum(1, 2, f64::INFINITY, b"x"),             // so is infinity
            datum(1, 2, 1.5, b"\xff"),                    // not UTF-8
            datum(1, 2, 1.5, &vec![b'a'; (1 << 20) + 1]), // over the length limit
            trailing,                                     // read as a next frame's header
        ] {
            assert!(
                !check(&schema, &columns, &[&ok, &ok, &bad]),
                "{:?}",
                &bad[..4]
            );
        }
    }

    const NESTED: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"id","type":"long"},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"maybe","type":["null",{"type":"array","items":["null","double"]}]},
        {"name":"ship_to","type":{"type":"record","name":"Address","fields":[
            {"name":"city","type":"string"},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"fee","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
            {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["HOME","WORK"]}},
            {"name":"code","type":{"type":"fixed","name":"Code","size":2}}]}},
        {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
            {"name":"sku","type":"string"},
            {"name":"qty","type":"int"},
            {"name":"price","type":["null",{"type":"fixed","name":"P","size":8,"logicalType":"decimal","precision":12,"scale":2}]}]}}},
        {"name":"note","type":["null",{"type":"record","name":"Note","fields":[{"name":"text","type":"string"}]}]}]}"#;

    /// A random `NESTED` order; `wide` puts a fee of 10 digits in a DECIMAL(9,2).
    fn order(rng: &mut Rng, wide: bool) -> Value {
        let null = || Value::Union(0, Box::new(Value::Null));
        let some = |v: Value| Value::Union(1, Box::new(v));
        let tags = (0..rng.next(4))
            .map(|i| Value::String(format!("t{i}é")))
            .collect();
        let maybe = match rng.next(3) {
            0 => null(),
            _ => some(Value::Array(
                (0..rng.next(4))
                    .map(|_| match rng.next(3) {
                        0 => null(),
                        _ => some(Value::Double(rng.signed() as f64 / 9.0)),
                    })
                    .collect(),
            )),
        };
        let fee = match wide {
            true => 1_000_000_000,
            false => rng.signed() as i128 % 1_000_000_000,
        };
        let kind = rng.next(2) as u32;
        let ship_to = Value::Record(vec![
            ("city".into(), Value::String(format!("c{}", rng.next(50)))),
            ("at".into(), Value::TimestampMillis(rng.signed() / 1000)),
            ("fee".into(), decimal(fee, None)),
            (
                "kind".into(),
                Value::Enum(kind, ["HOME", "WORK"][kind as usize].into()),
            ),
            ("code".into(), Value::Fixed(2, vec![rng.next(256) as u8, 9])),
        ]);
        let lines = (0..rng.next(4))
            .map(|i| {
                let price = match rng.next(3) {
                    0 => null(),
                    _ => some(decimal(rng.signed() as i128 % 10i128.pow(12), Some(8))),
                };
                Value::Record(vec![
                    ("sku".into(), Value::String(format!("s{i}"))),
                    ("qty".into(), Value::Int(rng.signed() as i32)),
                    ("price".into(), price),
                ])
            })
            .collect();
        let note = match rng.next(2) {
            0 => null(),
            _ => some(Value::Record(vec![(
                "text".into(),
                Value::String("\"quoted\"".into()),
            )])),
        };
        Value::Record(vec![
            ("id".into(), Value::Long(rng.signed())),
            ("tags".into(), Value::Array(tags)),
            ("maybe".into(), maybe),
            ("ship_to".into(), ship_to),
            ("lines".into(), Value::Array(lines)),
            ("note".into(), note),
        ])
    }

    #[test]
    fn arrays_and_nested_records_decode_columnar_to_the_value_paths_batch() {
        let schema = parse_schema(NESTED).unwrap();
        let columns = arrow_schema(&schema).unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let rows: Vec<Vec<u8>> = (0..500)
            .map(|_| datum(&schema, order(&mut rng, false)))
            .collect();
        let rows: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        assert!(check(&schema, &columns, &rows));
        assert!(check(&schema, &columns, &rows[..1]));
        // The nested columns alone, and a scalar beside one.
        for names in [vec!["lines", "ship_to"], vec!["maybe", "id"]] {
            let some = Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| columns.field_with_name(n).unwrap().clone())
                    .collect::<Vec<_>>(),
            ));
            assert!(check(&schema, &some, &rows), "{names:?}");
        }
        // Broken datums and a nested decimal wider than its precision: the value path decides.
        let good = rows[3];
        let wide = datum(&schema, order(&mut rng, true));
        // Too wide in a field the query does not read: the value path refuses it all the same.
        let only_id = Arc::new(Schema::new(vec![columns.field(0).clone()]));
        assert!(!check(&schema, &only_id, &[good, &wide]));
        assert!(check(&schema, &only_id, &[good]));
        let mut huge_block = vec![0x02]; // id 1
        huge_block.extend([0xfe, 0xff, 0xff, 0xff, 0x0f]); // a block of 2^31 - 1 tags
        for bad in [
            &good[..good.len() - 1],
            &[good, &[0]].concat()[..],
            &wide[..],
            &huge_block[..],
        ] {
            assert!(!check(&schema, &columns, &[good, bad]), "{bad:?}");
        }
    }

    #[test]
    fn maps_decode_columnar_ordered_by_key_with_the_last_of_a_repeated_key() {
        let schema = parse_schema(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},
                {"name":"m","type":{"type":"map","values":"long"}},
                {"name":"xs","type":{"type":"array","items":{"type":"map","values":["null","string"]}}}]}"#,
        )
        .unwrap();
        let all = arrow_schema(&schema).unwrap();
        let only_a = Arc::new(Schema::new(vec![all.field(0).clone()]));
        let mut rng = Rng(11);
        let rows: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let map = |rng: &mut Rng, n: u64| -> Value {
                    Value::Map(
                        (0..n)
                            .map(|k| (format!("k{k}"), Value::Long(rng.signed())))
                            .collect(),
                    )
                };
                let xs = (0..rng.next(3))
                    .map(|_| {
                        Value::Map(
                            (0..rng.next(3))
                                .map(|k| {
                                    let v = match k % 2 {
                                        0 => Value::Union(0, Box::new(Value::Null)),
                                        _ => Value::Union(1, Box::new(Value::String("v".into()))),
                                    };
                                    (format!("x{k}"), v)
                                })
                                .collect(),
                        )
                    })
                    .collect();
                let m = map(&mut rng, i % 4);
                datum(
                    &schema,
                    Value::Record(vec![
                        ("a".into(), Value::Long(i as i64)),
                        ("m".into(), m),
                        ("xs".into(), Value::Array(xs)),
                    ]),
                )
            })
            .collect();
        let rows: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        assert!(
            check(&schema, &only_a, &rows),
            "the map is not read: columnar"
        );
        assert!(
            check(&schema, &all, &rows),
            "the maps are read: columnar too"
        );
        // Keys out of order and one written twice (the last value counts), then a block with
        // its size in bytes.
        let unordered: &[u8] = &[
            0x02, // a = 1
            0x06, 0x02, b'b', 0x02, 0x02, b'a', 0x04, 0x02, b'b', 0x06,
            0x00, // {b:1, a:2, b:3}
            // One map in a block of −1 items and 11 bytes: {z: null} then {y: "v"} in two blocks.
            0x01, 0x16, 0x02, 0x02, b'z', 0x00, 0x02, 0x02, b'y', 0x02, 0x02, b'v', 0x00, 0x00,
        ];
        assert!(check(&schema, &all, &[rows[1], unordered, rows[2]]));
        let decoded = ColumnarAvro::new(&schema, &all)
            .unwrap()
            .decode(1, [Some(unordered)].into_iter())
            .unwrap();
        let m = decoded.column(1).as_map();
        let keys: Vec<&str> = m.keys().as_string::<i32>().iter().flatten().collect();
        let values: Vec<i64> = m
            .values()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!((keys, values), (vec!["a", "b"], vec![2, 3]));
        // A map whose key is not UTF-8: the value path decides.
        let mut bad = vec![0x02, 0x02, 0x02, 0xff, 0x04, 0x00, 0x00];
        assert!(!check(&schema, &only_a, &[rows[0], &bad]));
        bad[3] = b'k';
        assert!(check(&schema, &only_a, &[rows[0], &bad]), "{bad:?}");
    }

    #[test]
    fn records_with_uuids_or_wider_unions_have_no_columnar_path() {
        for field in [
            r#"{"type":"string","logicalType":"uuid"}"#,
            r#"["null","long","string"]"#,
        ] {
            let text = format!(
                r#"{{"type":"record","name":"R","fields":[{{"name":"a","type":"long"}},{{"name":"f","type":{field}}}]}}"#
            );
            let schema = parse_schema(&text).unwrap();
            let columns = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
                "a",
                DataType::Int64,
                false,
            )]));
            assert!(ColumnarAvro::new(&schema, &columns).is_none(), "{field}");
        }
    }
}
