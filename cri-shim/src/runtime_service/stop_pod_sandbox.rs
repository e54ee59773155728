//! StopPodSandbox: stop the pod's containers, release its namespaces; idempotent.

use super::Runtime;
use crate::error::CriError;
use crate::sandbox::teardown_namespaces;
use crate::state::SandboxState;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn stop_pod_sandbox(
        &self,
        request: cri::StopPodSandboxRequest,
    ) -> Result<cri::StopPodSandboxResponse, CriError> {
        // A sandbox that is already gone counts as stopped (critest checks this).
        let Some(sandbox) = self.find_sandbox(&request.pod_sandbox_id)? else {
            return Ok(cri::StopPodSandboxResponse {});
        };
        let _guard = self.locks.lock(&sandbox.id).await;
        self.stop_sandbox_locked(&sandbox.id).await?;
        self.publish(
            &sandbox.id,
            &sandbox.id,
            cri::ContainerEventType::ContainerStoppedEvent,
        );
        Ok(cri::StopPodSandboxResponse {})
    }

    /// Stops a sandbox whose lock the caller holds: containers first, then the namespaces.
    pub(super) async fn stop_sandbox_locked(&self, id: &str) -> Result<(), CriError> {
        let Some(mut sandbox) = self.state.sandbox(id)? else {
            return Ok(());
        };
        self.stop_containers_of(id).await?;
        // Network first, while the netns still exists, so the plugins can clean inside it.
        self.detach_network(&mut sandbox).await?;
        if sandbox.state == SandboxState::NotReady {
            return Ok(());
        }
        let record = sandbox.clone();
        tokio::task::spawn_blocking(move || teardown_namespaces(&record))
            .await
            .map_err(CriError::task)?;
        sandbox.state = SandboxState::NotReady;
        self.state.save_sandbox(sandbox.clone()).await?;
        Ok(())
    }
}
