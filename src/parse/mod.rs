//! Kubelet `/metrics/resource` bodies in, node and container points out.
//!
//! Owns the Prometheus text-format lexer (`text`) and the decoding rules that turn samples into
//! [`crate::model::NodeScrape`] (`decode`). It does no I/O, allocates nothing per line, and never
//! panics on any input: a bad line is skipped and counted, a body that cannot be used is a typed error.
//!
//! Allocation happens per pod and per container (their slots and index entries), and for a label
//! value only when it carries a backslash escape. Time is linear in the body length whatever the
//! input: each line is scanned a bounded number of times.

use crate::model::{NodeScrape, UnixNanos};

mod decode;
#[doc(hidden)]
pub mod fixtures;
mod number;
pub mod text;

#[cfg(test)]
mod tests;

/// Counts of lines the decoder did not turn into a point, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Lines that fed the node point, a container point, or the scrape-error check.
    pub samples: u64,
    /// Lines skipped for one of the [`SkipReason`]s; the sum of `skipped_by_reason`.
    pub skipped_lines: u64,
    /// Lines skipped, indexed by `SkipReason as usize`; read with [`DecodeStats::skipped`].
    pub skipped_by_reason: [u64; SkipReason::COUNT],
    /// Well-formed-looking lines of series the decoder does not use (pod totals, swap, anything
    /// unknown). Not counted as skipped: a kubelet is free to add series.
    pub ignored_series: u64,
    /// Comment (`# HELP`, `# TYPE`, ...) and blank lines.
    pub comments: u64,
}

/// Why one line was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The line does not start with a valid metric name.
    InvalidName,
    /// A `{` with no `}` after it.
    UnclosedLabels,
    /// A label name is missing or has a forbidden byte.
    InvalidLabelName,
    /// A label name without `="value"`.
    MissingLabelValue,
    /// A label value without its closing quote.
    UnterminatedQuote,
    /// Label pairs not separated by a comma.
    MissingSeparator,
    /// A label value that is not UTF-8.
    InvalidUtf8,
    /// No value after the name and labels.
    MissingValue,
    /// The value is not a float.
    InvalidValue,
    /// The timestamp is not an integer.
    InvalidTimestamp,
    /// Something after the timestamp.
    TrailingData,
    /// A container series without a non-empty `container`, `pod` and `namespace` label.
    MissingLabels,
    /// A value that is NaN, infinite or negative, which no usage can be.
    UnusableValue,
    /// A timestamp whose value in nanoseconds does not fit in an i64.
    TimestampOutOfRange,
}

/// A decoded body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded<'a> {
    pub scrape: NodeScrape<'a>,
    pub stats: DecodeStats,
}

/// Why a body could not be used at all. Callers treat it as a failed scrape of that node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The kubelet said (`scrape_error 1` or `resource_scrape_error 1`) that it could not collect
    /// container metrics, so whatever else the body holds is not a complete picture.
    #[error("kubelet reported a scrape error")]
    KubeletScrapeError,
}

// === impl SkipReason ===

impl SkipReason {
    /// Number of reasons; the length of [`DecodeStats::skipped_by_reason`].
    pub const COUNT: usize = 14;

    /// Every reason, in index order.
    pub const ALL: [SkipReason; SkipReason::COUNT] = [
        SkipReason::InvalidName,
        SkipReason::UnclosedLabels,
        SkipReason::InvalidLabelName,
        SkipReason::MissingLabelValue,
        SkipReason::UnterminatedQuote,
        SkipReason::MissingSeparator,
        SkipReason::InvalidUtf8,
        SkipReason::MissingValue,
        SkipReason::InvalidValue,
        SkipReason::InvalidTimestamp,
        SkipReason::TrailingData,
        SkipReason::MissingLabels,
        SkipReason::UnusableValue,
        SkipReason::TimestampOutOfRange,
    ];

    /// A stable snake_case name, for logs and self-metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidName => "invalid_name",
            SkipReason::UnclosedLabels => "unclosed_labels",
            SkipReason::InvalidLabelName => "invalid_label_name",
            SkipReason::MissingLabelValue => "missing_label_value",
            SkipReason::UnterminatedQuote => "unterminated_quote",
            SkipReason::MissingSeparator => "missing_separator",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::MissingValue => "missing_value",
            SkipReason::InvalidValue => "invalid_value",
            SkipReason::InvalidTimestamp => "invalid_timestamp",
            SkipReason::TrailingData => "trailing_data",
            SkipReason::MissingLabels => "missing_labels",
            SkipReason::UnusableValue => "unusable_value",
            SkipReason::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

impl From<text::LexError> for SkipReason {
    fn from(error: text::LexError) -> Self {
        use text::LexError as L;
        match error {
            L::InvalidName => SkipReason::InvalidName,
            L::UnclosedLabels => SkipReason::UnclosedLabels,
            L::InvalidLabelName => SkipReason::InvalidLabelName,
            L::MissingLabelValue => SkipReason::MissingLabelValue,
            L::UnterminatedQuote => SkipReason::UnterminatedQuote,
            L::MissingSeparator => SkipReason::MissingSeparator,
            L::InvalidUtf8 => SkipReason::InvalidUtf8,
            L::MissingValue => SkipReason::MissingValue,
            L::InvalidValue => SkipReason::InvalidValue,
            L::InvalidTimestamp => SkipReason::InvalidTimestamp,
            L::TrailingData => SkipReason::TrailingData,
        }
    }
}

// === impl DecodeStats ===

impl DecodeStats {
    /// Lines skipped for `reason`.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped_by_reason[reason as usize]
    }

    /// Non-zero skip counts, for logging.
    pub fn skip_reasons(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        SkipReason::ALL
            .into_iter()
            .map(|reason| (reason, self.skipped(reason)))
            .filter(|&(_, count)| count > 0)
    }

    pub(crate) fn skip(&mut self, reason: SkipReason) {
        self.skipped_lines += 1;
        self.skipped_by_reason[reason as usize] += 1;
    }
}

/// Decodes a kubelet `/metrics/resource` body. `request_time` stamps samples that carry no timestamp.
///
/// Rules (upstream metrics-server's, except where noted): CPU becomes integer nanocore-seconds and
/// memory integer bytes; the node point needs both series with non-zero values and a non-zero
/// timestamp; a pod is left out of this scrape if any of its containers lacks a usable CPU or memory
/// sample or reports 0 for either; a point's timestamp is its CPU sample's (upstream ends up with the
/// memory sample's). Pods and containers keep the order in which the body first names them.
pub fn decode_resource_metrics(
    body: &[u8],
    request_time: UnixNanos,
) -> Result<Decoded<'_>, DecodeError> {
    decode::decode(body, request_time)
}
