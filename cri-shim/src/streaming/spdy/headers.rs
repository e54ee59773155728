//! SPDY/3 header blocks: name/value pairs with 32-bit lengths, compressed with zlib primed by
//! the dictionary the SPDY/3 specification defines. Each direction of a connection is one zlib
//! stream: every block is sync-flushed, so it ends on a byte boundary and decompresses on its
//! own once the blocks before it have been seen.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::OnceLock;

/// A decoded header block: lowercase names with their values, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    pairs: Vec<(String, String)>,
}

/// A header block that cannot be used; the connection's zlib state is lost with it.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// zlib failed (corrupt data, a dictionary other than SPDY/3's).
    #[error("header block compression: {0}")]
    Zlib(String),
    /// The decompressed block is larger than accepted.
    #[error("header block larger than {0} bytes")]
    TooLarge(usize),
    /// The name/value layout is inconsistent.
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

impl HeaderBlock {
    /// An empty block.
    pub fn new() -> Self {
        HeaderBlock::default()
    }

    /// Adds a pair; SPDY requires lowercase names, so the name is lowercased.
    #[cfg(test)]
    pub fn push(&mut self, name: &str, value: &str) {
        self.pairs
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The value of `name` (case-insensitive); several values come NUL-separated.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The uncompressed wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.pairs.len() as u32).to_be_bytes());
        for (name, value) in &self.pairs {
            for field in [name, value] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        out
    }

    /// Parses the uncompressed wire form.
    pub fn decode(mut raw: &[u8]) -> Result<HeaderBlock, HeaderError> {
        let count = take_u32(&mut raw)? as usize;
        // Each pair needs at least its two length fields: bounds the allocation by the input.
        if count > raw.len() / 8 {
            return Err(HeaderError::Malformed("more pairs than bytes"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_field(&mut raw)?;
            let value = take_field(&mut raw)?;
            if name.is_empty() {
                return Err(HeaderError::Malformed("empty header name"));
            }
            pairs.push((
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        if !raw.is_empty() {
            return Err(HeaderError::Malformed("trailing bytes"));
        }
        Ok(HeaderBlock { pairs })
    }
}

fn take_u32(raw: &mut &[u8]) -> Result<u32, HeaderError> {
    let Some((head, rest)) = raw.split_first_chunk::<4>() else {
        return Err(HeaderError::Malformed("truncated length"));
    };
    *raw = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_field<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let len = take_u32(raw)? as usize;
    if len > raw.len() {
        return Err(HeaderError::Malformed("field longer than the block"));
    }
    let (field, rest) = raw.split_at(len);
    *raw = rest;
    Ok(field)
}

/// Words of the SPDY/3 dictionary's first part, each stored with a 4-byte big-endian length.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's second part, raw: status codes and phrases, dates, common values.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut dict = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        dict
    })
}

/// Compresses the header blocks one endpoint sends, in send order.
pub struct HeaderCompressor {
    zlib: Compress,
    primed: bool,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        HeaderCompressor::new()
    }
}

impl HeaderCompressor {
    /// A compressor for a new connection.
    pub fn new() -> Self {
        HeaderCompressor {
            zlib: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Compresses one block, ending it with a sync flush.
    pub fn compress(&mut self, block: &HeaderBlock) -> Result<Vec<u8>, HeaderError> {
        if !self.primed {
            self.zlib
                .set_dictionary(dictionary())
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            self.primed = true;
        }
        let raw = block.encode();
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.zlib
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            let consumed = (self.zlib.total_in() - start) as usize;
            // Done once all input is in and the flush did not run out of room.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the header blocks one endpoint receives, in receive order.
pub struct HeaderDecompressor {
    zlib: Decompress,
    limit: usize,
}

impl HeaderDecompressor {
    /// A decompressor for a new connection; decompressed blocks above `limit` bytes are refused.
    pub fn new(limit: usize) -> Self {
        HeaderDecompressor {
            zlib: Decompress::new(true),
            limit,
        }
    }

    /// Decompresses and parses one block.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<HeaderBlock, HeaderError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let start = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            if out.len() > self.limit {
                return Err(HeaderError::TooLarge(self.limit));
            }
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let produced = out.len();
            match self
                .zlib
                .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return Err(HeaderError::Zlib("header stream ended".into()))
                }
                Ok(_) => {}
                // The first block names the dictionary; any other is not SPDY/3's.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(dictionary())
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            }
            let now_consumed = (self.zlib.total_in() - start) as usize;
            let all_in = now_consumed == compressed.len();
            // All input in and room left over: the flush emitted everything.
            if all_in && out.len() < out.capacity() {
                break;
            }
            if now_consumed == consumed && out.len() == produced {
                if all_in {
                    break;
                }
                return Err(HeaderError::Zlib("inflate made no progress".into()));
            }
        }
        if out.len() > self.limit {
            return Err(HeaderError::TooLarge(self.limit));
        }
        HeaderBlock::decode(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zlib's Adler-32, written out so the dictionary is checked against the spec's checksum.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in data {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(&dict[..11], b"\x00\x00\x00\x07options");
        assert!(dict.ends_with(b",*,enq=0."));
        // The dictionary ID peers put in the zlib header.
        assert_eq!(adler32(dict), 0xe3c6_a7c2);
    }

    fn block(pairs: &[(&str, &str)]) -> HeaderBlock {
        let mut b = HeaderBlock::new();
        for (n, v) in pairs {
            b.push(n, v);
        }
        b
    }

    #[test]
    fn blocks_round_trip_through_one_zlib_stream_per_direction() {
        let mut tx = HeaderCompressor::new();
        let mut rx = HeaderDecompressor::new(1 << 16);
        let blocks = [
            block(&[("streamType", "error")]),
            block(&[("streamtype", "stdin"), ("x", "")]),
            block(&[]),
            block(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")]),
            block(&[("big", &"v".repeat(20_000))]),
        ];
        for b in &blocks {
            let wire = tx.compress(b).unwrap();
            let back = rx.decompress(&wire).unwrap();
            assert_eq!(&back, b);
        }
        assert_eq!(blocks[0].get("STREAMTYPE"), Some("error"));
        assert_eq!(blocks[0].pairs()[0].0, "streamtype");
    }

    #[test]
    fn the_first_block_carries_the_dictionary_id() {
        let wire = HeaderCompressor::new()
            .compress(&block(&[("a", "b")]))
            .unwrap();
        // CMF/FLG with FDICT set, then the dictionary's Adler-32.
        assert_eq!(wire[0], 0x78);
        assert_ne!(wire[1] & 0x20, 0);
        assert_eq!(&wire[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let mut rx = HeaderDecompressor::new(1 << 16);
        assert!(rx.decompress(b"not zlib at all").is_err());
        // A zlib stream primed with another dictionary.
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"another dictionary").unwrap();
        let mut wire = Vec::with_capacity(256);
        other
            .compress_vec(
                &block(&[("a", "b")]).encode(),
                &mut wire,
                FlushCompress::Sync,
            )
            .unwrap();
        assert!(HeaderDecompressor::new(1 << 16).decompress(&wire).is_err());
        // A block that inflates beyond the limit.
        let mut tx = HeaderCompressor::new();
        let wire = tx.compress(&block(&[("a", &"x".repeat(100_000))])).unwrap();
        assert!(matches!(
            HeaderDecompressor::new(1 << 12).decompress(&wire),
            Err(HeaderError::TooLarge(_))
        ));
        // Layout errors.
        for raw in [
            &b"\x00\x00"[..],
            b"\x00\x00\x00\x01\x00\x00\x00\x05ab",
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x00junk",
        ] {
            assert!(HeaderBlock::decode(raw).is_err(), "{raw:?}");
        }
    }
}
