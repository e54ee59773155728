//! PodSandboxStatus: state, network and namespace options of one sandbox.

use super::Runtime;
use crate::error::CriError;
use crate::sandbox::now_nanos;
use crate::state::{SandboxRecord, SandboxState};
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;

impl Runtime {
    pub(super) async fn pod_sandbox_status(
        &self,
        request: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse, CriError> {
        let sandbox = self.find_sandbox(&request.pod_sandbox_id)?.ok_or_else(|| {
            CriError::NotFound(format!(
                "pod sandbox {:?} not found",
                request.pod_sandbox_id
            ))
        })?;
        let mut info = HashMap::new();
        if request.verbose {
            // Verbose status re-checks the network against the cached ADD result (CNI CHECK).
            let network_check = match self.attachment(&sandbox) {
                Some(a) if sandbox.network_attached => match self.cni.check(&a).await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                },
                _ => "not attached".to_string(),
            };
            let verbose = serde_json::json!({
                "cniResult": sandbox.cni_result,
                "networkCheck": network_check,
                "dir": sandbox.dir,
                "netns": sandbox.netns,
                "ipcns": sandbox.ipcns,
                "utsns": sandbox.utsns,
                "state": format!("{:?}", sandbox.state),
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        // A kubelet with the evented PLEG (it keeps an event stream open) takes the pod's
        // container statuses from here, stamped with when they were read; others skip the cost.
        let (containers_statuses, timestamp) = if self.events.watched() {
            let timestamp = now_nanos();
            (self.container_statuses_of(&sandbox.id).await, timestamp)
        } else {
            (Vec::new(), 0)
        };
        Ok(cri::PodSandboxStatusResponse {
            status: Some(self.sandbox_status_of(&sandbox)),
            info,
            containers_statuses,
            timestamp,
        })
    }

    /// The CRI status of a sandbox record.
    pub(super) fn sandbox_status_of(&self, sandbox: &SandboxRecord) -> cri::PodSandboxStatus {
        let config = sandbox.config();
        let namespace_options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let network = sandbox
            .ips
            .split_first()
            .map(|(ip, rest)| cri::PodSandboxNetworkStatus {
                ip: ip.clone(),
                additional_ips: rest
                    .iter()
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            });
        cri::PodSandboxStatus {
            id: sandbox.id.clone(),
            metadata: config.metadata,
            state: cri_state(sandbox) as i32,
            created_at: sandbox.created_at,
            network,
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: namespace_options,
                }),
            }),
            labels: config.labels,
            annotations: config.annotations,
            runtime_handler: sandbox.runtime_handler.clone(),
        }
    }
}

/// The CRI state of a sandbox: only a fully set up sandbox is ready.
pub(super) fn cri_state(sandbox: &SandboxRecord) -> cri::PodSandboxState {
    match sandbox.state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::Creating | SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}
