//! CreateContainer: image layers + CRI config → overlay rootfs and OCI bundle, then a monitor
//! that runs `skiff-oci create`. Everything made is rolled back if a step fails.

use super::Runtime;
use crate::container::{rootfs, ContainerPaths};
use crate::error::CriError;
use crate::failpoint::crash_point;
use crate::sandbox::files::PodFiles;
use crate::sandbox::{new_id, now_nanos};
use crate::spec::{build_spec, SandboxPaths, SpecInputs};
use crate::state::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use prost::Message;
use skiff_monitor::{spawn_monitor, MonitorSpec};
use skiff_proto::runtime::v1 as cri;
use skiff_runtime::image::ImageRecord;
use std::path::PathBuf;

impl Runtime {
    pub(super) async fn create_container(
        &self,
        request: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse, CriError> {
        let config = request
            .config
            .ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let meta = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| CriError::InvalidArgument("config.metadata.name is required".into()))?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| CriError::InvalidArgument("config.image.image is required".into()))?;
        let sandbox = self.find_sandbox(&request.pod_sandbox_id)?.ok_or_else(|| {
            CriError::NotFound(format!(
                "pod sandbox {:?} not found",
                request.pod_sandbox_id
            ))
        })?;
        if sandbox.state != SandboxState::Ready {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let image = self.images.find(&image_name)?.ok_or_else(|| {
            CriError::NotFound(format!(
                "image {image_name:?} not found locally; pull it first"
            ))
        })?;
        let pod = sandbox.config();
        let pod_meta = pod.metadata.clone().unwrap_or_default();
        let name_key = format!(
            "{}_{}_{}_{}_{}",
            meta.name, pod_meta.name, pod_meta.namespace, pod_meta.uid, meta.attempt
        );

        let _guard = self.locks.lock(&name_key).await;
        if let Some(existing) = self
            .state
            .containers()?
            .into_iter()
            .find(|c| c.name_key == name_key)
        {
            return Err(CriError::AlreadyExists(format!(
                "container name {name_key:?} is already in use by {}",
                existing.id
            )));
        }

        let id = new_id();
        let bundle = self.config.state_dir.join("containers").join(&id);
        let cgroup_parent = pod
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/skiff".to_string());
        let log_path = match (pod.log_directory.as_str(), config.log_path.as_str()) {
            (dir, file) if !dir.is_empty() && !file.is_empty() => {
                Some(PathBuf::from(dir).join(file))
            }
            _ => None,
        };
        let mut record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name_key,
            state: ContainerState::Creating,
            config: config.encode_to_vec(),
            image_id: image.id.clone(),
            image_ref: image_name,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path,
            bundle: bundle.clone(),
            pid: 0,
            cgroups_path: format!("{cgroup_parent}/{id}"),
        };
        // Recorded before any host work, so a crash from here on is rolled back at restart.
        self.state.save_container(record.clone()).await?;
        crash_point("container-recorded");

        match self
            .build_container(&record, &config, &sandbox, &image)
            .await
        {
            Ok(pid) => {
                crash_point("container-monitor-started");
                record.pid = pid;
                record.state = ContainerState::Created;
                self.state.save_container(record.clone()).await?;
                self.publish(
                    &id,
                    &record.sandbox_id,
                    cri::ContainerEventType::ContainerCreatedEvent,
                );
                Ok(cri::CreateContainerResponse { container_id: id })
            }
            Err(e) => {
                self.destroy_container(&record).await;
                self.state.forget_container(id.clone()).await?;
                Err(e)
            }
        }
    }

    /// The host work of CreateContainer: rootfs, config.json, monitor. Returns the init's PID.
    async fn build_container(
        &self,
        record: &ContainerRecord,
        config: &cri::ContainerConfig,
        sandbox: &SandboxRecord,
        image: &ImageRecord,
    ) -> Result<u32, CriError> {
        let paths = ContainerPaths::new(&record.bundle);
        let (upper, work, _) = ContainerPaths::overlay_dirs(&self.config.root_dir, &record.id);
        let layers = self.images.layer_dirs(image)?;
        let image_config = self.images.config(image)?;
        let pod = sandbox.config();
        let files = PodFiles::in_dir(&sandbox.dir);
        let sandbox_paths = SandboxPaths {
            netns: sandbox.netns.clone(),
            ipcns: sandbox.ipcns.clone(),
            utsns: sandbox.utsns.clone(),
            pidns: sandbox.pidns.clone(),
            host_pid: super::run_pod_sandbox::namespace_modes(&pod)?.host_pid,
            hostname: std::fs::read_to_string(&files.hostname)
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            hosts_file: files.hosts,
            hostname_file: files.hostname,
            resolv_conf: files.resolv_conf,
            shm_dir: None,
        };
        let cgroups_path = record.cgroups_path.clone();
        let (sandbox_id, config) = (sandbox.id.clone(), config.clone());
        let rootfs_dir = paths.rootfs.clone();
        let bundle = paths.bundle.clone();
        tokio::task::spawn_blocking(move || -> Result<(), CriError> {
            std::fs::create_dir_all(&bundle)
                .map_err(|e| CriError::Internal(format!("creating {}: {e}", bundle.display())))?;
            rootfs::mount_overlay(&layers, &upper, &work, &rootfs_dir)
                .map_err(|e| CriError::Internal(e.to_string()))?;
            let spec = build_spec(&SpecInputs {
                sandbox_id: &sandbox_id,
                config: &config,
                sandbox_config: &pod,
                image: &image_config,
                rootfs: &rootfs_dir,
                sandbox: &sandbox_paths,
                cgroups_path,
                current_oom_score_adj: current_oom_score_adj(),
            })
            .map_err(CriError::Spec)?;
            let json = serde_json::to_vec_pretty(&spec)
                .map_err(|e| CriError::Internal(format!("encoding config.json: {e}")))?;
            std::fs::write(bundle.join("config.json"), json)
                .map_err(|e| CriError::Internal(format!("writing config.json: {e}")))
        })
        .await
        .map_err(CriError::task)??;
        crash_point("container-rootfs-mounted");

        let cri_config = record.config();
        let monitor = MonitorSpec {
            id: record.id.clone(),
            bundle: paths.bundle.clone(),
            runtime: self.helpers.oci.clone(),
            runtime_root: self.helpers.oci_root.clone(),
            log_path: record
                .log_path
                .clone()
                .unwrap_or(paths.fallback_log.clone()),
            exit_file: paths.exit_file.clone(),
            pid_file: paths.pid_file.clone(),
            socket_dir: paths.socket_dir.clone(),
            stdin: cri_config.stdin,
            stdin_once: cri_config.stdin_once,
            tty: cri_config.tty,
        };
        let binary = self.helpers.monitor.clone();
        let rootfs_dir = paths.rootfs.clone();
        tokio::task::spawn_blocking(move || {
            let pid = spawn_monitor(&binary, &monitor)
                .map_err(|e| CriError::Internal(format!("creating the container: {e}")))?;
            // The created container holds its root in its own mount namespace; the host's
            // mount is no longer needed (see `rootfs::unmount`).
            if let Err(e) = rootfs::unmount(&rootfs_dir) {
                tracing::warn!(error = %e, "unmounting a created container's rootfs on the host");
            }
            Ok(pid)
        })
        .await
        .map_err(CriError::task)?
    }
}

/// skiffd's own oom_score_adj: a container's may not be lower (no CAP_SYS_RESOURCE here).
fn current_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
