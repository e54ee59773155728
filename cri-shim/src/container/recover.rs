//! What a restart finds: containers a crash left half-created are rolled back; the others are
//! reconciled lazily by [`super::refresh`] when asked about.

use super::oci::Helpers;
use super::{rootfs, ContainerPaths};
use crate::state::{ContainerState, StateStore};

/// Rolls back containers left in `Creating`. Runs once at startup.
pub async fn recover_containers(
    state: &StateStore,
    helpers: &Helpers,
    root_dir: &std::path::Path,
) -> Result<(), crate::state::StateError> {
    for record in state.containers()? {
        if record.state != ContainerState::Creating {
            continue;
        }
        tracing::warn!(container = %record.id, "rolling back a container a crash left half-made");
        let _ = helpers.delete(&record.id).await;
        let paths = ContainerPaths::new(&record.bundle);
        let (_, _, overlay_base) = ContainerPaths::overlay_dirs(root_dir, &record.id);
        let _ = rootfs::unmount(&paths.rootfs);
        let _ = std::fs::remove_dir_all(&paths.bundle);
        let _ = std::fs::remove_dir_all(&paths.socket_dir);
        let _ = std::fs::remove_dir_all(&overlay_base);
        state.delete_container(&record.id)?;
    }
    Ok(())
}
