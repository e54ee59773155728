//! Status: the RuntimeReady and NetworkReady conditions; `verbose` adds the effective config.

use super::Runtime;
use crate::cni;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;

impl Runtime {
    pub(super) async fn status(
        &self,
        request: cri::StatusRequest,
    ) -> Result<cri::StatusResponse, CriError> {
        let runtime_ready = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let cni = &self.config.cni;
        let network_problem = match cni::find_network(&cni.conf_dir) {
            Ok(net) => match net.missing_plugin(&cni.bin_dirs) {
                Some(plugin) => Some(format!(
                    "plugin {plugin:?} of network {:?} ({}) is not in {:?}",
                    net.name,
                    net.path.display(),
                    cni.bin_dirs
                )),
                // The plugins' own STATUS says whether they can add pods now.
                None => self.cni.status().await.err().map(|e| e.to_string()),
            },
            Err(e) => Some(format!("cni config uninitialized: {e}")),
        };
        let network_ready = cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: network_problem.is_none(),
            reason: if network_problem.is_some() {
                "NetworkPluginNotReady".into()
            } else {
                String::new()
            },
            message: network_problem.unwrap_or_default(),
        };
        let mut info = HashMap::new();
        if request.verbose {
            let config = serde_json::to_string(&*self.config)
                .map_err(|e| CriError::Internal(format!("encoding config: {e}")))?;
            info.insert("config".to_string(), config);
        }
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            ..Default::default()
        })
    }
}
