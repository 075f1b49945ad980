//! Decoding of the header blocks kubelets answer with (HPACK, RFC 7541).
//!
//! Owns the decoder's dynamic table and nothing else; knows no frames and no HTTP semantics (the
//! caller names the fields it wants). The client asks kubelets for a table of
//! zero bytes, so in practice nothing is stored between answers; a peer that indexes anyway, up
//! to the protocol's default 4,096 bytes, is still decoded correctly. Huffman-coded strings are
//! decoded by `httlib-huffman`'s table-driven decoder into scratch space reused within a block;
//! the value of a field nobody wants and the table does not keep (a kubelet's `date`, its
//! `content-type`) is stepped over, not decoded.

use std::collections::VecDeque;

/// The dynamic-table size every HTTP/2 peer starts with, and the most this decoder allows.
pub const DEFAULT_TABLE_SIZE: usize = 4_096;

/// Bytes a table entry costs beyond its name and value (RFC 7541, section 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The static table (RFC 7541, appendix A), index 1 first.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Why a header block could not be decoded. The connection's decoder state is then unknown, so
/// the connection must not be used again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("invalid Huffman code")]
    Huffman,
    #[error("table size update to {0} exceeds the allowed {DEFAULT_TABLE_SIZE}")]
    TableSize(usize),
}

/// A dynamic-table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// One connection's HPACK decoder.
#[derive(Debug)]
pub struct HeaderDecoder {
    /// Newest entry first, as indices count.
    table: VecDeque<Entry>,
    /// Sum of the entries' sizes (name + value + 32 each).
    size: usize,
    /// The size the encoder last set (it starts at the protocol default).
    max_size: usize,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
        }
    }
}

/// A string of the block: borrowed as sent, or decoded from its Huffman code into scratch space.
enum Text<'b> {
    Raw(&'b [u8]),
    Decoded,
}

impl HeaderDecoder {
    /// Decodes `block`, calling `field(name, value)` in order for each field whose name
    /// `wanted` accepts. On error, fields before it have been reported and the table may be
    /// half-updated.
    pub fn decode(
        &mut self,
        block: &[u8],
        wanted: impl Fn(&[u8]) -> bool,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut name_scratch = Vec::new();
        let mut value_scratch = Vec::new();
        let mut rest = block;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let (index, after) = integer(rest, 7)?;
                rest = after;
                let (name, value) = self.entry(index)?;
                if wanted(name) {
                    field(name, value);
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (size, after) = integer(rest, 5)?;
                rest = after;
                if size > DEFAULT_TABLE_SIZE {
                    return Err(HpackError::TableSize(size));
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // A literal: with incremental indexing (01), without (0000) or never (0001).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let (name_index, after) = integer(rest, prefix)?;
                rest = after;
                let name_text = if name_index == 0 {
                    let (text, after) = string(rest, &mut name_scratch)?;
                    rest = after;
                    Some(text)
                } else {
                    None
                };
                let name = match name_text {
                    Some(Text::Raw(raw)) => raw,
                    Some(Text::Decoded) => &name_scratch[..],
                    None => self.entry(name_index)?.0,
                };
                if !indexing && !wanted(name) {
                    // Stepped over undecoded.
                    rest = raw_string(rest)?.1;
                    continue;
                }
                let (value_text, after) = string(rest, &mut value_scratch)?;
                rest = after;
                let value = match value_text {
                    Text::Raw(raw) => raw,
                    Text::Decoded => &value_scratch[..],
                };
                if wanted(name) {
                    field(name, value);
                }
                if indexing {
                    let entry = (Box::from(name), Box::from(value));
                    self.insert(entry);
                }
            }
        }
        Ok(())
    }

    /// Entry `index` of the combined static and dynamic tables.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => Ok(STATIC_TABLE[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(name, value)| (&name[..], &value[..]))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.0.len() + entry.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it and is not added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.table.push_front(entry);
        self.size += size;
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.table.pop_back() {
                Some((name, value)) => self.size -= name.len() + value.len() + ENTRY_OVERHEAD,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
        if self.table.is_empty() {
            // Nothing kept while idle: a table emptied by a size update of 0 gives its memory back.
            self.table = VecDeque::new();
        }
    }

    /// Bytes the table holds (entries' sizes as the protocol counts them).
    pub fn table_size(&self) -> usize {
        self.size
    }
}

/// An integer with a `prefix_bits`-bit prefix (RFC 7541, section 5.1), and what follows it.
fn integer(bytes: &[u8], prefix_bits: u32) -> Result<(usize, &[u8]), HpackError> {
    let (&first, mut rest) = bytes.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok((value, rest));
    }
    let mut shift = 0u32;
    loop {
        let (&byte, after) = rest.split_first().ok_or(HpackError::Truncated)?;
        rest = after;
        // Four continuation bytes carry 28 bits: more than any length or index here needs.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok((value, rest));
        }
    }
}

/// A string literal's bytes as sent (Huffman-coded or not), and what follows it.
fn raw_string(bytes: &[u8]) -> Result<(&[u8], &[u8]), HpackError> {
    let (len, rest) = integer(bytes, 7)?;
    if len > rest.len() {
        return Err(HpackError::Truncated);
    }
    Ok(rest.split_at(len))
}

/// A string literal (RFC 7541, section 5.2), and what follows it. A Huffman-coded one is decoded
/// into `scratch` (cleared first).
fn string<'b>(bytes: &'b [u8], scratch: &mut Vec<u8>) -> Result<(Text<'b>, &'b [u8]), HpackError> {
    let huffman = bytes.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (raw, rest) = raw_string(bytes)?;
    if !huffman {
        return Ok((Text::Raw(raw), rest));
    }
    scratch.clear();
    httlib_huffman::decode(raw, scratch, httlib_huffman::DecoderSpeed::FourBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok((Text::Decoded, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Field = (Vec<u8>, Vec<u8>);

    fn decode_all(decoder: &mut HeaderDecoder, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(
            block,
            |_| true,
            |n, v| fields.push((n.to_vec(), v.to_vec())),
        )?;
        Ok(fields)
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<Field> {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// RFC 7541, appendix C.6.1 to C.6.3: three responses with Huffman coding, indexing and
    /// eviction from a 256-byte table, the RFC's own test vectors.
    #[test]
    fn the_rfc_response_examples_decode_with_their_table_evolution() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let mut decoder = HeaderDecoder::default();
        // The RFC's examples run with a 256-byte table.
        decoder
            .decode(&[0x3f, 0xe1, 0x01], |_| true, |_, _| {})
            .unwrap();
        assert_eq!(decoder.max_size, 256);
        // Each response, the fields it decodes to, and the table's size after it.
        type Example<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);
        let responses: [Example<'_>; 3] = [
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                &[
                    (":status", "302"),
                    ("cache-control", "private"),
                    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                    ("location", "https://www.example.com"),
                ],
                222,
            ),
            (
                "4883 640e ffc1 c0bf",
                &[
                    (":status", "307"),
                    ("cache-control", "private"),
                    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                    ("location", "https://www.example.com"),
                ],
                222,
            ),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                &[
                    (":status", "200"),
                    ("cache-control", "private"),
                    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                    ("location", "https://www.example.com"),
                    ("content-encoding", "gzip"),
                    (
                        "set-cookie",
                        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                    ),
                ],
                215,
            ),
        ];
        for (block, fields, table_size) in responses {
            assert_eq!(
                decode_all(&mut decoder, &hex(block)).unwrap(),
                pairs(fields)
            );
            assert_eq!(decoder.table_size(), table_size);
        }
    }

    #[test]
    fn a_size_update_to_zero_empties_the_table_and_indexing_then_keeps_nothing() {
        let mut decoder = HeaderDecoder::default();
        // A literal with incremental indexing of a new name: `a: b`, 1 + 1 + 32 bytes.
        decode_all(&mut decoder, &[0x40, 0x01, b'a', 0x01, b'b']).unwrap();
        assert_eq!(decoder.table_size(), 34);
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]).unwrap(),
            pairs(&[("a", "b")])
        );
        // Size update to 0, then a literal with incremental indexing (new name).
        let mut block = vec![0x20, 0x40, 0x01, b'x', 0x01, b'y'];
        block.push(0x88);
        assert_eq!(
            decode_all(&mut decoder, &block).unwrap(),
            pairs(&[("x", "y"), (":status", "200")])
        );
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.table.capacity(), 0);
        // The emptied table has no entry 62.
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Err(HpackError::BadIndex(62))
        );
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut decoder = HeaderDecoder::default();
        assert_eq!(
            decode_all(&mut decoder, &[0x80]),
            Err(HpackError::BadIndex(0))
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xff]),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x04, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSize(4097))
        );
        // A Huffman string of all ones longer than 7 bits of padding (the EOS code).
        assert_eq!(
            decode_all(&mut decoder, &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(HpackError::Huffman)
        );
    }

    #[test]
    fn values_nobody_wants_are_stepped_over_undecoded() {
        let wanted = |name: &[u8]| name == b":status" || name == b"content-length";
        // `:status: 200` (indexed), `date` (static 33, not indexed) with a value that is no valid
        // Huffman code, `content-length: 15` (static 28, not indexed), then `date: x` with
        // incremental indexing.
        let block = [
            0x88, 0x0f, 0x12, 0x84, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0d, 0x02, b'1', b'5', 0x61,
            0x01, b'x',
        ];
        let mut decoder = HeaderDecoder::default();
        let mut fields = Vec::new();
        decoder
            .decode(&block, wanted, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(
            fields,
            pairs(&[(":status", "200"), ("content-length", "15")])
        );
        // A value the table keeps is decoded and kept, wanted or not.
        assert_eq!(decoder.table_size(), b"date".len() + 1 + ENTRY_OVERHEAD);
        // Decoding every field finds the bad code.
        let mut decoder = HeaderDecoder::default();
        assert_eq!(decode_all(&mut decoder, &block), Err(HpackError::Huffman));
    }

    proptest! {
        /// Whatever an encoder with a dynamic table sends, the decoder reads it back.
        #[test]
        fn blocks_from_an_indexing_encoder_decode_to_what_was_encoded(
            blocks in proptest::collection::vec(
                proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..6), 1..8)
        ) {
            let mut encoder = loona_hpack::Encoder::new();
            let mut decoder = HeaderDecoder::default();
            for block in blocks {
                let encoded = encoder.encode(block.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                let decoded = decode_all(&mut decoder, &encoded).unwrap();
                let expected: Vec<Field> = block
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect();
                prop_assert_eq!(decoded, expected);
                prop_assert!(decoder.table_size() <= DEFAULT_TABLE_SIZE);
            }
        }

        /// Huffman-coded strings decode to what was coded.
        #[test]
        fn huffman_strings_decode(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut coded = Vec::new();
            httlib_huffman::encode(&value, &mut coded).unwrap();
            let mut block = vec![0x0f, 28 - 15]; // literal without indexing, name `content-length`
            let mut len = Vec::new();
            // The length as a 7-bit-prefix integer with the Huffman flag.
            let mut n = coded.len();
            if n < 127 {
                len.push(0x80 | n as u8);
            } else {
                len.push(0xff);
                n -= 127;
                while n >= 128 {
                    len.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                len.push(n as u8);
            }
            block.extend_from_slice(&len);
            block.extend_from_slice(&coded);
            let decoded = decode_all(&mut HeaderDecoder::default(), &block).unwrap();
            prop_assert_eq!(decoded, vec![(b"content-length".to_vec(), value)]);
        }

        /// Arbitrary bytes are decoded or refused, never a panic, and the table stays in bounds.
        #[test]
        fn arbitrary_blocks_never_panic(blocks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 1..6)) {
            let mut decoder = HeaderDecoder::default();
            for block in blocks {
                let _ = decoder.decode(&block, |_| true, |_, _| {});
                prop_assert!(decoder.table_size() <= DEFAULT_TABLE_SIZE);
            }
        }
    }
}
