//! `JSON_VALUE(json, path)`: the scalar at `path` in a JSON text, as text.
//!
//! The path is the SQL/JSON subset `$`, `.key`, `['key']`, `["key"]` and `[index]`, e.g.
//! `'$.customer.address[0].city'`. Strings are returned unescaped, numbers and booleans as their
//! JSON text; JSON `null`, a missing path, an object or an array give SQL NULL, as in the SQL
//! standard's `JSON_VALUE`. A malformed document also gives NULL. The path must be a literal
//! and is parsed once per batch; documents are scanned, never built into trees.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// The `json_value` UDF.
pub fn json_value_udf() -> ScalarUDF {
    ScalarUDF::from(JsonValue::new())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonValue {
    signature: Signature,
}

impl JsonValue {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::Utf8View, DataType::Utf8View]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for JsonValue {
    fn name(&self) -> &str {
        "json_value"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [doc, path] = args.args.as_slice() else {
            return plan_err!("JSON_VALUE takes two arguments: a JSON text and a path");
        };
        let path_text = match path {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)),
            ) => p.clone(),
            _ => return exec_err!("JSON_VALUE's path must be a string literal such as '$.a.b'"),
        };
        let path = parse_path(&path_text)?;
        match doc {
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(t) | ScalarValue::Utf8View(t) | ScalarValue::LargeUtf8(t) => {
                        t.clone()
                    }
                    _ => None,
                };
                let mut out = String::new();
                let value = text.and_then(|t| extract(&t, &path, &mut out).then_some(out));
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(value)))
            }
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(extract_array(array, &path)?)),
        }
    }
}

fn extract_array(array: &ArrayRef, path: &[PathStep]) -> Result<ArrayRef> {
    let mut builder = StringBuilder::with_capacity(array.len(), array.len() * 8);
    let mut scratch = String::new();
    let mut each = |text: Option<&str>| match text {
        Some(t) if extract(t, path, &mut scratch) => builder.append_value(&scratch),
        _ => builder.append_null(),
    };
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(&mut each),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(&mut each),
        DataType::Utf8View => array.as_string_view().iter().for_each(&mut each),
        other => return exec_err!("JSON_VALUE expects a string, got {other}"),
    }
    Ok(Arc::new(builder.finish()))
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// Parses `$.a['b'][0]` into steps.
pub fn parse_path(path: &str) -> Result<Vec<PathStep>> {
    let bad = |why: &str| -> Result<Vec<PathStep>> {
        plan_err!("invalid JSON path '{path}': {why} (expected e.g. '$.a.b' or '$.items[0].name')")
    };
    let Some(mut rest) = path.trim().strip_prefix('$') else {
        return bad("it must start with '$'");
    };
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return bad("empty key after '.'");
            }
            steps.push(PathStep::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return bad("missing ']'");
            };
            let inner = r[..close].trim();
            if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                steps.push(PathStep::Key(q.to_string()));
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(PathStep::Index(i));
            } else {
                return bad("an index must be a number or a quoted key");
            }
            rest = &r[close + 1..];
        } else {
            return bad("unexpected character");
        }
    }
    Ok(steps)
}

/// Finds the scalar at `path` in `doc`; writes its text to `out` and returns true, or returns
/// false (missing, null, non-scalar or malformed).
pub fn extract(doc: &str, path: &[PathStep], out: &mut String) -> bool {
    out.clear();
    let bytes = doc.as_bytes();
    let mut pos = skip_ws(bytes, 0);
    for step in path {
        let found = match step {
            PathStep::Key(key) => find_key(bytes, pos, key),
            PathStep::Index(index) => find_index(bytes, pos, *index),
        };
        match found {
            Some(p) => pos = p,
            None => return false,
        }
    }
    match bytes.get(pos) {
        Some(b'"') => unescape_string(bytes, pos, out).is_some(),
        Some(b'{') | Some(b'[') | None => false,
        Some(_) => {
            let Some(end) = skip_value(bytes, pos) else {
                return false;
            };
            let text = &doc[pos..end];
            if text == "null" {
                return false;
            }
            out.push_str(text);
            true
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Position of the value of `key` in the object starting at `i`.
fn find_key(b: &[u8], i: usize, key: &str) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    let mut name = String::new();
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let after_name = unescape_string(b, i, &mut name)?;
        i = skip_ws(b, after_name);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if name == key {
            return Some(i);
        }
        i = skip_ws(b, skip_value(b, i)?);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

/// Position of element `index` of the array starting at `i`.
fn find_index(b: &[u8], i: usize, index: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return None;
    }
    for _ in 0..index {
        i = skip_ws(b, skip_value(b, i)?);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
    Some(i)
}

/// End (exclusive) of the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
            None
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_value(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Unescapes the string starting at `i` (a `"`) into `out`; returns the position after it.
fn unescape_string(b: &[u8], i: usize, out: &mut String) -> Option<usize> {
    out.clear();
    let mut j = i + 1;
    let mut run_start = j;
    while j < b.len() {
        match b[j] {
            b'"' => {
                out.push_str(std::str::from_utf8(&b[run_start..j]).ok()?);
                return Some(j + 1);
            }
            b'\\' => {
                out.push_str(std::str::from_utf8(&b[run_start..j]).ok()?);
                let esc = *b.get(j + 1)?;
                j += 2;
                match esc {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let hex = |at: usize| -> Option<u32> {
                            u32::from_str_radix(std::str::from_utf8(b.get(at..at + 4)?).ok()?, 16)
                                .ok()
                        };
                        let mut code = hex(j)?;
                        j += 4;
                        if (0xD800..0xDC00).contains(&code)
                            && b.get(j) == Some(&b'\\')
                            && b.get(j + 1) == Some(&b'u')
                        {
                            let low = hex(j + 2)?;
                            code = 0x10000 + ((code - 0xD800) << 10) + (low.checked_sub(0xDC00)?);
                            j += 6;
                        }
                        out.push(char::from_u32(code)?);
                    }
                    _ => return None,
                }
                run_start = j;
            }
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(doc: &str, path: &str) -> Option<String> {
        let mut out = String::new();
        extract(doc, &parse_path(path).unwrap(), &mut out).then_some(out)
    }

    #[test]
    fn nested_keys_indexes_and_escapes_resolve() {
        let doc = r#"{"a": {"b": "x\"y\u00e9", "n": 12.50, "t": true, "z": null},
                      "items": [{"name": "first"}, {"name": "sec,ond]"}], "k.dot": 1}"#;
        assert_eq!(get(doc, "$.a.b").as_deref(), Some("x\"yé"));
        assert_eq!(get(doc, "$.a.n").as_deref(), Some("12.50"));
        assert_eq!(get(doc, "$.a.t").as_deref(), Some("true"));
        assert_eq!(get(doc, "$.items[1].name").as_deref(), Some("sec,ond]"));
        assert_eq!(get(doc, "$['k.dot']").as_deref(), Some("1"));
        assert_eq!(get(doc, "$.a.z"), None);
        assert_eq!(get(doc, "$.a"), None);
        assert_eq!(get(doc, "$.missing.b"), None);
        assert_eq!(get(doc, "$.items[5]"), None);
        assert_eq!(get("{not json", "$.a"), None);
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert!(parse_path("a.b")
            .unwrap_err()
            .to_string()
            .contains("must start with '$'"));
        assert!(parse_path("$.a[x]").is_err());
    }
}
