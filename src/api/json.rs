//! JSON string escaping exactly as Go's `encoding/json` does it with HTML escaping on (the
//! Kubernetes API encoder's setting).
//!
//! Go writes `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` in short form, every other control byte as
//! `\u00XX` (lowercase hex), `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`, and the line and paragraph
//! separators U+2028 and U+2029 as `\u2028` and `\u2029`; everything else passes through as UTF-8.
//! Names and label values almost never need any of this, so a string is first scanned with a
//! byte table and copied in one piece when nothing needs escaping.

/// What a byte needs: 0 = copy, 1 = escape, 2 = first byte of a possible U+2028/U+2029.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = 1;
        i += 1;
    }
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table[b'<' as usize] = 1;
    table[b'>' as usize] = 1;
    table[b'&' as usize] = 1;
    table[0xE2] = 2;
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_str_contents(out, s);
    out.push(b'"');
}

/// Appends the escaped contents of `s`, without quotes.
pub fn write_str_contents(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    write_escaped(out, bytes);
}

/// True when no byte of `bytes` needs a second look. Works eight bytes at a time on a `u64`
/// ("SWAR"): a per-byte table lookup or compare chain was most of the render time, since label
/// keys and values are mostly shorter than a vector register.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_has_special(u64::from_le_bytes(word)) {
            return false;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return true;
    }
    // Pad with a byte that never needs escaping.
    let mut word = [b'A'; 8];
    word[..rest.len()].copy_from_slice(rest);
    !word_has_special(u64::from_le_bytes(word))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is below 0x20 or one of `"`, `\`, `<`, `>`, `&`, 0xE2. Each test is
/// the classic zero-byte check, exact as a yes/no answer (only the flagged position may be off).
#[inline(always)]
fn word_has_special(x: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let has_byte = |c: u8| has_zero(x ^ (ONES * u64::from(c)));
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit only for them (x < 0x80).
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    (below_space
        | has_byte(b'"')
        | has_byte(b'\\')
        | has_byte(b'<')
        | has_byte(b'>')
        | has_byte(b'&')
        | has_byte(0xE2))
        != 0
}

#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match CLASS[b as usize] {
            0 => {
                i += 1;
                continue;
            }
            2 => {
                // U+2028 is E2 80 A8 and U+2029 is E2 80 A9; other E2 sequences pass through.
                let separator = bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(0xA8) | Some(0xA9));
                if !separator {
                    i += 1;
                    continue;
                }
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_strings_are_copied_unchanged() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(
            quoted("kube-system/coredns.1_x"),
            r#""kube-system/coredns.1_x""#
        );
        assert_eq!(quoted("µs é 日本 😀 \u{7f}"), "\"µs é 日本 😀 \u{7f}\"");
    }

    #[test]
    fn special_characters_are_escaped_as_go_does() {
        let table: &[(&str, &str)] = &[
            ("\"", r#""\"""#),
            ("\\", r#""\\""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("<a&b>", r#""\u003ca\u0026b\u003e""#),
            ("x\u{2028}y\u{2029}z", r#""x\u2028y\u2029z""#),
            // Other characters starting with byte E2 are not separators.
            ("\u{2027}\u{202a}\u{20ac}", "\"\u{2027}\u{202a}\u{20ac}\""),
            ("a\"b\\c", r#""a\"b\\c""#),
        ];
        for &(input, want) in table {
            assert_eq!(quoted(input), want, "{input:?}");
        }
    }

    #[test]
    fn the_word_test_flags_exactly_the_table_bytes_at_every_position() {
        for b in 0..=255u8 {
            for position in 0..8 {
                for filler in [b'A', 0xFF, 0x20, 0x80] {
                    let mut word = [filler; 8];
                    word[position] = b;
                    let want = word.iter().any(|&x| CLASS[x as usize] != 0);
                    assert_eq!(word_has_special(u64::from_le_bytes(word)), want, "{word:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_fast_scan_agrees_with_the_byte_table(s in "[a-z<&>\"\\\\\u{0}-\u{1f} \u{7f}-\u{ff}\u{2028}\u{20ac}é]{0,40}") {
            let by_table = !s.bytes().any(|b| CLASS[b as usize] != 0);
            prop_assert_eq!(is_plain(s.as_bytes()), by_table);
        }

        #[test]
        fn any_string_round_trips_through_a_json_parser(s in any::<String>()) {
            let text = quoted(&s);
            let parsed: String = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(parsed, s);
            let unescaped = text.contains('<') || text.contains('\u{2028}');
            prop_assert!(!unescaped, "left unescaped in {:?}", text);
        }
    }
}
