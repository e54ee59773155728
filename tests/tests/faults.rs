//! Faults from outside: a CNI plugin that fails, a monitor that is killed. skiffd reports them
//! clearly and leaves nothing half-made.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn a_failing_cni_plugin_fails_run_pod_sandbox_and_leaves_nothing() {
    let daemon = Skiffd::start_bare("").unwrap();
    let plugin = daemon.cni_bin_dir().join("broken");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncase \"$CNI_COMMAND\" in\n\
         VERSION) echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}';;\n\
         ADD) echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no addresses left today\"}'; exit 1;;\n\
         *) exit 0;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        daemon.cni_conf_dir().join("10-broken.conflist"),
        r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"broken"}]}"#,
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let err = run_pod(&daemon, &pod_config("doomed", "d", logs.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no addresses left today"), "{err}");

    let pods = daemon
        .runtime()
        .await
        .unwrap()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(daemon.dir().to_str().unwrap()),
        "no pinned namespace left"
    );
    let sandboxes = std::fs::read_dir(daemon.dir().join("run/sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0);
}

#[tokio::test]
async fn a_killed_monitor_makes_its_container_unknown_not_running() {
    let Node {
        registry: _registry,
        daemon,
        image,
        logs,
    } = Node::new().await.unwrap();
    let pod = pod_config("orphan", "o", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let id = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    // The monitor is the parent of the container's init.
    let init: i32 = std::fs::read_to_string(
        daemon
            .dir()
            .join("run/containers")
            .join(&id)
            .join("init.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap();
    let monitor: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        let status = container_status(&daemon, &id).await.unwrap();
        if status.state != cri::ContainerState::ContainerRunning as i32
            || std::time::Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerUnknown as i32,
        "{status:?}"
    );
    assert!(status.message.contains("monitor"), "{}", status.message);
    // Stopping it kills the orphaned process for real.
    daemon
        .runtime()
        .await
        .unwrap()
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let stopped = container_status(&daemon, &id).await.unwrap();
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    assert!(
        gone(init),
        "the container process is gone after StopContainer"
    );
    remove_pod(&daemon, &pod_id).await.unwrap();
}
