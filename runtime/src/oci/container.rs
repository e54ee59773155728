//! Finding a container's state under `--root`, and what skiff-oci records beside
//! libcontainer's own `state.json`.
//!
//! libcontainer decides a container's status from `/proc/<pid>/stat` alone. After the
//! init exits and its PID is recycled, it would report the unrelated process as the
//! container (and `kill` would signal it). So `create` records the init's start time
//! (field 22 of `/proc/<pid>/stat`, in clock ticks since boot), and every lookup
//! compares it with the live process before trusting the PID.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::container::{Container, ContainerStatus};
use serde::{Deserialize, Serialize};

use super::bundle::{read_json, write_json};
use super::error::{OciError, Result};

/// libcontainer's state file inside a container directory.
const STATE_FILE: &str = "state.json";
/// skiff-oci's own record inside a container directory.
const RECORD_FILE: &str = "skiff-oci.json";

/// What skiff-oci remembers about a container, next to libcontainer's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The bundle the caller passed to `create` (libcontainer's state points at our
    /// adjusted copy instead); `state` reports this one, as runc does.
    pub bundle: PathBuf,
    /// Start time of the init process, to recognise a recycled PID.
    pub init_start_time: u64,
}

/// Rejects ids that are not safe as a single path component (the same rule as runc).
pub fn validate_id(id: &str) -> Result<()> {
    let invalid = |reason| {
        Err(OciError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id == "." || id == ".." {
        return invalid("not a file name");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+-.".contains(c);
    if !id.chars().all(allowed) {
        return invalid("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

/// The state directory of container `id`.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// True if `dir` holds a complete container state (an aborted create may leave a
/// directory without `state.json`).
pub fn has_state(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Loads container `id` with an up-to-date status, or [`OciError::NotFound`].
///
/// If the recorded init PID now belongs to another process, the container is
/// marked stopped (PID cleared) and saved, so libcontainer agrees from then on.
pub fn load(root: &Path, id: &str) -> Result<Container> {
    validate_id(id)?;
    let dir = container_dir(root, id);
    if !has_state(&dir) {
        return Err(OciError::NotFound { id: id.to_string() });
    }
    let mut container =
        Container::load(dir).map_err(|err| OciError::libcontainer("load", id, err))?;
    forget_recycled_pid(&mut container)?;
    Ok(container)
}

/// Clears the container's PID if the process behind it is not the init we created.
fn forget_recycled_pid(container: &mut Container) -> Result<()> {
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    if container.status() == ContainerStatus::Stopped {
        return Ok(());
    }
    // Containers created by another tool have no record: trust libcontainer.
    let Some(record) = read_record(&container.root)? else {
        return Ok(());
    };
    if process_start_time(pid.as_raw()) == Some(record.init_start_time) {
        return Ok(());
    }
    tracing::info!(
        id = container.id(),
        pid = pid.as_raw(),
        "init process is gone and its PID was reused; container is stopped"
    );
    container.state.pid = None;
    container.set_status(ContainerStatus::Stopped);
    container
        .save()
        .map_err(|err| OciError::libcontainer("save state of", container.id(), err))
}

/// Reads skiff-oci's record from a container directory, if there is one.
pub fn read_record(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join(RECORD_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// Writes skiff-oci's record into a container directory.
pub fn write_record(dir: &Path, record: &Record) -> Result<()> {
    write_json(&dir.join(RECORD_FILE), record)
}

/// The start time of process `pid` (clock ticks after boot), or `None` if it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Extracts field 22 (`starttime`) from the text of `/proc/<pid>/stat`.
///
/// Field 2 is the command name in parentheses and may itself contain spaces and
/// parentheses, so counting starts after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; starttime is field 22.
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Maps libcontainer's status to the lowercase word runc prints.
pub fn status_word(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// Removes a file or directory tree, ignoring "not found" and logging other errors.
/// Used on cleanup paths, where the first error is the one worth reporting.
pub fn remove_quietly(path: &Path) {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), %err, "cleanup failed");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id() as i32;
        let first = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(first));
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
