//! What containers share: a pod-wide PID namespace when asked, the host's PID namespace when
//! asked, host directories (also through symlinks); and a failed CreateContainer leaves nothing.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use tonic::Code;

fn with_pid_mode(
    mut pod: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = mode as i32;
    pod
}

/// Runs pod `name` (hostname `hostname`) whose containers get PID namespace `mode`; returns
/// its config and ID.
async fn run_pod_with_pid_mode(
    daemon: &Skiffd,
    name: &str,
    hostname: &str,
    logs: &std::path::Path,
    mode: cri::NamespaceMode,
) -> (cri::PodSandboxConfig, String) {
    let config = with_pid_mode(pod_config(name, hostname, logs), mode);
    let id = run_pod(daemon, &config).await.unwrap();
    (config, id)
}

async fn ps(daemon: &Skiffd, id: &str) -> String {
    let reply = exec(daemon, id, &["ps", "-o", "pid,args"], 10)
        .await
        .unwrap();
    String::from_utf8_lossy(&reply.stdout).into_owned()
}

#[tokio::test]
async fn a_pod_shared_pid_namespace_shows_the_other_containers() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();

    let (shared, pod_id) = run_pod_with_pid_mode(
        &daemon,
        "pid-shared",
        "s",
        logs.path(),
        cri::NamespaceMode::Pod,
    )
    .await;
    let a = start_container(
        &daemon,
        &pod_id,
        &shared,
        container_config("a", &image, &["sleep", "1111"]),
    )
    .await
    .unwrap();
    let b = start_container(
        &daemon,
        &pod_id,
        &shared,
        container_config("b", &image, &["sleep", "2222"]),
    )
    .await
    .unwrap();
    let seen = ps(&daemon, &a).await;
    assert!(seen.contains("sleep 2222"), "a sees b's process: {seen}");
    // PID 1 is the pod's pause process; nothing of the host (skiffd itself runs with
    // --config) is visible.
    assert!(
        seen.lines()
            .nth(1)
            .is_some_and(|l| l.trim_start().starts_with("1 ") && l.contains("pause")),
        "{seen}"
    );
    assert!(!seen.contains("--config"), "but not the host's: {seen}");
    assert!(ps(&daemon, &b).await.contains("sleep 1111"));

    let separate = pod_config("pid-separate", "p", logs.path());
    let other_pod = run_pod(&daemon, &separate).await.unwrap();
    let c = start_container(
        &daemon,
        &other_pod,
        &separate,
        container_config("c", &image, &["sleep", "3333"]),
    )
    .await
    .unwrap();
    let d = start_container(
        &daemon,
        &other_pod,
        &separate,
        container_config("d", &image, &["sleep", "4444"]),
    )
    .await
    .unwrap();
    assert!(!ps(&daemon, &c).await.contains("sleep 4444"));
    assert!(!ps(&daemon, &d).await.contains("sleep 3333"));

    let (host, host_pod) = run_pod_with_pid_mode(
        &daemon,
        "pid-host",
        "h",
        logs.path(),
        cri::NamespaceMode::Node,
    )
    .await;
    let e = start_container(
        &daemon,
        &host_pod,
        &host,
        container_config("e", &image, &["sleep", "5555"]),
    )
    .await
    .unwrap();
    assert!(
        ps(&daemon, &e).await.contains("sleep 1111"),
        "host PID namespace sees everything"
    );

    for id in [pod_id, other_pod, host_pod] {
        remove_pod(&daemon, &id).await.unwrap();
    }
}

/// A container's init gets a small PID in a pod-shared PID namespace. The host's `/proc` may
/// have no process of that PID (low PIDs are the host's kernel threads, with gaps) or an
/// unrelated one; the container must start either way. On cgroup v1 hosts libcontainer's own
/// `/sys/fs/cgroup` mount looked that PID up in the host's `/proc`, and the container failed
/// with "failed to prepare rootfs" whenever the host lacked it (critest hit it now and then).
#[tokio::test]
async fn containers_start_whatever_pid_they_get_in_a_shared_pid_namespace() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let (shared, pod_id) = run_pod_with_pid_mode(
        &daemon,
        "pid-numbers",
        "n",
        logs.path(),
        cri::NamespaceMode::Pod,
    )
    .await;
    let mut pids_missing_on_host = Vec::new();
    for i in 0..60 {
        let command = ["sh", "-c", "echo $$ > /tmp/pid; exec sleep 1000"];
        let config = container_config(&format!("n{i}"), &image, &command);
        let id = start_container(&daemon, &pod_id, &shared, config)
            .await
            .unwrap_or_else(|e| panic!("container {i} (after PIDs {pids_missing_on_host:?}): {e}"));
        let reply = exec(&daemon, &id, &["cat", "/tmp/pid"], 10).await.unwrap();
        let pid = String::from_utf8_lossy(&reply.stdout).trim().to_string();
        if !std::path::Path::new("/proc").join(&pid).exists() {
            pids_missing_on_host.push(pid);
        }
        let mut runtime = daemon.runtime().await.unwrap();
        runtime
            .remove_container(cri::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
        if pids_missing_on_host.len() == 3 {
            break;
        }
    }
    assert!(
        !pids_missing_on_host.is_empty(),
        "this host has a process for every PID the pod's containers got: nothing was tested"
    );

    // The container still sees its own cgroup (cgroup v1 here, v2 elsewhere).
    let config = container_config("reader", &image, &["sleep", "1000"]);
    let id = start_container(&daemon, &pod_id, &shared, config)
        .await
        .unwrap();
    let read_limit =
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes || cat /sys/fs/cgroup/memory.max";
    let reply = exec(&daemon, &id, &["sh", "-c", read_limit], 10)
        .await
        .unwrap();
    assert_eq!(reply.exit_code, 0, "{reply:?}");
    remove_pod(&daemon, &pod_id).await.unwrap();
}

/// In a pod-shared PID namespace a container's init dying leaves its children running (they
/// become the pause process's). Removing the stopped container kills them, as runc does:
/// its cgroups cannot be removed while they are there.
#[tokio::test]
async fn removing_a_container_kills_what_its_init_left_in_a_shared_pid_namespace() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let (shared, pod_id) = run_pod_with_pid_mode(
        &daemon,
        "pid-orphans",
        "o",
        logs.path(),
        cri::NamespaceMode::Pod,
    )
    .await;
    let parent = ["sh", "-c", "sleep 4444 & exec sleep 1000"];
    let id = start_container(
        &daemon,
        &pod_id,
        &shared,
        container_config("parent", &image, &parent),
    )
    .await
    .unwrap();
    let watcher = start_container(
        &daemon,
        &pod_id,
        &shared,
        container_config("watcher", &image, &["sleep", "1000"]),
    )
    .await
    .unwrap();

    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert!(
        ps(&daemon, &watcher).await.contains("sleep 4444"),
        "the child outlives its container's init"
    );
    runtime
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    let seen = ps(&daemon, &watcher).await;
    assert!(!seen.contains("sleep 4444"), "{seen}");
    remove_pod(&daemon, &pod_id).await.unwrap();
}

#[tokio::test]
async fn host_paths_mount_also_through_a_symlink() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("real")).unwrap();
    std::fs::write(host.path().join("real/greeting"), "from the host\n").unwrap();
    std::os::unix::fs::symlink(host.path().join("real"), host.path().join("link")).unwrap();

    let pod = pod_config("mounts", "m", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let mut config = container_config("reader", &image, &["sleep", "3600"]);
    config.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: host.path().join("link").display().to_string(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/rw".into(),
            host_path: host.path().join("real").display().to_string(),
            ..Default::default()
        },
    ];
    let id = start_container(&daemon, &pod_id, &pod, config)
        .await
        .unwrap();
    let reply = exec(&daemon, &id, &["cat", "/data/greeting"], 5)
        .await
        .unwrap();
    assert_eq!(reply.stdout, b"from the host\n");
    let reply = exec(&daemon, &id, &["touch", "/data/nope"], 5)
        .await
        .unwrap();
    assert_ne!(reply.exit_code, 0, "read-only mount");
    let reply = exec(&daemon, &id, &["sh", "-c", "echo back > /rw/reply"], 5)
        .await
        .unwrap();
    assert_eq!(reply.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(host.path().join("real/reply")).unwrap(),
        "back\n"
    );
    let status = container_status(&daemon, &id).await.unwrap();
    assert_eq!(status.mounts.len(), 2);
    remove_pod(&daemon, &pod_id).await.unwrap();
}

/// A host directory made a shared mount point of its own, unmounted (with whatever was mounted
/// below it) when dropped, also when the test fails.
struct SharedMount {
    dir: tempfile::TempDir,
}

impl SharedMount {
    fn new() -> SharedMount {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        SharedMount { dir }
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("sub"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn host_to_container_propagation_shows_later_host_mounts() {
    // What critest's mount-propagation test does: a mount made on the host after the
    // container started appears inside it (the root is a slave of the host's mounts).
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let shared = SharedMount::new();
    let pod = pod_config("propagation", "p", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let mut config = container_config("watcher", &image, &["sleep", "3600"]);
    config.mounts = vec![cri::Mount {
        container_path: "/mnt/host".into(),
        host_path: shared.dir.path().display().to_string(),
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    let id = start_container(&daemon, &pod_id, &pod, config)
        .await
        .unwrap();

    let sub = shared.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(sub.join("flag"), "mounted later\n").unwrap();
    let reply = exec(&daemon, &id, &["cat", "/mnt/host/sub/flag"], 5)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout),
        "mounted later\n",
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    remove_pod(&daemon, &pod_id).await.unwrap();
}

#[tokio::test]
async fn a_failed_create_container_leaves_nothing_behind() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pod = pod_config("rollback", "r", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let mut runtime = daemon.runtime().await.unwrap();

    // Unknown user: the spec cannot be built after the rootfs was mounted.
    let mut config = container_config("nobody-known", &image, &["true"]);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "no-such-user".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("no-such-user"), "{err}");

    // A command that does not exist: the runtime fails after the monitor started.
    let err = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(
                "missing-binary",
                &image,
                &["/no/such/program"],
            )),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .err();
    if let Some(err) = err {
        assert!(
            err.message().contains("no/such/program") || err.code() != Code::Ok,
            "{err}"
        );
    }
    // Not pulled, and a missing pod: clear codes.
    let err = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("x", "never/pulled:1", &["true"])),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "0123456789ab".into(),
            config: Some(container_config("x", &image, &["true"])),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Whatever failed left no record, mount, bundle or writable layer.
    let listed = list_all_containers(&daemon).await.unwrap();
    let failed_leftovers = listed
        .iter()
        .filter(|c| c.metadata.as_ref().unwrap().name == "nobody-known")
        .count();
    assert_eq!(failed_leftovers, 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let overlays = mounts
        .lines()
        .filter(|l| l.contains(daemon.dir().to_str().unwrap()) && l.contains("overlay"))
        .count();
    assert_eq!(
        overlays,
        listed.len(),
        "one overlay per listed container, none for failures"
    );
    remove_pod(&daemon, &pod_id).await.unwrap();
    assert_eq!(
        std::fs::read_dir(daemon.dir().join("root/containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "writable layers removed"
    );
}
