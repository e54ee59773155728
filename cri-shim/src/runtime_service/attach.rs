//! Attach: not built yet. Attaching needs the container's monitor to share the container's
//! stdio (its control socket has no attach command yet), so the RPC says so plainly after
//! checking the container exists.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn attach(
        &self,
        request: cri::AttachRequest,
    ) -> Result<cri::AttachResponse, CriError> {
        if self.find_container(&request.container_id)?.is_none() {
            return Err(CriError::NotFound(format!(
                "container {:?} not found",
                request.container_id
            )));
        }
        Err(CriError::Unimplemented("Attach"))
    }
}
