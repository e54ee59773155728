//! The CRI RuntimeService. Implemented RPCs live one per file; every RPC that skiff does not
//! implement yet answers UNIMPLEMENTED with its name (never a fake success).

mod attach;
mod container_stats;
mod container_status;
mod create_container;
mod exec;
mod exec_sync;
mod get_container_events;
mod list_containers;
mod list_pod_sandbox;
mod pod_sandbox_stats;
mod pod_sandbox_status;
mod port_forward;
mod remove_container;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod start_container;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod update_container_resources;
mod update_runtime_config;
mod version;

use crate::cni::{Attachment, Cni};
use crate::config::Config;
use crate::container::cgroups::Cgroups;
use crate::container::oci::Helpers;
use crate::container::refresh;
use crate::error::CriError;
use crate::events::{Events, ExitWatch};
use crate::instrument::rpc;
use crate::sandbox::by_prefix;
use crate::state::{ContainerRecord, ContainerState, SandboxRecord, StateStore};
use crate::streaming::StreamingServer;
use skiff_proto::runtime::v1 as cri;
use skiff_proto::runtime::v1::runtime_service_server::RuntimeService;
use skiff_runtime::image::locks::KeyedLocks;
use skiff_runtime::image::ImageStore;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves RuntimeService RPCs.
#[derive(Debug, Clone)]
pub struct Runtime {
    config: Arc<Config>,
    state: Arc<StateStore>,
    images: Arc<ImageStore>,
    helpers: Helpers,
    cni: Arc<Cni>,
    cgroups: Cgroups,
    /// The previous CPU counter sample per container, to report a rate.
    cpu_samples: Arc<std::sync::Mutex<std::collections::HashMap<String, (i64, u64)>>>,
    /// Per-object locks: a sandbox or container ID, or a pod attempt's name while it is created.
    locks: Arc<KeyedLocks>,
    /// Where Exec and PortForward send their clients; `None` until started.
    streaming: Option<StreamingServer>,
    /// Lifecycle events for GetContainerEvents.
    events: Events,
    /// Publishes container exits as they happen; `None` until started.
    exits: Option<Arc<ExitWatch>>,
}

impl Runtime {
    /// A runtime service using `config`, the state database, the image store and the helper
    /// binaries.
    pub fn new(
        config: Arc<Config>,
        state: Arc<StateStore>,
        images: Arc<ImageStore>,
        helpers: Helpers,
        cni: Arc<Cni>,
    ) -> Self {
        Runtime {
            config,
            state,
            images,
            helpers,
            cni,
            cgroups: Cgroups::detect(),
            cpu_samples: Arc::default(),
            locks: Arc::new(KeyedLocks::default()),
            streaming: None,
            events: Events::default(),
            exits: None,
        }
    }

    /// The runtime with its exit watcher, watching every container that runs now.
    pub fn with_exit_watch(mut self) -> Result<Self, crate::events::WatchError> {
        let exits = ExitWatch::start(self.events.clone())?;
        for record in self.state.containers().unwrap_or_default() {
            if record.state == ContainerState::Running {
                exits.watch(&record.bundle, &record.id, &record.sandbox_id);
            }
        }
        self.exits = Some(exits);
        Ok(self)
    }

    /// Publishes a lifecycle event with the sandbox's status as it is now (a no-op while no
    /// client watches).
    fn publish(&self, id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
        if !self.events.watched() {
            return;
        }
        let sandbox = self
            .state
            .sandbox(sandbox_id)
            .ok()
            .flatten()
            .map(|record| Box::new(self.sandbox_status_of(&record)));
        self.events.send(crate::events::Event {
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            kind,
            at: crate::sandbox::now_nanos(),
            sandbox,
        });
    }

    /// The runtime with its streaming server.
    pub fn with_streaming(mut self, streaming: StreamingServer) -> Self {
        self.streaming = Some(streaming);
        self
    }

    /// The streaming server, for the RPCs that hand out its URLs.
    fn streaming(&self) -> Result<&StreamingServer, CriError> {
        self.streaming
            .as_ref()
            .ok_or_else(|| CriError::Internal("the streaming server is not running".into()))
    }

    /// The sandbox named by a full ID or a unique prefix of one.
    fn find_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, CriError> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument(
                "pod_sandbox_id is required".into(),
            ));
        }
        if let Some(exact) = self.state.sandbox(id)? {
            return Ok(Some(exact));
        }
        Ok(by_prefix(self.state.sandboxes()?, id, |s| &s.id))
    }

    /// The container named by a full ID or a unique prefix of one.
    fn find_container(&self, id: &str) -> Result<Option<ContainerRecord>, CriError> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("container_id is required".into()));
        }
        if let Some(exact) = self.state.container(id)? {
            return Ok(Some(exact));
        }
        Ok(by_prefix(self.state.containers()?, id, |c| &c.id))
    }

    /// A container record with what its monitor recorded folded in (and persisted).
    async fn refreshed_container(&self, id: &str) -> Result<Option<ContainerRecord>, CriError> {
        let Some(mut record) = self.state.container(id)? else {
            return Ok(None);
        };
        if refresh(&mut record) {
            self.state.save_container(record.clone()).await?;
        }
        Ok(Some(record))
    }

    /// The CNI attachment of a sandbox (its pinned netns and pod identity).
    fn attachment(&self, sandbox: &SandboxRecord) -> Option<Attachment> {
        let netns = sandbox.netns.clone()?;
        let config = sandbox.config();
        let meta = config.metadata.unwrap_or_default();
        Some(Attachment {
            sandbox_id: sandbox.id.clone(),
            netns,
            pod_name: meta.name,
            pod_namespace: meta.namespace,
            pod_uid: meta.uid,
            port_mappings: config.port_mappings,
        })
    }

    /// CNI DEL for a sandbox that still owes one. Best effort: a failure is logged and kept
    /// owed (Remove retries), never blocking pod teardown.
    async fn detach_network(&self, sandbox: &mut SandboxRecord) -> Result<(), CriError> {
        if !sandbox.network_attached {
            return Ok(());
        }
        let Some(attachment) = self.attachment(sandbox) else {
            return Ok(());
        };
        match self.cni.del(&attachment).await {
            Ok(()) => {
                sandbox.network_attached = false;
                self.state.save_sandbox(sandbox.clone()).await?;
            }
            Err(e) => {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "CNI DEL failed; will retry on remove");
            }
        }
        Ok(())
    }

    /// The container `id` names (full or prefix), refreshed; NOT_FOUND when there is none.
    async fn existing_container(&self, id: &str) -> Result<ContainerRecord, CriError> {
        let not_found = || CriError::NotFound(format!("container {id:?} not found"));
        let found = self.find_container(id)?.ok_or_else(not_found)?;
        self.refreshed_container(&found.id)
            .await?
            .ok_or_else(not_found)
    }

    /// Like [`Self::existing_container`], and FAILED_PRECONDITION unless it is running.
    async fn running_container(&self, id: &str) -> Result<ContainerRecord, CriError> {
        let record = self.existing_container(id).await?;
        if record.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        Ok(record)
    }

    /// IDs of the containers of a sandbox.
    fn containers_of(&self, sandbox_id: &str) -> Result<Vec<String>, CriError> {
        Ok(self
            .state
            .containers()?
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id)
            .collect())
    }

    /// Force-stops every container of a sandbox (StopPodSandbox must not wait for them).
    async fn stop_containers_of(&self, sandbox_id: &str) -> Result<(), CriError> {
        for id in self.containers_of(sandbox_id)? {
            let _guard = self.locks.lock(&id).await;
            self.stop_container_locked(&id, 0).await?;
        }
        Ok(())
    }

    /// Removes every container of a sandbox.
    async fn remove_containers_of(&self, sandbox_id: &str) -> Result<(), CriError> {
        for id in self.containers_of(sandbox_id)? {
            let _guard = self.locks.lock(&id).await;
            self.remove_container_locked(&id).await?;
        }
        Ok(())
    }
}

/// The stream choice of an Exec or Attach request: at least one stream, and no separate
/// stderr with a TTY (a terminal has one output).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), CriError> {
    if !(stdin || stdout || stderr) {
        return Err(CriError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(CriError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    Ok(())
}

/// A server-streaming reply.
type Streamed<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

impl Runtime {
    /// Runs a lifecycle RPC as a task of its own. A client that gives up (a kubelet's deadline
    /// passing) cancels its call, and tonic then drops the call's future wherever it is waiting:
    /// mid-CNI, mid-create. As a task the work goes on to its end, made or rolled back, and the
    /// client's retry finds it so (it waits on the same per-pod or per-object lock), as with
    /// CRI-O.
    async fn to_completion<Req, T, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        Req: Send + 'static,
        T: Send + 'static,
        F: FnOnce(Runtime, Req) -> Fut,
        Fut: std::future::Future<Output = Result<T, CriError>> + Send + 'static,
    {
        let work = rpc(method, call(self.clone(), request.into_inner()));
        tokio::spawn(work)
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("{method} task: {e}"))))
    }
}

/// The answer of every RPC that is not built yet.
async fn not_yet<T>(method: &'static str) -> Result<Response<T>, Status> {
    rpc(method, async {
        Err::<T, _>(CriError::Unimplemented(method))
    })
    .await
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        rpc("Version", self.version(request.into_inner())).await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        self.to_completion("RunPodSandbox", request, |runtime, request| async move {
            runtime.run_pod_sandbox(request).await
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.to_completion("StopPodSandbox", request, |runtime, request| async move {
            runtime.stop_pod_sandbox(request).await
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.to_completion("RemovePodSandbox", request, |runtime, request| async move {
            runtime.remove_pod_sandbox(request).await
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        rpc(
            "PodSandboxStatus",
            self.pod_sandbox_status(request.into_inner()),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        rpc(
            "ListPodSandbox",
            self.list_pod_sandbox(request.into_inner()),
        )
        .await
    }

    type StreamPodSandboxesStream = Streamed<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        not_yet("StreamPodSandboxes").await
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        self.to_completion("CreateContainer", request, |runtime, request| async move {
            runtime.create_container(request).await
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.to_completion("StartContainer", request, |runtime, request| async move {
            runtime.start_container(request).await
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        self.to_completion("StopContainer", request, |runtime, request| async move {
            runtime.stop_container(request).await
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.to_completion("RemoveContainer", request, |runtime, request| async move {
            runtime.remove_container(request).await
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        rpc("ListContainers", self.list_containers(request.into_inner())).await
    }

    type StreamContainersStream = Streamed<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        _request: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        not_yet("StreamContainers").await
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        rpc(
            "ContainerStatus",
            self.container_status(request.into_inner()),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        rpc(
            "UpdateContainerResources",
            self.update_container_resources(request.into_inner()),
        )
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        rpc(
            "ReopenContainerLog",
            self.reopen_container_log(request.into_inner()),
        )
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        rpc("ExecSync", self.exec_sync(request.into_inner())).await
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        rpc("Exec", self.exec(request.into_inner())).await
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        rpc("Attach", self.attach(request.into_inner())).await
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        rpc("PortForward", self.port_forward(request.into_inner())).await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        rpc("ContainerStats", self.container_stats(request.into_inner())).await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        rpc(
            "ListContainerStats",
            self.list_container_stats(request.into_inner()),
        )
        .await
    }

    type StreamContainerStatsStream = Streamed<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        _request: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        not_yet("StreamContainerStats").await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        rpc(
            "PodSandboxStats",
            self.pod_sandbox_stats(request.into_inner()),
        )
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        rpc(
            "ListPodSandboxStats",
            self.list_pod_sandbox_stats(request.into_inner()),
        )
        .await
    }

    type StreamPodSandboxStatsStream = Streamed<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        not_yet("StreamPodSandboxStats").await
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        rpc(
            "UpdateRuntimeConfig",
            self.update_runtime_config(request.into_inner()),
        )
        .await
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        rpc("Status", self.status(request.into_inner())).await
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        not_yet("CheckpointContainer").await
    }

    async fn checkpoint_pod(
        &self,
        _request: Request<cri::CheckpointPodRequest>,
    ) -> Result<Response<cri::CheckpointPodResponse>, Status> {
        not_yet("CheckpointPod").await
    }

    async fn restore_pod(
        &self,
        _request: Request<cri::RestorePodRequest>,
    ) -> Result<Response<cri::RestorePodResponse>, Status> {
        not_yet("RestorePod").await
    }

    type GetContainerEventsStream = Streamed<cri::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let events = self.container_events();
        rpc("GetContainerEvents", async move {
            Ok::<Self::GetContainerEventsStream, CriError>(Box::pin(events))
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        not_yet("ListMetricDescriptors").await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        not_yet("ListPodSandboxMetrics").await
    }

    type StreamPodSandboxMetricsStream = Streamed<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        not_yet("StreamPodSandboxMetrics").await
    }

    async fn runtime_config(
        &self,
        request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        rpc("RuntimeConfig", self.runtime_config(request.into_inner())).await
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        not_yet("UpdatePodSandboxResources").await
    }
}
