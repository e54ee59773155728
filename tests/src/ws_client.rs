//! A WebSocket remotecommand client for the streaming tests. tokio-tungstenite carries the
//! WebSocket frames; the Kubernetes channel framing on top (first byte of each binary message
//! is the channel: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5's close signal on 255)
//! is written here from the protocol description, sharing no code with skiffd's server.
//!
//! A background task collects what arrives per channel; tests wait on that state.

use anyhow::{anyhow, Context, Result};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The stdin channel.
pub const STDIN: u8 = 0;
/// The stdout channel.
pub const STDOUT: u8 = 1;
/// The stderr channel.
pub const STDERR: u8 = 2;
/// The error (status) channel.
pub const ERROR: u8 = 3;
/// The resize channel.
pub const RESIZE: u8 = 4;

/// What arrived so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Bytes per channel (0–4).
    pub channels: [Vec<u8>; 5],
    /// Empty messages per channel (the server's "ready" signal is one).
    pub empty_messages: [usize; 5],
    /// The server sent a close frame or the connection ended.
    pub closed: bool,
}

/// The server refused the upgrade with this HTTP status.
#[derive(Debug)]
pub struct WsRefused {
    /// The HTTP status.
    pub status: u16,
}

impl std::fmt::Display for WsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket upgrade refused with HTTP {}", self.status)
    }
}

impl std::error::Error for WsRefused {}

/// A connected client; dropping it drops the TCP connection.
pub struct WsClient {
    sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    state: Arc<(Mutex<Received>, Notify)>,
    reader: tokio::task::JoinHandle<()>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl WsClient {
    /// Connects to the streaming `url` (`http://…`), offering `protocols`. A refused upgrade
    /// is a [`WsRefused`] error.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<WsClient> {
        let ws_url = url
            .strip_prefix("http://")
            .map(|rest| format!("ws://{rest}"))
            .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
        let host = ws_url["ws://".len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut request = ws_url.as_str().into_client_request()?;
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&protocols.join(", "))?,
            );
        }
        let tcp = TcpStream::connect(&host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        let (ws, response) = match tokio_tungstenite::client_async(request, tcp).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(WsRefused {
                    status: response.status().as_u16(),
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (sink, mut stream) = ws.split();
        let state = Arc::new((Mutex::new(Received::default()), Notify::new()));
        let shared = state.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(data) => {
                        let Some((&channel, payload)) = data.split_first() else {
                            continue;
                        };
                        let mut received = shared.0.lock().unwrap();
                        if let Some(buf) = received.channels.get_mut(channel as usize) {
                            buf.extend_from_slice(payload);
                            if payload.is_empty() {
                                received.empty_messages[channel as usize] += 1;
                            }
                        }
                    }
                    Message::Close(_) => break,
                    _ => continue,
                }
                shared.1.notify_waiters();
            }
            shared.0.lock().unwrap().closed = true;
            shared.1.notify_waiters();
        });
        Ok(WsClient {
            sink,
            state,
            reader,
            protocol,
        })
    }

    /// Sends `data` on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut message = vec![channel];
        message.extend_from_slice(data);
        self.sink.send(Message::Binary(message.into())).await?;
        Ok(())
    }

    /// v5: tells the server the client is done writing `channel`.
    pub async fn close_channel(&mut self, channel: u8) -> Result<()> {
        self.sink
            .send(Message::Binary(vec![255, channel].into()))
            .await?;
        Ok(())
    }

    /// Sends a close frame (the client is leaving).
    pub async fn close(&mut self) -> Result<()> {
        self.sink.send(Message::Close(None)).await?;
        Ok(())
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.state.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what arrived, for up to `timeout`.
    pub async fn wait(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Received) -> bool,
    ) -> Result<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.1.notified();
            let received = self.received();
            if done(&received) {
                return Ok(received);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(anyhow!("timed out; received so far: {received:?}"));
            }
        }
    }

    /// Waits for the server to close the connection and returns everything received.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Received> {
        self.wait(timeout, |r| r.closed).await
    }
}
