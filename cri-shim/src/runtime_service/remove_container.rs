//! RemoveContainer: stop it if needed, delete the runtime state, unmount and delete its files.
//! Idempotent. The log file stays: it belongs to the kubelet.

use super::Runtime;
use crate::container::{rootfs, ContainerPaths};
use crate::error::CriError;
use crate::state::ContainerRecord;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn remove_container(
        &self,
        request: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse, CriError> {
        let Some(found) = self.find_container(&request.container_id)? else {
            return Ok(cri::RemoveContainerResponse {});
        };
        let _guard = self.locks.lock(&found.id).await;
        self.remove_container_locked(&found.id).await?;
        Ok(cri::RemoveContainerResponse {})
    }

    /// Removes a container whose lock the caller holds.
    pub(super) async fn remove_container_locked(&self, id: &str) -> Result<(), CriError> {
        self.stop_container_locked(id, 0).await?;
        let Some(record) = self.state.container(id)? else {
            return Ok(());
        };
        self.helpers
            .delete(id)
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?;
        self.destroy_container(&record).await;
        self.state.forget_container(id.to_string()).await?;
        self.publish(
            id,
            &record.sandbox_id,
            cri::ContainerEventType::ContainerDeletedEvent,
        );
        self.cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    /// Unmounts and deletes a container's files (best effort; used by remove and rollback).
    pub(super) async fn destroy_container(&self, record: &ContainerRecord) {
        let _ = self.helpers.delete(&record.id).await;
        let paths = ContainerPaths::new(&record.bundle);
        let (_, _, overlay_base) = ContainerPaths::overlay_dirs(&self.config.root_dir, &record.id);
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = rootfs::unmount(&paths.rootfs) {
                tracing::warn!(error = %e, "unmounting a container rootfs");
            }
            let _ = std::fs::remove_dir_all(&paths.bundle);
            let _ = std::fs::remove_dir_all(&paths.socket_dir);
            let _ = std::fs::remove_dir_all(&overlay_base);
            remove_empty_default_cgroup_parent();
        })
        .await;
    }
}

/// The default cgroup parent `/skiff` is created on demand by the runtime; drop it again when
/// no container uses it, so nothing of skiff stays in the cgroup tree.
fn remove_empty_default_cgroup_parent() {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for controller in controllers.flatten() {
        // rmdir only succeeds on an empty cgroup, which is exactly the condition we want.
        let _ = std::fs::remove_dir(controller.path().join("skiff"));
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/skiff");
}
