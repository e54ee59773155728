//! Repairs the HTTP/2 `:authority` of requests from gRPC clients that put the socket path there.
//!
//! crictl (v1.29 measured here: grpc-go dialled with the socket path as its target) sends
//! `:authority: /run/skiff/skiff.sock`. A path is not a valid authority, and the h2 server under
//! tonic resets every such stream with PROTOCOL_ERROR before skiffd sees the request, while
//! containerd and CRI-O, on grpc-go's lenient server, accept it. Kubelets send `localhost`.
//!
//! [`AuthorityFix`] sits between the accepted socket and the HTTP/2 server. Bytes pass through
//! unchanged except header blocks (HEADERS + CONTINUATION frames), which are decoded and
//! re-encoded with an invalid authority replaced by `localhost`. HPACK is stateful (both ends
//! keep a table of earlier headers), so every block is re-encoded with our own encoder, whose
//! table is the one the server's decoder mirrors. Responses flow back untouched.

use loona_hpack::{Decoder, Encoder};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The connection preface every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;
/// Frame header: 24-bit length, type, flags, 31-bit stream id.
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have; what we emit always fits.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The server's SETTINGS_HEADER_TABLE_SIZE (h2's default, which tonic keeps): the largest
/// table a client's encoder may use.
const HEADER_TABLE_SIZE: usize = 4096;
/// Largest header block accepted, encoded and decoded. gRPC metadata is small; the decoded
/// bound stops a block of 1-byte references to a 4 KiB table entry from growing a thousandfold.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
const MAX_DECODED_HEADERS: usize = 1024 * 1024;
/// What clients without a meaningful authority should have sent (kubelets do).
const REPLACEMENT: &[u8] = b"localhost";

/// An accepted connection whose incoming header blocks get a valid `:authority`.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(),
        }
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.rewriter.copy_out(buf) {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // End of stream: hand over whatever partial frame is left, so the server
                    // sees the truncation itself, then report EOF.
                    this.rewriter.flush_raw();
                    this.rewriter.copy_out(buf);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => this.rewriter.push(read.filled())?,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream transformation, independent of I/O.
struct Rewriter {
    /// Bytes read but not yet parsed into whole frames.
    raw: Vec<u8>,
    /// Bytes ready for the server, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    preface_seen: bool,
    block: Option<PendingBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Rewriter {
    fn new() -> Rewriter {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_seen: false,
            block: None,
            decoder,
            encoder: Encoder::new(),
        }
    }

    /// Copies pending output into `buf`; false if there was none.
    fn copy_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = &self.out[self.out_pos..];
        if pending.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        true
    }

    /// Moves unparsed bytes to the output as they are (at end of stream).
    fn flush_raw(&mut self) {
        self.out.append(&mut self.raw);
    }

    /// Takes bytes from the client and turns every complete frame into output.
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.raw.extend_from_slice(bytes);
        if !self.preface_seen {
            if self.raw.len() < PREFACE_LEN {
                return Ok(());
            }
            // Not checked here: the server rejects a wrong preface itself.
            self.out.extend(self.raw.drain(..PREFACE_LEN));
            self.preface_seen = true;
        }
        let mut start = 0;
        while let Some(frame) = next_frame(&self.raw[start..]) {
            self.frame(&frame, start)?;
            start += FRAME_HEADER_LEN + frame.len;
        }
        self.raw.drain(..start);
        Ok(())
    }

    /// Handles one whole frame found at `offset` in `raw`.
    fn frame(&mut self, frame: &FrameHeader, offset: usize) -> io::Result<()> {
        let body = offset + FRAME_HEADER_LEN;
        let payload = &self.raw[body..body + frame.len];
        match frame.kind {
            TYPE_HEADERS => {
                if self.block.is_some() {
                    return Err(invalid("HEADERS while another header block is open"));
                }
                let mut payload = payload;
                if frame.flags & FLAG_PADDED != 0 {
                    let (&pad, rest) = payload
                        .split_first()
                        .ok_or_else(|| invalid("padded HEADERS without a pad length"))?;
                    if pad as usize > rest.len() {
                        return Err(invalid("HEADERS padding longer than the frame"));
                    }
                    payload = &rest[..rest.len() - pad as usize];
                }
                let mut priority = None;
                if frame.flags & FLAG_PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(invalid("HEADERS too short for its priority"));
                    }
                    priority = Some(payload[..5].try_into().expect("five bytes"));
                    payload = &payload[5..];
                }
                self.block = Some(PendingBlock {
                    stream_id: frame.stream_id,
                    end_stream: frame.flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: payload.to_vec(),
                });
            }
            TYPE_CONTINUATION => {
                let block = self
                    .block
                    .as_mut()
                    .filter(|b| b.stream_id == frame.stream_id)
                    .ok_or_else(|| invalid("CONTINUATION without its HEADERS"))?;
                block.fragment.extend_from_slice(payload);
            }
            _ if self.block.is_some() => {
                return Err(invalid("a frame between HEADERS and its CONTINUATION"));
            }
            _ => {
                self.out
                    .extend_from_slice(&self.raw[offset..body + frame.len]);
                return Ok(());
            }
        }
        if self
            .block
            .as_ref()
            .is_some_and(|b| b.fragment.len() > MAX_HEADER_BLOCK)
        {
            return Err(invalid("header block too large"));
        }
        if frame.flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("a block was just added to");
            self.finish(block)?;
        }
        Ok(())
    }

    /// Decodes a whole header block, repairs the authority and emits it re-encoded.
    fn finish(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                decoded += name.len() + value.len();
                if decoded <= MAX_DECODED_HEADERS {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| invalid(&format!("undecodable header block: {e:?}")))?;
        if decoded > MAX_DECODED_HEADERS {
            return Err(invalid("header list too large"));
        }
        for (name, value) in &mut headers {
            if name == b":authority" && !valid_authority(value) {
                *value = REPLACEMENT.to_vec();
            }
        }
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.emit(&block, &encoded);
        Ok(())
    }

    /// Writes a header block as HEADERS plus as many CONTINUATION frames as it needs.
    fn emit(&mut self, block: &PendingBlock, encoded: &[u8]) {
        let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let first_room = MAX_FRAME_PAYLOAD - priority.len();
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if !priority.is_empty() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let mut payload = priority.to_vec();
        payload.extend_from_slice(first);
        write_frame(
            &mut self.out,
            TYPE_HEADERS,
            flags,
            block.stream_id,
            &payload,
        );
        while !rest.is_empty() {
            let (chunk, remaining) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
            rest = remaining;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            write_frame(
                &mut self.out,
                TYPE_CONTINUATION,
                flags,
                block.stream_id,
                chunk,
            );
        }
    }
}

/// The header of a frame.
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

/// The header of the first frame in `bytes`, if the whole frame is there.
fn next_frame(bytes: &[u8]) -> Option<FrameHeader> {
    let header = bytes.get(..FRAME_HEADER_LEN)?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
    Some(FrameHeader {
        len,
        kind: header[3],
        flags: header[4],
        stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
    })
}

/// Appends one frame.
fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The same test h2 applies to `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Runs `input` through a rewriter in pieces of `step` bytes.
    fn rewrite(input: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut rewriter = Rewriter::new();
        for piece in input.chunks(step) {
            rewriter.push(piece)?;
        }
        rewriter.flush_raw();
        Ok(rewriter.out)
    }

    /// Decodes every header block of a frame stream (after the preface).
    fn header_blocks(mut bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut fragment = Vec::new();
        while let Some(frame) = next_frame(bytes) {
            let payload = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + frame.len];
            bytes = &bytes[FRAME_HEADER_LEN + frame.len..];
            if frame.kind == TYPE_HEADERS || frame.kind == TYPE_CONTINUATION {
                let skip = if frame.flags & FLAG_PRIORITY != 0 {
                    5
                } else {
                    0
                };
                fragment.extend_from_slice(&payload[skip..]);
                if frame.flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&fragment).unwrap());
                    fragment.clear();
                }
            }
        }
        assert!(bytes.is_empty(), "trailing bytes");
        blocks
    }

    fn request(encoder: &mut Encoder, authority: &[u8], path: &[u8]) -> Vec<u8> {
        encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", path),
            (b"content-type", b"application/grpc"),
        ])
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame, two requests on one connection (the second refers to the first's
        // table entries), and a DATA frame: only the header blocks change.
        write_frame(&mut input, 0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let first = request(
            &mut client,
            b"/run/skiff/skiff.sock",
            b"/runtime.v1.RuntimeService/Version",
        );
        write_frame(&mut input, TYPE_HEADERS, FLAG_END_HEADERS, 1, &first);
        write_frame(&mut input, 0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0");
        let second = request(
            &mut client,
            b"/run/skiff/skiff.sock",
            b"/runtime.v1.RuntimeService/Status",
        );
        write_frame(
            &mut input,
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &second,
        );

        for step in [1, 7, input.len()] {
            let out = rewrite(&input, step).unwrap();
            assert_eq!(&out[..PREFACE.len()], PREFACE);
            let blocks = header_blocks(&out[PREFACE.len()..]);
            assert_eq!(blocks.len(), 2);
            for (block, path) in blocks.iter().zip([
                &b"/runtime.v1.RuntimeService/Version"[..],
                b"/runtime.v1.RuntimeService/Status",
            ]) {
                let get = |name: &[u8]| {
                    block
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.as_slice())
                };
                assert_eq!(get(b":authority"), Some(&b"localhost"[..]));
                assert_eq!(get(b":path"), Some(path));
                assert_eq!(get(b"content-type"), Some(&b"application/grpc"[..]));
            }
            // The SETTINGS and DATA frames are byte-for-byte the client's.
            let mut settings = Vec::new();
            write_frame(&mut settings, 0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
            assert_eq!(
                &out[PREFACE.len()..PREFACE.len() + settings.len()],
                &settings[..]
            );
            let mut data = Vec::new();
            write_frame(&mut data, 0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0");
            assert!(out.windows(data.len()).any(|w| w == data.as_slice()));
        }
    }

    #[test]
    fn valid_authorities_padding_priority_and_continuations_survive() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        let block = request(&mut client, b"localhost:10250", b"/x");
        // PADDED + PRIORITY HEADERS carrying half the block, a CONTINUATION with the rest.
        let (a, b) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        write_frame(
            &mut input,
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            5,
            &payload,
        );
        write_frame(&mut input, TYPE_CONTINUATION, FLAG_END_HEADERS, 5, b);

        let out = rewrite(&input, 3).unwrap();
        let frame = next_frame(&out[PREFACE.len()..]).unwrap();
        assert_eq!(frame.kind, TYPE_HEADERS);
        assert_eq!(
            frame.flags,
            FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS
        );
        assert_eq!(frame.stream_id, 5);
        let body = PREFACE.len() + FRAME_HEADER_LEN;
        assert_eq!(&out[body..body + 5], &[0, 0, 0, 0, 16]);
        let blocks = header_blocks(&out[PREFACE.len()..]);
        assert!(blocks[0].contains(&(b":authority".to_vec(), b"localhost:10250".to_vec())));
    }

    #[test]
    fn big_blocks_are_split_and_bad_input_is_an_error() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        let big = vec![b'a'; 40_000];
        let block = client.encode([(&b":authority"[..], &b""[..]), (b"x-big", &big[..])]);
        write_frame(&mut input, TYPE_HEADERS, 0, 1, &block[..10_000]);
        write_frame(&mut input, TYPE_CONTINUATION, 0, 1, &block[10_000..30_000]);
        write_frame(
            &mut input,
            TYPE_CONTINUATION,
            FLAG_END_HEADERS,
            1,
            &block[30_000..],
        );
        let out = rewrite(&input, 4096).unwrap();
        let blocks = header_blocks(&out[PREFACE.len()..]);
        assert_eq!(
            blocks[0][0],
            (b":authority".to_vec(), b"localhost".to_vec())
        );
        assert_eq!(blocks[0][1].1.len(), 40_000);

        // A CONTINUATION out of nowhere, a DATA frame inside a header block, garbage HPACK.
        let mut orphan = PREFACE.to_vec();
        write_frame(&mut orphan, TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"x");
        assert!(rewrite(&orphan, 100).is_err());
        let mut interleaved = PREFACE.to_vec();
        write_frame(&mut interleaved, TYPE_HEADERS, 0, 1, &block[..10]);
        write_frame(&mut interleaved, 0x0, 0, 1, b"x");
        assert!(rewrite(&interleaved, 100).is_err());
        let mut garbage = PREFACE.to_vec();
        write_frame(&mut garbage, TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff; 8]);
        assert!(rewrite(&garbage, 100).is_err());
        // A truncated frame at the end is passed on for the server to judge.
        let mut cut = PREFACE.to_vec();
        write_frame(&mut cut, 0x4, 0, 0, &[]);
        write_frame(&mut cut, 0x0, 0, 1, b"partial");
        cut.truncate(cut.len() - 3);
        assert_eq!(rewrite(&cut, 5).unwrap(), cut);
    }
}
