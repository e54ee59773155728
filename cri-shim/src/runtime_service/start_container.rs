//! StartContainer: `skiff-oci start` releases the created init into the user's process.

use super::Runtime;
use crate::error::CriError;
use crate::sandbox::now_nanos;
use crate::state::ContainerState;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn start_container(
        &self,
        request: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse, CriError> {
        let found = self.find_container(&request.container_id)?.ok_or_else(|| {
            CriError::NotFound(format!("container {:?} not found", request.container_id))
        })?;
        let _guard = self.locks.lock(&found.id).await;
        let mut record = self.refreshed_container(&found.id).await?.ok_or_else(|| {
            CriError::NotFound(format!("container {:?} not found", request.container_id))
        })?;
        if record.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                record.id, record.state
            )));
        }
        // Taken before the start: a process that exits at once must not look like it finished
        // before it started.
        let started_at = now_nanos();
        self.helpers
            .start(&record.id)
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?;
        record.state = ContainerState::Running;
        record.started_at = started_at;
        self.state.save_container(record.clone()).await?;
        self.publish(
            &record.id,
            &record.sandbox_id,
            cri::ContainerEventType::ContainerStartedEvent,
        );
        // Its exit becomes a CONTAINER_STOPPED event.
        if let Some(exits) = &self.exits {
            exits.watch(&record.bundle, &record.id, &record.sandbox_id);
        }
        Ok(cri::StartContainerResponse {})
    }
}
