//! ExecSync: run a command in a running container through `skiff-oci exec`, capture its output
//! and exit code; on timeout kill it and report DEADLINE_EXCEEDED.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;
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
        let pid_file = tempfile_path(&record.bundle, "exec");
        let mut child = Command::new(&self.helpers.oci)
            .arg("--root")
            .arg(&self.helpers.oci_root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&record.id)
            .arg("--")
            .args(&request.cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
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
        let result = match waited {
            Ok(Ok(status)) => Ok(cri::ExecSyncResponse {
                stdout: stdout.await.map_err(CriError::task)?,
                stderr: stderr.await.map_err(CriError::task)?,
                exit_code: status.code().unwrap_or(128),
            }),
            Ok(Err(e)) => Err(CriError::Internal(format!("exec: {e}"))),
            Err(_) => {
                // The exec'd process is skiff-oci's child inside the container: kill it by the
                // PID skiff-oci recorded, then let skiff-oci reap it. Killing skiff-oci instead
                // would leave an unreaped process that keeps the container's PID namespace
                // (and so the container) from ever finishing.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if tokio::time::timeout(REAP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
                Err(CriError::DeadlineExceeded(format!(
                    "command {:?} timed out after {}s",
                    request.cmd, request.timeout
                )))
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        result
    }
}

/// Reads a stream to its end, keeping at most [`MAX_OUTPUT`] bytes.
async fn read_capped(stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut buffer = Vec::new();
    let _ = stream.take(MAX_OUTPUT).read_to_end(&mut buffer).await;
    buffer
}

/// A unique scratch path inside the bundle.
fn tempfile_path(bundle: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    bundle.join(format!("{prefix}-{}.pid", crate::sandbox::new_id()))
}
