//! UpdateRuntimeConfig: the kubelet passes the node's pod CIDR. With `cni.conf_template` set,
//! skiffd writes the network config from it (see `cni::write_from_template`); without one,
//! the CIDR is only logged, since the network config belongs to the administrator.

use super::Runtime;
use crate::cni::{self, TemplateError};
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn update_runtime_config(
        &self,
        request: cri::UpdateRuntimeConfigRequest,
    ) -> Result<cri::UpdateRuntimeConfigResponse, CriError> {
        let pod_cidr = request
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if pod_cidr.is_empty() {
            return Ok(cri::UpdateRuntimeConfigResponse {});
        }
        let Some(template) = self.config.cni.conf_template.clone() else {
            tracing::info!(%pod_cidr, "pod CIDR received; no cni.conf_template, so no config is written");
            return Ok(cri::UpdateRuntimeConfigResponse {});
        };
        let conf_dir = self.config.cni.conf_dir.clone();
        let cidr = pod_cidr.clone();
        let written = tokio::task::spawn_blocking(move || {
            cni::write_from_template(&template, &conf_dir, &cidr)
        })
        .await
        .map_err(|e| CriError::Internal(format!("writing the network config: {e}")))?;
        match written {
            Ok(true) => tracing::info!(%pod_cidr, "network config written from the template"),
            Ok(false) => {}
            Err(e @ TemplateError::BadCidr(_)) => {
                return Err(CriError::InvalidArgument(e.to_string()))
            }
            Err(e) => return Err(CriError::FailedPrecondition(e.to_string())),
        }
        Ok(cri::UpdateRuntimeConfigResponse {})
    }
}
