//! ListPodSandbox with id (prefix), state and label filters.

use super::pod_sandbox_status::cri_state;
use super::Runtime;
use crate::error::CriError;
use crate::state::SandboxState;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn list_pod_sandbox(
        &self,
        request: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse, CriError> {
        let filter = request.filter.unwrap_or_default();
        let items = self
            .state
            .sandboxes()?
            .into_iter()
            // Half-made sandboxes are not shown until RunPodSandbox has finished.
            .filter(|s| s.state != SandboxState::Creating)
            .filter(|s| s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|want| want.state == cri_state(s) as i32)
            })
            .map(|s| {
                let config = s.config();
                cri::PodSandbox {
                    id: s.id.clone(),
                    metadata: config.metadata.clone(),
                    state: cri_state(&s) as i32,
                    created_at: s.created_at,
                    labels: config.labels,
                    annotations: config.annotations,
                    runtime_handler: s.runtime_handler.clone(),
                }
            })
            .filter(|s| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .collect();
        Ok(cri::ListPodSandboxResponse { items })
    }
}
