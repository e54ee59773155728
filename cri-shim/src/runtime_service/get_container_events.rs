//! GetContainerEvents: a stream of container and sandbox changes for the kubelet's evented
//! PLEG. Each event carries what the kubelet then caches as the pod's status: the sandbox's
//! status and the status of every container of the pod, read when the event is sent.

use super::Runtime;
use crate::events::Event;
use skiff_proto::runtime::v1 as cri;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

impl Runtime {
    /// Events from now on, until the client goes away.
    pub(super) fn container_events(
        &self,
    ) -> impl futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static
    {
        let receiver = self.events.subscribe();
        futures::stream::unfold(
            (self.clone(), receiver),
            |(runtime, mut receiver)| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            let response = runtime.event_response(event).await;
                            return Some((Ok(response), (runtime, receiver)));
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "a container event client fell behind");
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            },
        )
    }

    async fn event_response(&self, event: Event) -> cri::ContainerEventResponse {
        let sandbox = match event.sandbox {
            Some(status) => Some(*status),
            None => self
                .state
                .sandbox(&event.sandbox_id)
                .ok()
                .flatten()
                .map(|record| self.sandbox_status_of(&record)),
        };
        let containers_statuses = self.container_statuses_of(&event.sandbox_id).await;
        cri::ContainerEventResponse {
            container_id: event.id,
            container_event_type: event.kind as i32,
            created_at: event.at,
            pod_sandbox_status: sandbox,
            containers_statuses,
        }
    }
}
