//! A small SPDY/3.1 client for the streaming tests, written from the protocol description and
//! sharing no code with skiffd's server: it upgrades an HTTP/1.1 connection, opens streams
//! with header blocks compressed against the SPDY/3 dictionary, and collects what the server
//! sends on each stream.
//!
//! A background task reads frames; tests wait on per-stream state (`read_to_end`,
//! `wait_for_output`). By default the client behaves like a strict SPDY peer and grants window
//! as it receives data; `without_flow_control` makes it behave like Kubernetes' Go library,
//! which never sends WINDOW_UPDATE.

use anyhow::{anyhow, bail, Context, Result};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The SPDY/3 header dictionary, first part: words that go on the wire as a 32-bit length and
/// the word, separated here by `|`.
const DICT_WORDS: &str = "options|head|post|put|delete|trace|accept|accept-charset|\
accept-encoding|accept-language|accept-ranges|age|allow|authorization|cache-control|\
connection|content-base|content-encoding|content-language|content-length|content-location|\
content-md5|content-range|content-type|date|etag|expect|expires|from|host|if-match|\
if-modified-since|if-none-match|if-range|if-unmodified-since|last-modified|location|\
max-forwards|pragma|proxy-authenticate|proxy-authorization|range|referer|retry-after|server|\
te|trailer|transfer-encoding|upgrade|user-agent|vary|via|warning|www-authenticate|method|get|\
status|200 OK|version|HTTP/1.1|url|public|set-cookie|keep-alive|origin";

/// Second part, appended as is.
const DICT_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412\
413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server \
Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov \
Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,\
image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate\
max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The dictionary bytes.
pub fn spdy3_dictionary() -> Vec<u8> {
    let mut dict = Vec::new();
    for word in DICT_WORDS.split('|') {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(DICT_TAIL.as_bytes());
    dict
}

/// What happened to one stream so far.
#[derive(Debug, Default, Clone)]
pub struct StreamState {
    /// Everything received.
    pub data: Vec<u8>,
    /// The server sent SYN_REPLY.
    pub replied: bool,
    /// The server half-closed the stream.
    pub fin: bool,
    /// The server reset it, with this status.
    pub reset: Option<u32>,
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, StreamState>,
    pongs: Vec<u32>,
    goaway: bool,
    /// The connection ended (EOF or error).
    closed: bool,
    error: Option<String>,
}

struct Writer {
    io: OwnedWriteHalf,
    zlib: Compress,
    next_stream: u32,
    next_ping: u32,
}

/// A client connection; dropping it closes the TCP connection without any goodbye.
pub struct SpdyClient {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
    /// The sub-protocol the server chose (`X-Stream-Protocol-Version`), if any.
    pub protocol: Option<String>,
}

/// The server did not switch protocols.
#[derive(Debug)]
pub struct UpgradeRefused {
    /// The HTTP status.
    pub status: u16,
    /// The response body.
    pub body: String,
}

impl std::fmt::Display for UpgradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for UpgradeRefused {}

/// Splits `http://host:port/path` into the address and the path.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((host.to_string(), path.to_string()))
}

impl SpdyClient {
    /// Connects to `url`, asks to upgrade to SPDY/3.1 offering `protocols`, and starts reading.
    /// A refused upgrade is an [`UpgradeRefused`] error.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<SpdyClient> {
        Self::connect_with(url, protocols, true).await
    }

    /// Like [`connect`](Self::connect), but never granting window: the Go client's behaviour.
    pub async fn without_flow_control(url: &str, protocols: &[&str]) -> Result<SpdyClient> {
        Self::connect_with(url, protocols, false).await
    }

    async fn connect_with(url: &str, protocols: &[&str], flow_control: bool) -> Result<SpdyClient> {
        let (host, path) = split_url(url)?;
        let mut tcp = TcpStream::connect(&host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
        );
        for p in protocols {
            request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await?;

        // Read the response head byte by byte so no SPDY frame after it is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(Duration::from_secs(10), tcp.read_u8())
                .await
                .context("waiting for the upgrade response")??;
            head.push(byte);
            if head.len() > 64 << 10 {
                bail!("response head too long");
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if status != 101 {
            let mut body = vec![
                0u8;
                header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0)
            ];
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut body)).await;
            return Err(UpgradeRefused {
                status,
                body: String::from_utf8_lossy(&body).to_string(),
            }
            .into());
        }
        if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
            bail!("101 without Upgrade: SPDY/3.1: {head:?}");
        }
        let protocol = header("x-stream-protocol-version");

        let (read_half, write_half) = tcp.into_split();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(&spdy3_dictionary())?;
        let writer = Arc::new(tokio::sync::Mutex::new(Writer {
            io: write_half,
            zlib,
            next_stream: 1,
            next_ping: 1,
        }));
        let (reader_state, reader_changed) = (state.clone(), changed.clone());
        let (updates_tx, mut updates_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let reader = tokio::spawn(async move {
            let result = read_frames(
                read_half,
                &reader_state,
                &reader_changed,
                flow_control,
                &updates_tx,
            )
            .await;
            let mut state = reader_state.lock().unwrap();
            state.closed = true;
            if let Err(e) = result {
                state.error = Some(e.to_string());
            }
            drop(state);
            reader_changed.notify_waiters();
        });
        // The reader produces window updates; this loop sends them (it ends with the reader).
        let update_writer = writer.clone();
        tokio::spawn(async move {
            while let Some(frame) = updates_rx.recv().await {
                let _ = update_writer.lock().await.io.write_all(&frame).await;
            }
        });
        Ok(SpdyClient {
            writer,
            state,
            changed,
            reader,
            protocol,
        })
    }

    async fn send_raw(&self, frame: &[u8]) -> Result<()> {
        let mut writer = self.writer.lock().await;
        writer.io.write_all(frame).await?;
        Ok(())
    }

    /// Opens a stream with `headers` and waits for the server's SYN_REPLY.
    pub async fn open_stream(&self, headers: &[(&str, &str)]) -> Result<u32> {
        let id = self.send_syn_stream(headers).await?;
        self.wait(Duration::from_secs(10), |s| {
            let stream = s.streams.get(&id);
            stream.is_some_and(|st| st.replied || st.reset.is_some())
        })
        .await
        .with_context(|| format!("waiting for the reply to stream {id}"))?;
        if let Some(status) = self.stream(id).reset {
            bail!("stream {id} refused with RST_STREAM {status}");
        }
        Ok(id)
    }

    /// Sends SYN_STREAM without waiting; returns the stream ID.
    pub async fn send_syn_stream(&self, headers: &[(&str, &str)]) -> Result<u32> {
        let mut block = Vec::new();
        block.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            block.extend_from_slice(&(name.len() as u32).to_be_bytes());
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(&(value.len() as u32).to_be_bytes());
            block.extend_from_slice(value.as_bytes());
        }
        let mut writer = self.writer.lock().await;
        let id = writer.next_stream;
        writer.next_stream += 2;
        let compressed = deflate_sync(&mut writer.zlib, &block)?;
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes()); // associated-to
        body.extend_from_slice(&[0, 0]); // priority 0, slot 0
        body.extend_from_slice(&compressed);
        self.state.lock().unwrap().streams.entry(id).or_default();
        writer.io.write_all(&control_frame(1, 0, &body)).await?;
        Ok(id)
    }

    /// Sends data on a stream.
    pub async fn write(&self, id: u32, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(16 << 10) {
            self.send_raw(&data_frame(id, 0, chunk)).await?;
        }
        Ok(())
    }

    /// Half-closes a stream (an empty DATA frame with FIN).
    pub async fn close(&self, id: u32) -> Result<()> {
        self.send_raw(&data_frame(id, 1, &[])).await
    }

    /// Resets a stream (RST_STREAM CANCEL).
    pub async fn reset(&self, id: u32) -> Result<()> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&5u32.to_be_bytes());
        self.send_raw(&control_frame(3, 0, &body)).await
    }

    /// Sends a PING and waits for its echo.
    pub async fn ping(&self) -> Result<Duration> {
        let id = {
            let mut writer = self.writer.lock().await;
            let id = writer.next_ping;
            writer.next_ping += 2;
            id
        };
        let start = Instant::now();
        self.send_raw(&control_frame(6, 0, &id.to_be_bytes()))
            .await?;
        self.wait(Duration::from_secs(5), |s| s.pongs.contains(&id))
            .await
            .context("waiting for the PING echo")?;
        Ok(start.elapsed())
    }

    /// Sends GOAWAY and closes our side of the TCP connection, as a finished client does.
    pub async fn goodbye(&self) -> Result<()> {
        let mut body = 0u32.to_be_bytes().to_vec();
        body.extend_from_slice(&0u32.to_be_bytes());
        let mut writer = self.writer.lock().await;
        writer.io.write_all(&control_frame(7, 0, &body)).await?;
        writer.io.shutdown().await?;
        Ok(())
    }

    /// A copy of what stream `id` received so far.
    pub fn stream(&self, id: u32) -> StreamState {
        self.state
            .lock()
            .unwrap()
            .streams
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the server sent GOAWAY.
    pub fn goaway(&self) -> bool {
        self.state.lock().unwrap().goaway
    }

    /// Waits for the server to half-close (or reset) stream `id` and returns its data.
    pub async fn read_to_end(&self, id: u32, timeout: Duration) -> Result<Vec<u8>> {
        self.wait(timeout, |s| {
            s.streams
                .get(&id)
                .is_some_and(|st| st.fin || st.reset.is_some())
        })
        .await
        .with_context(|| {
            format!(
                "stream {id} not finished; so far {:?}",
                String::from_utf8_lossy(&self.stream(id).data)
            )
        })?;
        Ok(self.stream(id).data)
    }

    /// Waits until the data of stream `id` contains `needle`.
    pub async fn wait_for_output(&self, id: u32, needle: &str, timeout: Duration) -> Result<()> {
        self.wait(timeout, |s| {
            s.streams
                .get(&id)
                .is_some_and(|st| String::from_utf8_lossy(&st.data).contains(needle))
        })
        .await
        .with_context(|| {
            format!(
                "{needle:?} not seen on stream {id}; got {:?}",
                String::from_utf8_lossy(&self.stream(id).data)
            )
        })
    }

    /// Waits until the server closed the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<()> {
        self.wait(timeout, |s| s.closed).await
    }

    async fn wait(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock().unwrap();
                if done(&state) {
                    return Ok(());
                }
                if state.closed {
                    bail!("connection closed ({:?})", state.error);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {timeout:?}");
            }
        }
    }
}

impl Drop for SpdyClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn control_frame(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(0x8003u16).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(body);
    frame
}

fn data_frame(id: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.len());
    frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(data);
    frame
}

fn deflate_sync(zlib: &mut Compress, input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + 128);
    let before = zlib.total_in();
    loop {
        let used = (zlib.total_in() - before) as usize;
        zlib.compress_vec(&input[used..], &mut out, FlushCompress::Sync)?;
        if (zlib.total_in() - before) as usize == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(1024);
    }
}

fn inflate_sync(zlib: &mut Decompress, input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 8 + 256);
    let before = zlib.total_in();
    loop {
        let used = (zlib.total_in() - before) as usize;
        match zlib.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync) {
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                zlib.set_dictionary(&spdy3_dictionary())?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if (zlib.total_in() - before) as usize == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

/// Parses an uncompressed header block into pairs.
fn parse_block(raw: &[u8]) -> Result<Vec<(String, String)>> {
    let field = |at: &mut usize| -> Result<String> {
        let len = u32::from_be_bytes(
            raw.get(*at..*at + 4)
                .ok_or_else(|| anyhow!("short"))?
                .try_into()?,
        ) as usize;
        *at += 4;
        let text = raw.get(*at..*at + len).ok_or_else(|| anyhow!("short"))?;
        *at += len;
        Ok(String::from_utf8_lossy(text).to_string())
    };
    let mut at = 4;
    let count = u32::from_be_bytes(raw.get(..4).ok_or_else(|| anyhow!("short"))?.try_into()?);
    let mut pairs = Vec::new();
    for _ in 0..count {
        pairs.push((field(&mut at)?, field(&mut at)?));
    }
    Ok(pairs)
}

async fn read_frames(
    mut io: tokio::net::tcp::OwnedReadHalf,
    state: &Mutex<State>,
    changed: &Notify,
    flow_control: bool,
    updates: &tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) -> Result<()> {
    let mut zlib = Decompress::new(true);
    loop {
        let mut head = [0u8; 8];
        match io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let flags = head[4];
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await?;
        let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes(head[..4].try_into()?);
            {
                let mut s = state.lock().unwrap();
                let stream = s.streams.entry(id).or_default();
                stream.data.extend_from_slice(&body);
                if flags & 1 != 0 {
                    stream.fin = true;
                }
            }
            if flow_control && !body.is_empty() {
                for target in [0, id] {
                    let mut update = target.to_be_bytes().to_vec();
                    update.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    let _ = updates.send(control_frame(9, 0, &update));
                }
            }
        } else {
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != 3 {
                bail!("server sent SPDY version {version}");
            }
            let mut s = state.lock().unwrap();
            match u16::from_be_bytes([head[2], head[3]]) {
                // SYN_REPLY
                2 => {
                    let id = word(0) & 0x7fff_ffff;
                    parse_block(&inflate_sync(&mut zlib, &body[4..])?)?;
                    let stream = s.streams.entry(id).or_default();
                    stream.replied = true;
                    if flags & 1 != 0 {
                        stream.fin = true;
                    }
                }
                // RST_STREAM
                3 => {
                    let id = word(0) & 0x7fff_ffff;
                    s.streams.entry(id).or_default().reset = Some(word(4));
                }
                // PING
                6 => s.pongs.push(word(0)),
                // GOAWAY
                7 => s.goaway = true,
                // SYN_STREAM from a server is not expected in these protocols.
                1 => bail!("server opened a stream"),
                _ => {}
            }
        }
        changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_has_the_spdy3_checksum() {
        let dict = spdy3_dictionary();
        assert_eq!(dict.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &dict {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(b << 16 | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_have_the_spec_layout() {
        assert_eq!(
            control_frame(6, 0, &7u32.to_be_bytes()),
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x07"
        );
        assert_eq!(
            data_frame(3, 1, b"hi"),
            b"\x00\x00\x00\x03\x01\x00\x00\x02hi"
        );
        assert_eq!(
            split_url("http://127.0.0.1:9/exec/abc").unwrap(),
            ("127.0.0.1:9".to_string(), "/exec/abc".to_string())
        );
    }

    #[test]
    fn header_blocks_round_trip_with_the_dictionary() {
        let mut tx = Compress::new(Compression::best(), true);
        tx.set_dictionary(&spdy3_dictionary()).unwrap();
        let mut rx = Decompress::new(true);
        for pairs in [
            vec![("streamtype", "error")],
            vec![("port", "80"), ("requestid", "1")],
        ] {
            let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
            for (n, v) in &pairs {
                raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
                raw.extend_from_slice(n.as_bytes());
                raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
                raw.extend_from_slice(v.as_bytes());
            }
            let wire = deflate_sync(&mut tx, &raw).unwrap();
            let back = parse_block(&inflate_sync(&mut rx, &wire).unwrap()).unwrap();
            let expected: Vec<(String, String)> = pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(back, expected);
        }
    }
}
