//! Kubelet `/metrics/resource` bodies in, node and container points out.
//!
//! Owns the Prometheus text-format lexer (`text`) and the decoding rules that turn samples into
//! [`crate::model::NodeScrape`] (`decode`). It does no I/O, allocates nothing per line, and never
//! panics on any input: a bad line is skipped and counted, a body that cannot be used is a typed error.

use crate::model::{NodeScrape, UnixNanos};

/// Counts of lines the decoder skipped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub samples: u64,
    pub skipped_lines: u64,
}

/// A decoded body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded<'a> {
    pub scrape: NodeScrape<'a>,
    pub stats: DecodeStats,
}

/// Why a body could not be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("kubelet reported a scrape error")]
    KubeletScrapeError,
}

/// Decodes a kubelet `/metrics/resource` body. `request_time` stamps samples that carry no timestamp.
pub fn decode_resource_metrics(
    _body: &[u8],
    _request_time: UnixNanos,
) -> Result<Decoded<'_>, DecodeError> {
    todo!("parse helper")
}
