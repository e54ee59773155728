//! What a restart finds: sandboxes a crash left half-made are rolled back, sandbox directories
//! no record names are released, and Ready sandboxes whose pinned namespaces vanished (a
//! reboot clears /run) are marked NotReady.

use super::namespaces::{self, NsKind};
use super::pin_space;
use crate::state::{SandboxState, StateStore};
use std::collections::HashSet;
use std::path::Path;

/// Reconciles sandbox records with the host, and the directories under `sandboxes_dir` with the
/// records. Blocking; runs once at startup.
pub fn recover_sandboxes(
    state: &StateStore,
    sandboxes_dir: &Path,
) -> Result<(), crate::state::StateError> {
    let records = state.sandboxes()?;
    let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    release_orphans(sandboxes_dir, &known);
    for mut record in records {
        match record.state {
            SandboxState::Creating => {
                tracing::warn!(sandbox = %record.id, "rolling back a sandbox a crash left half-made");
                super::remove_from_host(&record);
                state.delete_sandbox(&record.id)?;
            }
            SandboxState::Ready => {
                let lost = [&record.netns, &record.ipcns, &record.utsns, &record.pidns]
                    .into_iter()
                    .flatten()
                    .any(|path| !pin_space::is_nsfs(path));
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

/// Releases the pins of every sandbox directory whose name no record has, and removes it.
/// RunPodSandbox pins a pod's namespaces while it commits the pod's record, so a crash between
/// the two leaves such a directory behind.
fn release_orphans(sandboxes_dir: &Path, known: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(sandboxes_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        tracing::warn!(sandbox = %name, "releasing a sandbox directory no record names");
        let dir = entry.path();
        namespaces::release(&dir, &[NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Pid]);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an orphan sandbox directory");
        }
    }
}
