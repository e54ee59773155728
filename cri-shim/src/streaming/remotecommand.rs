//! Kubernetes' remotecommand protocol, server side, for exec and the pieces attach shares
//! ([`super::attach`]): over SPDY the client opens one stream per `streamType` (`error`,
//! `stdin`, `stdout`, `stderr`, `resize`); over WebSocket they are channels of one connection
//! ([`super::websocket`]). The server runs the command and pumps bytes, and the error stream
//! carries the outcome — plain text on failure up to v3, a `metav1.Status` JSON (with the exit
//! code) from v4 on. Over SPDY, v5 is v4: its CLOSE signal is a WebSocket matter; SPDY
//! half-closes stdin natively.

use super::process::{ExecEnv, ExecProcess, ProcessIo};
use super::pty::Pty;
use super::spdy::Incoming;
use super::transport::{Connection, Input, Output};
use super::ExecRequest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// The protocols offered, in order of preference.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// How long the client gets to open its streams.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process exits, how long its output may make no progress before it is cut (a
/// background child can keep a pipe or the terminal open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size of the output pumps.
const CHUNK: usize = 32 << 10;

/// A negotiated remotecommand version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: terminal resizing.
    V3,
    /// `v4.channel.k8s.io`: exit codes as JSON status.
    V4,
    /// `v5.channel.k8s.io`.
    V5,
}

impl Version {
    /// The version named by a protocol string; the empty string (no negotiation) is v1.
    pub fn from_protocol(name: &str) -> Option<Version> {
        Some(match name {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            "channel.k8s.io" | "" => Version::V1,
            _ => return None,
        })
    }

    pub(super) fn resizes(self) -> bool {
        self >= Version::V3
    }

    fn json_status(self) -> bool {
        self >= Version::V4
    }
}

/// How the command ended, as reported on the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// It could not be run or waited for.
    Failed(String),
}

/// The error stream's content for `outcome`; `None` when nothing is written (success before v4).
pub fn status_message(version: Version, outcome: &Outcome) -> Option<Vec<u8>> {
    let failure = match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Outcome::Failed(message) => {
            Some(format!("error executing command in container: {message}"))
        }
    };
    if !version.json_status() {
        return failure.map(String::into_bytes);
    }
    let status = match (outcome, failure) {
        (_, None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Outcome::Exited(code), Some(message)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            // metav1.StatusCause serialises its Type as "reason".
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        (Outcome::Failed(_), Some(message)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// Which streams a session has.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client reads stdout.
    pub stdout: bool,
    /// The client reads stderr.
    pub stderr: bool,
    /// A terminal: stderr is merged into stdout and the client may resize it.
    pub tty: bool,
}

impl From<&super::AttachRequest> for Wanted {
    fn from(request: &super::AttachRequest) -> Self {
        Wanted {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr && !request.tty,
            tty: request.tty,
        }
    }
}

impl From<&ExecRequest> for Wanted {
    fn from(request: &ExecRequest) -> Self {
        Wanted {
            stdin: request.stdin,
            stdout: request.stdout,
            // A terminal merges stderr into stdout, as kubelets do.
            stderr: request.stderr && !request.tty,
            tty: request.tty,
        }
    }
}

/// The streams of one session, by type.
#[derive(Default)]
pub struct Streams {
    pub(super) error: Option<Output>,
    pub(super) stdin: Option<Input>,
    pub(super) stdout: Option<Output>,
    pub(super) stderr: Option<Output>,
    pub(super) resize: Option<Input>,
    /// Our direction of stdin and resize. Held open until the end: client-go closes its stdin
    /// as soon as the server half-closes it, even before it sent what it had.
    pub(super) held: Vec<Output>,
}

/// Serves one exec session over SPDY to its end.
pub async fn serve_exec(
    connection: Connection,
    mut incoming: Incoming,
    version: Version,
    request: ExecRequest,
    env: &ExecEnv,
) {
    let streams = match wait_for_streams(&mut incoming, version, Wanted::from(&request)).await {
        Ok(streams) => streams,
        Err(e) => {
            tracing::warn!(container = %request.container_id, error = e, "exec streams");
            return;
        }
    };
    // Streams the client opens later are refused by dropping the receiver.
    drop(incoming);
    run_exec(connection, streams, version, request, env).await;
}

/// Runs an exec whose streams are open.
pub async fn run_exec(
    session: Connection,
    streams: Streams,
    version: Version,
    mut request: ExecRequest,
    env: &ExecEnv,
) {
    request.stderr &= !request.tty;
    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
        held,
    } = streams;

    let mut process = match ExecProcess::spawn(env, &request).await {
        Ok(process) => process,
        Err(e) => {
            tracing::warn!(container = %request.container_id, error = %e, "exec failed to start");
            let open = [stdout, stderr].into_iter().flatten().chain(held).collect();
            finish(
                session,
                version,
                error,
                Outcome::Failed(e.to_string()),
                open,
            )
            .await;
            return;
        }
    };
    tracing::info!(container = %request.container_id, cmd = ?request.cmd, tty = request.tty, "exec started");

    let mut inputs: Vec<JoinHandle<()>> = Vec::new();
    let mut outputs: Vec<JoinHandle<()>> = Vec::new();
    let progress = Arc::new(AtomicU64::new(0));
    match process.io.take() {
        Some(ProcessIo::Pipes {
            stdin: pipe_in,
            stdout: pipe_out,
            stderr: pipe_err,
        }) => {
            if let (Some(reader), Some(pipe)) = (stdin, pipe_in) {
                inputs.push(tokio::spawn(pump_stdin_to_pipe(reader, pipe)));
            }
            if let (Some(writer), Some(pipe)) = (stdout, pipe_out) {
                outputs.push(tokio::spawn(pump_output(pipe, writer, progress.clone())));
            }
            if let (Some(writer), Some(pipe)) = (stderr, pipe_err) {
                outputs.push(tokio::spawn(pump_output(pipe, writer, progress.clone())));
            }
        }
        Some(ProcessIo::Tty(pty)) => {
            if let Some(reader) = stdin {
                inputs.push(tokio::spawn(pump_stdin_to_pty(reader, pty.clone())));
            }
            if let Some(reader) = resize {
                let terminal = Terminal::Pty(pty.clone());
                inputs.push(tokio::spawn(apply_resizes(reader, terminal)));
            }
            outputs.push(tokio::spawn(pump_pty(pty, stdout, progress.clone())));
        }
        None => {}
    }

    let outcome = tokio::select! {
        code = process.wait() => match code {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        _ = session.closed() => {
            tracing::info!(container = %request.container_id, "exec client went away: killing the process");
            process.kill().await;
            for task in inputs.iter().chain(&outputs) {
                task.abort();
            }
            return;
        }
    };
    for task in &inputs {
        task.abort();
    }
    tokio::select! {
        _ = drain(outputs, &progress) => {}
        _ = session.closed() => return,
    }
    tracing::info!(container = %request.container_id, outcome = ?outcome, "exec finished");
    finish(session, version, error, outcome, held).await;
}

/// Waits for the output pumps to reach EOF for as long as they make progress.
async fn drain(outputs: Vec<JoinHandle<()>>, progress: &AtomicU64) {
    let aborts: Vec<_> = outputs.iter().map(JoinHandle::abort_handle).collect();
    let all = futures::future::join_all(outputs);
    tokio::pin!(all);
    let mut seen = progress.load(Ordering::Relaxed);
    while tokio::time::timeout(DRAIN_TIMEOUT, &mut all).await.is_err() {
        let now = progress.load(Ordering::Relaxed);
        if now == seen {
            for abort in &aborts {
                abort.abort();
            }
            // Cancelled pumps drop their writers, which queues their FINs: wait for that so
            // they go out before the status and GOAWAY.
            all.await;
            return;
        }
        seen = now;
    }
}

/// Reports the outcome, half-closes what is left and ends the session.
pub(super) async fn finish(
    session: Connection,
    version: Version,
    error: Option<Output>,
    outcome: Outcome,
    open: Vec<Output>,
) {
    if let Some(mut error) = error {
        if let Some(message) = status_message(version, &outcome) {
            let _ = error.write(&message).await;
        }
        error.finish().await;
    }
    for mut writer in open {
        writer.finish().await;
    }
    session.finish().await;
}

/// Accepts the client's SPDY streams until every expected one is there.
pub(super) async fn wait_for_streams(
    incoming: &mut Incoming,
    version: Version,
    wanted: Wanted,
) -> Result<Streams, &'static str> {
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(wanted.tty && version.resizes());
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut streams = Streams::default();
    let mut received = 0;
    while received < expected {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("client closed the connection before opening its streams"),
            Err(_) => return Err("timed out waiting for the client to open its streams"),
        };
        let kind = stream
            .headers()
            .get("streamtype")
            .unwrap_or_default()
            .to_string();
        // Like kubelets, an unknown type is accepted and ignored.
        let (reader, writer) = stream.accept();
        let (reader, writer) = (Input::Spdy(reader), Output::Spdy(writer));
        match kind.as_str() {
            "error" => streams.error = Some(writer),
            "stdin" => {
                streams.stdin = Some(reader);
                streams.held.push(writer);
            }
            "stdout" => streams.stdout = Some(writer),
            "stderr" => streams.stderr = Some(writer),
            "resize" if version.resizes() => {
                streams.resize = Some(reader);
                streams.held.push(writer);
            }
            other => {
                tracing::debug!(stream_type = other, "ignoring an unexpected exec stream");
                continue;
            }
        }
        received += 1;
    }
    Ok(streams)
}

/// Client stdin into the process's stdin pipe; its end closes the pipe (EOF for the process).
async fn pump_stdin_to_pipe(mut reader: Input, mut pipe: tokio::process::ChildStdin) {
    while let Some(data) = reader.read().await {
        if pipe.write_all(&data).await.is_err() {
            break;
        }
    }
}

/// Client stdin into the terminal. A terminal cannot be half-closed, so its end changes nothing.
async fn pump_stdin_to_pty(mut reader: Input, pty: Arc<Pty>) {
    while let Some(data) = reader.read().await {
        if pty.write_all(&data).await.is_err() {
            break;
        }
    }
}

/// A process pipe to a client stream, then FIN.
async fn pump_output(
    mut pipe: impl AsyncRead + Unpin,
    mut writer: Output,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.write(&buf[..n]).await.is_err() {
                    return;
                }
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    writer.finish().await;
}

/// The terminal to the client's stdout stream, then FIN. Without a stdout stream the output is
/// still read, so the process never blocks on a full terminal.
async fn pump_pty(pty: Arc<Pty>, mut writer: Option<Output>, progress: Arc<AtomicU64>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pty.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(w) = writer.as_mut() {
                    if w.write(&buf[..n]).await.is_err() {
                        writer = None;
                    }
                }
            }
        }
    }
    if let Some(mut w) = writer {
        w.finish().await;
    }
}

/// The size the client's terminal has: `{"Width":W,"Height":H}`.
#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// A terminal the client can resize.
pub(super) enum Terminal {
    /// An exec's pty, held here.
    Pty(Arc<Pty>),
    /// A TTY container's, through its monitor (the monitor's socket directory).
    Monitor(std::path::PathBuf),
}

impl Terminal {
    async fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        match self {
            Terminal::Pty(pty) => pty.resize(width, height),
            Terminal::Monitor(socket_dir) => {
                let socket_dir = socket_dir.clone();
                tokio::task::spawn_blocking(move || {
                    skiff_monitor::resize(&socket_dir, width, height)
                })
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)
            }
        }
    }
}

/// Applies the JSON sizes the client sends back to back on the resize stream.
pub(super) async fn apply_resizes(mut reader: Input, terminal: Terminal) {
    let mut pending = Vec::new();
    while let Some(data) = reader.read().await {
        pending.extend_from_slice(&data);
        let (sizes, used) = parse_sizes(&pending);
        pending.drain(..used);
        for size in sizes {
            if let Err(e) = terminal.resize(size.width, size.height).await {
                tracing::debug!(error = %e, "resizing the terminal");
            }
        }
        // Garbage that never becomes a size must not grow without bound.
        if pending.len() > 4096 {
            tracing::debug!("dropping an unparsable resize stream");
            return;
        }
    }
}

/// The complete sizes at the start of `buf` and how many bytes they used; an incomplete value
/// at the end waits for more data, a malformed one ends parsing there.
fn parse_sizes(buf: &[u8]) -> (Vec<TerminalSize>, usize) {
    let mut sizes = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match values.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = values.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            // A value that is not a size: skip everything received so far.
            Some(Err(_)) => {
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    (sizes, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_statuses_carry_the_exit_code() {
        let ok: serde_json::Value =
            serde_json::from_slice(&status_message(Version::V4, &Outcome::Exited(0)).unwrap())
                .unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_slice(&status_message(Version::V5, &Outcome::Exited(3)).unwrap())
                .unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let broken: serde_json::Value = serde_json::from_slice(
            &status_message(Version::V4, &Outcome::Failed("no such container".into())).unwrap(),
        )
        .unwrap();
        assert_eq!(broken["status"], "Failure");
        assert!(broken["message"]
            .as_str()
            .unwrap()
            .contains("no such container"));
    }

    #[test]
    fn older_versions_report_failures_as_text_only() {
        assert_eq!(status_message(Version::V3, &Outcome::Exited(0)), None);
        let text = status_message(Version::V2, &Outcome::Exited(2)).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "command terminated with non-zero exit code: exit status 2"
        );
    }

    #[test]
    fn protocols_map_to_versions() {
        for name in PROTOCOLS {
            assert!(Version::from_protocol(name).is_some(), "{name}");
        }
        assert_eq!(Version::from_protocol(""), Some(Version::V1));
        assert_eq!(Version::from_protocol("v6.channel.k8s.io"), None);
        assert!(Version::V3.resizes() && !Version::V2.resizes());
    }

    #[test]
    fn resize_messages_parse_across_chunk_boundaries() {
        let stream = br#"{"Width":80,"Height":24}
{"Width":123,"Height":45}{"Wid"#;
        let (sizes, used) = parse_sizes(stream);
        assert_eq!(
            sizes,
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 123,
                    height: 45
                }
            ]
        );
        assert_eq!(&stream[used..], br#"{"Wid"#);
        let garbage = br#"{"Width":"wide"} trailing"#;
        let (sizes, used) = parse_sizes(garbage);
        assert!(sizes.is_empty());
        assert_eq!(used, garbage.len());
    }
}
