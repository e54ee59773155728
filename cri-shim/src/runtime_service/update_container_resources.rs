//! UpdateContainerResources: write new limits into the running container's cgroup and keep
//! them in its recorded config.

use super::Runtime;
use crate::error::CriError;
use crate::state::ContainerState;
use prost::Message;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn update_container_resources(
        &self,
        request: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse, CriError> {
        let found = self.find_container(&request.container_id)?.ok_or_else(|| {
            CriError::NotFound(format!("container {:?} not found", request.container_id))
        })?;
        let Some(resources) = request.linux else {
            return Ok(cri::UpdateContainerResourcesResponse {});
        };
        let _guard = self.locks.lock(&found.id).await;
        let Some(mut record) = self.refreshed_container(&found.id).await? else {
            return Err(CriError::NotFound(format!(
                "container {} not found",
                found.id
            )));
        };
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}; only a created or running container can be updated",
                record.id, record.state
            )));
        }
        let (cgroups, path, update) = (
            self.cgroups.clone(),
            record.cgroups_path.clone(),
            resources.clone(),
        );
        tokio::task::spawn_blocking(move || cgroups.apply(&path, &update))
            .await
            .map_err(CriError::task)?
            .map_err(|e| CriError::Internal(format!("updating resources: {e}")))?;
        let mut config = record.config();
        if let Some(linux) = config.linux.as_mut() {
            linux.resources = Some(resources);
        } else {
            config.linux = Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                ..Default::default()
            });
        }
        record.config = config.encode_to_vec();
        self.state.save_container(record.clone()).await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }
}
