//! Canonical Kubernetes `resource.Quantity` strings for the two resources served: CPU in
//! nanocores (DecimalSI) and memory in bytes (BinarySI).
//!
//! The rules follow apimachinery's canonical form: a DecimalSI value moves every trailing factor
//! of ten into the exponent, rounds the exponent down to a multiple of three and picks the SI
//! suffix (`n`, `u`, `m`, ``, `k`, `M`, `G`, ...); a BinarySI value of magnitude below 1024 is
//! written as DecimalSI (so 1000 bytes is `1k`), otherwise every factor of 1024 goes into a
//! binary suffix (`Ki` .. `Ei`). Values above `i64::MAX` lose their last decimal digit, as
//! upstream's conversion from `uint64` does before building the quantity.
//!
//! Writes straight into the caller's buffer: no allocation.

/// Appends the canonical quantity of `nanocores` (scale 10^-9, DecimalSI): `487558164n`, `5m`,
/// `1`, `2k`, `0`.
pub fn write_cpu(out: &mut Vec<u8>, nanocores: u64) {
    write_decimal_si(out, u128::from(fit_int64(nanocores)), -9);
}

/// Appends the canonical quantity of `bytes` (BinarySI): `1024Ki` becomes `1Mi`, `1536` stays,
/// `1000` is `1k`, `0` is `0`.
pub fn write_memory(out: &mut Vec<u8>, bytes: u64) {
    let bytes = fit_int64(bytes);
    if bytes < 1024 {
        // Small values are shown as DecimalSI to avoid rounding or confusion.
        write_decimal_si(out, u128::from(bytes), 0);
        return;
    }
    let mut amount = bytes;
    let mut power = 0usize;
    while amount >= 1024 && amount.is_multiple_of(1024) {
        amount /= 1024;
        power += 1;
    }
    let mut itoa = itoa::Buffer::new();
    out.extend_from_slice(itoa.format(amount).as_bytes());
    // u64 holds at most 1024^6 * 15, so power <= 6 and the table covers it.
    const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    out.extend_from_slice(BINARY_SUFFIXES[power].as_bytes());
}

/// Upstream keeps quantities in an int64: larger unsigned values drop their last decimal digit
/// (and scale by ten), which is the same number as clearing that digit.
fn fit_int64(value: u64) -> u64 {
    if value > i64::MAX as u64 {
        value - value % 10
    } else {
        value
    }
}

/// Appends `mantissa * 10^exponent` in canonical DecimalSI form.
fn write_decimal_si(out: &mut Vec<u8>, mut mantissa: u128, mut exponent: i32) {
    if mantissa == 0 {
        out.push(b'0');
        return;
    }
    while mantissa >= 10 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    // Round the exponent down to a multiple of three; u128 cannot overflow for u64 inputs.
    let excess = exponent.rem_euclid(3);
    mantissa *= 10u128.pow(excess as u32);
    exponent -= excess;
    let mut itoa = itoa::Buffer::new();
    out.extend_from_slice(itoa.format(mantissa).as_bytes());
    let suffix: &[u8] = match exponent {
        -9 => b"n",
        -6 => b"u",
        -3 => b"m",
        0 => b"",
        3 => b"k",
        6 => b"M",
        9 => b"G",
        12 => b"T",
        15 => b"P",
        18 => b"E",
        // Unreachable for u64 nanocores (at most 10^10.3 cores) or bytes below 1024, but keep
        // the DecimalExponent form a quantity would fall back to rather than panic.
        other => {
            out.push(b'e');
            out.extend_from_slice(itoa.format(other).as_bytes());
            return;
        }
    };
    out.extend_from_slice(suffix);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(v: u64) -> String {
        let mut out = Vec::new();
        write_cpu(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn memory(v: u64) -> String {
        let mut out = Vec::new();
        write_memory(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cpu_nanocores_render_as_canonical_decimal_si() {
        let table: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1n"),
            (10, "10n"),
            (100, "100n"),
            (999, "999n"),
            (1_000, "1u"),
            (1_500, "1500n"),
            (10_000, "10u"),
            (487_558_164, "487558164n"),
            (9_559_630, "9559630n"),
            (5_000_000, "5m"),
            (5_100_000, "5100u"),
            (250_000_000, "250m"),
            (1_000_000_000, "1"),
            (1_500_000_000, "1500m"),
            (10_000_000_000, "10"),
            (100_000_000_000, "100"),
            (1_000_000_000_000, "1k"),
            (2_000_000_000_000, "2k"),
            (20_000_000_000_000, "20k"),
            (1_000_000_000_000_000, "1M"),
            (1_000_000_000_000_000_000, "1G"),
            (i64::MAX as u64, "9223372036854775807n"),
            (9_000_000_000_000_000_000, "9G"),
            // Above i64::MAX the last digit is dropped, as upstream does.
            (i64::MAX as u64 + 1, "9223372036854775800n"),
            (10_000_000_000_000_000_000, "10G"),
            (u64::MAX, "18446744073709551610n"),
        ];
        for &(v, want) in table {
            assert_eq!(cpu(v), want, "cpu {v}");
        }
    }

    #[test]
    fn memory_bytes_render_as_canonical_binary_si() {
        const KI: u64 = 1024;
        let table: &[(u64, &str)] = &[
            (0, "0"),
            (1, "1"),
            (100, "100"),
            (500, "500"),
            // Below 1024 the value is DecimalSI, so factors of 1000 take SI suffixes.
            (1_000, "1k"),
            (1_010, "1010"),
            (1_023, "1023"),
            (KI, "1Ki"),
            (1_025, "1025"),
            (1_536, "1536"),
            (2 * KI, "2Ki"),
            (1_000 * KI, "1000Ki"),
            (732_212 * KI, "732212Ki"),
            (22_244 * KI, "22244Ki"),
            (KI * KI, "1Mi"),
            (1_536 * KI, "1536Ki"),
            (1_000_000, "1000000"),
            (KI * KI * KI, "1Gi"),
            (3 * KI * KI * KI + KI, "3145729Ki"),
            (KI.pow(4), "1Ti"),
            (KI.pow(5), "1Pi"),
            (KI.pow(6), "1Ei"),
            (7 * KI.pow(6), "7Ei"),
            (i64::MAX as u64, "9223372036854775807"),
            // 2^63 exceeds i64::MAX, loses its last digit and with it every factor of 1024.
            (8 * KI.pow(6), "9223372036854775800"),
            (15 * KI.pow(6), "15Ei"),
            (u64::MAX, "18446744073709551610"),
        ];
        for &(v, want) in table {
            assert_eq!(memory(v), want, "memory {v}");
        }
    }

    #[test]
    fn canonical_cpu_parses_back_to_the_same_nanocores() {
        // Round trip through the suffix: every value up to i64::MAX must be exact.
        let mut v: u64 = 1;
        for _ in 0..2000 {
            let s = cpu(v);
            let (digits, scale) = match s.as_bytes().last() {
                Some(b'n') => (&s[..s.len() - 1], 1u128),
                Some(b'u') => (&s[..s.len() - 1], 1_000),
                Some(b'm') => (&s[..s.len() - 1], 1_000_000),
                Some(b'k') => (&s[..s.len() - 1], 1_000_000_000_000),
                Some(b'M') => (&s[..s.len() - 1], 1_000_000_000_000_000),
                Some(b'G') => (&s[..s.len() - 1], 1_000_000_000_000_000_000),
                _ => (&s[..], 1_000_000_000),
            };
            let parsed: u128 = digits.parse::<u128>().unwrap() * scale;
            assert_eq!(parsed, u128::from(v), "{s}");
            v = v.wrapping_mul(7).wrapping_add(v / 3 + 1) % (i64::MAX as u64);
        }
    }
}
