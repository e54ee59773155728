//! A full disk under skiffd: its root and state directories on small tmpfs mounts, filled to
//! the last byte. Requests fail with RESOURCE_EXHAUSTED and leave nothing half-made; once space
//! is freed skiffd works again, without a restart and after one, its databases intact.

use anyhow::Result;
use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::{busybox_layout, Variant};
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::{push, Format, Registry};
use std::io::Write;
use std::path::{Path, PathBuf};
use tonic::Code;

/// Size of each tmpfs: room for busybox and the databases, little enough to fill quickly.
const TMPFS_BYTES: u64 = 64 << 20;

/// Writes zeros to `dir/filler` until the filesystem refuses more; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // Single bytes too, so not even a partial page is left.
    while file.write(&[0]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

fn free(dir: &Path) {
    std::fs::remove_file(dir.join("filler")).unwrap();
}

/// The gRPC status behind a failed helper call.
fn status_of(err: &anyhow::Error) -> &tonic::Status {
    err.downcast_ref::<tonic::Status>()
        .unwrap_or_else(|| panic!("not a gRPC error: {err:#}"))
}

/// Asserts `err` is what a client should see for a full disk.
fn assert_disk_full(what: &str, err: &tonic::Status) {
    assert_eq!(err.code(), Code::ResourceExhausted, "{what}: {err}");
    assert!(
        err.message().contains("No space left on device"),
        "{what}: {err}"
    );
    eprintln!("{what} on a full disk: {}", err.message());
}

/// What the host holds for the daemon: mounts under its directory, its monitors, IP leases.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    mounts: Vec<String>,
    monitors: usize,
    leases: usize,
    sandbox_dirs: usize,
    container_dirs: usize,
    layers: Vec<String>,
    ingest: usize,
}

fn entries(dir: PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn host_state(daemon: &Skiffd) -> HostState {
    let prefix = daemon.dir().display().to_string();
    let mut mounts = daemon.mounts_left();
    mounts.sort();
    let monitors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("skiff-monitor") && c.contains(&prefix))
        .count();
    let net = daemon.network().unwrap();
    let leases = entries(
        daemon
            .dir()
            .join(format!("cni-leases/skiff-test-{}", net.number)),
    )
    .iter()
    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
    .count();
    HostState {
        mounts,
        monitors,
        leases,
        sandbox_dirs: entries(daemon.state_dir().join("sandboxes")).len(),
        container_dirs: entries(daemon.state_dir().join("containers")).len(),
        layers: entries(daemon.root_dir().join("images/layers")),
        ingest: entries(daemon.root_dir().join("images/content/ingest")).len(),
    }
}

async fn create(
    daemon: &Skiffd,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    daemon
        .runtime()
        .await
        .unwrap()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

/// Pod IDs and (container ID, state) pairs as skiffd lists them, sorted.
async fn listing(daemon: &Skiffd) -> (Vec<String>, Vec<(String, i32)>, usize) {
    let mut pods: Vec<String> = list_all_pods(daemon)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    pods.sort();
    let mut containers: Vec<(String, i32)> = list_all_containers(daemon)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    containers.sort();
    let images = list_all_images(daemon).await.unwrap().len();
    (pods, containers, images)
}

/// Pulls `image`, runs pod `name` with a container from it and checks it answers an exec.
async fn pod_with_container(
    daemon: &Skiffd,
    image: &str,
    name: &str,
    logs: &Path,
) -> (String, String) {
    pull_image(daemon, image).await.unwrap();
    let pod = pod_config(name, name, logs);
    let pod_id = run_pod(daemon, &pod).await.unwrap();
    let id = start_container(
        daemon,
        &pod_id,
        &pod,
        container_config("c", image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let reply = exec(daemon, &id, &["echo", "ok"], 5).await.unwrap();
    assert_eq!(reply.stdout, b"ok\n");
    (pod_id, id)
}

#[tokio::test]
async fn a_full_disk_fails_requests_cleanly_and_skiffd_recovers_when_space_is_freed() {
    let registry = Registry::start().unwrap();
    let mut daemon = Skiffd::start_on_tmpfs("", TMPFS_BYTES).unwrap();
    let image = pull_busybox(&daemon, &registry, Variant::Plain)
        .await
        .unwrap();
    push(
        &busybox_layout(Variant::Marker("disk-full")),
        "latest",
        &registry,
        "busybox-later:1",
        Format::Oci,
    )
    .unwrap();
    let later = format!("{}/busybox-later:1", registry.addr());
    // Pod logs are the kubelet's directory, not skiffd's: they stay off the full disk.
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("before-full", "before-full", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let before = host_state(&daemon);
    let listed_before = listing(&daemon).await;

    let filled = fill(&daemon.root_dir()) + fill(&daemon.state_dir());
    eprintln!("filled {filled} bytes of the two {TMPFS_BYTES}-byte tmpfs");

    let err = pull_image(&daemon, &later).await.unwrap_err();
    assert_disk_full("PullImage", &err);
    let err = run_pod(&daemon, &pod_config("during-full", "d", logs.path()))
        .await
        .unwrap_err();
    assert_disk_full("RunPodSandbox", status_of(&err));
    let err = create(
        &daemon,
        &pod_id,
        &pod,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap_err();
    assert_disk_full("CreateContainer", &err);

    // Nothing half-made: the same pods, containers, images, mounts, monitors, leases and
    // directories as before the disk filled up.
    assert_eq!(listing(&daemon).await, listed_before);
    assert_eq!(host_state(&daemon), before);

    // Space comes back: the same daemon serves every request again.
    free(&daemon.root_dir());
    free(&daemon.state_dir());
    let (second_pod, second_container) =
        pod_with_container(&daemon, &later, "after-free", logs.path()).await;
    let container = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();

    // And after a crash and restart, its databases hold exactly what it reported.
    let listed = listing(&daemon).await;
    assert_eq!(listed.0.len(), 2);
    assert_eq!(listed.1.len(), 2);
    assert_eq!(listed.2, 2);
    daemon.restart().unwrap();
    assert_eq!(listing(&daemon).await, listed);
    for id in [&container, &second_container] {
        let status = container_status(&daemon, id).await.unwrap();
        assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    }
    let (third_pod, _) = pod_with_container(&daemon, &later, "after-restart", logs.path()).await;

    for id in [&pod_id, &second_pod, &third_pod] {
        remove_pod(&daemon, id).await.unwrap();
    }
}

#[tokio::test]
async fn a_state_database_that_hit_a_full_disk_works_again_once_space_is_freed() {
    let registry = Registry::start().unwrap();
    // Filled right after startup: the state database has no free pages of its own yet, so
    // its first write needs new space and fails inside redb.
    let mut daemon = Skiffd::start_on_tmpfs("", 16 << 20).unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "busybox-db:1",
        Format::Oci,
    )
    .unwrap();
    let image = format!("{}/busybox-db:1", registry.addr());
    let logs = tempfile::tempdir().unwrap();
    let before = host_state(&daemon);
    fill(&daemon.root_dir());
    fill(&daemon.state_dir());

    // Every attempt fails the same clear way: redb's own "close and re-open" state after the
    // first error must not leak out as an INTERNAL error.
    for attempt in 0..3 {
        let err = run_pod(&daemon, &pod_config("db-full", "d", logs.path()))
            .await
            .unwrap_err();
        let err = status_of(&err);
        assert_disk_full(&format!("RunPodSandbox attempt {attempt}"), err);
        assert!(err.message().contains("state database"), "{err}");
    }
    assert_eq!(listing(&daemon).await, (Vec::new(), Vec::new(), 0));
    assert_eq!(host_state(&daemon), before);

    free(&daemon.root_dir());
    free(&daemon.state_dir());
    let (pod_id, container) = pod_with_container(&daemon, &image, "db-freed", logs.path()).await;
    let listed = listing(&daemon).await;
    daemon.restart().unwrap();
    assert_eq!(listing(&daemon).await, listed);
    let status = container_status(&daemon, &container).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    remove_pod(&daemon, &pod_id).await.unwrap();
}
