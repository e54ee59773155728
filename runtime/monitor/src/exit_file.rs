//! The exit file: how the container ended, written once by the monitor and read by skiffd,
//! also after a restart.
//!
//! JSON: `{"exit_code": N, "signal": S or null, "finished_at": "<RFC3339Nano>", "oom_killed": b}`.
//! `exit_code` is `128 + signal` for a signalled process, as containerd reports it.

use std::io::Write;
use std::path::Path;

use nix::sys::wait::WaitStatus;
use serde::{Deserialize, Serialize};

use super::cri_log::{format_rfc3339_nano, parse_rfc3339_nano};
use super::MonitorError;

/// How a container's init process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, or `128 + signal` when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// When the monitor reaped the process, RFC 3339 with nanoseconds (UTC).
    pub finished_at: String,
    /// `finished_at` in nanoseconds since the Unix epoch.
    pub finished_at_unix_nanos: i64,
    /// Whether the container's memory cgroup recorded an OOM kill while the monitor watched.
    pub oom_killed: bool,
}

/// The on-disk form; `finished_at_unix_nanos` is derived from `finished_at` when reading.
#[derive(Serialize, Deserialize)]
struct ExitRecord {
    exit_code: i32,
    signal: Option<i32>,
    finished_at: String,
    oom_killed: bool,
}

impl ExitStatus {
    /// The status of a reaped process, or `None` for a wait status that is not an exit.
    pub(crate) fn from_wait(status: WaitStatus, unix_nanos: i64, oom_killed: bool) -> Option<Self> {
        let (exit_code, signal) = match status {
            WaitStatus::Exited(_, code) => (code, None),
            WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
            _ => return None,
        };
        Some(ExitStatus {
            exit_code,
            signal,
            finished_at: format_rfc3339_nano(unix_nanos),
            finished_at_unix_nanos: unix_nanos,
            oom_killed,
        })
    }
}

/// Writes the exit file atomically: a reader sees no file or a whole one, never a torn write.
pub(crate) fn write_exit_file(path: &Path, status: &ExitStatus) -> Result<(), MonitorError> {
    let record = ExitRecord {
        exit_code: status.exit_code,
        signal: status.signal,
        finished_at: status.finished_at.clone(),
        oom_killed: status.oom_killed,
    };
    let json = serde_json::to_vec(&record).expect("exit record serializes");
    let ctx = |what: &str| format!("{what} exit file {}", path.display());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = match std::fs::File::create(&tmp) {
        Ok(file) => file,
        // The container's directory is gone: it was removed while we were still reaping, and
        // nobody will read the file. Recreating the directory would leak it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(MonitorError::io(ctx("creating temp"), e)),
    };
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| MonitorError::io(ctx("writing"), e))?;
    std::fs::rename(&tmp, path).map_err(|e| MonitorError::io(ctx("renaming"), e))
}

/// Reads an exit file: `Ok(None)` while the container has not exited (no file yet).
pub fn read_exit_file(path: impl AsRef<Path>) -> Result<Option<ExitStatus>, MonitorError> {
    let path = path.as_ref();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MonitorError::io(format!("reading {}", path.display()), e)),
    };
    let bad = |reason: String| MonitorError::BadExitFile {
        path: path.display().to_string(),
        reason,
    };
    let record: ExitRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let nanos = parse_rfc3339_nano(&record.finished_at)
        .ok_or_else(|| bad(format!("bad finished_at {:?}", record.finished_at)))?;
    Ok(Some(ExitStatus {
        exit_code: record.exit_code,
        signal: record.signal,
        finished_at: record.finished_at,
        finished_at_unix_nanos: nanos,
        oom_killed: record.oom_killed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn signalled_exit_is_128_plus_signal() {
        let pid = Pid::from_raw(1);
        let s = ExitStatus::from_wait(WaitStatus::Signaled(pid, Signal::SIGKILL, false), 0, false)
            .unwrap();
        assert_eq!((s.exit_code, s.signal), (137, Some(9)));
        let s = ExitStatus::from_wait(WaitStatus::Exited(pid, 7), 5, true).unwrap();
        assert_eq!((s.exit_code, s.signal, s.oom_killed), (7, None, true));
        assert!(ExitStatus::from_wait(WaitStatus::StillAlive, 0, false).is_none());
    }

    #[test]
    fn round_trips_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1.json");
        assert_eq!(read_exit_file(&path).unwrap(), None);
        let status = ExitStatus::from_wait(
            WaitStatus::Exited(Pid::from_raw(1), 3),
            1_700_000_000_123_456_789,
            false,
        )
        .unwrap();
        write_exit_file(&path, &status).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"exit_code":3,"signal":null,"finished_at":"2023-11-14T22:13:20.123456789Z","oom_killed":false}"#
        );
        assert_eq!(read_exit_file(&path).unwrap(), Some(status.clone()));
        assert!(!dir.path().join("c1.json.tmp").exists());

        // A container removed before its monitor wrote the file: nothing is recreated.
        let gone = dir.path().join("removed/exit.json");
        write_exit_file(&gone, &status).unwrap();
        assert!(!dir.path().join("removed").exists());

        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            read_exit_file(&path),
            Err(MonitorError::BadExitFile { .. })
        ));
    }
}
