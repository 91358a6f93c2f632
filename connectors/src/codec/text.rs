//! Small pieces of JSON text shared by the codecs that bridge through JSON (Avro, Protobuf) and
//! by the Nexmark generator: escaped strings and exact decimal text; and the allocation-free text
//! of decimals and timestamps the JSON encoder writes.

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

/// Appends the exact text of the decimal `unscaled × 10^-scale` (`-0.0005`, `1200` for scale
/// -2), without allocating: the same text as arrow's decimal display for values within their
/// precision.
pub fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i32) {
    let mut buffer = [0u8; 40];
    let digits = unsigned_digits(unscaled.unsigned_abs(), &mut buffer);
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        return;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// The decimal digits of `v`, written at the end of `buffer`.
fn unsigned_digits(mut v: u128, buffer: &mut [u8; 40]) -> &[u8] {
    let mut at = buffer.len();
    // 64-bit division is several times faster than 128-bit: peel 19 digits at a time.
    while v > u64::MAX as u128 {
        let mut low = (v % 10_000_000_000_000_000_000) as u64;
        v /= 10_000_000_000_000_000_000;
        for _ in 0..19 {
            at -= 1;
            buffer[at] = b'0' + (low % 10) as u8;
            low /= 10;
        }
    }
    let mut v = v as u64;
    loop {
        at -= 1;
        buffer[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buffer[at..]
}

/// Appends a timestamp without time zone as ISO-8601 text (`2015-07-15T00:00:00.120`), the text
/// arrow's display gives: the fraction only when not zero, in 3, 6 or 9 digits. `value` counts
/// units of 10^-`digits` seconds since the epoch (`digits` 0, 3, 6 or 9). False (nothing written)
/// for years outside 0–9999, which arrow writes with a sign.
pub fn write_naive_timestamp(out: &mut Vec<u8>, value: i64, digits: u32) -> bool {
    let per_second = 10i64.pow(digits);
    let seconds = value.div_euclid(per_second);
    let nanos = value.rem_euclid(per_second) * 10i64.pow(9 - digits);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return false;
    }
    let two = |out: &mut Vec<u8>, v: i64| {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
    };
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, of_day / 3600);
    out.push(b':');
    two(out, of_day / 60 % 60);
    out.push(b':');
    two(out, of_day % 60);
    let (fraction, width) = if nanos == 0 {
        return true;
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    out.push(b'.');
    let mut buffer = [0u8; 40];
    let text = unsigned_digits(fraction as u128, &mut buffer);
    out.extend(std::iter::repeat_n(b'0', width - text.len()));
    out.extend_from_slice(text);
    true
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
