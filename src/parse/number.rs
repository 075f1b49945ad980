//! Numbers of the text format: sample values (floats) and timestamps (integer milliseconds).
//!
//! Owns only the conversion of one already-delimited token; it never looks past the token.
//!
//! Why a fast path of our own instead of a float crate: nearly every value a kubelet writes is a
//! short decimal (`4.710169`, `1.253376e+07`, `1633253812125`) whose digits fit in 53 bits and whose
//! decimal exponent is within +-22. For those, one IEEE multiplication or division of two exactly
//! representable doubles is correctly rounded (Clinger's fast path), so the result is bit-identical to
//! `str::parse::<f64>` while skipping its UTF-8 check and general machinery. Everything else (`NaN`,
//! `+Inf`, long mantissas, huge exponents) goes to `str::parse::<f64>`, which is itself an
//! Eisel-Lemire implementation, so a crate like `fast-float2` would buy nothing over it on the slow
//! path and would add a dependency. A property test checks both paths agree with `str::parse`.

/// Exact powers of ten that a double represents without rounding (10^0 ..= 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest integer below which every integer is an exact double.
const MAX_EXACT_MANTISSA: u64 = 1 << 53;

/// Parses a sample value as Go's `strconv.ParseFloat` would for what a kubelet writes: decimal and
/// exponent forms, `NaN`, `Inf`/`+Inf`/`-Inf` (any case). `None` when the token is not a float.
pub fn parse_f64(token: &[u8]) -> Option<f64> {
    match fast_f64(token) {
        Some(value) => Some(value),
        None => slow_f64(token),
    }
}

/// Clinger's fast path; `None` means "not handled here", not "invalid".
#[inline]
fn fast_f64(token: &[u8]) -> Option<f64> {
    match fast_f64_prefix(token)? {
        (value, len) if len == token.len() => Some(value),
        _ => None,
    }
}

/// Clinger's fast path over the longest float at the start of `bytes`: the value and how many
/// bytes it took. `None` means "not handled here"; the caller decides what the bytes after the
/// float may be.
#[inline(always)]
fn fast_f64_prefix(bytes: &[u8]) -> Option<(f64, usize)> {
    let (negative, sign_len) = match bytes.first()? {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let digits = &bytes[sign_len..];
    let (mantissa, int_len) = accumulate_digits(digits, 0);
    let mut i = int_len;
    let mut mantissa = mantissa;
    let mut digit_count = int_len;
    let mut exponent: i32 = 0;
    if digits.get(i) == Some(&b'.') {
        let (with_fraction, frac_len) = accumulate_digits(&digits[i + 1..], mantissa);
        mantissa = with_fraction;
        digit_count += frac_len;
        // At most 19 digits are kept (checked below), so a longer fraction only has to not
        // overflow this conversion; it then leaves the fast path.
        exponent = -i32::try_from(frac_len).ok()?;
        i += 1 + frac_len;
    }
    // 19 decimal digits always fit in a u64, so the wrapping arithmetic above never wrapped.
    if digit_count == 0 || digit_count > 19 {
        return None;
    }
    if i < digits.len() && (digits[i] == b'e' || digits[i] == b'E') {
        i += 1;
        let (exp_negative, start) = match digits.get(i) {
            Some(b'-') => (true, i + 1),
            Some(b'+') => (false, i + 1),
            _ => (false, i),
        };
        i = start;
        let mut exp: i32 = 0;
        let mut exp_digits = 0;
        while i < digits.len() && digits[i].is_ascii_digit() {
            // Bounded so a long exponent cannot overflow; anything this large leaves the fast path.
            if exp_digits >= 4 {
                return None;
            }
            exp = exp * 10 + i32::from(digits[i] - b'0');
            exp_digits += 1;
            i += 1;
        }
        if exp_digits == 0 {
            return None;
        }
        exponent += if exp_negative { -exp } else { exp };
    }
    if mantissa > MAX_EXACT_MANTISSA {
        return None;
    }
    let magnitude = mantissa as f64;
    let value = if exponent >= 0 {
        *POW10.get(usize::try_from(exponent).ok()?)? * magnitude
    } else {
        magnitude / *POW10.get(usize::try_from(-exponent).ok()?)?
    };
    Some((if negative { -value } else { value }, sign_len + i))
}

/// The end of a sample line in the one spacing a kubelet writes: a value alone, or a value, one
/// space and a timestamp. `None` means only "not that shape" (other spacing, or a token either
/// parser rejects); a caller then splits the tokens itself. When this returns a pair, that split
/// gives the same pair.
///
/// One pass: the float's own scan finds where it ends, so the space is not searched for first.
#[inline]
pub fn parse_value_timestamp(tail: &[u8]) -> Option<(f64, Option<i64>)> {
    if let Some((value, len)) = fast_f64_prefix(tail) {
        match tail.get(len) {
            None => return Some((value, None)),
            Some(b' ') => return Some((value, Some(parse_i64(&tail[len + 1..])?))),
            // A byte the fast path does not take (`1.5x`, or a float it leaves to the slow
            // path): the split below decides.
            Some(_) => {}
        }
    }
    split_value_timestamp(tail)
}

/// The general rule [`parse_value_timestamp`] must agree with: split at the first space, parse
/// each token. Its fallback, and what the tests compare it against.
#[cold]
fn split_value_timestamp(tail: &[u8]) -> Option<(f64, Option<i64>)> {
    match memchr::memchr(b' ', tail) {
        Some(space) => Some((
            parse_f64(&tail[..space])?,
            Some(parse_i64(&tail[space + 1..])?),
        )),
        None => Some((parse_f64(tail)?, None)),
    }
}

/// Appends the leading decimal digits of `bytes` to `mantissa`; returns it and how many digits were
/// read. Wraps on more than 19 digits, which callers reject by the count.
///
/// Eight digits per step while eight are there: a CPU counter's fraction (`0.115197416`) and a
/// start time's (`1.7000123456789e+09`) have nine or more, on most lines of a body.
#[inline(always)]
fn accumulate_digits(bytes: &[u8], mut mantissa: u64) -> (u64, usize) {
    let mut count = 0;
    let mut rest = bytes;
    while let Some((word, after)) = rest.split_first_chunk::<8>() {
        let Some(eight) = eight_digits(u64::from_le_bytes(*word)) else {
            break;
        };
        // Modulo 2^64 this is the same as eight steps of the loop below.
        mantissa = mantissa
            .wrapping_mul(100_000_000)
            .wrapping_add(eight as u64);
        count += 8;
        rest = after;
    }
    for &byte in rest {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
        count += 1;
    }
    (mantissa, count)
}

#[cold]
fn slow_f64(token: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(token).ok()?;
    // `str::parse` accepts `inf`, `infinity` and `nan` in any case, with a sign, as Go does; it also
    // rejects the empty string and a lone sign.
    text.parse::<f64>().ok()
}

/// Parses a timestamp in integer milliseconds (optionally signed). `None` on anything else,
/// including overflow.
#[inline]
pub fn parse_i64(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    if digits.is_empty() {
        return None;
    }
    // 18 digits cannot overflow an i64, so the common case (13-digit millisecond timestamps)
    // needs no checked arithmetic.
    if digits.len() <= 18 {
        let mut value: i64 = 0;
        let mut rest = digits;
        // Eight digits per step: a millisecond timestamp is 13 digits on every line of a body.
        while let Some((word, after)) = rest.split_first_chunk::<8>() {
            value = value * 100_000_000 + eight_digits(u64::from_le_bytes(*word))?;
            rest = after;
        }
        for &byte in rest {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        return Some(if negative { -value } else { value });
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        // Accumulating negatively reaches i64::MIN without overflow.
        value = value.checked_mul(10)?.checked_sub(i64::from(byte - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Eight ASCII digits, first digit in the lowest byte, as their value; `None` if any byte is not
/// a digit.
#[inline(always)]
fn eight_digits(word: u64) -> Option<i64> {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // A digit is 0x30..=0x39: high nibble 3, and adding 6 keeps it there (0x3a..0x3f would not).
    // Adding 6 to a byte whose high nibble is 3 cannot carry into the next byte, and a byte whose
    // high nibble is not 3 already fails the first test.
    if word & HIGH_NIBBLES != ZEROS
        || word.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES != ZEROS
    {
        return None;
    }
    let mut x = word - ZEROS;
    // Pairs, then quads, then the eight: each step multiplies the earlier (lower) half by its
    // place value and adds the later one.
    x = (x.wrapping_mul(10 << 8 | 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    x = (x.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    x = x.wrapping_mul(10_000 << 32 | 1) >> 32;
    // At most 99,999,999.
    Some(x as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn std_parse(text: &str) -> Option<f64> {
        text.parse::<f64>().ok()
    }

    fn same(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(x), Some(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn kubelet_style_values_parse_exactly() {
        for text in [
            "4.710169",
            "1.253376e+07",
            "1.6332537806635373e+09",
            "357.35491",
            "0",
            "-0",
            "1e-3",
            "1E3",
            ".5",
            "5.",
            "+1.5",
            "123456789012345678",
        ] {
            assert!(same(parse_f64(text.as_bytes()), std_parse(text)), "{text}");
        }
    }

    #[test]
    fn special_values_are_accepted_in_any_case() {
        assert!(parse_f64(b"NaN").is_some_and(f64::is_nan));
        assert!(parse_f64(b"nan").is_some_and(f64::is_nan));
        assert_eq!(parse_f64(b"+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"Inf"), Some(f64::INFINITY));
    }

    #[test]
    fn malformed_floats_are_rejected() {
        for text in [
            "", "-", "+", ".", "e5", "1e", "1e+", "1.2.3", "1x", "0x10", "1_000", "--1", "1 2",
        ] {
            assert_eq!(parse_f64(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn timestamps_parse_and_overflow_is_rejected() {
        assert_eq!(parse_i64(b"1633253812125"), Some(1_633_253_812_125));
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"+5"), Some(5));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"12.5"), None);
    }

    #[test]
    fn a_non_digit_anywhere_in_a_timestamp_rejects_it() {
        // Every position of an eight-byte step and of the tail, with the bytes just outside
        // '0'..='9' and ones whose low nibble is a digit.
        let digits = *b"1633253812125";
        for at in 0..digits.len() {
            for bad in [b'/', b':', b' ', b'a', 0x10, 0x40, 0xb3, 0xff] {
                let mut token = digits;
                token[at] = bad;
                assert_eq!(
                    parse_i64(&token),
                    None,
                    "{:?}",
                    String::from_utf8_lossy(&token)
                );
            }
        }
        assert_eq!(parse_i64(b"00000000"), Some(0));
        assert_eq!(parse_i64(b"99999999"), Some(99_999_999));
        assert_eq!(
            parse_i64(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
    }

    fn same_pair(a: Option<(f64, Option<i64>)>, b: Option<(f64, Option<i64>)>) -> bool {
        same(a.map(|(x, _)| x), b.map(|(y, _)| y)) && a.map(|(_, s)| s) == b.map(|(_, t)| t)
    }

    #[test]
    fn value_and_timestamp_split_like_the_tokens() {
        for tail in [
            "4.710169 1633253812125",
            "1.253376e+07 1633253812125",
            "0",
            "NaN 5",
            "+Inf",
            "1.5e 12",
            "1.5x 12",
            "1.5  12",
            "1.5 12 ",
            "1.5 ",
            " 1.5",
            "1.5 x",
            "12345678901234567890 1",
            "",
        ] {
            let got = parse_value_timestamp(tail.as_bytes());
            assert!(
                same_pair(got, split_value_timestamp(tail.as_bytes())),
                "{tail:?}: {got:?}"
            );
        }
        assert_eq!(
            parse_value_timestamp(b"4.5 1633253812125"),
            Some((4.5, Some(1_633_253_812_125)))
        );
    }

    proptest! {
        #[test]
        fn value_and_timestamp_agree_with_the_split(tail in "[0-9eE+.Na -]{0,24}") {
            let got = parse_value_timestamp(tail.as_bytes());
            prop_assert!(same_pair(got, split_value_timestamp(tail.as_bytes())), "{:?}", tail);
        }

        #[test]
        fn fast_path_agrees_with_std_on_any_decimal(
            int in "[0-9]{0,21}",
            frac in proptest::option::of("[0-9]{0,21}"),
            exp in proptest::option::of(-40i32..40),
            sign in proptest::sample::select(vec!["", "-", "+"]),
        ) {
            let mut text = format!("{sign}{int}");
            if let Some(frac) = frac {
                text.push('.');
                text.push_str(&frac);
            }
            if let Some(exp) = exp {
                text.push_str(&format!("e{exp:+}"));
            }
            prop_assert!(same(parse_f64(text.as_bytes()), std_parse(&text)), "{}", text);
        }

        #[test]
        fn any_double_survives_display_and_exponent_forms(value in any::<f64>()) {
            for text in [format!("{value}"), format!("{value:e}"), format!("{value:?}")] {
                prop_assert!(same(parse_f64(text.as_bytes()), std_parse(&text)), "{}", text);
            }
        }

        #[test]
        fn any_i64_round_trips(value in any::<i64>()) {
            prop_assert_eq!(parse_i64(value.to_string().as_bytes()), Some(value));
        }
    }
}
