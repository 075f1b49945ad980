//! Go's text forms of values upstream puts on the wire: `time.Duration` strings
//! (`metav1.Duration`), RFC 3339 UTC seconds (`metav1.Time`), and `%q`-quoted strings in messages.
//!
//! Pure formatting into a caller's buffer: no allocation, no clock, no time-zone data. The civil
//! date is computed here from days since the epoch (proleptic Gregorian calendar), so no date
//! library is needed.

use crate::model::UnixNanos;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Appends `nanos` as Go's `time.Duration.String()` does: `0s`, `1.5µs`, `500ms`, `15.012s`,
/// `1m0.5s`, `2h0m0s`, with a leading `-` for negative values.
pub fn write_duration(out: &mut Vec<u8>, nanos: i64) {
    // Widest form is "-2562047h47m16.854775808s" (25 bytes); fill from the right.
    let mut buf = [0u8; 32];
    let mut w = buf.len();
    let negative = nanos < 0;
    let mut u = nanos.unsigned_abs();

    if u < NANOS_PER_SECOND as u64 {
        if u == 0 {
            out.extend_from_slice(b"0s");
            return;
        }
        // Below one second Go switches to the largest unit that keeps an integer part.
        let (unit, precision): (&[u8], u32) = if u < 1_000 {
            (b"ns", 0)
        } else if u < 1_000_000 {
            ("µs".as_bytes(), 3)
        } else {
            (b"ms", 6)
        };
        w -= unit.len();
        buf[w..w + unit.len()].copy_from_slice(unit);
        let (rest, next) = write_fraction(&mut buf[..w], u, precision);
        u = rest;
        w = next;
        w = write_uint(&mut buf[..w], u);
    } else {
        w -= 1;
        buf[w] = b's';
        let (rest, next) = write_fraction(&mut buf[..w], u, 9);
        u = rest;
        w = next;
        // u is now whole seconds.
        w = write_uint(&mut buf[..w], u % 60);
        u /= 60;
        if u > 0 {
            w -= 1;
            buf[w] = b'm';
            w = write_uint(&mut buf[..w], u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'h';
                w = write_uint(&mut buf[..w], u);
            }
        }
    }
    if negative {
        w -= 1;
        buf[w] = b'-';
    }
    out.extend_from_slice(&buf[w..]);
}

/// Writes the low `precision` decimal digits of `v` as a fraction ending at `buf.len()`, leaving
/// out trailing zeros (and the point when all are zero). Returns `v` without those digits and the
/// new write position.
fn write_fraction(buf: &mut [u8], mut v: u64, precision: u32) -> (u64, usize) {
    let mut w = buf.len();
    let mut printed = false;
    for _ in 0..precision {
        let digit = (v % 10) as u8;
        printed = printed || digit != 0;
        if printed {
            w -= 1;
            buf[w] = b'0' + digit;
        }
        v /= 10;
    }
    if printed {
        w -= 1;
        buf[w] = b'.';
    }
    (v, w)
}

/// Writes `v` in decimal ending at `buf.len()`; returns the new write position.
fn write_uint(buf: &mut [u8], mut v: u64) -> usize {
    let mut w = buf.len();
    loop {
        w -= 1;
        buf[w] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return w;
        }
    }
}

/// A civil (proleptic Gregorian, UTC) date and time, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl CivilTime {
    /// The UTC civil time of `nanos` since the epoch, truncated towards the past to the second
    /// (Go keeps sub-second nanoseconds non-negative, so -1 ns is 23:59:59 of the day before).
    pub fn from_unix_nanos(nanos: UnixNanos) -> Self {
        let seconds = nanos.div_euclid(NANOS_PER_SECOND);
        Self::from_unix_seconds(seconds)
    }

    pub fn from_unix_seconds(seconds: i64) -> Self {
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let of_day = seconds.rem_euclid(SECONDS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        CivilTime {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }
}

/// Converts days since 1970-01-01 to (year, month, day). Counts in 400-year eras starting on
/// March 1st, so the leap day is the last day of its "year" and needs no special case.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `nanos` as `metav1.Time` renders in JSON, without quotes: RFC 3339 in UTC, truncated to
/// the second (`2026-01-27T18:48:33Z`).
pub fn write_rfc3339(out: &mut Vec<u8>, nanos: UnixNanos) {
    out.extend_from_slice(&rfc3339(nanos));
}

/// The RFC 3339 form of `nanos` (see [`write_rfc3339`]) as a fixed array, for callers that stamp
/// the same time on many objects.
pub fn rfc3339(nanos: UnixNanos) -> [u8; 20] {
    let t = CivilTime::from_unix_nanos(nanos);
    // An i64 of nanoseconds spans years 1677..=2262, so the year always has exactly four digits,
    // as Go's layout writes it.
    let y = t.year as u32;
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    let [y1, y2] = two(y / 100);
    let [y3, y4] = two(y % 100);
    let [mo1, mo2] = two(t.month);
    let [d1, d2] = two(t.day);
    let [h1, h2] = two(t.hour);
    let [mi1, mi2] = two(t.minute);
    let [s1, s2] = two(t.second);
    [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2,
        b'Z',
    ]
}

/// Appends `s` quoted as Go's `%q` (`strconv.Quote`) writes it, for the messages upstream builds
/// with it (`<resource> "<name>" not found`, field errors). ASCII follows Go exactly; beyond ASCII, C1 controls and the common invisible format and
/// space characters are escaped and the rest is kept (Go consults full Unicode tables for that).
pub fn push_go_quoted(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{80}'..='\u{a0}'
            | '\u{ad}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{206f}'
            | '\u{3000}'
            | '\u{e000}'..='\u{f8ff}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(nanos: i64) -> String {
        let mut out = Vec::new();
        write_duration(&mut out, nanos);
        String::from_utf8(out).unwrap()
    }

    fn rfc3339(nanos: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, nanos);
        String::from_utf8(out).unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn durations_read_as_go_prints_them() {
        let table: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_001, "1.001µs"),
            (999_999, "999.999µs"),
            (1_000_000, "1ms"),
            (1_100_000, "1.1ms"),
            (1_000_001, "1.000001ms"),
            (500_000_000, "500ms"),
            (999_999_999, "999.999999ms"),
            (S, "1s"),
            (S + 1, "1.000000001s"),
            (15_012_000_000, "15.012s"),
            (15 * S, "15s"),
            (59 * S, "59s"),
            (60 * S, "1m0s"),
            (60 * S + 500_000_000, "1m0.5s"),
            (90 * S, "1m30s"),
            (3599 * S, "59m59s"),
            (3600 * S, "1h0m0s"),
            (3661 * S, "1h1m1s"),
            (100 * 3600 * S + 1, "100h0m0.000000001s"),
            (-1, "-1ns"),
            (-1_500, "-1.5µs"),
            (-60 * S, "-1m0s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for &(nanos, want) in table {
            assert_eq!(duration(nanos), want, "duration of {nanos} ns");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_truncated_to_seconds() {
        let table: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (999_999_999, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (-S, "1969-12-31T23:59:59Z"),
            (-S - 1, "1969-12-31T23:59:58Z"),
            (1_769_539_713 * S + 123, "2026-01-27T18:48:33Z"),
            // Leap years: divisible by 4, not by 100 unless by 400.
            (951_782_400 * S, "2000-02-29T00:00:00Z"),
            (951_868_800 * S, "2000-03-01T00:00:00Z"),
            (1_709_164_800 * S, "2024-02-29T00:00:00Z"),
            (1_709_251_199 * S, "2024-02-29T23:59:59Z"),
            (1_677_628_800 * S, "2023-03-01T00:00:00Z"),
            (4_107_456_000 * S, "2100-02-28T00:00:00Z"),
            (4_107_542_400 * S, "2100-03-01T00:00:00Z"),
            (-2_203_977_600 * S, "1900-02-28T00:00:00Z"),
            (-2_203_891_200 * S, "1900-03-01T00:00:00Z"),
            (946_684_799 * S, "1999-12-31T23:59:59Z"),
            (946_684_800 * S, "2000-01-01T00:00:00Z"),
            (i64::MAX, "2262-04-11T23:47:16Z"),
            (i64::MIN, "1677-09-21T00:12:43Z"),
        ];
        for &(nanos, want) in table {
            assert_eq!(rfc3339(nanos), want, "time of {nanos} ns");
        }
    }

    /// Days since the epoch by counting whole years and months, the slow obvious way.
    fn days_by_counting(year: i64, month: u32, day: u32) -> i64 {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0i64;
        if year >= 1970 {
            for y in 1970..year {
                days += if leap(y) { 366 } else { 365 };
            }
        } else {
            for y in year..1970 {
                days -= if leap(y) { 366 } else { 365 };
            }
        }
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        days += lengths[..(month - 1) as usize].iter().sum::<i64>();
        days + i64::from(day) - 1
    }

    #[test]
    fn civil_dates_agree_with_counting_days_across_four_centuries() {
        // Every 7th day from 1600 to 2400 covers every month, leap day and century rule.
        let start = days_by_counting(1600, 1, 1);
        let end = days_by_counting(2400, 12, 31);
        let mut d = start;
        while d <= end {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_by_counting(y, m, day), d, "{y}-{m}-{day}");
            d += 7;
        }
        for (y, m, d) in [
            (1600, 2, 29),
            (1700, 3, 1),
            (2000, 2, 29),
            (2400, 2, 29),
            (2023, 12, 31),
        ] {
            assert_eq!(civil_from_days(days_by_counting(y, m, d)), (y, m, d));
        }
    }

    #[test]
    fn strings_are_quoted_as_go_quotes_them() {
        let mut quoted = String::new();
        push_go_quoted(&mut quoted, "a\"b\\c\n\u{1}\u{7f}é\u{200b}");
        assert_eq!(quoted, r#""a\"b\\c\n\x01\x7fé\u200b""#);
    }
}
