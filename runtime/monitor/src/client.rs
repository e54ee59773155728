//! What skiffd calls: start a monitor, and talk to a running one.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::control::Request;
use super::{ctl_socket_path, MonitorError, MonitorSpec};

/// How long a control request may take; `reopen-log` only opens a file.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary` (skiff-monitor) for `spec` and waits for its startup handshake: returns the
/// container init's PID once the container is created, or the runtime's error message.
///
/// Blocking (it waits for `RUNTIME create`); call it from `spawn_blocking` in async code. The
/// monitor left running is not a child of the caller.
pub fn spawn_monitor(binary: &Path, spec: &MonitorSpec) -> Result<u32, MonitorError> {
    let out = Command::new(binary)
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| MonitorError::io(format!("running {}", binary.display()), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        return stdout.trim().parse().map_err(|_| {
            MonitorError::Startup(format!("monitor printed {stdout:?} instead of a pid"))
        });
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(MonitorError::Startup(if stderr.is_empty() {
        format!("monitor failed ({})", out.status)
    } else {
        stderr
    }))
}

/// Asks the monitor to reopen its log file (CRI `ReopenContainerLog`); returns once the new
/// file is open.
pub fn reopen_log(socket_dir: &Path) -> Result<(), MonitorError> {
    request(socket_dir, Request::ReopenLog)
}

/// Checks that the monitor is alive and answering.
pub fn ping(socket_dir: &Path) -> Result<(), MonitorError> {
    request(socket_dir, Request::Ping)
}

/// Sets a TTY container's terminal size (columns, rows).
pub fn resize(socket_dir: &Path, width: u16, height: u16) -> Result<(), MonitorError> {
    request(socket_dir, Request::Resize { width, height })
}

/// Attaches to the container: returns the connection, past the monitor's `ok`, carrying the
/// container's output in frames and, with `stdin`, taking the bytes written to it as the
/// container's stdin (see [`crate::attach`]). The stream is blocking and has no timeouts.
pub fn attach(socket_dir: &Path, stdin: bool) -> Result<UnixStream, MonitorError> {
    let req = Request::Attach { stdin };
    let path = ctl_socket_path(socket_dir);
    let ctx = |what: &str| format!("{what} {} ({req})", path.display());
    let mut stream =
        UnixStream::connect(&path).map_err(|e| MonitorError::io(ctx("connecting to"), e))?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .and_then(|()| writeln!(stream, "{req}"))
        .map_err(|e| MonitorError::io(ctx("sending to"), e))?;
    // Byte by byte: what follows the reply line is output, which the caller reads.
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < 1024 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MonitorError::io(ctx("reading reply from"), e)),
        }
    }
    check_reply(&String::from_utf8_lossy(&reply))?;
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| MonitorError::io(ctx("attaching to"), e))?;
    Ok(stream)
}

fn request(socket_dir: &Path, req: Request) -> Result<(), MonitorError> {
    let path = ctl_socket_path(socket_dir);
    let ctx = |what: &str| format!("{what} {} ({req})", path.display());
    let mut stream =
        UnixStream::connect(&path).map_err(|e| MonitorError::io(ctx("connecting to"), e))?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .and_then(|()| writeln!(stream, "{req}"))
        .map_err(|e| MonitorError::io(ctx("sending to"), e))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| MonitorError::io(ctx("reading reply from"), e))?;
    check_reply(&reply)
}

/// `ok`, or the monitor's error.
fn check_reply(reply: &str) -> Result<(), MonitorError> {
    match reply.trim_end() {
        "ok" => Ok(()),
        "" => Err(MonitorError::Control(
            "monitor closed the connection".into(),
        )),
        other => Err(MonitorError::Control(
            other.strip_prefix("error ").unwrap_or(other).to_owned(),
        )),
    }
}
