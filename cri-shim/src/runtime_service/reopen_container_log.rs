//! ReopenContainerLog: ask the container's monitor to reopen its log file (after rotation).

use super::Runtime;
use crate::container::ContainerPaths;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn reopen_container_log(
        &self,
        request: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse, CriError> {
        let record = self.running_container(&request.container_id).await?;
        let socket_dir = ContainerPaths::new(&record.bundle).socket_dir;
        tokio::task::spawn_blocking(move || skiff_monitor::reopen_log(&socket_dir))
            .await
            .map_err(CriError::task)?
            .map_err(|e| CriError::Internal(e.to_string()))?;
        Ok(cri::ReopenContainerLogResponse {})
    }
}
