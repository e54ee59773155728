//! Attach: checks the container runs and hands out a single-use URL on the streaming server,
//! where the client joins the container's stdio through its monitor.

use super::Runtime;
use crate::container::ContainerPaths;
use crate::error::CriError;
use crate::state::ContainerState;
use crate::streaming::AttachRequest;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    pub(super) async fn attach(
        &self,
        request: cri::AttachRequest,
    ) -> Result<cri::AttachResponse, CriError> {
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
