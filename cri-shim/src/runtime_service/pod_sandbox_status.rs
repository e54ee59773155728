//! PodSandboxStatus: state, network and namespace options of one sandbox.

use super::Runtime;
use crate::error::CriError;
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
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: sandbox.id.clone(),
                metadata: config.metadata.clone(),
                state: cri_state(&sandbox) as i32,
                created_at: sandbox.created_at,
                network,
                linux: Some(cri::LinuxPodSandboxStatus {
                    namespaces: Some(cri::Namespace {
                        options: namespace_options,
                    }),
                }),
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: sandbox.runtime_handler.clone(),
            }),
            info,
            ..Default::default()
        })
    }
}

/// The CRI state of a sandbox: only a fully set up sandbox is ready.
pub(super) fn cri_state(sandbox: &SandboxRecord) -> cri::PodSandboxState {
    match sandbox.state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::Creating | SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}
