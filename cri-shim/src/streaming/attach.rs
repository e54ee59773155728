//! Attach: a client's remotecommand streams joined to a running container's stdio through its
//! monitor's attach connection ([`skiff_monitor::attach`]): output frames go to the stdout and
//! stderr streams, stdin goes to the monitor (whose `--stdin-once` decides whether the end of
//! this session's input closes the container's stdin), resizes become the monitor's `resize`.
//! The session ends with the container's output (a success status, as kubelets report it), or
//! when the client goes away, which only detaches it. The monitor also ends a session whose
//! client falls too far behind the output; that one ends with a failure status.

use super::remotecommand::{apply_resizes, finish, Outcome, Streams, Terminal, Version};
use super::transport::{Connection, Input, Output};
use super::AttachRequest;
use skiff_monitor::attach::{decode_header, FRAME_HEADER, MAX_FRAME};
use skiff_monitor::LogStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Joining the container's stdio failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The monitor refused or is not there (the container exited meanwhile).
    #[error("attaching to the container's monitor: {0}")]
    Monitor(#[from] skiff_monitor::MonitorError),
    /// Setting up the connection failed.
    #[error("attach connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one attach session whose streams are open, to its end.
pub async fn serve_attach(
    session: Connection,
    streams: Streams,
    version: Version,
    request: AttachRequest,
) {
    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
        held,
    } = streams;
    let (from_monitor, to_monitor) = match connect(&request, stdin.is_some()).await {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!(container = %request.container_id, error = %e, "attach failed");
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
    tracing::info!(container = %request.container_id, tty = request.tty, "attached");
    let mut inputs = Vec::new();
    if let Some(reader) = stdin {
        inputs.push(tokio::spawn(pump_stdin(reader, to_monitor)));
    }
    if let (Some(reader), true) = (resize, request.tty) {
        let terminal = Terminal::Monitor(request.socket_dir.clone());
        inputs.push(tokio::spawn(apply_resizes(reader, terminal)));
    }
    let outcome = tokio::select! {
        outcome = pump_frames(from_monitor, stdout, stderr) => outcome,
        _ = session.closed() => {
            // Dropping our end of the monitor connection is the detach.
            tracing::info!(container = %request.container_id, "attach client went away");
            for task in &inputs {
                task.abort();
            }
            return;
        }
    };
    for task in &inputs {
        task.abort();
    }
    // The monitor writes the exit file before it closes attach sessions at the container's
    // exit; without it, the monitor dropped this session (or died).
    let outcome = match outcome {
        Outcome::Exited(_) if !request.exit_file.exists() => Outcome::Failed(
            "the container's monitor ended the session: the client fell behind its output".into(),
        ),
        outcome => outcome,
    };
    tracing::info!(container = %request.container_id, outcome = ?outcome, "attach finished");
    finish(session, version, error, outcome, held).await;
}

/// Attaches to the monitor (a short blocking exchange) and returns the connection's halves.
async fn connect(
    request: &AttachRequest,
    stdin: bool,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), AttachError> {
    let socket_dir = request.socket_dir.clone();
    let stream = tokio::task::spawn_blocking(move || skiff_monitor::attach(&socket_dir, stdin))
        .await
        .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    Ok(stream.into_split())
}

/// The client's stdin to the monitor; its end shuts down our write side, which the monitor
/// takes as the end of this session's input.
async fn pump_stdin(mut reader: Input, mut to_monitor: OwnedWriteHalf) {
    while let Some(data) = reader.read().await {
        if to_monitor.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = to_monitor.shutdown().await;
}

/// The monitor's output frames to the client's streams until the monitor closes the
/// connection (the container exited). Output of a stream the client did not ask for is
/// dropped, and so is the rest once a client stream fails.
async fn pump_frames(
    mut from_monitor: OwnedReadHalf,
    mut stdout: Option<Output>,
    mut stderr: Option<Output>,
) -> Outcome {
    let mut payload = Vec::new();
    let outcome = loop {
        let mut header = [0u8; FRAME_HEADER];
        match from_monitor.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Outcome::Exited(0),
            Err(e) => break Outcome::Failed(format!("reading from the monitor: {e}")),
        }
        let (stream, len) = match decode_header(header) {
            Some((stream, len)) if len <= MAX_FRAME => (stream, len),
            _ => break Outcome::Failed("the monitor sent a malformed frame".into()),
        };
        payload.resize(len, 0);
        if let Err(e) = from_monitor.read_exact(&mut payload).await {
            break Outcome::Failed(format!("reading from the monitor: {e}"));
        }
        let target = match stream {
            LogStream::Stdout => &mut stdout,
            LogStream::Stderr => &mut stderr,
        };
        if let Some(writer) = target {
            if writer.write(&payload).await.is_err() {
                *target = None;
            }
        }
    };
    for mut writer in [stdout, stderr].into_iter().flatten() {
        writer.finish().await;
    }
    outcome
}
