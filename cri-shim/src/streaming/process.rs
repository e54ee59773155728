//! The process behind a streaming exec: `skiff-oci exec` with pipes, or with a pty received
//! over a console socket, and its teardown when the client goes away.
//!
//! The exec'd process is skiff-oci's child. To stop it we kill it (and what it started) by PID
//! and let skiff-oci reap it: killing skiff-oci first would leave the process to the
//! container's init, which may never reap it.

use super::pty::{receive_master, Pty};
use super::ExecRequest;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// How long skiff-oci gets to hand over the pty.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(20);
/// After the exec'd process is killed, how long skiff-oci gets to reap it and exit.
const REAP_GRACE: Duration = Duration::from_secs(5);
/// How long a kill waits for skiff-oci to record the PID of a process still starting.
const PID_FILE_WAIT: Duration = Duration::from_secs(5);

/// Where and how exec'd processes are started.
#[derive(Debug, Clone)]
pub struct ExecEnv {
    /// `skiff-oci`.
    pub oci: PathBuf,
    /// Its `--root`.
    pub oci_root: PathBuf,
    /// A private directory for console sockets and PID files.
    pub scratch: PathBuf,
}

/// A process that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// skiff-oci could not be run.
    #[error("running skiff-oci exec: {0}")]
    Spawn(std::io::Error),
    /// The console socket failed.
    #[error("console socket: {0}")]
    Console(std::io::Error),
    /// skiff-oci failed before handing over the terminal.
    #[error("skiff-oci exec failed: {0}")]
    Runtime(String),
    /// Waiting for skiff-oci failed.
    #[error("waiting for skiff-oci exec: {0}")]
    Wait(std::io::Error),
}

/// The process's side of the streams.
pub enum ProcessIo {
    /// Separate pipes; `None` where the client did not ask for the stream.
    Pipes {
        /// The process's stdin.
        stdin: Option<ChildStdin>,
        /// The process's stdout.
        stdout: Option<ChildStdout>,
        /// The process's stderr.
        stderr: Option<ChildStderr>,
    },
    /// One terminal for input and output.
    Tty(Arc<Pty>),
}

/// A running `skiff-oci exec`.
pub struct ExecProcess {
    child: Child,
    pid_file: PathBuf,
    console_socket: Option<PathBuf>,
    /// Taken by the stream pumps.
    pub io: Option<ProcessIo>,
}

impl ExecProcess {
    /// Starts `request.cmd` in its container.
    pub async fn spawn(env: &ExecEnv, request: &ExecRequest) -> Result<ExecProcess, ProcessError> {
        let name = &crate::sandbox::new_id()[..16];
        let pid_file = env.scratch.join(format!("{name}.pid"));
        let mut command = Command::new(&env.oci);
        command
            .arg("--root")
            .arg(&env.oci_root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            // Its own process group, which the exec'd process and its children inherit: that
            // is how they are found when the client goes away.
            .process_group(0)
            .kill_on_drop(true);
        if !request.tty {
            command
                .arg(&request.container_id)
                .arg("--")
                .args(&request.cmd)
                .stdin(piped_if(request.stdin))
                .stdout(piped_if(request.stdout))
                .stderr(piped_if(request.stderr));
            let mut child = command.spawn().map_err(ProcessError::Spawn)?;
            let io = ProcessIo::Pipes {
                stdin: child.stdin.take(),
                stdout: child.stdout.take(),
                stderr: child.stderr.take(),
            };
            return Ok(ExecProcess {
                child,
                pid_file,
                console_socket: None,
                io: Some(io),
            });
        }

        let socket = env.scratch.join(format!("{name}.sock"));
        let listener = UnixListener::bind(&socket).map_err(ProcessError::Console)?;
        command
            .arg("--tty")
            .arg("--console-socket")
            .arg(&socket)
            // As other runtimes do for a terminal session.
            .args(["--env", "TERM=xterm"])
            .arg(&request.container_id)
            .arg("--")
            .args(&request.cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // skiff-oci's own errors; the process writes to the terminal.
            .stderr(Stdio::piped());
        let child = command.spawn();
        let mut process = ExecProcess {
            child: child.map_err(ProcessError::Spawn)?,
            pid_file,
            console_socket: Some(socket),
            io: None,
        };
        let mut errors = process.child.stderr.take();
        let received = tokio::select! {
            received = tokio::time::timeout(CONSOLE_TIMEOUT, receive_master(&listener)) => received,
            status = process.child.wait() => {
                let mut message = String::new();
                if let Some(errors) = errors.as_mut() {
                    let _ = errors.take(64 << 10).read_to_string(&mut message).await;
                }
                return Err(ProcessError::Runtime(match status {
                    Ok(status) => format!("{status}: {}", message.trim()),
                    Err(e) => e.to_string(),
                }));
            }
        };
        let master = match received {
            Ok(Ok(master)) => master,
            Ok(Err(e)) => {
                process.kill().await;
                return Err(ProcessError::Console(e));
            }
            Err(_) => {
                process.kill().await;
                return Err(ProcessError::Runtime(
                    "no terminal received from skiff-oci".into(),
                ));
            }
        };
        // Nothing more is read from it, but it must not fill up and block skiff-oci.
        if let Some(mut errors) = errors {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut errors, &mut sink).await;
            });
        }
        let pty = Pty::new(master).map_err(ProcessError::Console)?;
        process.io = Some(ProcessIo::Tty(Arc::new(pty)));
        Ok(process)
    }

    /// Waits for the process and returns its exit code (128 + signal if a signal ended it).
    pub async fn wait(&mut self) -> Result<i32, ProcessError> {
        let status = self.child.wait().await.map_err(ProcessError::Wait)?;
        Ok(exit_code(status))
    }

    /// Kills the exec'd process and everything it started, then lets skiff-oci reap it.
    pub async fn kill(&mut self) {
        let runtime_pid = self.child.id();
        let deadline = Instant::now() + PID_FILE_WAIT;
        loop {
            if let Some(pid) = read_pid(&self.pid_file) {
                kill_process_tree(pid, runtime_pid);
                break;
            }
            // skiff-oci is gone or never got as far as starting the process.
            if !matches!(self.child.try_wait(), Ok(None)) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if tokio::time::timeout(REAP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pid = runtime_pid,
                "skiff-oci exec did not exit after its process was killed"
            );
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
        if let Some(socket) = &self.console_socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn piped_if(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

/// A shell-style exit code.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128)
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

/// SIGKILLs `pid` and every process in its process group or in skiff-oci's (`runtime_pid`),
/// except skiff-oci itself, which must stay to reap. A TTY process leads its own session and
/// group; a piped one stays in skiff-oci's group. Both groups are pinned while their leaders
/// are unreaped, so no unrelated process can be hit.
fn kill_process_tree(pid: i32, runtime_pid: Option<u32>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let runtime_pid = runtime_pid.map(|p| p as i32);
    let groups = [Some(pid), runtime_pid];
    let mut targets = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(other) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if Some(other) == runtime_pid || other == pid {
                continue;
            }
            if let Some(group) = process_group(other) {
                if groups.contains(&Some(group)) {
                    targets.push(other);
                }
            }
        }
    }
    for target in targets {
        let _ = kill(Pid::from_raw(target), Signal::SIGKILL);
    }
}

/// The process group of `pid` from `/proc/<pid>/stat` (the field after state, which follows
/// the parenthesised command name).
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_group_is_read_from_proc() {
        let me = std::process::id() as i32;
        assert_eq!(
            process_group(me),
            Some(nix::unistd::getpgrp().as_raw()),
            "pgrp of {me}"
        );
        assert_eq!(process_group(-1), None);
    }

    #[test]
    fn exit_codes_are_shell_style() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
    }
}
