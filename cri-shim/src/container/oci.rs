//! Running `skiff-oci` (our runc-shaped runtime) for the short lifecycle commands, and
//! `start` in this process.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, PoisonError};

use skiff_runtime::oci::start;
use tokio::process::Command;

/// Held by every in-process start: libcontainer's start changes the working directory
/// of the whole process for a moment (so a long notify-socket path fits in a socket
/// address), and two at once could connect to each other's socket.
static START_LOCK: Mutex<()> = Mutex::new(());

/// Where the helper binaries are: beside skiffd itself.
#[derive(Debug, Clone)]
pub struct Helpers {
    /// The OCI runtime (`skiff-oci`).
    pub oci: PathBuf,
    /// The per-container monitor (`skiff-monitor`).
    pub monitor: PathBuf,
    /// The OCI runtime's state root (`--root`).
    pub oci_root: PathBuf,
}

/// A failed runtime command, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("skiff-oci {command}: {message}")]
pub struct OciCommandError {
    /// The subcommand.
    pub command: String,
    /// stderr (or how it failed to run).
    pub message: String,
}

impl Helpers {
    /// Helpers beside the running skiffd, with the runtime state under `state_dir/oci`.
    pub fn beside_current_exe(state_dir: &Path) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().unwrap_or(Path::new("/usr/local/bin"));
        Ok(Helpers {
            oci: dir.join("skiff-oci"),
            monitor: dir.join("skiff-monitor"),
            oci_root: state_dir.join("oci"),
        })
    }

    /// Runs `skiff-oci --root ROOT <args>` and returns its output when it succeeded.
    pub async fn run(&self, args: &[&str]) -> Result<Output, OciCommandError> {
        let fail = |message: String| OciCommandError {
            command: args.first().copied().unwrap_or_default().to_string(),
            message,
        };
        let output = Command::new(&self.oci)
            .arg("--root")
            .arg(&self.oci_root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| fail(format!("cannot run {}: {e}", self.oci.display())))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(fail(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ))
        }
    }

    /// Starts a created container, in this process: a start only writes to the init's
    /// notify socket and updates the state file, so exec'ing `skiff-oci start` would
    /// spend most of the call loading a binary (about 1.5 of 3 ms here).
    ///
    /// It runs on a blocking thread under [`START_LOCK`]: libcontainer changes the
    /// process's working directory while it connects to the notify socket.
    pub async fn start(&self, id: &str) -> Result<(), OciCommandError> {
        let root = self.oci_root.clone();
        let args = start::StartArgs { id: id.to_string() };
        let started = tokio::task::spawn_blocking(move || {
            let _cwd = START_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            start::start(&root, &args)
        })
        .await;
        let message = match started {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(join) => format!("start thread failed: {join}"),
        };
        Err(OciCommandError {
            command: "start".to_string(),
            message,
        })
    }

    /// `kill ID SIGNAL`; a container that already stopped is not an error.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), OciCommandError> {
        match self.run(&["kill", id, signal]).await {
            Err(e) if is_gone(&e.message) => {
                tracing::debug!(container = id, signal, reason = %e.message, "nothing to signal");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// `delete --force ID`; a container that does not exist is not an error.
    pub async fn delete(&self, id: &str) -> Result<(), OciCommandError> {
        match self.run(&["delete", "--force", id]).await {
            Err(e) if is_gone(&e.message) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// True for the runtime's "nothing to act on" answers.
fn is_gone(message: &str) -> bool {
    message.contains("does not exist")
        || message.contains("not running")
        || message.contains("stopped")
}
