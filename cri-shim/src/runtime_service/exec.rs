//! Exec: checks the container runs and hands out a single-use URL on the streaming server,
//! where the client runs the command over SPDY.

use super::Runtime;
use crate::error::CriError;
use crate::state::ContainerState;
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
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        if request.tty && request.stderr {
            return Err(CriError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let record = self
            .find_container(&request.container_id)?
            .and_then(|found| self.refreshed_container(&found.id).transpose())
            .transpose()?
            .ok_or_else(|| {
                CriError::NotFound(format!("container {:?} not found", request.container_id))
            })?;
        if record.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
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
