//! ContainerStatus: the recorded state, folded together with what the monitor wrote on disk.

use super::Runtime;
use crate::error::CriError;
use crate::state::{ContainerRecord, ContainerState};
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;

impl Runtime {
    pub(super) async fn container_status(
        &self,
        request: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, CriError> {
        let record = self.existing_container(&request.container_id).await?;
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "pid": record.pid,
                "bundle": record.bundle,
                "sandboxID": record.sandbox_id,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(self.container_status_of(&record)),
            info,
        })
    }

    /// The status of every container of a sandbox, each folded with its exit on disk, newest
    /// first: a kubelet with the evented PLEG takes them from PodSandboxStatus in this order and
    /// reads the first of a name as that container's latest attempt.
    pub(super) async fn container_statuses_of(
        &self,
        sandbox_id: &str,
    ) -> Vec<cri::ContainerStatus> {
        let ids: Vec<String> = match self.state.containers() {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.sandbox_id == sandbox_id)
                .map(|c| c.id)
                .collect(),
            Err(_) => return Vec::new(),
        };
        let mut statuses = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(Some(record)) = self.refreshed_container(&id).await {
                statuses.push(self.container_status_of(&record));
            }
        }
        statuses.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        statuses
    }

    /// The CRI status of a container record.
    pub(super) fn container_status_of(&self, record: &ContainerRecord) -> cri::ContainerStatus {
        let config = record.config();
        cri::ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: cri_state(record) as i32,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            exit_code: record.exit_code,
            image: Some(cri::ImageSpec {
                image: record.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: self.image_ref(record),
            image_id: record.image_id.clone(),
            reason: record.reason.clone(),
            message: record.message.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// The image reference the CRI reports: a repo digest when the image has one, else its ID.
    pub(super) fn image_ref(&self, record: &ContainerRecord) -> String {
        self.images
            .find(&record.image_id)
            .ok()
            .flatten()
            .and_then(|image| image.repo_digests.first().cloned())
            .unwrap_or_else(|| record.image_id.clone())
    }
}

/// The CRI state of a container record.
pub(super) fn cri_state(record: &ContainerRecord) -> cri::ContainerState {
    match record.state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Creating | ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}
