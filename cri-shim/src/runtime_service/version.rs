//! Version: who we are and which CRI we speak.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

/// The kubelet API version field of the CRI (`VersionResponse.version`); fixed by the CRI.
const KUBELET_API_VERSION: &str = "0.1.0";

impl Runtime {
    pub(super) async fn version(
        &self,
        _request: cri::VersionRequest,
    ) -> Result<cri::VersionResponse, CriError> {
        Ok(cri::VersionResponse {
            version: KUBELET_API_VERSION.into(),
            runtime_name: "skiff".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }
}
