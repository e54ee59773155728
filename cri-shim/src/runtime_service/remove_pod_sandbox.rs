//! RemovePodSandbox: stop if needed, remove its containers, delete its directory and record;
//! idempotent.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn remove_pod_sandbox(
        &self,
        request: cri::RemovePodSandboxRequest,
    ) -> Result<cri::RemovePodSandboxResponse, CriError> {
        let Some(sandbox) = self.find_sandbox(&request.pod_sandbox_id)? else {
            return Ok(cri::RemovePodSandboxResponse {});
        };
        let _guard = self.locks.lock(&sandbox.id).await;
        self.stop_sandbox_locked(&sandbox.id).await?;
        self.remove_containers_of(&sandbox.id).await?;
        // A DEL that failed on stop is tried once more; the plugins must cope without a netns.
        if let Some(mut record) = self.state.sandbox(&sandbox.id)? {
            self.detach_network(&mut record).await?;
            if record.network_attached {
                tracing::warn!(sandbox = %record.id, "removing the sandbox although CNI DEL failed");
            }
        }
        let dir = sandbox.dir.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CriError::Internal(format!(
                "removing {}: {e}",
                dir.display()
            ))),
            _ => Ok(()),
        })
        .await
        .map_err(CriError::task)??;
        // Published while the record still exists: the event carries the sandbox's status.
        self.publish(
            &sandbox.id,
            &sandbox.id,
            cri::ContainerEventType::ContainerDeletedEvent,
        );
        self.state.forget_sandbox(sandbox.id.clone()).await?;
        Ok(cri::RemovePodSandboxResponse {})
    }
}
