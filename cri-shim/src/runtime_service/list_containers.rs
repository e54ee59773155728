//! ListContainers with id, state, pod and label filters.

use super::container_status::cri_state;
use super::Runtime;
use crate::container::refresh;
use crate::error::CriError;
use crate::state::ContainerState;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn list_containers(
        &self,
        request: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse, CriError> {
        let filter = request.filter.unwrap_or_default();
        let mut containers = Vec::new();
        for mut record in self.state.containers()? {
            if record.state == ContainerState::Creating
                || !record.id.starts_with(&filter.id)
                || !record.sandbox_id.starts_with(&filter.pod_sandbox_id)
            {
                continue;
            }
            if refresh(&mut record) {
                self.state.save_container(record.clone()).await?;
            }
            let state = cri_state(&record) as i32;
            if filter
                .state
                .as_ref()
                .is_some_and(|want| want.state != state)
            {
                continue;
            }
            let config = record.config();
            if !filter
                .label_selector
                .iter()
                .all(|(k, v)| config.labels.get(k) == Some(v))
            {
                continue;
            }
            containers.push(cri::Container {
                id: record.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: record.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: self.image_ref(&record),
                image_id: record.image_id.clone(),
                state,
                created_at: record.created_at,
                labels: config.labels,
                annotations: config.annotations,
            });
        }
        Ok(cri::ListContainersResponse { containers })
    }
}
