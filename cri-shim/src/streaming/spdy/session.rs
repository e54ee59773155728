//! A SPDY/3.1 server session: one task reads frames, one writes them, and handlers get the
//! streams the client opens as [`Stream`]s to accept (SYN_REPLY) or reject (RST_STREAM).
//!
//! Flow control: we grant the client window as handlers consume its data, and we honour the
//! client's windows once it shows it keeps them. Kubernetes' SPDY library never sends
//! WINDOW_UPDATE, so a client that lets a window run dry without ever updating one is taken to
//! ignore flow control, and from then on its windows are not enforced (as kubelets do).

use super::frame::{self, goaway, rst, settings, Frame, FLAG_FIN};
use super::headers::{HeaderBlock, HeaderCompressor, HeaderDecompressor};
use super::SpdyError;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// The SPDY/3 default window of a stream, and of the connection in SPDY/3.1.
const INITIAL_WINDOW: i64 = 65_536;
/// The largest control frame accepted (header blocks of kube clients are a few hundred bytes).
const MAX_CONTROL_FRAME: usize = 1 << 20;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Outgoing data is cut into frames of at most this size.
const MAX_DATA_CHUNK: usize = 32 << 10;
/// Bytes received but not yet consumed, per session, before the reader stops reading (a
/// client that ignores our windows then meets TCP backpressure instead of our memory).
const INBOUND_BUDGET: usize = 4 << 20;
/// Streams open at once per session; more are refused.
const MAX_STREAMS: usize = 1024;
/// Streams opened but not yet taken by the handler; more are refused.
const INCOMING_QUEUE: usize = 64;
/// Outgoing data frames queued before writers wait for the socket.
const DATA_QUEUE: usize = 64;
/// How long a writer with an empty window waits for the client's first WINDOW_UPDATE before
/// concluding that the client does not do flow control.
const LENIENT_GRACE: Duration = Duration::from_millis(250);
/// After our GOAWAY, how long the client gets to close the connection itself.
const LINGER: Duration = Duration::from_secs(5);
/// How long a final flush may take before the connection is dropped.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer task sends.
enum Outgoing {
    /// A frame without a header block.
    Frame(Frame),
    /// A SYN_REPLY; its headers are compressed in send order by the writer.
    Reply {
        stream_id: u32,
        headers: HeaderBlock,
    },
    /// Flush and close our side of the connection.
    Shutdown,
}

/// Data received on a stream.
enum Inbound {
    Data(Bytes),
    Reset,
}

/// Send-side flow control.
struct Flow {
    conn_window: i64,
    initial_window: i64,
    /// Send windows of streams with a live writer.
    streams: HashMap<u32, i64>,
    /// Streams with a live writer that the client reset.
    reset: HashSet<u32>,
    /// The client has sent WINDOW_UPDATE or an initial window: it keeps windows.
    peer_flow_control: bool,
    /// Concluded that the client ignores windows: they are no longer enforced.
    lenient: bool,
}

/// Connection state shared by the tasks and the handler's streams.
struct Shared {
    control: mpsc::UnboundedSender<Outgoing>,
    data: mpsc::Sender<Outgoing>,
    flow: Mutex<Flow>,
    signals: Arc<Signals>,
    inbound_budget: Semaphore,
}

/// What the writer task shares too (it must not hold the senders it drains).
struct Signals {
    closed: watch::Sender<bool>,
    flow_changed: Notify,
    last_stream_id: AtomicU32,
}

impl Signals {
    fn close(&self) {
        self.closed.send_replace(true);
        self.flow_changed.notify_waiters();
    }
}

impl Shared {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        // A panic while holding the lock cannot leave the counters inconsistent.
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_control(&self, frame: Frame) {
        let _ = self.control.send(Outgoing::Frame(frame));
    }

    /// Waits until `want` bytes (or part of them) may be sent on `stream_id`.
    async fn reserve(&self, stream_id: u32, want: usize) -> Result<usize, SpdyError> {
        loop {
            let notified = self.signals.flow_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut flow = self.flow();
                if *self.signals.closed.borrow() {
                    return Err(SpdyError::Closed);
                }
                if flow.reset.contains(&stream_id) {
                    return Err(SpdyError::Reset(stream_id));
                }
                if flow.lenient {
                    return Ok(want);
                }
                let initial = flow.initial_window;
                let stream_window = *flow.streams.entry(stream_id).or_insert(initial);
                let available = flow.conn_window.min(stream_window);
                if available > 0 {
                    let n = want.min(available as usize);
                    flow.conn_window -= n as i64;
                    if let Some(w) = flow.streams.get_mut(&stream_id) {
                        *w -= n as i64;
                    }
                    return Ok(n);
                }
            }
            if tokio::time::timeout(LENIENT_GRACE, notified).await.is_err() {
                let mut flow = self.flow();
                if !flow.peer_flow_control && !flow.lenient {
                    tracing::debug!(
                        "SPDY client sends no WINDOW_UPDATE: not enforcing its windows"
                    );
                    flow.lenient = true;
                }
            }
        }
    }
}

/// A SPDY session over an upgraded connection. Dropping it tears the connection down.
pub struct Session {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Streams the client opens, in order.
pub type Incoming = mpsc::Receiver<Stream>;

impl Session {
    /// Starts serving SPDY on `io` (the connection after the 101 response).
    pub fn start<IO>(io: IO) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let signals = Arc::new(Signals {
            closed: watch::Sender::new(false),
            flow_changed: Notify::new(),
            last_stream_id: AtomicU32::new(0),
        });
        let shared = Arc::new(Shared {
            control: control_tx,
            data: data_tx,
            flow: Mutex::new(Flow {
                conn_window: INITIAL_WINDOW,
                initial_window: INITIAL_WINDOW,
                streams: HashMap::new(),
                reset: HashSet::new(),
                peer_flow_control: false,
                lenient: false,
            }),
            signals: signals.clone(),
            inbound_budget: Semaphore::new(INBOUND_BUDGET),
        });
        let writer = tokio::spawn(write_loop(write_half, control_rx, data_rx, signals));
        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let result = read_loop(read_half, &reader_shared, incoming_tx).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "closing SPDY connection");
                let status = match e {
                    SpdyError::Io(_) | SpdyError::Closed => goaway::OK,
                    _ => goaway::PROTOCOL_ERROR,
                };
                reader_shared.send_control(Frame::GoAway {
                    last_good_stream_id: reader_shared
                        .signals
                        .last_stream_id
                        .load(Ordering::Relaxed),
                    status,
                });
                let _ = reader_shared.control.send(Outgoing::Shutdown);
            }
            reader_shared.signals.close();
        });
        (
            Session {
                shared,
                reader,
                writer,
            },
            incoming_rx,
        )
    }

    /// Resolves once the connection is gone: the client closed it or it failed.
    pub async fn closed(&self) {
        let mut closed = self.shared.signals.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Ends the session cleanly: everything queued is sent, then GOAWAY, then our side of the
    /// connection is closed and the client gets a moment to close its side.
    pub async fn finish(mut self) {
        let goaway = Frame::GoAway {
            last_good_stream_id: self.shared.signals.last_stream_id.load(Ordering::Relaxed),
            status: goaway::OK,
        };
        if self.shared.data.send(Outgoing::Frame(goaway)).await.is_ok() {
            let _ = self.shared.data.send(Outgoing::Shutdown).await;
        }
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut self.writer).await;
        let _ = tokio::time::timeout(LINGER, self.closed()).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.signals.close();
    }
}

/// A stream the client opened, not yet accepted.
pub struct Stream {
    id: u32,
    headers: HeaderBlock,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Inbound>,
}

impl Stream {
    /// The stream ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers the client opened it with.
    pub fn headers(&self) -> &HeaderBlock {
        &self.headers
    }

    /// Accepts the stream (SYN_REPLY) and returns its two directions.
    pub fn accept(self) -> (StreamReader, StreamWriter) {
        let _ = self.shared.control.send(Outgoing::Reply {
            stream_id: self.id,
            headers: HeaderBlock::new(),
        });
        {
            let mut flow = self.shared.flow();
            let initial = flow.initial_window;
            flow.streams.insert(self.id, initial);
        }
        (
            StreamReader {
                id: self.id,
                shared: self.shared.clone(),
                rx: self.rx,
                unacknowledged: 0,
            },
            StreamWriter {
                id: self.id,
                shared: self.shared,
                finished: false,
            },
        )
    }

    /// Refuses the stream (RST_STREAM with `status`, one of [`rst`]).
    pub fn reject(self, status: u32) {
        self.shared.send_control(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }
}

/// The client-to-server direction of an accepted stream.
pub struct StreamReader {
    id: u32,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Inbound>,
    unacknowledged: usize,
}

impl StreamReader {
    /// The next chunk; `Ok(None)` once the client half-closed the stream (or the session
    /// ended), `Err(Reset)` if it reset it.
    pub async fn read(&mut self) -> Result<Option<Bytes>, SpdyError> {
        match self.rx.recv().await {
            Some(Inbound::Data(data)) => {
                self.consumed(data.len());
                Ok(Some(data))
            }
            Some(Inbound::Reset) => Err(SpdyError::Reset(self.id)),
            None => Ok(None),
        }
    }

    /// Returns the budget and grants the client more window once half of it is used.
    fn consumed(&mut self, len: usize) {
        self.shared.inbound_budget.add_permits(budget_for(len));
        self.unacknowledged += len;
        if self.unacknowledged as i64 >= INITIAL_WINDOW / 2 {
            self.shared.send_control(Frame::WindowUpdate {
                stream_id: self.id,
                delta: self.unacknowledged as u32,
            });
            self.unacknowledged = 0;
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // Unread data still holds budget.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Inbound::Data(data) = item {
                self.shared
                    .inbound_budget
                    .add_permits(budget_for(data.len()));
            }
        }
    }
}

/// The server-to-client direction of an accepted stream. Dropping it unfinished half-closes
/// the stream when the queue has room.
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamWriter {
    /// Sends `data`, waiting for window and for room in the send queue.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), SpdyError> {
        if self.finished {
            return Err(SpdyError::Protocol(format!(
                "write on finished stream {}",
                self.id
            )));
        }
        while !data.is_empty() {
            let want = data.len().min(MAX_DATA_CHUNK);
            let n = self.shared.reserve(self.id, want).await?;
            let (chunk, rest) = data.split_at(n);
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            })
            .await?;
            data = rest;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN) after everything written so far.
    pub async fn finish(&mut self) -> Result<(), SpdyError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.shared
            .data
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| SpdyError::Closed)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.shared.data.try_send(Outgoing::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }));
        }
        let mut flow = self.shared.flow();
        flow.streams.remove(&self.id);
        flow.reset.remove(&self.id);
    }
}

/// Budget permits held by a chunk of `len` bytes (a chunk larger than the whole budget takes
/// all of it).
fn budget_for(len: usize) -> usize {
    len.min(INBOUND_BUDGET)
}

/// Reads frames until the client closes the connection or breaks the protocol.
async fn read_loop<R: AsyncRead + Unpin>(
    mut io: R,
    shared: &Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut headers = HeaderDecompressor::new(MAX_HEADER_BLOCK);
    let mut streams: HashMap<u32, mpsc::UnboundedSender<Inbound>> = HashMap::new();
    let mut last_stream_id = 0u32;
    let mut unacknowledged = 0usize;
    let mut going_away = false;
    loop {
        let frame = loop {
            if let Some(frame) = frame::decode(&mut buf, MAX_CONTROL_FRAME)? {
                break frame;
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                // Decompressed even when refused: the zlib stream spans every block.
                let block = headers.decompress(&header_block)?;
                if stream_id % 2 == 0 || stream_id <= last_stream_id {
                    shared.send_control(Frame::RstStream {
                        stream_id,
                        status: rst::PROTOCOL_ERROR,
                    });
                    continue;
                }
                last_stream_id = stream_id;
                shared
                    .signals
                    .last_stream_id
                    .store(stream_id, Ordering::Relaxed);
                // Streams whose reader is gone (refused, or not read by the handler) need no
                // entry: what the client still sends on them is dropped anyway.
                streams.retain(|_, tx| !tx.is_closed());
                if going_away || streams.len() >= MAX_STREAMS {
                    shared.send_control(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    });
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                // A stream opened with FIN has nothing to read: its sender is dropped now.
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let stream = Stream {
                    id: stream_id,
                    headers: block,
                    shared: shared.clone(),
                    rx,
                };
                if let Err(refused) = incoming.try_send(stream) {
                    streams.remove(&stream_id);
                    let stream = match refused {
                        mpsc::error::TrySendError::Full(s)
                        | mpsc::error::TrySendError::Closed(s) => s,
                    };
                    stream.reject(rst::REFUSED_STREAM);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                // The connection window is granted back as soon as data arrives: the
                // per-stream windows and the inbound budget are what bound memory.
                unacknowledged += data.len();
                if unacknowledged as i64 >= INITIAL_WINDOW / 2 {
                    shared.send_control(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: unacknowledged as u32,
                    });
                    unacknowledged = 0;
                }
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() {
                        let permits = budget_for(data.len());
                        if let Ok(permit) = shared.inbound_budget.acquire_many(permits as u32).await
                        {
                            permit.forget();
                        }
                        if tx.send(Inbound::Data(data)).is_err() {
                            shared.inbound_budget.add_permits(permits);
                            streams.remove(&stream_id);
                        }
                    }
                }
                // Data for streams that are not open is dropped: the client may still be
                // sending when a handler is done with a stream.
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(tx) = streams.remove(&stream_id) {
                    let _ = tx.send(Inbound::Reset);
                }
                let mut flow = shared.flow();
                if flow.streams.remove(&stream_id).is_some() {
                    flow.reset.insert(stream_id);
                }
                drop(flow);
                shared.signals.flow_changed.notify_waiters();
            }
            Frame::Settings { entries, .. } => {
                let mut flow = shared.flow();
                for (_, id, value) in entries {
                    if id == settings::INITIAL_WINDOW_SIZE && value <= 0x7fff_ffff {
                        let delta = i64::from(value) - flow.initial_window;
                        flow.initial_window = i64::from(value);
                        for window in flow.streams.values_mut() {
                            *window += delta;
                        }
                        flow.peer_flow_control = true;
                    }
                }
                drop(flow);
                shared.signals.flow_changed.notify_waiters();
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut flow = shared.flow();
                flow.peer_flow_control = true;
                let delta = i64::from(delta);
                if stream_id == 0 {
                    flow.conn_window = (flow.conn_window + delta).min(0x7fff_ffff);
                } else if let Some(window) = flow.streams.get_mut(&stream_id) {
                    *window = (*window + delta).min(0x7fff_ffff);
                }
                drop(flow);
                shared.signals.flow_changed.notify_waiters();
            }
            Frame::Ping { id } => {
                // Odd IDs are the client's own pings; even ones would answer ours (we send none).
                if id % 2 == 1 {
                    shared.send_control(Frame::Ping { id });
                }
            }
            Frame::GoAway { .. } => going_away = true,
            Frame::Headers { header_block, .. } | Frame::SynReply { header_block, .. } => {
                // Nothing to do with them, but the zlib stream must see them.
                headers.decompress(&header_block)?;
            }
            Frame::Unknown { .. } => {}
        }
    }
}

/// Writes queued frames, control frames first, coalescing what is ready into one write.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut control: mpsc::UnboundedReceiver<Outgoing>,
    mut data: mpsc::Receiver<Outgoing>,
    signals: Arc<Signals>,
) {
    let mut headers = HeaderCompressor::new();
    let mut out = BytesMut::with_capacity(64 << 10);
    'serve: loop {
        let first = tokio::select! {
            biased;
            Some(item) = control.recv() => item,
            Some(item) = data.recv() => item,
            else => break,
        };
        let mut next = Some(first);
        let mut shutdown = false;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => frame.encode(&mut out),
                Outgoing::Reply {
                    stream_id,
                    headers: block,
                } => match headers.compress(&block) {
                    Ok(compressed) => Frame::SynReply {
                        stream_id,
                        flags: 0,
                        header_block: compressed.into(),
                    }
                    .encode(&mut out),
                    Err(e) => {
                        tracing::warn!(error = %e, "compressing SPDY headers");
                        break 'serve;
                    }
                },
                Outgoing::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if out.len() < 64 << 10 {
                next = control.try_recv().ok().or_else(|| data.try_recv().ok());
            }
        }
        if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
            break;
        }
        out.clear();
        if shutdown {
            let _ = io.shutdown().await;
            // The reader decides when the connection is gone; nothing more is written.
            return;
        }
    }
    signals.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::headers::HeaderBlock;
    use tokio::io::DuplexStream;

    /// Reads frames the session sent until one matches.
    async fn next_frame(io: &mut DuplexStream, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if let Some(frame) = frame::decode(buf, 1 << 20).unwrap() {
                return Some(frame);
            }
            if io.read_buf(buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    fn syn_stream(tx: &mut HeaderCompressor, id: u32, kind: &str) -> BytesMut {
        let mut block = HeaderBlock::new();
        block.push("streamType", kind);
        let mut out = BytesMut::new();
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            header_block: tx.compress(&block).unwrap().into(),
        }
        .encode(&mut out);
        out
    }

    #[tokio::test]
    async fn streams_pings_and_half_closes() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let (session, mut incoming) = Session::start(server);
        let mut tx = HeaderCompressor::new();
        let mut rx = HeaderDecompressor::new(1 << 16);
        let mut buf = BytesMut::new();

        client
            .write_all(&syn_stream(&mut tx, 1, "stdin"))
            .await
            .unwrap();
        let mut wire = BytesMut::new();
        Frame::Ping { id: 7 }.encode(&mut wire);
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"input"),
        }
        .encode(&mut wire);
        client.write_all(&wire).await.unwrap();

        let stream = incoming.recv().await.unwrap();
        assert_eq!(stream.headers().get("streamtype"), Some("stdin"));
        let (mut reader, mut writer) = stream.accept();
        assert_eq!(reader.read().await.unwrap().as_deref(), Some(&b"input"[..]));
        assert_eq!(reader.read().await.unwrap(), None);
        writer.write(b"output").await.unwrap();
        writer.finish().await.unwrap();

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let frame = next_frame(&mut client, &mut buf).await.unwrap();
            seen.push(match frame {
                Frame::SynReply {
                    stream_id,
                    header_block,
                    ..
                } => {
                    assert_eq!(rx.decompress(&header_block).unwrap(), HeaderBlock::new());
                    format!("reply {stream_id}")
                }
                Frame::Ping { id } => format!("ping {id}"),
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => format!(
                    "data {stream_id} {flags} {}",
                    String::from_utf8_lossy(&data)
                ),
                other => format!("{other:?}"),
            });
        }
        // The reply precedes the stream's data; the PING echo may come at any point.
        seen.retain(|s| s != "ping 7");
        assert_eq!(seen, ["reply 1", "data 1 0 output", "data 1 1 "]);

        let finishing = tokio::spawn(session.finish());
        assert!(matches!(
            next_frame(&mut client, &mut buf).await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::OK
            })
        ));
        assert_eq!(next_frame(&mut client, &mut buf).await, None);
        // The session waits for the client to close its side, then is done.
        drop(client);
        tokio::time::timeout(Duration::from_secs(1), finishing)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_a_protocol_error() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (session, mut incoming) = Session::start(server);
        // A SPDY/2 control frame.
        client
            .write_all(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
            .await
            .unwrap();
        assert!(incoming.recv().await.is_none());
        session.closed().await;
        let mut buf = BytesMut::new();
        assert!(matches!(
            next_frame(&mut client, &mut buf).await,
            Some(Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_silent_client_gets_data_beyond_the_window() {
        let (mut client, server) = tokio::io::duplex(4 << 20);
        let (_session, mut incoming) = Session::start(server);
        let mut tx = HeaderCompressor::new();
        client
            .write_all(&syn_stream(&mut tx, 1, "stdout"))
            .await
            .unwrap();
        let (_reader, mut writer) = incoming.recv().await.unwrap().accept();
        // Four windows' worth, with no WINDOW_UPDATE ever sent.
        let started = std::time::Instant::now();
        writer
            .write(&vec![b'x'; 4 * INITIAL_WINDOW as usize])
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
