//! The streams of a remotecommand session, whatever carries them: SPDY streams, or the
//! channels of a WebSocket connection. Exec and attach are written against these types, so
//! they run the same over either.

use super::spdy::{Session, StreamReader, StreamWriter};
use super::websocket::{ChannelWriter, WsSession};
use bytes::Bytes;
use tokio::sync::mpsc;

/// The client went away or closed the stream.
#[derive(Debug, thiserror::Error)]
#[error("the client closed the stream")]
pub struct StreamClosed;

/// A stream the client writes: stdin or resize.
pub enum Input {
    /// A SPDY stream.
    Spdy(StreamReader),
    /// A WebSocket channel, demultiplexed by the connection's reader.
    Channel(mpsc::Receiver<Bytes>),
}

impl Input {
    /// The next bytes the client sent; `None` once it closed the stream or went away.
    pub async fn read(&mut self) -> Option<Bytes> {
        match self {
            Input::Spdy(reader) => reader.read().await.ok().flatten(),
            Input::Channel(rx) => rx.recv().await,
        }
    }
}

/// A stream the server writes: stdout, stderr or error.
pub enum Output {
    /// A SPDY stream.
    Spdy(StreamWriter),
    /// A WebSocket channel.
    Channel(ChannelWriter),
}

impl Output {
    /// Sends `data`, waiting while the client does not keep up.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamClosed> {
        match self {
            Output::Spdy(writer) => writer.write(data).await.map_err(|_| StreamClosed),
            Output::Channel(writer) => writer.write(data).await,
        }
    }

    /// Ends the stream (a SPDY FIN; WebSocket channels end with the connection).
    pub async fn finish(&mut self) {
        match self {
            Output::Spdy(writer) => {
                let _ = writer.finish().await;
            }
            Output::Channel(_) => {}
        }
    }
}

/// The connection the streams share.
pub enum Connection {
    /// SPDY/3.1.
    Spdy(Session),
    /// WebSocket.
    Ws(WsSession),
}

impl Connection {
    /// Resolves once the client is gone.
    pub async fn closed(&self) {
        match self {
            Connection::Spdy(session) => session.closed().await,
            Connection::Ws(session) => session.closed().await,
        }
    }

    /// Sends what is queued and ends the connection cleanly.
    pub async fn finish(self) {
        match self {
            Connection::Spdy(session) => session.finish().await,
            Connection::Ws(session) => session.finish().await,
        }
    }
}
