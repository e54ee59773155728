//! ContainerStats and ListContainerStats: CPU, memory and writable-layer usage from the
//! container's cgroup and overlay upper directory.

use super::Runtime;
use crate::container::cgroups::Usage;
use crate::container::ContainerPaths;
use crate::error::CriError;
use crate::sandbox::now_nanos;
use crate::state::{ContainerRecord, ContainerState};
use skiff_proto::runtime::v1 as cri;
use std::os::unix::fs::MetadataExt;

impl Runtime {
    pub(super) async fn container_stats(
        &self,
        request: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse, CriError> {
        let record = self.find_container(&request.container_id)?.ok_or_else(|| {
            CriError::NotFound(format!("container {:?} not found", request.container_id))
        })?;
        let stats = self.collect_stats(vec![record]).await?.pop();
        Ok(cri::ContainerStatsResponse { stats })
    }

    pub(super) async fn list_container_stats(
        &self,
        request: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse, CriError> {
        let filter = request.filter.unwrap_or_default();
        let records: Vec<ContainerRecord> = self
            .state
            .containers()?
            .into_iter()
            .filter(|c| c.state != ContainerState::Creating)
            .filter(|c| c.id.starts_with(&filter.id))
            .filter(|c| c.sandbox_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| {
                let labels = c.config().labels;
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        Ok(cri::ListContainerStatsResponse {
            stats: self.collect_stats(records).await?,
        })
    }

    /// Stats for each record; cgroup and disk reads happen on a blocking thread.
    pub(super) async fn collect_stats(
        &self,
        records: Vec<ContainerRecord>,
    ) -> Result<Vec<cri::ContainerStats>, CriError> {
        let cgroups = self.cgroups.clone();
        let root_dir = self.config.root_dir.clone();
        let samples = tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|record| {
                    let usage = cgroups.usage(&record.cgroups_path);
                    let (upper, _, _) = ContainerPaths::overlay_dirs(&root_dir, &record.id);
                    let layer = disk_usage(&upper);
                    (record, usage, layer)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(CriError::task)?;
        Ok(samples
            .into_iter()
            .map(|(record, usage, layer)| self.to_cri_stats(&record, &usage, layer))
            .collect())
    }

    fn to_cri_stats(
        &self,
        record: &ContainerRecord,
        usage: &Usage,
        (layer_bytes, layer_inodes): (u64, u64),
    ) -> cri::ContainerStats {
        let now = now_nanos();
        let config = record.config();
        let value = |v: Option<u64>| v.map(|value| cri::UInt64Value { value });
        let nano_cores = usage
            .cpu_nanos
            .and_then(|cpu| self.cpu_rate(&record.id, now, cpu));
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: record.id.clone(),
                metadata: config.metadata.clone(),
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(usage.cpu_nanos),
                usage_nano_cores: value(nano_cores),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(usage.working_set_bytes),
                usage_bytes: value(usage.memory_bytes),
                rss_bytes: value(usage.rss_bytes),
                page_faults: value(usage.page_faults),
                major_page_faults: value(usage.major_page_faults),
                ..Default::default()
            }),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.config.root_dir.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: layer_bytes }),
                inodes_used: Some(cri::UInt64Value {
                    value: layer_inodes,
                }),
            }),
            ..Default::default()
        }
    }

    /// CPU use in nanocores since the previous sample of this container (the kubelet wants a
    /// rate, the cgroup gives a counter).
    fn cpu_rate(&self, id: &str, now: i64, cpu_nanos: u64) -> Option<u64> {
        let mut samples = self.cpu_samples.lock().unwrap_or_else(|p| p.into_inner());
        let previous = samples.insert(id.to_string(), (now, cpu_nanos));
        let (then, before) = previous?;
        let elapsed = u64::try_from(now - then).ok().filter(|e| *e > 0)?;
        Some(
            cpu_nanos
                .saturating_sub(before)
                .saturating_mul(1_000_000_000)
                / elapsed,
        )
    }
}

/// Allocated bytes and inodes under `dir` (hard links counted once).
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.blocks() * 512;
                inodes += 1;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}
