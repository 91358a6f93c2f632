//! Small pieces of JSON text shared by the codecs that bridge through JSON (Avro, Protobuf) and
//! by the Nexmark generator: escaped strings and exact decimal text.

use std::io::Write;

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Appends the exact text of the decimal `unscaled × 10^-scale` (e.g. `-0.0100` for
/// unscaled −100, scale 4). Negative scales multiply.
pub fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i32) {
    if scale <= 0 {
        let _ = write!(out, "{unscaled}");
        for _ in 0..(-scale) {
            out.push(b'0');
        }
        return;
    }
    let scale = scale as usize;
    let digits = unscaled.unsigned_abs().to_string();
    if unscaled < 0 {
        out.push(b'-');
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

/// Appends `bytes` as a JSON string of hex digits (how arrow-json reads Binary columns).
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push(b'"');
}

/// The value of a big-endian two's-complement integer (as Avro stores decimals), if it fits.
pub fn i128_from_be_bytes(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        // Allow redundant sign bytes in front.
        let (head, tail) = bytes.split_at(bytes.len() - 16);
        let sign = if tail[0] & 0x80 != 0 { 0xFF } else { 0 };
        if head.iter().any(|&b| b != sign) {
            return None;
        }
        return i128_from_be_bytes(tail);
    }
    if bytes.is_empty() {
        return Some(0);
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

/// The shortest big-endian two's-complement bytes of `v`.
pub fn i128_to_be_bytes(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let sign = if v < 0 { 0xFF } else { 0 };
    let mut start = 0;
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// Rescales `unscaled` from scale `from` to scale `to`, exactly: `None` when digits would be
/// lost or the result overflows.
pub fn rescale(unscaled: i128, from: i32, to: i32) -> Option<i128> {
    match to.cmp(&from) {
        std::cmp::Ordering::Equal => Some(unscaled),
        std::cmp::Ordering::Greater => 10i128
            .checked_pow((to - from) as u32)
            .and_then(|f| unscaled.checked_mul(f)),
        std::cmp::Ordering::Less => {
            let f = 10i128.checked_pow((from - to) as u32)?;
            (unscaled % f == 0).then(|| unscaled / f)
        }
    }
}

/// True when `unscaled` has at most `precision` digits.
pub fn fits_precision(unscaled: i128, precision: u32) -> bool {
    precision >= 39 || unscaled.unsigned_abs() < 10u128.pow(precision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: i128, s: i32) -> String {
        let mut out = Vec::new();
        write_decimal(&mut out, v, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decimals_print_exactly() {
        assert_eq!(dec(1502567, 4), "150.2567");
        assert_eq!(dec(-5, 4), "-0.0005");
        assert_eq!(dec(-5000, 4), "-0.5000");
        assert_eq!(dec(0, 2), "0.00");
        assert_eq!(dec(999_999_999_999_999_999, 4), "99999999999999.9999");
        assert_eq!(dec(12, -2), "1200");
    }

    #[test]
    fn two_complement_bytes_round_trip() {
        for v in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            12000,
            -999_999_999_999_999_999,
            i128::MAX,
            i128::MIN,
        ] {
            assert_eq!(i128_from_be_bytes(&i128_to_be_bytes(v)), Some(v), "{v}");
        }
        assert_eq!(i128_to_be_bytes(128), vec![0, 128]);
        assert_eq!(i128_to_be_bytes(-128), vec![0x80]);
    }

    #[test]
    fn rescaling_is_exact_or_refused() {
        assert_eq!(rescale(12, 1, 4), Some(12000));
        assert_eq!(rescale(12000, 4, 1), Some(12));
        assert_eq!(rescale(12001, 4, 1), None);
        assert!(fits_precision(999_999_999_999_999_999, 18));
        assert!(!fits_precision(1_000_000_000_000_000_000, 18));
    }
}
