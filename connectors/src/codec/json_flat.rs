//! The fast path of JSON decoding: flat objects, the columns a query reads.
//!
//! Most streams carry flat JSON objects of which a query reads a few fields. arrow-json's tape
//! decoder first copies every string and number of every field onto a tape; this decoder walks
//! each object once, parses only the fields the schema names straight into Arrow builders, and
//! skips the others (strings by `memchr`).
//!
//! It accepts a subset of what the tape decoder accepts and gives the same values for it, using
//! the same parsers (lexical-core for numbers, arrow-cast for timestamps). Anything else in a
//! batch — a bad record, a nested or unusual value, a key with an escape, a duplicate key, a null
//! in a non-nullable column — makes it give the batch back (`None`), and the tape decoder
//! decides, errors included. Whether a batch took this path never changes what comes out.

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use chrono::Utc;
use lexical_core::FromLexical;

use super::scalar_builder::ScalarBuilder;

/// Nesting deeper than this in a skipped value gives the batch back to the tape decoder.
const MAX_DEPTH: u32 = 64;

/// Decodes batches of flat JSON objects into a schema of scalar columns.
pub(super) struct FlatDecoder {
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    types: Vec<DataType>,
    nullable: Vec<bool>,
    /// `stamp[j] == r` when column `j` got a value in row number `r` (counted from 1).
    stamp: Vec<u32>,
    /// Unescaped text of the string being read, when it holds escapes.
    scratch: String,
    /// String bytes of the last batch, to size the next one's builders.
    text_bytes: usize,
}

/// One scalar JSON value as the tape decoder would see it.
enum Value<'a> {
    Null,
    True,
    False,
    /// A string's content, unescaped.
    Str(&'a str),
    /// A number's text, as written.
    Num(&'a str),
}

/// Appends `value` to `column` as arrow-json's decoder for its type would; `None` where that
/// decoder would do anything but take the plain path (parse a number's text, take a string).
fn push(column: &mut ScalarBuilder, value: Value<'_>) -> Option<()> {
    use ScalarBuilder as B;
    if let Value::Null = value {
        column.push_null();
        return Some(());
    }
    match column {
        B::Int8(b) => b.append_value(number(value)?),
        B::Int16(b) => b.append_value(number(value)?),
        B::Int32(b) => b.append_value(number(value)?),
        B::Int64(b) => b.append_value(number(value)?),
        B::UInt8(b) => b.append_value(number(value)?),
        B::UInt16(b) => b.append_value(number(value)?),
        B::UInt32(b) => b.append_value(number(value)?),
        B::UInt64(b) => b.append_value(number(value)?),
        B::Float32(b) => b.append_value(number(value)?),
        B::Float64(b) => b.append_value(number(value)?),
        B::Boolean(b) => match value {
            Value::True => b.append_value(true),
            Value::False => b.append_value(false),
            _ => return None,
        },
        // Primitives are coerced to their text, as `with_coerce_primitive(true)` does.
        B::Utf8(b) => match value {
            Value::Str(s) | Value::Num(s) => b.append_value(s),
            Value::True => b.append_value("true"),
            Value::False => b.append_value("false"),
            Value::Null => unreachable!(),
        },
        B::Timestamp(unit, b) => b.append_value(timestamp(*unit, value)?),
        // Decimals reach the JSON decoder as text columns.
        B::Decimal128(..) => return None,
    }
    Some(())
}

/// A number column's value: the number's text parsed by lexical-core, as arrow-json does first.
/// (Where that fails arrow-json tries again as `f64`; that case is left to it.)
fn number<T: FromLexical>(value: Value<'_>) -> Option<T> {
    match value {
        Value::Num(t) => lexical_core::parse::<T>(t.as_bytes()).ok(),
        _ => None,
    }
}

/// A timestamp column's value, exactly as arrow-json's timestamp decoder computes it (UTC).
fn timestamp(unit: TimeUnit, value: Value<'_>) -> Option<i64> {
    match value {
        Value::Str(s) => {
            let date = string_to_datetime(&Utc, s).ok()?;
            match unit {
                TimeUnit::Second => Some(date.timestamp()),
                TimeUnit::Millisecond => Some(date.timestamp_millis()),
                TimeUnit::Microsecond => Some(date.timestamp_micros()),
                TimeUnit::Nanosecond => date.timestamp_nanos_opt(),
            }
        }
        Value::Num(t) => {
            let b = t.as_bytes();
            lexical_core::parse::<i64>(b)
                .or_else(|_| lexical_core::parse::<f64>(b).map(|x| x as i64))
                .ok()
        }
        _ => None,
    }
}

impl FlatDecoder {
    /// A decoder for `schema`, or `None` when a column is not a scalar this path reads.
    pub(super) fn new(schema: &SchemaRef) -> Option<Self> {
        let fields = schema.fields();
        let types: Vec<DataType> = fields.iter().map(|f| f.data_type().clone()).collect();
        if types
            .iter()
            .any(|t| matches!(t, DataType::Decimal128(..)) || ScalarBuilder::new(t, 0, 0).is_none())
        {
            return None;
        }
        Some(Self {
            schema: schema.clone(),
            names: fields.iter().map(|f| f.name().as_bytes().into()).collect(),
            types,
            nullable: fields.iter().map(|f| f.is_nullable()).collect(),
            stamp: vec![0; fields.len()],
            scratch: String::new(),
            text_bytes: 0,
        })
    }

    /// The batch of `payloads`, one row each, or `None` when the tape decoder must decide.
    pub(super) fn decode(&mut self, payloads: &BinaryArray) -> Option<RecordBatch> {
        let rows = payloads.len();
        let per_column = self.text_bytes / self.types.len().max(1) + 16;
        let mut columns: Vec<ScalarBuilder> = self
            .types
            .iter()
            .map(|t| ScalarBuilder::new(t, rows, per_column))
            .collect::<Option<_>>()?;
        self.stamp.fill(0);
        for i in 0..rows {
            if payloads.is_null(i) {
                return None;
            }
            let text = std::str::from_utf8(payloads.value(i)).ok()?;
            // Row numbers start at 1 so that a fresh stamp of 0 matches none.
            self.row(text, i as u32 + 1, &mut columns)?;
        }
        self.text_bytes = columns.iter().map(ScalarBuilder::text_bytes).sum();
        let arrays = columns.into_iter().map(ScalarBuilder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), arrays).ok()
    }

    /// Reads one object into `columns`; `None` when it is not one this path takes.
    fn row(&mut self, text: &str, row: u32, columns: &mut [ScalarBuilder]) -> Option<()> {
        let b = text.as_bytes();
        let mut i = ws(b, 0);
        if at(b, i)? != b'{' {
            return None;
        }
        i = ws(b, i + 1);
        if at(b, i)? == b'}' {
            i += 1;
        } else {
            loop {
                if at(b, i)? != b'"' {
                    return None;
                }
                let end = i + 1 + memchr::memchr2(b'"', b'\\', &b[i + 1..])?;
                if b[end] == b'\\' {
                    return None; // a key with escapes: rare, left to the tape decoder
                }
                let key = &b[i + 1..end];
                i = ws(b, end + 1);
                if at(b, i)? != b':' {
                    return None;
                }
                i = ws(b, i + 1);
                match self.names.iter().position(|n| **n == *key) {
                    Some(j) => {
                        if self.stamp[j] == row {
                            return None; // a duplicate key: arrow-json keeps the last
                        }
                        self.stamp[j] = row;
                        let (value, next) = value(text, i, &mut self.scratch)?;
                        if matches!(value, Value::Null) && !self.nullable[j] {
                            return None;
                        }
                        push(&mut columns[j], value)?;
                        i = next;
                    }
                    None => i = skip(b, i, 0)?,
                }
                i = ws(b, i);
                match at(b, i)? {
                    b',' => i = ws(b, i + 1),
                    b'}' => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if ws(b, i) != b.len() {
            return None;
        }
        for (j, column) in columns.iter_mut().enumerate() {
            if self.stamp[j] != row {
                if !self.nullable[j] {
                    return None;
                }
                column.push_null();
            }
        }
        Some(())
    }
}

#[inline]
fn at(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The scalar value starting at `i` and the index after it.
fn value<'a>(text: &'a str, i: usize, scratch: &'a mut String) -> Option<(Value<'a>, usize)> {
    let b = text.as_bytes();
    match at(b, i)? {
        b'"' => string(text, i, scratch).map(|(s, end)| (Value::Str(s), end)),
        b'-' | b'0'..=b'9' => {
            let end = number_end(b, i);
            Some((Value::Num(&text[i..end]), end))
        }
        b't' => literal(b, i, b"true").map(|end| (Value::True, end)),
        b'f' => literal(b, i, b"false").map(|end| (Value::False, end)),
        b'n' => literal(b, i, b"null").map(|end| (Value::Null, end)),
        _ => None,
    }
}

/// The end of the number starting at `i`, by the tape decoder's rule: its first byte, then every
/// byte that can be part of a number.
#[inline]
fn number_end(b: &[u8], i: usize) -> usize {
    let mut end = i + 1;
    while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = b.get(end) {
        end += 1;
    }
    end
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

/// The content of the string whose opening quote is at `i`, unescaped, and the index after its
/// closing quote.
fn string<'a>(text: &'a str, i: usize, scratch: &'a mut String) -> Option<(&'a str, usize)> {
    let b = text.as_bytes();
    let start = i + 1;
    let mut at_stop = start + memchr::memchr2(b'"', b'\\', &b[start..])?;
    if b[at_stop] == b'"' {
        return Some((&text[start..at_stop], at_stop + 1));
    }
    scratch.clear();
    let mut from = start;
    loop {
        scratch.push_str(&text[from..at_stop]);
        if b[at_stop] == b'"' {
            return Some((scratch.as_str(), at_stop + 1));
        }
        let (c, next) = escape(b, at_stop)?;
        scratch.push(c);
        from = next;
        at_stop = from + memchr::memchr2(b'"', b'\\', &b[from..])?;
    }
}

/// The character of the escape whose backslash is at `i`, and the index after it. Surrogate
/// `\u` escapes are left to the tape decoder.
fn escape(b: &[u8], i: usize) -> Option<(char, usize)> {
    let c = match at(b, i + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            let code = u32::from_str_radix(hex, 16).ok()?;
            return Some((char::from_u32(code)?, i + 6));
        }
        _ => return None,
    };
    Some((c, i + 2))
}

/// The index after the value starting at `i`, checked as strictly as the tape decoder checks it
/// (or more strictly).
fn skip(b: &[u8], i: usize, depth: u32) -> Option<usize> {
    match at(b, i)? {
        b'"' => skip_string(b, i),
        b'-' | b'0'..=b'9' => Some(number_end(b, i)),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        open @ (b'{' | b'[') => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let close = if open == b'{' { b'}' } else { b']' };
            let mut i = ws(b, i + 1);
            if at(b, i)? == close {
                return Some(i + 1);
            }
            loop {
                if open == b'{' {
                    if at(b, i)? != b'"' {
                        return None;
                    }
                    i = ws(b, skip_string(b, i)?);
                    if at(b, i)? != b':' {
                        return None;
                    }
                    i = ws(b, i + 1);
                }
                i = ws(b, skip(b, i, depth + 1)?);
                match at(b, i)? {
                    b',' => i = ws(b, i + 1),
                    c if c == close => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// The index after the string whose opening quote is at `i`, its escapes checked.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut from = i + 1;
    loop {
        let stop = from + memchr::memchr2(b'"', b'\\', &b[from..])?;
        if b[stop] == b'"' {
            return Some(stop + 1);
        }
        from = escape(b, stop)?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::JsonDecoder;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Utf8, true),
            Field::new("d", DataType::Boolean, true),
            Field::new("e", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("f", DataType::Int32, false),
            Field::new("g", DataType::UInt8, true),
            Field::new("h", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("p", DataType::Decimal128(12, 3), true),
        ]))
    }

    fn payloads(rows: &[&str]) -> BinaryArray {
        BinaryArray::from_iter_values(rows.iter().map(|r| r.as_bytes()))
    }

    /// Whether the fast path takes `rows` (decimals are read as text first).
    fn flat(rows: &[&str]) -> Option<RecordBatch> {
        let text = crate::codec::decimal::text_schema(&schema()).unwrap();
        FlatDecoder::new(&text).unwrap().decode(&payloads(rows))
    }

    /// The property that makes the fast path safe: the decoder gives exactly what the tape
    /// decoder alone gives, batch, failures and all. Returns whether the fast path took `rows`.
    fn check(rows: &[&str]) -> bool {
        let input = payloads(rows);
        let both = JsonDecoder::new(schema()).unwrap().decode(&input).unwrap();
        let tape = JsonDecoder::tape_only(schema())
            .unwrap()
            .decode(&input)
            .unwrap();
        assert_eq!(both.batch, tape.batch, "{rows:?}");
        assert_eq!(both.keep, tape.keep, "{rows:?}");
        assert_eq!(both.failures, tape.failures, "{rows:?}");
        flat(rows).is_some()
    }

    #[test]
    fn plain_flat_objects_take_the_fast_path_with_the_tape_decoders_values() {
        let rows = [
            r#"{"a":1,"b":2.5,"c":"x","d":true,"e":"2015-07-15T00:00:00","f":7,"g":255}"#,
            r#" { "f" : -3 , "c" : "caf\u00e9 \"q\" \\ \/ \b\f\n\r\t" , "zzz" : {"n":[1,{"m":null}],"s":"}"} } "#,
            r#"{"f":0,"p":"-12.345","c":12.50,"a":-9223372036854775808,"b":1e-3,"e":1436918400000,"h":"2015-07-15 00:00:00.123456789"}"#,
            r#"{"f":1,"c":true,"d":false,"a":null,"b":null,"e":null,"unknown":[],"x":"é😀"}"#,
            r#"{"f":2,"p":7.5,"c":false,"e":"2015-07-15T01:02:03+02:00","b":-0,"g":0}"#,
            "{\"f\":3,\"c\":\"tab\tinside\",\"e\":1.9e3}\r\n",
        ];
        for row in rows {
            assert!(check(&[row]), "not taken: {row}");
        }
        assert!(check(&rows));
        assert!(check(&[]));
        let mut decoder = JsonDecoder::new(schema()).unwrap();
        let batch = decoder.decode(&payloads(&rows)).unwrap().batch;
        assert_eq!(batch.num_rows(), rows.len());
        let c = batch.column(2).as_string::<i32>();
        assert_eq!(c.value(1), "café \"q\" \\ / \u{8}\u{c}\n\r\t");
        assert_eq!(c.value(2), "12.50");
        assert_eq!(c.value(3), "true");
        let p = batch
            .column(8)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!((p.value(2), p.value(4)), (-12345, 7500));
    }

    #[test]
    fn records_the_fast_path_leaves_to_the_tape_decoder() {
        for row in [
            // bad records: the tape decoder names what is wrong
            "",
            "   ",
            "5",
            "[1]",
            r#"{"f":1"#,
            r#"{"f":1} {"f":2}"#,
            r#"{"f":1}x"#,
            r#"{"f":tru}"#,
            r#"{"f":1,"c":"\x"}"#,
            r#"{"f":1,"skip":"\x"}"#,
            r#"{"f":1,"skip":[1,}"#,
            r#"{"f":1,"skip":{"k" 1}}"#,
            r#"{"a":"not a number","f":1}"#,
            r#"{"a":99999999999999999999,"f":1}"#,
            r#"{"g":256,"f":1}"#,
            r#"{"d":1,"f":1}"#,
            r#"{"e":"yesterday","f":1}"#,
            r#"{"f":null}"#,
            r#"{"a":1}"#,
            r#"{"f":1,"c":{"nested":1}}"#,
            // good records off the plain path: surrogate pairs, escaped keys, duplicate keys,
            // numbers lexical-core refuses for the column's type
            r#"{"f":1,"c":"\ud83d\ude00"}"#,
            r#"{"f":1,"\u0063":"x"}"#,
            r#"{"f":1,"a":1,"a":2}"#,
            r#"{"f":1,"a":1.0}"#,
            r#"{"f":1,"a":"12"}"#,
            r#"{"f":1,,"a":1}"#,
        ] {
            assert!(!check(&[row]), "taken: {row}");
            // One such record sends the whole batch to the tape decoder.
            assert!(!check(&[r#"{"f":1}"#, row]), "taken in a batch: {row}");
        }
    }

    /// Random records, mostly good, some broken at a random byte: every one the fast path
    /// accepts is decoded exactly as the tape decoder decodes it.
    #[test]
    fn random_records_decode_as_the_tape_decoder_decodes_them() {
        let mut rng = crate::codec::testing::Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: usize| rng.next(n as u64) as usize;
        let values = [
            "0",
            "-0",
            "1",
            "-1",
            "42",
            "007",
            "1.5",
            "-2.25e3",
            "1E2",
            "1e400",
            "-",
            "1-2",
            "255",
            "256",
            "2147483648",
            "9223372036854775807",
            "18446744073709551616",
            "true",
            "false",
            "null",
            "\"\"",
            "\"x\"",
            "\"12\"",
            "\"-7.5\"",
            "\"caf\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"a\\\"b\"",
            "\"\\q\"",
            "\"2015-07-15T00:00:00\"",
            "\"2015-07-15 10:11:12.5\"",
            "\"2015-07-15T00:00:00Z\"",
            "\"not a time\"",
            "[]",
            "[1,2]",
            "{}",
            "{\"k\":[null]}",
            "tru",
            "nul",
            "{\"k\"}",
            "[1,]",
        ];
        let keys = [
            "a", "b", "c", "d", "e", "f", "g", "h", "p", "x", "y", "\\u0061", "A",
        ];
        let spaces = ["", " ", "\n", "\t ", "\r\n"];
        let (mut taken, mut total) = (0, 0);
        for _ in 0..8_000 {
            let mut row = String::from(spaces[next(spaces.len())]);
            row.push('{');
            let fields = next(6);
            let mut has_f = false;
            for k in 0..fields {
                if k > 0 {
                    row.push(',');
                }
                row.push_str(spaces[next(spaces.len())]);
                let key = keys[next(keys.len())];
                has_f |= key == "f";
                row.push_str(&format!("\"{key}\""));
                row.push_str(spaces[next(spaces.len())]);
                row.push(':');
                row.push_str(spaces[next(spaces.len())]);
                row.push_str(values[next(values.len())]);
            }
            if !has_f && next(4) > 0 {
                row.push_str(if fields > 0 { ",\"f\":1" } else { "\"f\":1" });
            }
            row.push('}');
            row.push_str(spaces[next(spaces.len())]);
            if next(10) == 0 {
                row.truncate(next(row.len() + 1));
                while !row.is_char_boundary(row.len()) {
                    row.pop();
                }
            }
            total += 1;
            if check(&[&row]) {
                taken += 1;
            }
        }
        // The generator must exercise both paths.
        assert!(taken > total / 20 && taken < total, "{taken} of {total}");
    }

    #[test]
    fn schemas_with_nested_columns_have_no_fast_path() {
        let nested = Schema::new(vec![Field::new(
            "s",
            DataType::Struct(vec![Field::new("x", DataType::Int64, true)].into()),
            true,
        )]);
        assert!(FlatDecoder::new(&Arc::new(nested)).is_none());
    }
}
