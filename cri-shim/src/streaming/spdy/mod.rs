//! A small SPDY/3.1 server endpoint, as Kubernetes clients use it for exec, attach and
//! port-forward: frames ([`frame`]), compressed header blocks ([`headers`]) and a session that
//! multiplexes client-opened streams over one upgraded HTTP connection ([`session`]).

pub mod frame;
pub mod headers;
pub mod session;

pub use session::{Incoming, Session, Stream, StreamReader, StreamWriter};

/// Why a SPDY session or stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The connection is gone (closed by the peer, a network error, or shut down).
    #[error("SPDY connection closed")]
    Closed,
    /// The peer reset the stream.
    #[error("stream {0} was reset by the peer")]
    Reset(u32),
    /// The peer sent a frame that cannot be decoded.
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    /// The peer sent a header block that cannot be decompressed or parsed.
    #[error(transparent)]
    Headers(#[from] headers::HeaderError),
    /// The peer broke a protocol rule.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading or writing the connection failed.
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
}
