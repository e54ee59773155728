//! ExecSync: run a command in a running container through `skiff-oci exec`, capture its output
//! and exit code; on timeout kill it and report DEADLINE_EXCEEDED. A call the client gives up on
//! kills its command too, as containerd does.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Output beyond this is dropped, so a chatty command cannot exhaust skiffd's memory.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// After killing a timed-out command, how long skiff-oci gets to reap it and exit.
const REAP_GRACE: Duration = Duration::from_secs(5);

impl Runtime {
    pub(super) async fn exec_sync(
        &self,
        request: cri::ExecSyncRequest,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        if request.cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd must not be empty".into()));
        }
        let record = self.running_container(&request.container_id).await?;
        let mut command = ExecGuard {
            pid_file: tempfile_path(&record.bundle, "exec"),
            finished: false,
        };
        let mut child = Command::new(&self.helpers.oci)
            .arg("--root")
            .arg(&self.helpers.oci_root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&command.pid_file)
            .arg(&record.id)
            .arg("--")
            .args(&request.cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| CriError::Internal(format!("running skiff-oci exec: {e}")))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(CriError::Internal("exec output pipes missing".into()));
        };
        let stdout = tokio::spawn(read_capped(out));
        let stderr = tokio::spawn(read_capped(err));
        let waited = if request.timeout > 0 {
            tokio::time::timeout(Duration::from_secs(request.timeout as u64), child.wait()).await
        } else {
            Ok(child.wait().await)
        };
        match waited {
            Ok(Ok(status)) => {
                command.finished = true;
                Ok(cri::ExecSyncResponse {
                    stdout: stdout.await.map_err(CriError::task)?,
                    stderr: stderr.await.map_err(CriError::task)?,
                    exit_code: status.code().unwrap_or(128),
                })
            }
            Ok(Err(e)) => Err(CriError::Internal(format!("exec: {e}"))),
            Err(_) => {
                command.kill();
                if tokio::time::timeout(REAP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                command.finished = true;
                Err(CriError::DeadlineExceeded(format!(
                    "command {:?} timed out after {}s",
                    request.cmd, request.timeout
                )))
            }
        }
    }
}

/// The command of one ExecSync, by the PID file `skiff-oci exec` writes. Dropped before the
/// command finished (the client gave up, and tonic dropped the call), it kills the command.
///
/// The command is skiff-oci's child inside the container, and is killed by its PID so that
/// skiff-oci reaps it and exits. Killing skiff-oci instead would leave an unreaped process that
/// keeps the container's PID namespace (and so the container) from ever finishing. A call
/// dropped before skiff-oci wrote the PID leaves the command to end by itself.
struct ExecGuard {
    pid_file: PathBuf,
    finished: bool,
}

impl ExecGuard {
    fn kill(&self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Reads a stream to its end, keeping at most [`MAX_OUTPUT`] bytes.
async fn read_capped(stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut buffer = Vec::new();
    let _ = stream.take(MAX_OUTPUT).read_to_end(&mut buffer).await;
    buffer
}

/// A unique scratch path inside the bundle.
fn tempfile_path(bundle: &std::path::Path, prefix: &str) -> PathBuf {
    bundle.join(format!("{prefix}-{}.pid", crate::sandbox::new_id()))
}
