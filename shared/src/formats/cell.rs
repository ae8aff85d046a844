//! Cell-level parsing on byte slices: integers, decimals, booleans, epoch times with their unit,
//! UTC datetimes. Each function reads from `pos` and returns the value and the index just past
//! what it consumed; the caller checks that a delimiter follows. No allocation, no `str`.

/// Where a cell ends: the next `,`, `\r`, `\n` or the end of the buffer.
#[inline]
pub(crate) fn cell_end(buf: &[u8], mut pos: usize) -> usize {
    while pos < buf.len() && !matches!(buf[pos], b',' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// The unit of an epoch integer column, detected from its digit count (binance-archive.md §3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// 10 digits.
    Seconds,
    /// 13 digits.
    Millis,
    /// 16 digits.
    Micros,
    /// 19 digits.
    Nanos,
}

impl TimeUnit {
    pub fn from_digits(digits: u32) -> Option<TimeUnit> {
        match digits {
            10 => Some(TimeUnit::Seconds),
            13 => Some(TimeUnit::Millis),
            16 => Some(TimeUnit::Micros),
            19 => Some(TimeUnit::Nanos),
            _ => None,
        }
    }

    pub fn digits(self) -> u32 {
        match self {
            TimeUnit::Seconds => 10,
            TimeUnit::Millis => 13,
            TimeUnit::Micros => 16,
            TimeUnit::Nanos => 19,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "µs",
            TimeUnit::Nanos => "ns",
        }
    }

    /// A non-negative epoch value in this unit, in µs.
    #[inline]
    pub fn to_micros(self, v: i64) -> i64 {
        match self {
            TimeUnit::Seconds => v * 1_000_000,
            TimeUnit::Millis => v * 1_000,
            TimeUnit::Micros => v,
            TimeUnit::Nanos => v.div_euclid(1_000),
        }
    }
}

/// Eight ASCII digits, little-endian in `v`, are all digits (the test fast_float uses).
#[inline(always)]
fn is_8digits(v: u64) -> bool {
    let a = v.wrapping_add(0x4646_4646_4646_4646);
    let b = v.wrapping_sub(0x3030_3030_3030_3030);
    (a | b) & 0x8080_8080_8080_8080 == 0
}

/// The value of eight ASCII digits, little-endian in `v` (SWAR, as in fast_float).
#[inline(always)]
fn parse_8digits(mut v: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064;
    const MUL2: u64 = 0x0000_2710_0000_0001;
    v = v.wrapping_sub(0x3030_3030_3030_3030);
    v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    v1.wrapping_add(v2) >> 32
}

/// Accumulate the run of digits at `i` into `acc` (wrapping past 19 digits; callers count).
/// Eight at a time while they last: the digit-by-digit multiply chain is the parser's critical
/// path on 13-digit timestamps and 10-digit ids.
#[inline(always)]
fn digit_run(buf: &[u8], mut i: usize, mut acc: u64) -> (u64, usize) {
    while let Some(chunk) = buf.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap());
        if !is_8digits(v) {
            break;
        }
        acc = acc.wrapping_mul(100_000_000).wrapping_add(parse_8digits(v));
        i += 8;
    }
    if let Some(chunk) = buf.get(i..i + 4) {
        let v = u32::from_le_bytes(chunk.try_into().unwrap());
        let a = v.wrapping_add(0x4646_4646);
        let b = v.wrapping_sub(0x3030_3030);
        if (a | b) & 0x8080_8080 == 0 {
            // As `parse_8digits`, on four: pairs, then the two pairs.
            let v = v.wrapping_sub(0x3030_3030);
            let v = v.wrapping_mul(10).wrapping_add(v >> 8) & 0x00FF_00FF;
            let v = (v.wrapping_mul(1 + (100 << 16)) >> 16) & 0xFFFF;
            acc = acc.wrapping_mul(10_000).wrapping_add(v as u64);
            i += 4;
        }
    }
    while i < buf.len() {
        let d = buf[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        acc = acc.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    (acc, i)
}

/// A signed decimal integer: `(value, end, digit count)`. `None` when no digit is present or it
/// does not fit an i64.
#[inline(always)]
pub(crate) fn parse_i64(buf: &[u8], pos: usize) -> Option<(i64, usize, u32)> {
    let mut i = pos;
    let neg = i < buf.len() && buf[i] == b'-';
    if neg {
        i += 1;
    }
    let start = i;
    let (v, i) = digit_run(buf, i, 0);
    let digits = (i - start) as u32;
    // 19 digits always fit a u64; more may have wrapped.
    if digits == 0 || digits > 19 {
        return None;
    }
    let v = if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        (v as i64).wrapping_neg()
    } else {
        i64::try_from(v).ok()?
    };
    Some((v, i, digits))
}

/// Powers of ten exactly representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal number, correctly rounded: `78189.20000000`, `10000`, `-0.00012359`, `0E-8`.
///
/// The common case (at most 19 significant-or-padding digits, no exponent, mantissa below 2^53)
/// is computed exactly as `mantissa / 10^frac`, one correctly rounded IEEE division (Clinger's
/// fast path); anything else goes to `fast_float2` over the whole cell.
#[inline(always)]
pub(crate) fn parse_f64(buf: &[u8], pos: usize) -> Option<(f64, usize)> {
    let mut i = pos;
    let neg = i < buf.len() && buf[i] == b'-';
    if neg {
        i += 1;
    }
    let int_start = i;
    let (mut mant, mut i) = digit_run(buf, i, 0);
    let mut digits = i - int_start;
    let mut frac = 0usize;
    if i < buf.len() && buf[i] == b'.' {
        i += 1;
        let frac_start = i;
        (mant, i) = digit_run(buf, i, mant);
        frac = i - frac_start;
        digits += frac;
    }
    if digits == 0 {
        return None;
    }
    let exponent = i < buf.len() && (buf[i] | 0x20) == b'e';
    if !exponent && digits <= 19 && mant <= (1u64 << 53) && frac < POW10.len() {
        let v = mant as f64 / POW10[frac];
        return Some((if neg { -v } else { v }, i));
    }
    parse_f64_slow(buf, pos)
}

/// Exponents, long mantissas: the whole cell through `fast_float2`.
#[cold]
#[inline(never)]
fn parse_f64_slow(buf: &[u8], pos: usize) -> Option<(f64, usize)> {
    let end = cell_end(buf, pos);
    let v: f64 = fast_float2::parse(&buf[pos..end]).ok()?;
    Some((v, end))
}

/// `true`/`false` in any case.
#[inline(always)]
pub(crate) fn parse_bool(buf: &[u8], pos: usize) -> Option<(bool, usize)> {
    let rest = &buf[pos..];
    // The archive's exact spellings first (spot `True`/`False`, futures `true`/`false`).
    match rest {
        [b't' | b'T', b'r', b'u', b'e', ..] => return Some((true, pos + 4)),
        [b'f' | b'F', b'a', b'l', b's', b'e', ..] => return Some((false, pos + 5)),
        _ => {}
    }
    if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"true") {
        Some((true, pos + 4))
    } else if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"false") {
        Some((false, pos + 5))
    } else {
        None
    }
}

#[inline]
fn two(b: &[u8]) -> Option<u32> {
    let h = b[0].wrapping_sub(b'0');
    let l = b[1].wrapping_sub(b'0');
    (h <= 9 && l <= 9).then_some(h as u32 * 10 + l as u32)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DD` at `pos`: µs since the epoch of that day's midnight, UTC.
#[inline]
pub(crate) fn parse_date(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let b = buf.get(pos..pos + 10)?;
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = two(&b[0..2])? as i64 * 100 + two(&b[2..4])? as i64;
    let m = two(&b[5..7])?;
    let d = two(&b[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400_000_000, pos + 10))
}

/// `YYYY-MM-DD HH:MM:SS` at `pos`, UTC: µs since the epoch.
#[inline]
pub(crate) fn parse_datetime(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let (day, _) = parse_date(buf, pos)?;
    let b = buf.get(pos + 10..pos + 19)?;
    if b[0] != b' ' || b[3] != b':' || b[6] != b':' {
        return None;
    }
    let (h, m, s) = (two(&b[1..3])?, two(&b[4..6])?, two(&b[7..9])?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let secs = (h * 3600 + m * 60 + s) as i64;
    Some((day + secs * 1_000_000, pos + 19))
}

/// An hour of day, `0`–`23`, one or two digits.
#[inline]
pub(crate) fn parse_hour(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let (v, end, digits) = parse_i64(buf, pos)?;
    (digits <= 2 && (0..24).contains(&v)).then_some((v, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Option<f64> {
        let (v, end) = parse_f64(s.as_bytes(), 0)?;
        (end == s.len()).then_some(v)
    }

    #[test]
    fn decimals_match_std() {
        for s in [
            "78189.20000000",
            "0.001",
            "10000",
            "-0.00012359",
            "0E-8",
            "-1E-8",
            "1.7E-7",
            "103513.5610000000000000",
            "8088539305.1839000000000000",
            "0.1",
            "9007199254740993",
            "12345678901234567890.5",
            "0.30000000000000004",
            "-0.0",
        ] {
            assert_eq!(f(s), Some(s.parse::<f64>().unwrap()), "{s}");
        }
        assert_eq!(f("0E-8"), Some(0.0));
        for bad in ["", "-", ".", "abc", "1.2.3", "1e", "nan"] {
            assert_eq!(f(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers() {
        let p = |s: &str| parse_i64(s.as_bytes(), 0);
        assert_eq!(p("1789430400003,"), Some((1789430400003, 13, 13)));
        assert_eq!(p("-1"), Some((-1, 2, 1)));
        assert_eq!(p("9223372036854775807"), Some((i64::MAX, 19, 19)));
        assert_eq!(p("-9223372036854775808"), Some((i64::MIN, 20, 19)));
        assert_eq!(p("9223372036854775808"), None);
        assert_eq!(p("12345678901234567890"), None);
        assert_eq!(p("x"), None);
        assert_eq!(p("-"), None);
    }

    #[test]
    fn datetimes() {
        let p = |s: &str| parse_datetime(s.as_bytes(), 0).map(|(v, _)| v);
        assert_eq!(p("1970-01-01 00:00:00"), Some(0));
        // 2026-09-15 00:00:06 = 1789430406 s.
        assert_eq!(p("2026-09-15 00:00:06"), Some(1_789_430_406_000_000));
        assert_eq!(p("2024-02-29 23:59:59"), Some(1_709_251_199_000_000));
        for bad in [
            "2023-02-29 00:00:00",
            "2026-13-01 00:00:00",
            "2026-09-15 24:00:00",
            "2026-09-15T00:00:00",
            "2026-09-15 00:00",
            "2026-9-15 00:00:00",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn booleans() {
        for (s, v) in [
            ("True", true),
            ("true", true),
            ("TRUE", true),
            ("False", false),
        ] {
            assert_eq!(parse_bool(s.as_bytes(), 0), Some((v, s.len())));
        }
        assert_eq!(parse_bool(b"yes", 0), None);
        assert_eq!(parse_bool(b"tru", 0), None);
    }

    #[test]
    fn time_units() {
        assert_eq!(TimeUnit::from_digits(13), Some(TimeUnit::Millis));
        assert_eq!(
            TimeUnit::Seconds.to_micros(1_789_430_400),
            1_789_430_400_000_000
        );
        assert_eq!(
            TimeUnit::Millis.to_micros(1_789_430_400_003),
            1_789_430_400_003_000
        );
        assert_eq!(
            TimeUnit::Nanos.to_micros(1_789_430_400_003_000_999),
            1_789_430_400_003_000
        );
        assert_eq!(TimeUnit::from_digits(12), None);
    }
}
