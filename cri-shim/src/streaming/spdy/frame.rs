//! SPDY/3.1 frames on the wire: an 8-byte common header, then a type-specific body.
//!
//! Control frames start with the control bit, version 3 and a 16-bit type; data frames with a
//! 31-bit stream ID. Both carry 8 bits of flags and a 24-bit length. Header blocks stay
//! compressed here: decompressing them needs the connection's zlib state (see `headers`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only protocol version spoken.
pub const VERSION: u16 = 3;
/// Length of the common frame header.
pub const HEADER_LEN: usize = 8;

/// `FLAG_FIN` on data, SYN_STREAM, SYN_REPLY and HEADERS frames: the sender's last frame.
pub const FLAG_FIN: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub mod rst {
    /// The stream violated the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
}

/// GOAWAY status codes used here.
pub mod goaway {
    /// Normal teardown.
    pub const OK: u32 = 0;
    /// The peer violated the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// SETTINGS IDs used here.
pub mod settings {
    /// The initial flow-control window of every stream.
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream (odd when the client opens it).
        stream_id: u32,
        /// The stream this one is associated to (server push); 0 for none.
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// `FLAG_FIN`, `FLAG_UNIDIRECTIONAL`.
        flags: u8,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// Accepts a stream the peer opened.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// Aborts a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// One of [`rst`].
        status: u32,
    },
    /// Connection parameters.
    Settings {
        /// `FLAG_SETTINGS_CLEAR_SETTINGS`.
        flags: u8,
        /// `(flags, id, value)` entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A liveness check, echoed by the receiver.
    Ping {
        /// Odd when the client sent it first, even when the server did.
        id: u32,
    },
    /// The sender will open no more streams and accept none above `last_good_stream_id`.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// One of [`goaway`].
        status: u32,
    },
    /// More headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The compressed header block.
        header_block: Bytes,
    },
    /// Grows a flow-control window (stream 0: the whole connection).
    WindowUpdate {
        /// The stream, or 0 for the connection.
        stream_id: u32,
        /// Bytes added to the window (1 to 2^31-1).
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define; receivers ignore it.
    Unknown {
        /// Its type field.
        frame_type: u16,
    },
}

/// A frame that cannot be decoded; the connection cannot continue after it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A frame longer than this endpoint accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A length or field that does not fit the frame type.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The frame type.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

fn malformed(kind: &'static str, reason: &'static str) -> FrameError {
    FrameError::Malformed { kind, reason }
}

/// Decodes the first frame in `buf` and removes it; `Ok(None)` while the frame is incomplete.
/// Control frames longer than `max_control_len` are refused (header blocks of that size are
/// an attack, not a request); data frames may use the full 24-bit length.
pub fn decode(buf: &mut BytesMut, max_control_len: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
    let control = first & 0x8000_0000 != 0;
    if control {
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        if len > max_control_len {
            return Err(FrameError::TooLarge {
                len,
                limit: max_control_len,
            });
        }
    }
    if buf.len() < HEADER_LEN + len {
        // Ask for the whole frame at once rather than growing the buffer in small steps.
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let mut body = buf.split_to(len).freeze();
    if !control {
        let stream_id = first & 0x7fff_ffff;
        if stream_id == 0 {
            return Err(malformed("DATA", "stream 0"));
        }
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: body,
        }));
    }
    let frame = match (first & 0xffff) as u16 {
        TYPE_SYN_STREAM => {
            if len < 10 {
                return Err(malformed("SYN_STREAM", "shorter than 10 bytes"));
            }
            let stream_id = body.get_u32() & 0x7fff_ffff;
            let associated_to = body.get_u32() & 0x7fff_ffff;
            let priority = body.get_u8() >> 5;
            let _slot = body.get_u8();
            if stream_id == 0 {
                return Err(malformed("SYN_STREAM", "stream 0"));
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                header_block: body,
            }
        }
        TYPE_SYN_REPLY => {
            let (stream_id, header_block) = stream_and_block("SYN_REPLY", body)?;
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            }
        }
        TYPE_HEADERS => {
            let (stream_id, header_block) = stream_and_block("HEADERS", body)?;
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            }
        }
        TYPE_RST_STREAM => {
            if len != 8 {
                return Err(malformed("RST_STREAM", "length is not 8"));
            }
            Frame::RstStream {
                stream_id: body.get_u32() & 0x7fff_ffff,
                status: body.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            if len < 4 {
                return Err(malformed("SETTINGS", "shorter than 4 bytes"));
            }
            let count = body.get_u32() as usize;
            if count.checked_mul(8) != Some(body.len()) {
                return Err(malformed("SETTINGS", "entry count does not match length"));
            }
            let entries = (0..count)
                .map(|_| {
                    let head = body.get_u32();
                    ((head >> 24) as u8, head & 0x00ff_ffff, body.get_u32())
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            if len != 4 {
                return Err(malformed("PING", "length is not 4"));
            }
            Frame::Ping { id: body.get_u32() }
        }
        TYPE_GOAWAY => {
            if len != 8 {
                return Err(malformed("GOAWAY", "length is not 8"));
            }
            Frame::GoAway {
                last_good_stream_id: body.get_u32() & 0x7fff_ffff,
                status: body.get_u32(),
            }
        }
        TYPE_WINDOW_UPDATE => {
            if len != 8 {
                return Err(malformed("WINDOW_UPDATE", "length is not 8"));
            }
            Frame::WindowUpdate {
                stream_id: body.get_u32() & 0x7fff_ffff,
                delta: body.get_u32() & 0x7fff_ffff,
            }
        }
        frame_type => Frame::Unknown { frame_type },
    };
    Ok(Some(frame))
}

/// The stream ID and header block of SYN_REPLY and HEADERS.
fn stream_and_block(kind: &'static str, mut body: Bytes) -> Result<(u32, Bytes), FrameError> {
    if body.len() < 4 {
        return Err(malformed(kind, "shorter than 4 bytes"));
    }
    let stream_id = body.get_u32() & 0x7fff_ffff;
    if stream_id == 0 {
        return Err(malformed(kind, "stream 0"));
    }
    Ok((stream_id, body))
}

impl Frame {
    /// Appends the wire form of the frame to `out`.
    ///
    /// Callers keep bodies below the 24-bit length limit; data is chunked long before it.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                header_block,
            } => {
                control_header(out, TYPE_SYN_STREAM, *flags, 10 + header_block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0);
                out.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                control_header(out, TYPE_SYN_REPLY, *flags, 4 + header_block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(header_block);
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                control_header(out, TYPE_HEADERS, *flags, 4 + header_block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    out.put_u32(u32::from(*flags) << 24 | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Unknown { frame_type } => control_header(out, *frame_type, 0, 0),
        }
    }
}

fn control_header(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u32(u32::from(flags) << 24 | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let wire = buf.clone();
        // Every strict prefix is incomplete, never an error.
        for cut in 0..wire.len() {
            let mut partial = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut partial, 1 << 20), Ok(None), "prefix {cut}");
        }
        let decoded = decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_type_round_trips() {
        let block = Bytes::from_static(b"\x78\xbb compressed");
        round_trip(Frame::SynStream {
            stream_id: 7,
            associated_to: 3,
            priority: 5,
            flags: FLAG_FIN | 0x02, // FLAG_UNIDIRECTIONAL
            header_block: block.clone(),
        });
        round_trip(Frame::SynReply {
            stream_id: 9,
            flags: 0,
            header_block: block.clone(),
        });
        round_trip(Frame::Headers {
            stream_id: 0x7fff_ffff,
            flags: FLAG_FIN,
            header_block: block,
        });
        round_trip(Frame::RstStream {
            stream_id: 1,
            status: 5, // CANCEL
        });
        round_trip(Frame::Settings {
            flags: 1,
            entries: vec![(0, settings::INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)],
        });
        round_trip(Frame::Ping { id: 0xffff_fffe });
        round_trip(Frame::GoAway {
            last_good_stream_id: 11,
            status: goaway::OK,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 0,
            delta: 0x7fff_ffff,
        });
        round_trip(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        });
        round_trip(Frame::Data {
            stream_id: 5,
            flags: 0,
            data: Bytes::new(),
        });
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut buf = BytesMut::new();
        Frame::Ping { id: 1 }.encode(&mut buf);
        assert_eq!(
            &buf[..],
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
        );
        buf.clear();
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        }
        .encode(&mut buf);
        assert_eq!(&buf[..], b"\x00\x00\x00\x01\x01\x00\x00\x02ab");
        buf.clear();
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 0x1000,
        }
        .encode(&mut buf);
        assert_eq!(
            &buf[..],
            b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x10\x00"
        );
    }

    #[test]
    fn two_frames_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::new();
        Frame::Ping { id: 1 }.encode(&mut buf);
        Frame::Ping { id: 3 }.encode(&mut buf);
        assert_eq!(decode(&mut buf, 64), Ok(Some(Frame::Ping { id: 1 })));
        assert_eq!(decode(&mut buf, 64), Ok(Some(Frame::Ping { id: 3 })));
        assert_eq!(decode(&mut buf, 64), Ok(None));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            // SPDY/2 control frame.
            b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",
            // PING of the wrong length.
            b"\x80\x03\x00\x06\x00\x00\x00\x02\x00\x01",
            // SYN_STREAM too short.
            b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01",
            // SYN_STREAM for stream 0.
            b"\x80\x03\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            // SETTINGS whose count disagrees with its length.
            b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x05\x00\x00\x00\x07\x00\x00\x00\x01",
            // DATA on stream 0.
            b"\x00\x00\x00\x00\x00\x00\x00\x01x",
            // RST_STREAM too long.
            b"\x80\x03\x00\x03\x00\x00\x00\x09\x00\x00\x00\x01\x00\x00\x00\x01\x00",
        ];
        for case in cases {
            let mut buf = BytesMut::from(*case);
            assert!(decode(&mut buf, 1024).is_err(), "{case:?} accepted");
        }
        // A huge control frame is refused from its header alone.
        let mut buf = BytesMut::from(&b"\x80\x03\x00\x01\x00\xff\xff\xff"[..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn unknown_control_types_are_skipped() {
        let mut buf = BytesMut::from(&b"\x80\x03\x00\x0f\x00\x00\x00\x02xy"[..]);
        assert_eq!(
            decode(&mut buf, 64),
            Ok(Some(Frame::Unknown { frame_type: 15 }))
        );
        assert!(buf.is_empty());
    }
}
