//! Exec: checks the container runs and hands out a single-use URL on the streaming server,
//! where the client runs the command over SPDY.

use super::{check_streams, Runtime};
use crate::error::CriError;
use crate::streaming::ExecRequest;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn exec(
        &self,
        request: cri::ExecRequest,
    ) -> Result<cri::ExecResponse, CriError> {
        if request.cmd.is_empty() {
            return Err(CriError::InvalidArgument("cmd must not be empty".into()));
        }
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        let record = self.running_container(&request.container_id).await?;
        let url = self.streaming()?.exec_url(ExecRequest {
            container_id: record.id,
            cmd: request.cmd,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        });
        Ok(cri::ExecResponse { url })
    }
}
