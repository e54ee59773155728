//! Attach: checks the container runs and hands out a single-use URL on the streaming server,
//! where the client joins the container's stdio through its monitor.

use super::{check_streams, Runtime};
use crate::container::ContainerPaths;
use crate::error::CriError;
use crate::streaming::AttachRequest;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn attach(
        &self,
        request: cri::AttachRequest,
    ) -> Result<cri::AttachResponse, CriError> {
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id).await?;
        let paths = ContainerPaths::new(&record.bundle);
        let url = self.streaming()?.attach_url(AttachRequest {
            socket_dir: paths.socket_dir,
            exit_file: paths.exit_file,
            container_id: record.id,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        });
        Ok(cri::AttachResponse { url })
    }
}
