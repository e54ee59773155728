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
    let prefix = daemon.dir().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
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

        let pods = daemon
            .runtime()
            .await
            .unwrap()
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
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

        let containers = daemon
            .runtime()
            .await
            .unwrap()
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
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
