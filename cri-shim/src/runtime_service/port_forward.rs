//! PortForward: checks the pod is ready and hands out a single-use URL on the streaming
//! server, where the client forwards connections into the pod's network namespace over SPDY.

use super::Runtime;
use crate::error::CriError;
use crate::state::SandboxState;
use crate::streaming::PortForwardRequest;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn port_forward(
        &self,
        request: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, CriError> {
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
        let url = self.streaming()?.port_forward_url(PortForwardRequest {
            sandbox_id: sandbox.id,
            netns: sandbox.netns,
        });
        Ok(cri::PortForwardResponse { url })
    }
}
