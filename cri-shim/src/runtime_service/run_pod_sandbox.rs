//! RunPodSandbox: pin the pod's namespaces, write its shared files, record it Ready.
//!
//! A kubelet that timed out and retries the same pod attempt gets the sandbox that exists (or
//! waits for the one in progress) instead of a "name is reserved" error, as CRI-O does.

use super::Runtime;
use crate::cni::CniError;
use crate::error::CriError;
use crate::failpoint::crash_point;
use crate::sandbox::files::{self, PodFiles};
use crate::sandbox::namespaces::{self, NsKind};
use crate::sandbox::{new_id, now_nanos, pause, remove_from_host};
use crate::state::{SandboxRecord, SandboxState};
use prost::Message;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn run_pod_sandbox(
        &self,
        request: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse, CriError> {
        let config = request
            .config
            .ok_or_else(|| CriError::InvalidArgument("config is required".into()))?;
        let meta = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty() && !m.namespace.is_empty() && !m.uid.is_empty())
            .ok_or_else(|| {
                CriError::InvalidArgument("config.metadata needs name, namespace and uid".into())
            })?;
        if !matches!(request.runtime_handler.as_str(), "" | "skiff") {
            return Err(CriError::InvalidArgument(format!(
                "runtime handler {:?} is not configured (skiff has only the default handler)",
                request.runtime_handler
            )));
        }
        let modes = namespace_modes(&config)?;
        let hostname = pod_hostname(&config, modes.host_network)?;
        let name_key = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );

        // One RunPodSandbox per pod attempt at a time; a retry waits here for the first.
        let _guard = self.locks.lock(&name_key).await;
        if let Some(existing) = self
            .state
            .sandboxes()?
            .into_iter()
            .find(|s| s.name_key == name_key)
        {
            return match existing.state {
                SandboxState::Ready => Ok(cri::RunPodSandboxResponse {
                    pod_sandbox_id: existing.id,
                }),
                _ => Err(CriError::AlreadyExists(format!(
                    "pod sandbox name {name_key:?} is reserved for stopped sandbox {}; remove it first",
                    existing.id
                ))),
            };
        }

        let id = new_id();
        let dir = self.config.state_dir.join("sandboxes").join(&id);
        let mut kinds = Vec::new();
        if !modes.host_network {
            kinds.extend([NsKind::Net, NsKind::Uts]);
        }
        if !modes.host_ipc {
            kinds.push(NsKind::Ipc);
        }
        let pinned = |kind| {
            kinds
                .contains(&kind)
                .then(|| namespaces::ns_path(&dir, kind))
        };
        let mut record = SandboxRecord {
            id: id.clone(),
            name_key,
            state: SandboxState::Creating,
            created_at: now_nanos(),
            config: config.encode_to_vec(),
            runtime_handler: request.runtime_handler.clone(),
            dir: dir.clone(),
            netns: pinned(NsKind::Net),
            ipcns: pinned(NsKind::Ipc),
            utsns: pinned(NsKind::Uts),
            pidns: modes
                .shared_pid
                .then(|| namespaces::ns_path(&dir, NsKind::Pid)),
            pause_pid: None,
            ips: Vec::new(),
            network_attached: false,
            cni_result: None,
        };
        // The record is committed (an fdatasync) while the pod's namespaces are pinned, both at
        // once. A crash before the commit lands leaves a sandbox directory that no record names,
        // which the startup sweep releases (`recover_sandboxes`); everything after this point
        // (the pause process, CNI) waits for the commit, so a crash from there on is rolled back
        // from the record.
        // On disk the record already owes a CNI DEL when the pod gets a network: one commit
        // instead of a second one just before ADD, and a DEL for a pod that was never added
        // succeeds (the CNI spec requires it). In memory the flag stays false until ADD starts,
        // so an error before then rolls back without a DEL.
        let skiffd = std::env::current_exe()
            .map_err(|e| CriError::Internal(format!("locating skiffd: {e}")))?;
        let commit = self.state.save_sandbox(SandboxRecord {
            network_attached: self.attachment(&record).is_some(),
            ..record.clone()
        });
        let dns = config.dns_config.clone();
        let host_network = modes.host_network;
        let pin = tokio::task::spawn_blocking({
            let (dir, kinds, hostname) = (dir.clone(), kinds.clone(), hostname.clone());
            move || -> Result<(), CriError> {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| CriError::Internal(format!("creating {}: {e}", dir.display())))?;
                namespaces::pin(&dir, &kinds, &hostname)
                    .map_err(|e| CriError::Internal(format!("pinning namespaces: {e}")))?;
                files::write(
                    &PodFiles::in_dir(&dir),
                    &hostname,
                    &[],
                    dns.as_ref(),
                    host_network,
                )
                .map_err(|e| CriError::Internal(format!("writing pod files: {e}")))
            }
        });
        let (commit, pinned) = tokio::join!(commit, pin);
        if let Err(e) = commit {
            // Nothing durable names this pod: undo the pins here.
            let partial = record.clone();
            let _ = tokio::task::spawn_blocking(move || remove_from_host(&partial)).await;
            return Err(e.into());
        }
        crash_point("sandbox-recorded");

        let setup = match pinned.map_err(CriError::task).and_then(|r| r) {
            Ok(()) if modes.shared_pid => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || -> Result<Option<u32>, CriError> {
                    let pid = pause::spawn(&skiffd).map_err(|e| {
                        CriError::Internal(format!("starting the pause process: {e}"))
                    })?;
                    namespaces::pin_pid(&dir, pid)
                        .map(|_| Some(pid))
                        .map_err(|e| CriError::Internal(format!("pinning the pid namespace: {e}")))
                })
                .await
                .map_err(CriError::task)
                .and_then(|r| r)
            }
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        };

        crash_point("sandbox-namespaces-pinned");
        let setup = match setup {
            Ok(pause_pid) => {
                record.pause_pid = pause_pid;
                self.attach_network(&mut record, &hostname, &dir).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = setup {
            // Roll back everything this call made: network, pause process, pins, directory,
            // record.
            self.detach_network(&mut record).await?;
            let partial = record.clone();
            let _ = tokio::task::spawn_blocking(move || remove_from_host(&partial)).await;
            self.state.forget_sandbox(id.clone()).await?;
            return Err(e);
        }
        record.state = SandboxState::Ready;
        self.state.save_sandbox(record.clone()).await?;
        self.publish(&id, &id, cri::ContainerEventType::ContainerStartedEvent);
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }
}

impl Runtime {
    /// CNI ADD for a pod with its own network namespace; puts the IPs in `record` (the caller
    /// commits it) and writes them into the pod's /etc/hosts.
    async fn attach_network(
        &self,
        record: &mut SandboxRecord,
        hostname: &str,
        dir: &std::path::Path,
    ) -> Result<(), CriError> {
        let Some(attachment) = self.attachment(record) else {
            return Ok(());
        };
        // Owed from here on (on disk since the first commit): an error or a crash during ADD
        // is cleaned by DEL on rollback or by GC.
        record.network_attached = true;
        let network = match self.cni.add(&attachment).await {
            Ok(network) => network,
            Err(e) => {
                if matches!(e, CniError::RolledBack(_)) {
                    // ADD undid itself: no DEL owed (a hanging plugin would hang it again).
                    record.network_attached = false;
                    self.state.save_sandbox(record.clone()).await?;
                }
                return Err(CriError::Internal(format!(
                    "setting up the pod network: {e}"
                )));
            }
        };
        crash_point("sandbox-network-added");
        record.ips = network.ips;
        record.cni_result = Some(network.result);
        let hosts = files::hosts(hostname, &record.ips);
        let path = PodFiles::in_dir(dir).hosts;
        tokio::fs::write(&path, hosts)
            .await
            .map_err(|e| CriError::Internal(format!("writing {}: {e}", path.display())))?;
        // The caller commits the IPs together with the Ready state.
        Ok(())
    }
}

/// Which namespaces a pod shares with the host.
pub(super) struct NamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// The pod's containers share one PID namespace (the CRI default, POD).
    pub shared_pid: bool,
}

/// Reads the namespace options, refusing the modes skiff does not support yet.
pub(super) fn namespace_modes(config: &cri::PodSandboxConfig) -> Result<NamespaceModes, CriError> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    if [options.network, options.ipc].contains(&(cri::NamespaceMode::Target as i32)) {
        return Err(CriError::InvalidArgument(
            "namespace mode TARGET is only valid for a container's PID namespace".into(),
        ));
    }
    Ok(NamespaceModes {
        host_network: options.network == node,
        host_ipc: options.ipc == node,
        host_pid: options.pid == node,
        shared_pid: options.pid == cri::NamespaceMode::Pod as i32,
    })
}

/// The pod's hostname: as asked; with host networking, or when none is asked, the host's (as
/// containerd does; a pod name can be longer than a hostname may be).
fn pod_hostname(config: &cri::PodSandboxConfig, host_network: bool) -> Result<String, CriError> {
    if host_network || config.hostname.is_empty() {
        return Ok(nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default());
    }
    // HOST_NAME_MAX on Linux.
    if config.hostname.len() > 64 || config.hostname.contains(['\0', '/']) {
        return Err(CriError::InvalidArgument(format!(
            "hostname {:?} is not a valid hostname (at most 64 bytes)",
            config.hostname
        )));
    }
    Ok(config.hostname.clone())
}
