//! GetContainerEvents, as the kubelet's evented PLEG uses it: one event per lifecycle change,
//! each carrying the sandbox's status and every container's status, a container's exit
//! reported when it happens (no RPC asks for it), and PodSandboxStatus stamped with the
//! container statuses while a client watches.

use futures::StreamExt;
use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::*;
use std::time::Duration;
use tonic::Streaming;

type Kind = cri::ContainerEventType;

/// The next event, within a bound.
async fn next(stream: &mut Streaming<cri::ContainerEventResponse>) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

fn kind(event: &cri::ContainerEventResponse) -> Kind {
    Kind::try_from(event.container_event_type).unwrap()
}

#[tokio::test]
async fn every_lifecycle_change_is_an_event_with_the_pods_status() {
    let node = Node::new().await.unwrap();
    let mut client = node.daemon.runtime().await.unwrap();
    let mut events = client
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let pod = pod_config("events", "events", node.logs.path());
    let pod_id = run_pod(&node.daemon, &pod).await.unwrap();
    let started = next(&mut events).await;
    assert_eq!(
        (started.container_id.as_str(), kind(&started)),
        (pod_id.as_str(), Kind::ContainerStartedEvent)
    );
    let sandbox = started.pod_sandbox_status.clone().unwrap();
    assert_eq!(
        sandbox.metadata.unwrap().uid,
        pod.metadata.as_ref().unwrap().uid
    );
    assert_eq!(sandbox.state, cri::PodSandboxState::SandboxReady as i32);

    // A container that exits by itself after a moment: its exit is an event with no RPC.
    let config = container_config("brief", &node.image, &["sh", "-c", "sleep 0.3; exit 3"]);
    let id = start_container(&node.daemon, &pod_id, &pod, config)
        .await
        .unwrap();
    let created = next(&mut events).await;
    assert_eq!(
        (created.container_id.as_str(), kind(&created)),
        (id.as_str(), Kind::ContainerCreatedEvent)
    );
    let running = next(&mut events).await;
    assert_eq!(kind(&running), Kind::ContainerStartedEvent);
    let status = &running.containers_statuses[0];
    assert_eq!(
        (status.id.as_str(), status.state),
        (id.as_str(), cri::ContainerState::ContainerRunning as i32)
    );
    let stopped = next(&mut events).await;
    assert_eq!(
        (stopped.container_id.as_str(), kind(&stopped)),
        (id.as_str(), Kind::ContainerStoppedEvent)
    );
    let status = &stopped.containers_statuses[0];
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 3);

    // While a client watches, PodSandboxStatus carries the containers and a timestamp.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let status = pod_status(&node.daemon, &pod_id).await.unwrap();
    assert!(status.timestamp >= before, "{}", status.timestamp);
    assert_eq!(status.containers_statuses.len(), 1);
    assert_eq!(status.containers_statuses[0].exit_code, 3);

    // The kubelet restarts it as attempt 1; it reads the first status of a name as the latest
    // attempt, so the statuses come newest first.
    let mut again = container_config("brief", &node.image, &["sleep", "60"]);
    again.metadata.as_mut().unwrap().attempt = 1;
    let second = start_container(&node.daemon, &pod_id, &pod, again)
        .await
        .unwrap();
    for expected in [Kind::ContainerCreatedEvent, Kind::ContainerStartedEvent] {
        let event = next(&mut events).await;
        assert_eq!(
            (event.container_id.as_str(), kind(&event)),
            (second.as_str(), expected)
        );
    }
    let status = pod_status(&node.daemon, &pod_id).await.unwrap();
    let order: Vec<&str> = status
        .containers_statuses
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(order, [second.as_str(), id.as_str()]);

    client
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let deleted = next(&mut events).await;
    assert_eq!(
        (deleted.container_id.as_str(), kind(&deleted)),
        (id.as_str(), Kind::ContainerDeletedEvent)
    );
    let left: Vec<&str> = deleted
        .containers_statuses
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(left, [second.as_str()]);

    remove_pod(&node.daemon, &pod_id).await.unwrap();
    let mut last: Vec<cri::ContainerEventResponse> = Vec::new();
    // The second container's stop and removal come first, then the sandbox's.
    while last.last().is_none_or(|e| {
        (e.container_id.as_str(), kind(e)) != (pod_id.as_str(), Kind::ContainerDeletedEvent)
    }) {
        last.push(next(&mut events).await);
    }
    let deleted = last.last().unwrap();
    assert_eq!(deleted.container_id, pod_id);
    assert!(
        deleted.pod_sandbox_status.is_some(),
        "the sandbox's last event still says which pod it was"
    );
}
