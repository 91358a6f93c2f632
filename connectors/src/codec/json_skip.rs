//! Projection push-down for JSON records: before arrow-json tokenizes a record, the top-level
//! fields its schema does not name are cut out, so a query reading two columns of seven does not
//! pay to tokenize the other five.
//!
//! Only string and scalar values are cut, and each is checked as strictly as the tokenizer would
//! check it (escapes, control characters and UTF-8 in strings; `true`/`false`/`null`; the number
//! grammar): a record that was bad stays bad. Objects and arrays are kept whole (arrow-json checks
//! them), and a record the scanner does not follow to its end is passed on unchanged, so every
//! error message is still arrow-json's own.

use arrow::datatypes::Schema;

/// The top-level field names a decoder reads.
#[derive(Debug, Clone)]
pub struct FieldFilter {
    names: Vec<Box<[u8]>>,
}

impl FieldFilter {
    /// A filter keeping the fields of `schema`; `None` when a name would need JSON escaping
    /// (the scanner compares raw key bytes).
    pub fn new(schema: &Schema) -> Option<Self> {
        let names: Vec<Box<[u8]>> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_bytes().into())
            .collect();
        let plain = names
            .iter()
            .all(|n| n.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\'));
        plain.then_some(Self { names })
    }

    /// Writes `record` without the fields not read into `out` (cleared first). False when
    /// nothing was cut or the record is not one the scanner follows: use `record` as it is.
    pub fn filter(&self, record: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        self.try_filter(record, out) == Some(true)
    }

    fn try_filter(&self, b: &[u8], out: &mut Vec<u8>) -> Option<bool> {
        let mut i = skip_ws(b, 0);
        if *b.get(i)? != b'{' {
            return None;
        }
        i = skip_ws(b, i + 1);
        if *b.get(i)? == b'}' {
            return None;
        }
        out.push(b'{');
        let mut first = true;
        let mut cut = false;
        loop {
            if *b.get(i)? != b'"' {
                return None;
            }
            let key_start = i;
            let (key_end, escaped) = scan_string(b, i)?;
            let key = &b[i + 1..key_end - 1];
            i = skip_ws(b, key_end);
            if *b.get(i)? != b':' {
                return None;
            }
            i = skip_ws(b, i + 1);
            let value_start = i;
            let (value_end, cuttable) = match *b.get(i)? {
                b'"' => (scan_string(b, i)?.0, true),
                b'{' | b'[' => (skip_nested(b, i)?, false),
                b't' => (literal(b, i, b"true")?, true),
                b'f' => (literal(b, i, b"false")?, true),
                b'n' => (literal(b, i, b"null")?, true),
                b'-' | b'0'..=b'9' => (scan_number(b, i)?, true),
                _ => return None,
            };
            let wanted = escaped || self.names.iter().any(|n| **n == *key);
            if wanted || !cuttable {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&b[key_start..value_end]);
            } else {
                // A cut string must be valid UTF-8, as the tokenizer would have required.
                if b[value_start] == b'"'
                    && std::str::from_utf8(&b[value_start..value_end]).is_err()
                {
                    return None;
                }
                cut = true;
            }
            i = skip_ws(b, value_end);
            match *b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
        if skip_ws(b, i) != b.len() {
            return None;
        }
        out.push(b'}');
        Some(cut)
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index after the string starting at `i` (a `"`), and whether it holds escapes. `None`
/// for an unterminated string, a bad escape or a raw control character.
fn scan_string(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let at = j + memchr::memchr2(b'"', b'\\', &b[j..])?;
        if b[j..at].iter().any(|&c| c < 0x20) {
            return None;
        }
        if b[at] == b'"' {
            return Some((at + 1, escaped));
        }
        escaped = true;
        match *b.get(at + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j = at + 2,
            b'u' if b.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => j = at + 6,
            _ => return None,
        }
    }
}

/// The index after `word` at `i`.
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// The index after the number at `i`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn scan_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], i: usize| -> usize {
        let mut j = i;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// The index after the object or array at `i`, following strings so brackets inside them do
/// not count. Its content is left for arrow-json to check.
fn skip_nested(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    loop {
        match *b.get(j)? {
            b'"' => {
                j = scan_string(b, j)?.0;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn filter() -> FieldFilter {
        FieldFilter::new(&Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("price", DataType::Int64, true),
        ]))
        .unwrap()
    }

    fn cut(record: &str) -> Option<String> {
        let mut out = Vec::new();
        filter()
            .filter(record.as_bytes(), &mut out)
            .then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn unread_strings_and_scalars_are_cut_read_fields_and_nested_values_kept() {
        assert_eq!(
            cut(r#"{"auction":1000,"bidder":7,"price":32530001,"url":"https://x/y?q=\"1\"","extra":null}"#).as_deref(),
            Some(r#"{"auction":1000,"price":32530001}"#)
        );
        assert_eq!(
            cut(r#" { "a" : [1, "]", {"b": "}"}] , "price" : -1.5e3 , "ok" : true } "#).as_deref(),
            Some(r#"{"a" : [1, "]", {"b": "}"}],"price" : -1.5e3}"#)
        );
        // An escaped key might be a read one: kept.
        assert_eq!(
            cut(r#"{"pri\u0063e":1,"x":"y"}"#).as_deref(),
            Some(r#"{"pri\u0063e":1}"#)
        );
    }

    #[test]
    fn records_that_are_bad_or_gain_nothing_are_passed_on_unchanged() {
        for bad in [
            r#"{"auction":1,"zz":nul}"#,
            r#"{"auction":1,"zz":01}"#,
            r#"{"auction":1,"zz":1.}"#,
            r#"{"auction":1,"zz":"\x"}"#,
            "{\"auction\":1,\"zz\":\"a\u{1}b\"}",
            r#"{"auction":1,"zz":"open}"#,
            r#"{"auction":1,"zz":2} trailing"#,
            r#"{"auction":1,"zz":2,}"#,
            r#"{"auction":1 "zz":2}"#,
            r#"[1,2]"#,
            r#"{}"#,
            r#"{"auction":1,"price":2}"#,
        ] {
            assert_eq!(cut(bad), None, "{bad}");
        }
        let mut out = Vec::new();
        assert!(!filter().filter(b"{\"auction\":1,\"zz\":\"\xff\"}", &mut out));
    }
}
