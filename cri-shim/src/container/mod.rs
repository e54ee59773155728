//! Container mechanisms: where a container's files live, its overlayfs rootfs, and the
//! `skiff-oci` and `skiff-monitor` helper processes. The RPCs that use them live in
//! `runtime_service/` (one file each).
//!
//! skiffd never calls libcontainer itself (it is multi-threaded): the monitor runs
//! `skiff-oci create`, and skiffd runs `skiff-oci start|kill|delete|exec` as short processes.

pub mod cgroups;
pub mod oci;
pub mod paths;
pub mod recover;
pub mod rootfs;

pub use paths::ContainerPaths;

use crate::state::{ContainerRecord, ContainerState};
use skiff_monitor::{read_exit_file, ExitStatus};

/// Folds what the monitor recorded on disk into the record: an exit file means the container
/// exited; a running container whose monitor is gone without one is Unknown. Returns whether
/// the record changed.
pub fn refresh(record: &mut ContainerRecord) -> bool {
    if !matches!(
        record.state,
        ContainerState::Created | ContainerState::Running
    ) {
        return false;
    }
    let paths = ContainerPaths::new(&record.bundle);
    match read_exit_file(&paths.exit_file) {
        Ok(Some(exit)) => {
            apply_exit(record, &exit);
            true
        }
        Ok(None) => {
            if skiff_monitor::ping(&paths.socket_dir).is_err() {
                // Re-check: the monitor writes the exit file just before it goes away.
                if let Ok(Some(exit)) = read_exit_file(&paths.exit_file) {
                    apply_exit(record, &exit);
                } else {
                    record.state = ContainerState::Unknown;
                    record.reason = "Unknown".into();
                    record.message =
                        "the container's monitor is gone without an exit status".into();
                }
                return true;
            }
            false
        }
        Err(e) => {
            record.state = ContainerState::Unknown;
            record.reason = "Unknown".into();
            record.message = e.to_string();
            true
        }
    }
}

/// Records an exit the way the CRI reports it.
fn apply_exit(record: &mut ContainerRecord, exit: &ExitStatus) {
    record.state = ContainerState::Exited;
    record.exit_code = exit.exit_code;
    record.finished_at = exit.finished_at_unix_nanos;
    record.reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
    .into();
}
