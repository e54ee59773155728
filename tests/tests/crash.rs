//! skiffd killed (SIGKILL) at each step inside RunPodSandbox and CreateContainer: after a
//! restart the half-made pod or container is gone, with no namespace pin, mount, IP lease,
//! process or runtime state left, and the daemon works normally.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use std::time::Duration;

fn leases(daemon: &Skiffd) -> usize {
    let net = daemon.network().unwrap();
    std::fs::read_dir(
        daemon
            .dir()
            .join(format!("cni-leases/skiff-test-{}", net.number)),
    )
    .map(|d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
            .count()
    })
    .unwrap_or(0)
}

fn mounts_under(daemon: &Skiffd) -> Vec<String> {
    daemon.mounts_left()
}

fn monitors_of(daemon: &Skiffd) -> usize {
    let needle = daemon.dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("skiff-monitor") && c.contains(&needle))
        .count()
}

/// Restarts skiffd armed to kill itself at `point`.
fn arm_crash_point(daemon: &mut Skiffd, point: &str) {
    daemon.set_env("SKIFF_CRASH_AT", Some(point));
    daemon.restart().unwrap();
}

/// Checks skiffd died at the armed point and starts it again unarmed (the recovery under test).
fn recover(daemon: &mut Skiffd) {
    assert!(
        daemon.wait_exit(Duration::from_secs(10)),
        "skiffd did not crash"
    );
    daemon.set_env("SKIFF_CRASH_AT", None);
    daemon.restart().unwrap();
}

#[tokio::test]
async fn a_crash_inside_run_pod_sandbox_leaves_nothing_half_made() {
    let mut daemon = Skiffd::start("").unwrap();
    let logs = tempfile::tempdir().unwrap();
    for point in [
        "sandbox-recorded",
        "sandbox-namespaces-pinned",
        "sandbox-network-added",
    ] {
        arm_crash_point(&mut daemon, point);
        let result = run_pod(&daemon, &pod_config("crashy", "crashy", logs.path())).await;
        assert!(result.is_err(), "{point}: the daemon died mid-request");
        recover(&mut daemon);

        let pods = list_all_pods(&daemon).await.unwrap();
        assert!(pods.is_empty(), "{point}: half-made pod listed: {pods:?}");
        assert!(
            mounts_under(&daemon).is_empty(),
            "{point}: {:?}",
            mounts_under(&daemon)
        );
        assert_eq!(leases(&daemon), 0, "{point}: IP lease leaked");
        // The same pod can be created afterwards, and gets the first address again.
        let id = run_pod(&daemon, &pod_config("crashy", "crashy", logs.path()))
            .await
            .unwrap();
        assert_eq!(leases(&daemon), 1);
        remove_pod(&daemon, &id).await.unwrap();
    }
}

#[tokio::test]
async fn a_sandbox_directory_without_a_record_is_released_at_restart() {
    // RunPodSandbox pins a pod's namespaces while it commits the pod's record: a crash between
    // the two leaves a sandbox directory with a pinned namespace and no record.
    let mut daemon = Skiffd::start("").unwrap();
    let orphan = daemon.state_dir().join("sandboxes").join("0".repeat(64));
    let pin = orphan.join("ns/uts");
    std::fs::create_dir_all(pin.parent().unwrap()).unwrap();
    std::fs::File::create(&pin).unwrap();
    let status = std::process::Command::new("mount")
        .args(["--bind", "/proc/self/ns/uts"])
        .arg(&pin)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(mounts_under(&daemon), [pin.display().to_string()]);

    daemon.restart().unwrap();
    assert!(
        mounts_under(&daemon).is_empty(),
        "{:?}",
        mounts_under(&daemon)
    );
    assert!(!orphan.exists(), "orphan sandbox directory kept");
    // The daemon works normally afterwards.
    let logs = tempfile::tempdir().unwrap();
    let id = run_pod(&daemon, &pod_config("after-sweep", "after", logs.path()))
        .await
        .unwrap();
    remove_pod(&daemon, &id).await.unwrap();
}

#[tokio::test]
async fn a_crash_inside_create_container_leaves_nothing_half_made() {
    let Node {
        registry: _registry,
        mut daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pod = pod_config("crash-containers", "cc", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    for point in [
        "container-recorded",
        "container-rootfs-mounted",
        "container-monitor-started",
    ] {
        arm_crash_point(&mut daemon, point);
        let result = start_container(
            &daemon,
            &pod_id,
            &pod,
            container_config("victim", &image, &["sleep", "3600"]),
        )
        .await;
        assert!(result.is_err(), "{point}: the daemon died mid-request");
        recover(&mut daemon);

        let containers = list_all_containers(&daemon).await.unwrap();
        assert!(containers.is_empty(), "{point}: {containers:?}");
        let overlays: Vec<_> = mounts_under(&daemon)
            .into_iter()
            .filter(|m| m.ends_with("/rootfs"))
            .collect();
        assert!(
            overlays.is_empty(),
            "{point}: rootfs still mounted: {overlays:?}"
        );
        assert_eq!(
            monitors_of(&daemon),
            0,
            "{point}: a monitor survived the rollback"
        );
        let oci_state = std::fs::read_dir(daemon.dir().join("run/oci"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(oci_state, 0, "{point}: runtime state left");
        // The pod is still fine: the same container can be created now.
        let id = start_container(
            &daemon,
            &pod_id,
            &pod,
            container_config("victim", &image, &["sleep", "3600"]),
        )
        .await
        .unwrap();
        let reply = exec(&daemon, &id, &["echo", "ok"], 5).await.unwrap();
        assert_eq!(reply.stdout, b"ok\n");
        daemon
            .runtime()
            .await
            .unwrap()
            .remove_container(cri::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
    }
    remove_pod(&daemon, &pod_id).await.unwrap();
}

/// Creates pods `name-0..count` concurrently, each with a running container printing a line
/// every 0.2 s; returns (pod ID, container ID) pairs.
async fn ticking_pods(
    daemon: &Skiffd,
    image: &str,
    logs: &std::path::Path,
    name: &str,
    count: usize,
) -> Vec<(String, String)> {
    let pods: Vec<_> = (0..count)
        .map(|i| pod_config(&format!("{name}-{i}"), &format!("{name}-{i}"), logs))
        .collect();
    let started = futures::future::join_all(pods.iter().enumerate().map(|(i, pod)| async move {
        let pod_id = run_pod(daemon, pod).await?;
        let config = container_config(
            &format!("{name}-{i}"),
            image,
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        );
        let id = start_container(daemon, &pod_id, pod, config).await?;
        anyhow::Ok((pod_id, id))
    }))
    .await;
    started.into_iter().map(Result::unwrap).collect()
}

#[tokio::test]
async fn fifty_running_pods_survive_a_daemon_crash() {
    const PODS: usize = 50;
    let Node {
        registry: _registry,
        mut daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let started = std::time::Instant::now();
    let pods = ticking_pods(&daemon, &image, logs.path(), "survivor", PODS).await;
    let created_in = started.elapsed();
    let mut ips = std::collections::HashMap::new();
    for (pod_id, _) in &pods {
        ips.insert(pod_ip(&daemon, pod_id).await.unwrap(), pod_id.clone());
    }
    assert_eq!(ips.len(), PODS, "duplicate pod IPs before the crash");

    let started = std::time::Instant::now();
    daemon.restart().unwrap();
    let restarted_in = started.elapsed();
    let mut runtime = daemon.runtime().await.unwrap();
    let listed_pods = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let listed_containers = runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let answered_in = started.elapsed();

    let mut want_pods: Vec<&String> = pods.iter().map(|(p, _)| p).collect();
    let mut want_containers: Vec<&String> = pods.iter().map(|(_, c)| c).collect();
    want_pods.sort();
    want_containers.sort();
    let mut got_pods: Vec<&String> = listed_pods.iter().map(|p| &p.id).collect();
    let mut got_containers: Vec<&String> = listed_containers.iter().map(|c| &c.id).collect();
    got_pods.sort();
    got_containers.sort();
    assert_eq!(got_pods, want_pods);
    assert_eq!(got_containers, want_containers);
    let ready = listed_pods
        .iter()
        .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
        .count();
    let running = listed_containers
        .iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .count();
    eprintln!(
        "{PODS} pods with a running container created in {created_in:?}; skiffd SIGKILLed and \
         serving again in {restarted_in:?}, listing everything in {answered_in:?}; \
         {ready}/{PODS} pods Ready and {running}/{PODS} containers Running after the restart"
    );
    assert_eq!(ready, PODS);
    assert_eq!(running, PODS);
    for (pod_id, _) in &pods {
        let ip = pod_ip(&daemon, pod_id).await.unwrap();
        assert_eq!(ips.get(&ip), Some(pod_id), "{pod_id} changed its IP");
    }

    // The containers really run: a log keeps growing, and exec reaches one.
    let log = logs.path().join("survivor-0.log");
    let size = std::fs::metadata(&log).unwrap().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&log).unwrap().len() <= size && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::metadata(&log).unwrap().len() > size,
        "the log stopped growing after the restart"
    );
    let (_, last) = pods.last().unwrap();
    let reply = exec(&daemon, last, &["echo", "alive"], 5).await.unwrap();
    assert_eq!(reply.stdout, b"alive\n");

    // New pods get fresh addresses, none taken by a survivor.
    let fresh = ticking_pods(&daemon, &image, logs.path(), "newcomer", 5).await;
    for (pod_id, _) in &fresh {
        let ip = pod_ip(&daemon, pod_id).await.unwrap();
        assert!(!ip.is_empty());
        assert!(
            ips.insert(ip.clone(), pod_id.clone()).is_none(),
            "{ip} given twice"
        );
    }
    assert_eq!(ips.len(), PODS + 5);

    let removals = pods
        .iter()
        .chain(&fresh)
        .map(|(pod_id, _)| remove_pod(&daemon, pod_id));
    for result in futures::future::join_all(removals).await {
        result.unwrap();
    }
    assert_eq!(leases(&daemon), 0);
    assert_eq!(monitors_of(&daemon), 0);
    assert!(
        mounts_under(&daemon).is_empty(),
        "{:?}",
        mounts_under(&daemon)
    );
}
