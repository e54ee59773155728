//! What a restart finds: sandboxes a crash left half-made are rolled back, and Ready sandboxes
//! whose pinned namespaces vanished (a reboot clears /run) are marked NotReady.

use super::namespaces;
use super::pinned_kinds;
use crate::state::{SandboxState, StateStore};

/// Reconciles sandbox records with the host. Blocking; runs once at startup.
pub fn recover_sandboxes(state: &StateStore) -> Result<(), crate::state::StateError> {
    for mut record in state.sandboxes()? {
        match record.state {
            SandboxState::Creating => {
                tracing::warn!(sandbox = %record.id, "rolling back a sandbox a crash left half-made");
                super::teardown_namespaces(&record);
                let _ = std::fs::remove_dir_all(&record.dir);
                state.delete_sandbox(&record.id)?;
            }
            SandboxState::Ready => {
                let lost = pinned_kinds(&record)
                    .into_iter()
                    .any(|kind| !is_mounted(&namespaces::ns_path(&record.dir, kind)));
                if lost {
                    tracing::warn!(sandbox = %record.id, "pinned namespaces are gone; marking NotReady");
                    record.state = SandboxState::NotReady;
                    state.put_sandbox(&record)?;
                }
            }
            SandboxState::NotReady => {}
        }
    }
    Ok(())
}

/// True when `path` is a mount point (a pinned namespace shows up in /proc/self/mountinfo).
pub fn is_mounted(path: &std::path::Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}
