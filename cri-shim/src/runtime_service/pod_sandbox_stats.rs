//! PodSandboxStats and ListPodSandboxStats: a pod has no cgroup of its own (no pause
//! container), so its usage is the sum of its containers'.

use super::Runtime;
use crate::error::CriError;
use crate::sandbox::now_nanos;
use crate::state::{SandboxRecord, SandboxState};
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn pod_sandbox_stats(
        &self,
        request: cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse, CriError> {
        let sandbox = self.find_sandbox(&request.pod_sandbox_id)?.ok_or_else(|| {
            CriError::NotFound(format!(
                "pod sandbox {:?} not found",
                request.pod_sandbox_id
            ))
        })?;
        Ok(cri::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&sandbox).await?),
        })
    }

    pub(super) async fn list_pod_sandbox_stats(
        &self,
        request: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse, CriError> {
        let filter = request.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for sandbox in self.state.sandboxes()? {
            let labels = sandbox.config().labels;
            if sandbox.state == SandboxState::Creating
                || !sandbox.id.starts_with(&filter.id)
                || !filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            {
                continue;
            }
            stats.push(self.sandbox_stats(&sandbox).await?);
        }
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn sandbox_stats(
        &self,
        sandbox: &SandboxRecord,
    ) -> Result<cri::PodSandboxStats, CriError> {
        let records = self
            .state
            .containers()?
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox.id)
            .collect();
        let containers = self.collect_stats(records).await?;
        let now = now_nanos();
        let sum = |get: &dyn Fn(&cri::ContainerStats) -> Option<u64>| {
            let values: Vec<u64> = containers.iter().filter_map(get).collect();
            (!values.is_empty()).then(|| cri::UInt64Value {
                value: values.iter().sum(),
            })
        };
        let config = sandbox.config();
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: config.metadata.clone(),
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: sum(&|c| {
                        c.cpu
                            .as_ref()?
                            .usage_core_nano_seconds
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    usage_nano_cores: sum(&|c| {
                        c.cpu.as_ref()?.usage_nano_cores.as_ref().map(|v| v.value)
                    }),
                    ..Default::default()
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: sum(&|c| {
                        c.memory
                            .as_ref()?
                            .working_set_bytes
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    usage_bytes: sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
                    rss_bytes: sum(&|c| c.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value)),
                    ..Default::default()
                }),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}
