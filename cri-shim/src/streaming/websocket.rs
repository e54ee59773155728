//! remotecommand over WebSocket, as newer Kubernetes clients speak it: the
//! `v5.channel.k8s.io` and `v4.channel.k8s.io` subprotocols. Every binary message belongs to
//! one channel, named by its first byte: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. v5
//! adds a close signal, a message on channel 255 whose payload is the channel the client has
//! finished writing (its stdin), since a WebSocket cannot be half-closed. Which channels
//! exist comes from the pending request, not from the URL's query.
//!
//! Port-forward over WebSocket is SPDY tunnelled: with the `SPDY/3.1+portforward.k8s.io`
//! subprotocol, binary messages carry the bytes of an ordinary SPDY session ([`tunnel`]).
//!
//! Other subprotocols are refused before the upgrade, so clients fall back to SPDY.

use super::remotecommand::{Streams, Version, Wanted};
use super::transport::{Input, Output, StreamClosed};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::header::HeaderMap;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The subprotocols spoken for exec and attach, in order of preference.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The subprotocol of port-forward: a SPDY session tunnelled in binary messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the payload's first byte names a channel the client closed.
const CLOSE: u8 = 255;

/// Outgoing messages queued before writers wait for the socket.
const OUT_QUEUE: usize = 16;
/// Incoming messages per channel queued before the reader waits for the handler.
const IN_QUEUE: usize = 16;
/// Outgoing data is cut into messages of at most this size.
const MAX_MESSAGE: usize = 32 << 10;
/// How long a final flush may take before the connection is dropped.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// After our close frame, how long the client gets to answer it.
const LINGER: Duration = Duration::from_secs(5);
/// Bytes in flight between a tunnel and its SPDY session, each way.
const TUNNEL_BUFFER: usize = 64 << 10;

/// The request asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has_token(hyper::header::CONNECTION, "upgrade")
        && has_token(hyper::header::UPGRADE, "websocket")
}

/// The subprotocols the client offers, in its order.
pub fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `Sec-WebSocket-Accept` answer to the client's key; `None` without a key.
pub fn accept_key(headers: &HeaderMap) -> Option<String> {
    let key = headers.get(hyper::header::SEC_WEBSOCKET_KEY)?;
    Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Writes one output channel.
pub struct ChannelWriter {
    channel: u8,
    out: mpsc::Sender<Message>,
}

impl ChannelWriter {
    /// Sends `data` on the channel, waiting while the client does not keep up.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamClosed> {
        for chunk in data.chunks(MAX_MESSAGE) {
            let mut message = Vec::with_capacity(chunk.len() + 1);
            message.push(self.channel);
            message.extend_from_slice(chunk);
            self.out
                .send(Message::Binary(message.into()))
                .await
                .map_err(|_| StreamClosed)?;
        }
        Ok(())
    }
}

/// A WebSocket connection serving one exec or attach. Dropping it tears the connection down.
pub struct WsSession {
    out: mpsc::Sender<Message>,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl WsSession {
    /// Starts serving the upgraded connection `io`, with the channels `wanted` says.
    pub async fn start<IO>(io: IO, version: Version, wanted: Wanted) -> (WsSession, Streams)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, stream) = ws.split();
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (closed_tx, closed) = watch::channel(false);
        let writer = |channel| {
            Output::Channel(ChannelWriter {
                channel,
                out: out.clone(),
            })
        };
        let input = |on: bool| {
            on.then(|| {
                let (tx, rx) = mpsc::channel(IN_QUEUE);
                (tx, Input::Channel(rx))
            })
            .unzip()
        };
        let (stdin_tx, stdin) = input(wanted.stdin);
        let (resize_tx, resize) = input(wanted.tty);
        let streams = Streams {
            error: Some(writer(ERROR)),
            stdin,
            stdout: wanted.stdout.then(|| writer(STDOUT)),
            stderr: wanted.stderr.then(|| writer(STDERR)),
            resize,
            held: Vec::new(),
        };
        // As Kubernetes servers do: an empty message on the lowest output channel tells the
        // client the streams are ready.
        let first = [(wanted.stdout, STDOUT), (wanted.stderr, STDERR)]
            .into_iter()
            .find_map(|(on, channel)| on.then_some(channel))
            .unwrap_or(ERROR);
        let _ = out.try_send(Message::Binary(Bytes::from(vec![first])));
        let inputs = Inputs {
            stdin: stdin_tx,
            resize: resize_tx,
            close_signal: version >= Version::V5,
        };
        let reader = tokio::spawn(read_loop(stream, inputs, closed_tx));
        let writer = tokio::spawn(write_loop(sink, out_rx));
        let session = WsSession {
            out,
            closed,
            reader,
            writer,
        };
        (session, streams)
    }

    /// Resolves once the client is gone or has closed the connection.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Sends what is queued and a close frame, then gives the client a moment to answer it.
    pub async fn finish(mut self) {
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        if self.out.send(close).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut self.writer).await;
        }
        let _ = tokio::time::timeout(LINGER, self.closed()).await;
    }
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Turns the WebSocket connection `io` into a byte stream: what arrives in binary messages is
/// read from the returned stream, what is written to it goes out in binary messages. When
/// the stream is dropped the connection is closed.
pub async fn tunnel<IO>(io: IO) -> DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (ours, theirs) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut from_session, mut to_session) = tokio::io::split(ours);
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(data) if to_session.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = to_session.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; MAX_MESSAGE];
            while let Ok(n @ 1..) = from_session.read(&mut buf).await {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if sink.send(Message::Binary(data)).await.is_err() {
                    return;
                }
            }
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        };
        tokio::pin!(inbound, outbound);
        // Whichever side ends first, the other gets a moment to finish.
        tokio::select! {
            _ = &mut outbound => {
                let _ = tokio::time::timeout(LINGER, inbound).await;
            }
            _ = &mut inbound => {
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, outbound).await;
            }
        }
    });
    theirs
}

/// Where the reader hands the client's channels.
struct Inputs {
    stdin: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Sender<Bytes>>,
    close_signal: bool,
}

/// Demultiplexes the client's messages until it closes or goes away. Pings are answered by
/// the WebSocket layer itself.
async fn read_loop<IO>(
    mut stream: SplitStream<WebSocketStream<IO>>,
    mut inputs: Inputs,
    closed: watch::Sender<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some(&channel) = data.first() else {
            continue;
        };
        let payload = data.slice(1..);
        match channel {
            STDIN => forward(&mut inputs.stdin, payload).await,
            RESIZE => forward(&mut inputs.resize, payload).await,
            CLOSE if inputs.close_signal => match payload.first() {
                // Dropping the sender is the end of that input.
                Some(&STDIN) => inputs.stdin = None,
                Some(&RESIZE) => inputs.resize = None,
                _ => {}
            },
            _ => {}
        }
    }
    closed.send_replace(true);
}

/// Hands `payload` to an input; one whose handler is gone is dropped from then on.
async fn forward(input: &mut Option<mpsc::Sender<Bytes>>, payload: Bytes) {
    if payload.is_empty() {
        return;
    }
    if let Some(tx) = input {
        if tx.send(payload).await.is_err() {
            *input = None;
        }
    }
}

/// Sends queued messages until a close frame went out or every writer is gone.
async fn write_loop<IO>(
    mut sink: SplitSink<WebSocketStream<IO>, Message>,
    mut out: mpsc::Receiver<Message>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = out.recv().await {
        let close = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || close {
            break;
        }
    }
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn upgrade_and_protocols_are_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert("upgrade", HeaderValue::from_static("WebSocket"));
        headers.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, base64.channel.k8s.io"),
        );
        headers.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert!(is_upgrade(&headers));
        assert_eq!(
            requested_protocols(&headers),
            [
                "v5.channel.k8s.io",
                "base64.channel.k8s.io",
                "v4.channel.k8s.io"
            ]
        );
        assert_eq!(accept_key(&headers), None);
        // RFC 6455's example.
        headers.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            accept_key(&headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        headers.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_upgrade(&headers));
    }
}
