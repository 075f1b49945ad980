//! Prometheus text exposition format 0.0.4, lexed in place over the body bytes.
//!
//! Owns line splitting, the split of a line into name / label block / value / timestamp, and label
//! iteration. Everything it yields borrows from the body; the only allocation is for a label value
//! that contains a backslash escape. It knows no metric names: deciding what a sample means is the
//! decoder's job.
//!
//! Cost model, which is why the API is split in stages: [`Lexer::next_entry`] finds the line end
//! (`memchr`) and the metric name only, so a caller can drop a series it does not want before
//! paying for anything else; a caller that wants only a few names can skip even the name scan with
//! [`SeriesLine::with_name`] (one comparison per candidate). [`SeriesLine::sample`] then finds the end of the label block from the
//! line's end (`memrchr` for `}`: neither the value nor the timestamp can contain one) and parses the
//! value and timestamp. Labels are parsed only when [`LabelBlock::iter`] is walked. Every step is a
//! single forward or backward pass over its part of the line, so any input, including a
//! multi-megabyte line, costs time linear in its length.

use std::borrow::Cow;

use memchr::{memchr, memchr2, memrchr};

use super::number::{parse_f64, parse_i64, parse_value_timestamp};

/// Why a line is not a well-formed sample. The decoder counts these as skip reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("metric name is missing or has a character outside [a-zA-Z0-9_:]")]
    InvalidName,
    #[error("label set has no closing brace")]
    UnclosedLabels,
    #[error("label name is missing or has a character outside [a-zA-Z0-9_]")]
    InvalidLabelName,
    #[error("label name is not followed by '=' and a quoted value")]
    MissingLabelValue,
    #[error("label value has no closing quote")]
    UnterminatedQuote,
    #[error("label pair is followed by something other than ',' or the end of the set")]
    MissingSeparator,
    #[error("label value is not valid UTF-8")]
    InvalidUtf8,
    #[error("sample has no value")]
    MissingValue,
    #[error("sample value is not a float")]
    InvalidValue,
    #[error("timestamp is not an integer number of milliseconds")]
    InvalidTimestamp,
    #[error("unexpected data after the timestamp")]
    TrailingData,
}

/// One line, classified by its first token only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Entry<'a> {
    /// Empty or only blanks.
    Blank,
    /// `# HELP`, `# TYPE` or any other comment; the bytes after `#`.
    Comment(&'a [u8]),
    /// A line that starts with a valid metric name.
    Series(SeriesLine<'a>),
    /// A line that is neither of the above.
    Invalid(LexError),
}

/// A sample line whose name is known and whose rest is not parsed yet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesLine<'a> {
    pub name: &'a str,
    /// Everything after the name: blanks, an optional label block, value, optional timestamp.
    rest: &'a [u8],
}

/// One sample, borrowed from the body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: LabelBlock<'a>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
}

/// The raw bytes between `{` and `}`; parsed only when iterated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelBlock<'a> {
    raw: &'a [u8],
}

/// One label pair. The value borrows from the body unless it had to be unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

/// The three labels the kubelet writes on every container series, in the order it writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeletContainerLabels<'a> {
    pub container: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
}

/// Iterates the lines of a body and classifies them. Also an iterator of fully lexed samples
/// (comments and blank lines skipped, labels validated), which is what a generic consumer wants.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    rest: &'a [u8],
}

/// Splits a body into lines on `\n`, dropping one trailing `\r` from each (CRLF bodies), and
/// yielding a last line that has no newline.
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

/// Iterator over the pairs of a [`LabelBlock`]. Stops after the first error.
#[derive(Clone, Debug)]
pub struct LabelIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

// === helpers ===

/// Bytes allowed in a metric name after its first byte, `[a-zA-Z0-9_:]`, as a bitmask over ASCII.
/// A mask in a register instead of a table in memory: the name loops were the hottest code of a
/// decode, and the table version reloaded its address on every byte.
const METRIC_NAME_BYTES: u128 = ascii_mask(true);
/// Bytes allowed in a label name after its first byte: `[a-zA-Z0-9_]`.
const LABEL_NAME_BYTES: u128 = ascii_mask(false);

const fn ascii_mask(colon: bool) -> u128 {
    let mut mask = 0u128;
    let mut byte = 0u8;
    while byte < 128 {
        if byte.is_ascii_alphanumeric() || byte == b'_' || (colon && byte == b':') {
            mask |= 1 << byte;
        }
        byte += 1;
    }
    mask
}

#[inline(always)]
fn in_mask(byte: u8, mask: u128) -> bool {
    byte < 128 && (mask >> byte) & 1 == 1
}

#[inline]
fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

#[inline]
fn skip_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Splits off the leading token (up to the first blank or the end).
#[inline]
fn split_token(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes
        .iter()
        .position(|&b| is_blank(b))
        .unwrap_or(bytes.len());
    bytes.split_at(end)
}

/// Length of the leading name made of bytes in `mask`, not starting with a digit.
///
/// Eight bytes at a time while eight remain: this scan was a third of all decode instructions as a
/// byte loop (label names are scanned on every container line), and its exit branch mispredicts
/// once per name whatever its length.
#[inline]
fn name_len(bytes: &[u8], mask: u128) -> usize {
    match bytes.first() {
        Some(first) if !first.is_ascii_digit() => {}
        _ => return 0,
    }
    let colon = in_mask(b':', mask);
    let mut len = 0;
    while let Some(word) = bytes[len..].first_chunk::<8>() {
        let invalid = !name_bytes_in_word(u64::from_le_bytes(*word), colon) & SWAR_HIGH;
        if invalid != 0 {
            // Little-endian: the lowest set bit belongs to the first invalid byte.
            return len + (invalid.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    let tail = &bytes[len..];
    len + tail
        .iter()
        .position(|&b| !in_mask(b, mask))
        .unwrap_or(tail.len())
}

const SWAR_ONES: u64 = 0x0101_0101_0101_0101;
const SWAR_HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x` (each below 0x80): high bit set iff the byte is `>= low`. No carry crosses a
/// byte because `0x7f + (0x80 - low) <= 0xff` for any `low >= 0`.
#[inline(always)]
fn swar_at_least(x: u64, low: u8) -> u64 {
    x.wrapping_add(SWAR_ONES * u64::from(0x80 - low))
}

/// Per byte of `x` (each below 0x80): high bit set iff the byte is `> high`.
#[inline(always)]
fn swar_above(x: u64, high: u8) -> u64 {
    x.wrapping_add(SWAR_ONES * u64::from(0x7f - high))
}

#[inline(always)]
fn swar_in_range(x: u64, low: u8, high: u8) -> u64 {
    swar_at_least(x, low) & !swar_above(x, high)
}

/// High bit of each byte set iff that byte is a name byte (`[a-zA-Z0-9_]`, plus `:` if `colon`).
#[inline(always)]
fn name_bytes_in_word(word: u64, colon: bool) -> u64 {
    let ascii = !word & SWAR_HIGH;
    let x = word & !SWAR_HIGH;
    // Setting bit 5 maps exactly A-Z onto a-z among the bytes that can land in a-z.
    let lower = x | (SWAR_ONES * 0x20);
    let mut valid = swar_in_range(lower, b'a', b'z')
        | swar_in_range(x, b'0', b'9')
        | swar_in_range(x, b'_', b'_');
    if colon {
        valid |= swar_in_range(x, b':', b':');
    }
    valid & ascii
}

/// `a == b`, compared eight bytes at a time in line. The strings a decode compares (series
/// names, and label values against the ones of the line before) are a few dozen bytes of a body
/// that is already in cache, where a call into the C library's `memcmp` cost more than the bytes.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let len = a.len();
    if len < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |bytes: &[u8], at: usize| {
        // `at + 8 <= len` at both call sites.
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]))
    };
    let mut at = 0;
    while at + 8 < len {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the words above when `len` is not a multiple of 8.
    word(a, len - 8) == word(b, len - 8)
}

/// A name whose bytes all passed [`name_len`] with one of the masks above.
#[inline]
fn ascii_name(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: both name masks admit only ASCII letters, digits, `_` and `:` (bytes >= 128 are
    // rejected by `in_mask`), and callers pass only a prefix `name_len` measured with one of them,
    // or a `&'static str` name; ASCII is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// A label value as `&str`, or `InvalidUtf8`. Kubernetes names are ASCII, so the common case is an
/// inlined ASCII check instead of a call into the general UTF-8 validator (it was a fifth of the
/// decode time).
#[inline]
fn value_str(bytes: &[u8]) -> Result<&str, LexError> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8, checked on the line above.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).map_err(|_| LexError::InvalidUtf8)
    }
}

// === impl Lines ===

impl<'a> Lines<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Lines { rest: body }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let line = match memchr(b'\n', self.rest) {
            Some(end) => {
                let line = &self.rest[..end];
                self.rest = &self.rest[end + 1..];
                line
            }
            None => std::mem::take(&mut self.rest),
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

// === impl Lexer ===

impl<'a> Lexer<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Lexer { rest: body }
    }

    /// The next line, classified by its first token; `None` at the end of the body.
    #[inline]
    pub fn next_entry(&mut self) -> Option<Entry<'a>> {
        let mut lines = Lines { rest: self.rest };
        let line = lines.next()?;
        self.rest = lines.rest;
        Some(classify(line))
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<Sample<'a>, LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_entry()? {
                Entry::Blank | Entry::Comment(_) => continue,
                Entry::Invalid(error) => return Some(Err(error)),
                Entry::Series(line) => {
                    let sample = line.sample().and_then(|sample| {
                        for label in sample.labels.iter() {
                            label?;
                        }
                        Ok(sample)
                    });
                    return Some(sample);
                }
            }
        }
    }
}

/// Classifies one line (without its newline) by its first token.
#[inline]
pub fn classify(line: &[u8]) -> Entry<'_> {
    let line = skip_blanks(line);
    match line.first() {
        None => return Entry::Blank,
        Some(b'#') => return Entry::Comment(&line[1..]),
        Some(_) => {}
    }
    let len = name_len(line, METRIC_NAME_BYTES);
    if len == 0 {
        return Entry::Invalid(LexError::InvalidName);
    }
    let (name, rest) = line.split_at(len);
    // The name must end at a label block, a blank, or the line's end (which `sample` reports as a
    // missing value); anything else means a byte that is not allowed in a name.
    if let Some(&next) = rest.first() {
        if next != b'{' && !is_blank(next) {
            return Entry::Invalid(LexError::InvalidName);
        }
    }
    Entry::Series(SeriesLine {
        name: ascii_name(name),
        rest,
    })
}

// === impl SeriesLine ===

impl<'a> SeriesLine<'a> {
    /// The line as a sample of `name` if it starts with exactly that name, followed by a label block, a blank or the end. Lets a caller that only wants a few series
    /// test for them with one comparison each instead of scanning the name byte by byte.
    #[inline]
    pub fn with_name(line: &'a [u8], name: &'static str) -> Option<SeriesLine<'a>> {
        let name_bytes = name.as_bytes();
        if line.len() < name_bytes.len() || !same_bytes(&line[..name_bytes.len()], name_bytes) {
            return None;
        }
        let rest = &line[name_bytes.len()..];
        match rest.first() {
            None => {}
            Some(&next) if next == b'{' || is_blank(next) => {}
            Some(_) => return None,
        }
        Some(SeriesLine { name, rest })
    }

    /// The line parsed in one forward pass if it has exactly the shape a kubelet writes for a
    /// container series: `{container="c",namespace="n",pod="p"} value timestamp` (timestamp
    /// optional) with non-empty, unescaped ASCII values.
    ///
    /// `None` means only "not that shape": the caller then takes the general path
    /// ([`SeriesLine::sample`] and [`LabelBlock::iter`]), which decides what the line is. When
    /// this returns a sample, the general path gives the same sample and labels.
    #[inline]
    pub fn kubelet_container_sample(&self) -> Option<(KubeletContainerLabels<'a>, Sample<'a>)> {
        let rest = self.rest.strip_prefix(b"{container=\"")?;
        let (container, rest) = plain_value(rest)?;
        let rest = rest.strip_prefix(b",namespace=\"")?;
        let (namespace, rest) = plain_value(rest)?;
        let rest = rest.strip_prefix(b",pod=\"")?;
        let (pod, rest) = plain_value(rest)?;
        let close = self.rest.len() - rest.len();
        let tail = rest.strip_prefix(b"} ")?;
        // The value is followed by one space and the timestamp, or ends the line. Any other
        // spacing, and any token that does not parse, goes to the general path.
        let (value, timestamp_ms) = parse_value_timestamp(tail)?;
        Some((
            KubeletContainerLabels {
                container,
                namespace,
                pod,
            },
            Sample {
                name: self.name,
                labels: LabelBlock {
                    raw: &self.rest[1..close],
                },
                value,
                timestamp_ms,
            },
        ))
    }

    /// Finds the label block and parses the value and timestamp. Labels are not parsed here.
    #[inline]
    pub fn sample(self) -> Result<Sample<'a>, LexError> {
        let rest = skip_blanks(self.rest);
        let (labels, tail) = match rest.first() {
            Some(b'{') => {
                let close = memrchr(b'}', rest).ok_or(LexError::UnclosedLabels)?;
                // `rest[0]` is `{`, not `}`, so `close >= 1` and the slice below is in bounds.
                (
                    LabelBlock {
                        raw: &rest[1..close],
                    },
                    &rest[close + 1..],
                )
            }
            _ => (LabelBlock::default(), rest),
        };
        let (value, tail) = split_token(skip_blanks(tail));
        if value.is_empty() {
            return Err(LexError::MissingValue);
        }
        let value = parse_f64(value).ok_or(LexError::InvalidValue)?;
        let tail = skip_blanks(tail);
        let timestamp_ms = if tail.is_empty() {
            None
        } else {
            let (timestamp, tail) = split_token(tail);
            if !skip_blanks(tail).is_empty() {
                return Err(LexError::TrailingData);
            }
            Some(parse_i64(timestamp).ok_or(LexError::InvalidTimestamp)?)
        };
        Ok(Sample {
            name: self.name,
            labels,
            value,
            timestamp_ms,
        })
    }
}

// === impl LabelBlock ===

impl<'a> LabelBlock<'a> {
    /// The bytes between the braces, unparsed.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn iter(&self) -> LabelIter<'a> {
        LabelIter {
            rest: self.raw,
            failed: false,
        }
    }
}

impl<'a> IntoIterator for LabelBlock<'a> {
    type Item = Result<Label<'a>, LexError>;
    type IntoIter = LabelIter<'a>;

    fn into_iter(self) -> LabelIter<'a> {
        self.iter()
    }
}

// === impl LabelIter ===

impl<'a> LabelIter<'a> {
    #[inline]
    fn pair(&mut self) -> Result<Option<Label<'a>>, LexError> {
        let rest = skip_blanks(self.rest);
        if rest.is_empty() {
            // End of the set; also reached after a trailing comma.
            return Ok(None);
        }
        let len = name_len(rest, LABEL_NAME_BYTES);
        if len == 0 {
            return Err(LexError::InvalidLabelName);
        }
        let (name, rest) = rest.split_at(len);
        let name = ascii_name(name);
        let rest = match skip_blanks(rest).split_first() {
            Some((b'=', rest)) => skip_blanks(rest),
            _ => return Err(LexError::MissingLabelValue),
        };
        let rest = match rest.split_first() {
            Some((b'"', rest)) => rest,
            _ => return Err(LexError::MissingLabelValue),
        };
        let (value, rest) = quoted_value(rest)?;
        self.rest = match skip_blanks(rest).split_first() {
            None => &[],
            Some((b',', rest)) => rest,
            Some(_) => return Err(LexError::MissingSeparator),
        };
        Ok(Some(Label { name, value }))
    }
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = Result<Label<'a>, LexError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.pair() {
            Ok(Some(label)) => Some(Ok(label)),
            Ok(None) => {
                self.rest = &[];
                None
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Reads a label value starting just after its opening quote; returns it and the bytes after the
/// closing quote. Escapes `\\`, `\"` and `\n` are decoded; any other backslash pair is kept as
/// written, as the Prometheus parser the upstream server uses does.
#[inline]
fn quoted_value(bytes: &[u8]) -> Result<(Cow<'_, str>, &[u8]), LexError> {
    let stop = memchr2(b'"', b'\\', bytes).ok_or(LexError::UnterminatedQuote)?;
    if bytes[stop] == b'"' {
        let value = value_str(&bytes[..stop])?;
        return Ok((Cow::Borrowed(value), &bytes[stop + 1..]));
    }
    unescape(bytes, stop)
}

/// A label value starting just after its opening quote that needs no unescaping and is ASCII:
/// the value and the bytes after its closing quote. `None` for an empty value, an escape, a
/// non-ASCII byte or a missing quote (the general path handles those).
///
/// Eight bytes at a time: values are pod names of 20 to 60 bytes, and a search call's setup
/// cost more than the scan itself.
#[inline]
fn plain_value(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let mut at = 0;
    while let Some(word) = bytes[at..].first_chunk::<8>() {
        let word = u64::from_le_bytes(*word);
        let stops = swar_equal(word, b'"') | swar_equal(word, b'\\') | (word & SWAR_HIGH);
        if stops != 0 {
            return plain_value_end(bytes, at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let stop = at
        + bytes[at..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b >= 0x80)?;
    plain_value_end(bytes, stop)
}

#[inline(always)]
fn plain_value_end(bytes: &[u8], stop: usize) -> Option<(&str, &[u8])> {
    if stop == 0 || bytes[stop] != b'"' {
        return None;
    }
    let value = &bytes[..stop];
    debug_assert!(value.is_ascii());
    // SAFETY: the scan that found `stop` stops at the first byte >= 0x80, so every byte before
    // it is ASCII, which is valid UTF-8.
    let value = unsafe { std::str::from_utf8_unchecked(value) };
    Some((value, &bytes[stop + 1..]))
}

/// High bit of the lowest byte of `x` equal to `byte` set, and of no lower byte; bytes above
/// the first match may be flagged falsely, so only the lowest set bit is meaningful.
#[inline(always)]
fn swar_equal(x: u64, byte: u8) -> u64 {
    let diff = x ^ (SWAR_ONES * u64::from(byte));
    diff.wrapping_sub(SWAR_ONES) & !diff & SWAR_HIGH
}

/// The slow path of [`quoted_value`]: `first_escape` is the index of the first backslash.
#[cold]
fn unescape(bytes: &[u8], first_escape: usize) -> Result<(Cow<'_, str>, &[u8]), LexError> {
    let mut out = Vec::with_capacity(bytes.len().min(256));
    out.extend_from_slice(&bytes[..first_escape]);
    let mut at = first_escape;
    loop {
        // `bytes[at]` is a backslash here.
        match bytes.get(at + 1) {
            None => return Err(LexError::UnterminatedQuote),
            Some(b'n') => out.push(b'\n'),
            Some(&escaped @ (b'\\' | b'"')) => out.push(escaped),
            Some(&other) => out.extend_from_slice(&[b'\\', other]),
        }
        at += 2;
        let rest = &bytes[at..];
        let stop = memchr2(b'"', b'\\', rest).ok_or(LexError::UnterminatedQuote)?;
        out.extend_from_slice(&rest[..stop]);
        at += stop;
        if bytes[at] == b'"' {
            let value = String::from_utf8(out).map_err(|_| LexError::InvalidUtf8)?;
            return Ok((Cow::Owned(value), &bytes[at + 1..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name_len_byte_by_byte(bytes: &[u8], mask: u128) -> usize {
        match bytes.first() {
            Some(first) if !first.is_ascii_digit() => bytes
                .iter()
                .position(|&b| !in_mask(b, mask))
                .unwrap_or(bytes.len()),
            _ => 0,
        }
    }

    #[test]
    fn word_at_a_time_name_scan_stops_at_the_first_non_name_byte() {
        assert_eq!(name_len(b"container=\"x\"", LABEL_NAME_BYTES), 9);
        assert_eq!(name_len(b"namespace", LABEL_NAME_BYTES), 9);
        assert_eq!(name_len(b"a:b{", LABEL_NAME_BYTES), 1);
        assert_eq!(name_len(b"a:b{", METRIC_NAME_BYTES), 3);
        assert_eq!(
            name_len(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_09az@", METRIC_NAME_BYTES),
            31
        );
        assert_eq!(name_len(b"abcdefg\xc3\xa9", LABEL_NAME_BYTES), 7);
        assert_eq!(name_len(b"9abc", LABEL_NAME_BYTES), 0);
    }

    #[test]
    fn the_kubelet_shape_parses_in_one_pass_and_other_shapes_do_not() {
        let line = b"container_cpu_usage_seconds_total{container=\"app\",namespace=\"kube-system\",pod=\"coredns-7d9f8b6c5d-x2k4q\"} 4.710169 1700000000123";
        let series = SeriesLine::with_name(line, "container_cpu_usage_seconds_total").unwrap();
        let (labels, sample) = series.kubelet_container_sample().unwrap();
        assert_eq!(
            labels,
            KubeletContainerLabels {
                container: "app",
                namespace: "kube-system",
                pod: "coredns-7d9f8b6c5d-x2k4q",
            }
        );
        assert_eq!(sample, series.sample().unwrap());
        for other in [
            &b"m{container=\"a\",namespace=\"n\",pod=\"p\"}  1"[..],
            b"m{container=\"a\",namespace=\"n\",pod=\"p\",} 1",
            b"m{container=\"\",namespace=\"n\",pod=\"p\"} 1",
            b"m{container=\"a\\\"\",namespace=\"n\",pod=\"p\"} 1",
            b"m{container=\"\xc3\xa9\",namespace=\"n\",pod=\"p\"} 1",
            b"m{namespace=\"n\",container=\"a\",pod=\"p\"} 1",
            b"m{container=\"a\",namespace=\"n\",pod=\"p\"} 1 2 }",
            b"m{container=\"a\",namespace=\"n\",pod=\"p\"} x",
        ] {
            let series = SeriesLine::with_name(other, "m").unwrap();
            assert_eq!(
                series.kubelet_container_sample(),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    proptest! {
        #[test]
        fn the_one_pass_parse_agrees_with_the_general_path(
            container in "[a-z\"\\\\é]{0,12}",
            namespace in "[a-z-]{0,20}",
            pod in "[a-z0-9-]{0,70}",
            value in prop_oneof![Just("4.710169".to_owned()), Just("1.253376e+07".to_owned()), "[0-9.e+ -]{0,8}"],
            timestamp in prop_oneof![Just(String::new()), Just(" 1700000000123".to_owned()), "[ 0-9}]{0,6}"],
        ) {
            let line = format!(
                "m{{container=\"{container}\",namespace=\"{namespace}\",pod=\"{pod}\"}} {value}{timestamp}"
            );
            let series = SeriesLine::with_name(line.as_bytes(), "m").unwrap();
            if let Some((labels, sample)) = series.kubelet_container_sample() {
                prop_assert_eq!(Ok(sample), series.sample());
                let general: Vec<_> = sample.labels.iter().map(|l| l.unwrap()).collect();
                prop_assert_eq!(general.len(), 3);
                prop_assert_eq!(&*general[0].value, labels.container);
                prop_assert_eq!(&*general[1].value, labels.namespace);
                prop_assert_eq!(&*general[2].value, labels.pod);
                prop_assert!(!labels.container.is_empty() && !labels.namespace.is_empty() && !labels.pod.is_empty());
            }
        }

        #[test]
        fn word_at_a_time_equality_matches_slice_equality(
            a in proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 0..40),
            b in proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 0..40),
        ) {
            prop_assert_eq!(same_bytes(&a, &b), a == b);
            prop_assert!(same_bytes(&a, &a.clone()));
            // The same length, one byte changed anywhere.
            for at in 0..a.len() {
                let mut c = a.clone();
                c[at] ^= 0x80;
                prop_assert!(!same_bytes(&a, &c));
            }
        }

        #[test]
        fn word_at_a_time_name_scan_matches_a_byte_loop(
            bytes in proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(b"azAZ09_:".to_vec()),
                    1 => any::<u8>(),
                ],
                0..40,
            ),
        ) {
            for mask in [METRIC_NAME_BYTES, LABEL_NAME_BYTES] {
                prop_assert_eq!(name_len(&bytes, mask), name_len_byte_by_byte(&bytes, mask));
            }
        }
    }
}
