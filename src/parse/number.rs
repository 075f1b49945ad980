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
    let (negative, digits) = match token.first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let mut mantissa: u64 = 0;
    let mut digit_count = 0usize;
    let mut exponent: i32 = 0;
    let mut i = 0;
    while i < digits.len() && digits[i].is_ascii_digit() {
        mantissa = mantissa
            .wrapping_mul(10)
            .wrapping_add(u64::from(digits[i] - b'0'));
        digit_count += 1;
        i += 1;
    }
    if i < digits.len() && digits[i] == b'.' {
        i += 1;
        while i < digits.len() && digits[i].is_ascii_digit() {
            mantissa = mantissa
                .wrapping_mul(10)
                .wrapping_add(u64::from(digits[i] - b'0'));
            digit_count += 1;
            exponent -= 1;
            i += 1;
        }
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
    if i != digits.len() || mantissa > MAX_EXACT_MANTISSA {
        return None;
    }
    let magnitude = mantissa as f64;
    let value = if exponent >= 0 {
        *POW10.get(usize::try_from(exponent).ok()?)? * magnitude
    } else {
        magnitude / *POW10.get(usize::try_from(-exponent).ok()?)?
    };
    Some(if negative { -value } else { value })
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
        for &byte in digits {
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

    proptest! {
        #[test]
        fn fast_path_agrees_with_std_on_any_decimal(
            int in "[0-9]{0,12}",
            frac in proptest::option::of("[0-9]{0,12}"),
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
