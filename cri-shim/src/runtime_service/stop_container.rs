//! StopContainer: the stop signal, up to `timeout` seconds for the process to exit, then
//! SIGKILL. Idempotent: a stopped or missing container is fine.

use super::Runtime;
use crate::container::{refresh, ContainerPaths};
use crate::error::CriError;
use crate::state::ContainerState;
use skiff_proto::runtime::v1 as cri;
use std::time::{Duration, Instant};

/// After SIGKILL, how long to wait for the monitor to record the exit.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl Runtime {
    pub(super) async fn stop_container(
        &self,
        request: cri::StopContainerRequest,
    ) -> Result<cri::StopContainerResponse, CriError> {
        let Some(found) = self.find_container(&request.container_id)? else {
            return Ok(cri::StopContainerResponse {});
        };
        let _guard = self.locks.lock(&found.id).await;
        self.stop_container_locked(&found.id, request.timeout.max(0) as u64)
            .await?;
        Ok(cri::StopContainerResponse {})
    }

    /// Stops a container whose lock the caller holds.
    pub(super) async fn stop_container_locked(
        &self,
        id: &str,
        timeout_secs: u64,
    ) -> Result<(), CriError> {
        let Some(mut record) = self.refreshed_container(id).await? else {
            return Ok(());
        };
        if record.state == ContainerState::Unknown {
            return self.stop_orphan(&mut record).await;
        }
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Ok(());
        }
        let signal = self
            .stop_signal(&record.image_id)
            .unwrap_or_else(|| "TERM".into());
        if timeout_secs > 0 {
            self.helpers
                .kill(id, &signal)
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
            if wait_exit(&mut record, Duration::from_secs(timeout_secs)).await {
                self.state.save_container(record.clone()).await?;
                return Ok(());
            }
        }
        self.helpers
            .kill(id, "KILL")
            .await
            .map_err(|e| CriError::Internal(e.to_string()))?;
        if !wait_exit(&mut record, KILL_GRACE).await {
            return Err(CriError::Internal(format!(
                "container {id} did not exit {KILL_GRACE:?} after SIGKILL"
            )));
        }
        self.state.save_container(record.clone()).await?;
        Ok(())
    }

    /// A container whose monitor is gone: nobody will record its exit, so SIGKILL it through
    /// the runtime and ask the runtime until it reports it stopped.
    async fn stop_orphan(
        &self,
        record: &mut crate::state::ContainerRecord,
    ) -> Result<(), CriError> {
        let _ = self.helpers.kill(&record.id, "KILL").await;
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            let stopped = match self.helpers.run(&["state", &record.id]).await {
                Ok(out) => String::from_utf8_lossy(&out.stdout).contains("\"stopped\""),
                Err(e) => e.message.contains("does not exist"),
            };
            if stopped {
                record.state = ContainerState::Exited;
                record.exit_code = 137;
                record.finished_at = crate::sandbox::now_nanos();
                record.reason = "Unknown".into();
                record.message =
                    "killed after its monitor disappeared; the real exit status is unknown".into();
                self.state.save_container(record.clone()).await?;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CriError::Internal(format!(
                    "container {} did not stop after SIGKILL",
                    record.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The image's STOPSIGNAL, if it has one.
    fn stop_signal(&self, image_id: &str) -> Option<String> {
        let image = self.images.find(image_id).ok()??;
        self.images.config(&image).ok()?.config?.stop_signal
    }
}

/// The first pause between two looks at the exit file; it doubles up to [`MAX_POLL`]. A killed
/// container's exit is usually recorded within a few milliseconds, and a fixed 20 ms step made
/// every stop wait for the next step.
const FIRST_POLL: Duration = Duration::from_millis(1);
/// The longest pause between two looks at the exit file.
const MAX_POLL: Duration = Duration::from_millis(20);

/// Polls the monitor's exit file until the container exited or `timeout` passed.
async fn wait_exit(record: &mut crate::state::ContainerRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let exit_file = ContainerPaths::new(&record.bundle).exit_file;
    let mut pause = FIRST_POLL;
    loop {
        if exit_file.exists() {
            refresh(record);
            if record.state == ContainerState::Exited {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}
