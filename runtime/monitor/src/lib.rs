//! The per-container monitor (conmon's role) and the small API skiffd uses to drive it.
//!
//! skiffd is multi-threaded and must never fork into libcontainer, so every container gets one
//! `skiff-monitor` process that:
//! 1. daemonizes with a startup handshake ([`process`]): the process skiffd runs forks, the child
//!    calls `setsid()` and becomes the long-lived monitor, and the original exits 0 once the
//!    container is created, or 1 with the OCI runtime's error message;
//! 2. is a child subreaper, owns the container's stdio pipes (or its pty master) and runs
//!    `RUNTIME create`, so the container init becomes its child when `create` exits;
//! 3. writes the container output to the log file in the CRI format ([`cri_log`]) and to
//!    attached clients ([`attach`]), answers commands on a control socket ([`control`]), and
//!    records the exit status atomically on disk
//!    ([`exit_file`]) when the init exits.
//!
//! Because the monitor is not skiffd's child, it survives a skiffd restart; skiffd finds the
//! container's fate again through the exit file and the control socket.

pub mod attach;
mod client;
mod console;
pub mod control;
pub mod cri_log;
mod event_loop;
pub mod exit_file;
mod oom;
pub mod pages;
pub mod process;
mod spec;
mod sys;

pub use client::{attach, ping, reopen_log, resize, spawn_monitor};
pub use cri_log::{
    format_rfc3339_nano, parse_cri_log_line, parse_rfc3339_nano, LogRecord, LogStream, MAX_LOG_LINE,
};
pub use exit_file::{read_exit_file, ExitStatus};
pub use process::run;
pub use spec::{ctl_socket_path, MonitorSpec};
pub use sys::close_inherited_fds;

/// Everything that can go wrong in the monitor and in the API that drives it.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the monitor was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `RUNTIME create` failed; the message is what the runtime printed.
    #[error("runtime create failed ({status}): {message}")]
    RuntimeFailed {
        /// How the runtime ended (`exit status 1`, `signal 9`).
        status: String,
        /// The runtime's stderr (or stdout when stderr was empty).
        message: String,
    },
    /// The runtime reported success but did not hand over what the monitor needs.
    #[error("runtime create: {0}")]
    RuntimeProtocol(String),
    /// The monitor did not start: the message is what it printed on stderr.
    #[error("{0}")]
    Startup(String),
    /// The monitor answered a control command with an error.
    #[error("monitor control: {0}")]
    Control(String),
    /// The exit file exists but cannot be parsed.
    #[error("exit file {path}: {reason}")]
    BadExitFile {
        /// The file read.
        path: String,
        /// Why it was refused.
        reason: String,
    },
}

impl MonitorError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        MonitorError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
