//! Prometheus text exposition format 0.0.4, lexed in place over the body bytes.
//!
//! Owns line splitting, the split of a line into name / label block / value / timestamp, and label
//! iteration. Everything it yields borrows from the body; the only allocation is for a label value
//! that contains a backslash escape. It knows no metric names: deciding what a sample means is the
//! decoder's job.
//!
//! Cost model, which is why the API is split in stages: [`Lexer::next_entry`] finds the line end
//! (`memchr`) and the metric name only, so a caller can drop a series it does not want before
//! paying for anything else. [`SeriesLine::sample`] then finds the end of the label block from the
//! line's end (`memrchr` for `}`: neither the value nor the timestamp can contain one) and parses the
//! value and timestamp. Labels are parsed only when [`LabelBlock::iter`] is walked. Every step is a
//! single forward or backward pass over its part of the line, so any input, including a
//! multi-megabyte line, costs time linear in its length.

use std::borrow::Cow;

use memchr::{memchr, memchr2, memrchr};

use super::number::{parse_f64, parse_i64};

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
#[inline]
fn name_len(bytes: &[u8], mask: u128) -> usize {
    match bytes.first() {
        Some(first) if !first.is_ascii_digit() => bytes
            .iter()
            .position(|&b| !in_mask(b, mask))
            .unwrap_or(bytes.len()),
        _ => 0,
    }
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
        let rest = line.strip_prefix(name.as_bytes())?;
        match rest.first() {
            None => {}
            Some(&next) if next == b'{' || is_blank(next) => {}
            Some(_) => return None,
        }
        Some(SeriesLine { name, rest })
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
