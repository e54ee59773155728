//! Faults from outside: a CNI plugin that fails, is missing or hangs, a monitor that is
//! killed, a registry that drops the connection mid-pull. skiffd reports them clearly and
//! leaves nothing half-made.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::{busybox_layout, Variant};
use skiff_tests::cri::*;
use skiff_tests::daemon::Skiffd;
use skiff_tests::flaky_proxy::FlakyProxy;
use skiff_tests::registry::{push, Format, Registry};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tonic::Code;

/// Asserts a failed RunPodSandbox left nothing: no pod listed, nothing mounted under the
/// daemon, no sandbox directory.
async fn assert_no_pod_left(daemon: &Skiffd) {
    let pods = list_all_pods(daemon).await.unwrap();
    assert!(pods.is_empty(), "{pods:?}");
    let mounts = daemon.mounts_left();
    assert!(mounts.is_empty(), "no pinned namespace left: {mounts:?}");
    let sandboxes = std::fs::read_dir(daemon.dir().join("run/sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0, "sandbox directories left");
}

/// Installs `script` as CNI plugin `name` and a network list using only it.
fn install_plugin(daemon: &Skiffd, name: &str, script: &str) {
    let plugin = daemon.cni_bin_dir().join(name);
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    install_network(daemon, name);
}

/// A CNI plugin script that answers VERSION for spec 1.0.0 and runs the shell `case` branches
/// `branches` for every other command.
fn plugin_script(branches: &str) -> String {
    format!(
        "#!/bin/sh\ncase \"$CNI_COMMAND\" in\n\
         VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}}';;\n\
         {branches}esac\n"
    )
}

/// Points the daemon's CNI config at a network whose only plugin has type `kind`.
fn install_network(daemon: &Skiffd, kind: &str) {
    std::fs::write(
        daemon.cni_conf_dir().join(format!("10-{kind}.conflist")),
        format!(r#"{{"cniVersion":"1.0.0","name":"{kind}","plugins":[{{"type":"{kind}"}}]}}"#),
    )
    .unwrap();
}

#[tokio::test]
async fn a_failing_cni_plugin_fails_run_pod_sandbox_and_leaves_nothing() {
    let daemon = Skiffd::start_bare("").unwrap();
    install_plugin(
        &daemon,
        "broken",
        &plugin_script(
            "ADD) echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no addresses left today\"}'; exit 1;;\n\
             *) exit 0;;\n",
        ),
    );
    let logs = tempfile::tempdir().unwrap();
    let err = run_pod(&daemon, &pod_config("doomed", "d", logs.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no addresses left today"), "{err}");
    assert_no_pod_left(&daemon).await;
}

#[tokio::test]
async fn a_missing_cni_plugin_fails_run_pod_sandbox_naming_it_and_leaves_nothing() {
    let daemon = Skiffd::start_bare("").unwrap();
    install_network(&daemon, "skiff-no-such-plugin");
    let logs = tempfile::tempdir().unwrap();
    let err = run_pod(&daemon, &pod_config("plugless", "p", logs.path()))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("skiff-no-such-plugin") && message.contains("not found"),
        "{message}"
    );
    assert!(
        message.contains(daemon.cni_bin_dir().to_str().unwrap()),
        "names where it looked: {message}"
    );
    assert_no_pod_left(&daemon).await;
}

/// True once `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn a_hanging_cni_plugin_is_killed_after_the_timeout_and_leaves_nothing() {
    // `plugin_timeout_secs` lands in the fixture's [cni] table.
    let daemon = Skiffd::start_bare("plugin_timeout_secs = 1").unwrap();
    let pids = daemon.dir().join("hang.pids");
    // Every call but VERSION hangs, in a child too, as a plugin waiting on a dead daemon
    // would; each process writes its PID down first.
    install_plugin(
        &daemon,
        "hang",
        &plugin_script(&format!(
            "*) echo $$ >> {pids}; sleep 3600 & echo $! >> {pids}; wait;;\n",
            pids = pids.display()
        )),
    );
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = run_pod(&daemon, &pod_config("stuck", "s", logs.path()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    let message = err.to_string();
    assert!(
        message.contains("plugin hang ADD did not finish within 1s"),
        "{message}"
    );
    assert_no_pod_left(&daemon).await;

    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    // The plugin and its child, for ADD and for the DEL of the rollback.
    assert!(pids.len() >= 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| exited(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| !exited(p)).collect();
    assert!(
        alive.is_empty(),
        "plugin processes still running: {alive:?}"
    );
    eprintln!(
        "hanging CNI plugin: RunPodSandbox failed after {took:?} ({} plugin processes killed): {message}",
        pids.len()
    );
}

#[tokio::test]
async fn a_registry_that_drops_the_connection_mid_pull_fails_cleanly_then_a_retry_works() {
    let registry = Registry::start().unwrap();
    push(
        &busybox_layout(Variant::Plain),
        "latest",
        &registry,
        "flaky/busybox:1",
        Format::Oci,
    )
    .unwrap();
    let proxy = FlakyProxy::start(&registry.addr()).unwrap();
    let daemon = Skiffd::start("").unwrap();
    let image = format!("{}/flaky/busybox:1", proxy.addr());
    let pull = || async {
        let call = pull_image(&daemon, &image);
        // Bounded so that a hang fails the test instead of stalling it.
        tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("PullImage hung after the registry dropped the connection")
    };
    let images = daemon.root_dir().join("images");
    let entries = |dir: &str| {
        std::fs::read_dir(images.join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // Cut right at the first blob (the config), then 64 KiB into the layer's body.
    for cut_after in [0, 64 * 1024] {
        proxy.cut_blobs_after(Some(cut_after));
        let cuts_before = proxy.cuts();
        let started = Instant::now();
        let err = pull().await.unwrap_err();
        let took = started.elapsed();
        assert!(proxy.cuts() > cuts_before, "the proxy cut nothing");
        assert_eq!(err.code(), Code::Unavailable, "cut at {cut_after}: {err}");
        assert!(err.message().contains(&proxy.addr()), "{err}");
        let listed = list_all_images(&daemon).await.unwrap();
        assert!(listed.is_empty(), "cut at {cut_after}: {listed:?}");
        for dir in ["content/ingest", "content/blobs/sha256", "layers"] {
            assert_eq!(entries(dir), 0, "cut at {cut_after}: {dir} is not empty");
        }
        eprintln!(
            "registry cut {cut_after} bytes into a blob: PullImage failed in {took:?} ({} \
             connections cut): {}",
            proxy.cuts() - cuts_before,
            err.message()
        );
    }

    // The network heals: the same pull succeeds and the image runs.
    proxy.cut_blobs_after(None);
    pull().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let pod = pod_config("after-cut", "after-cut", logs.path());
    let pod_id = run_pod(&daemon, &pod).await.unwrap();
    let id = start_container(
        &daemon,
        &pod_id,
        &pod,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let reply = exec(&daemon, &id, &["echo", "pulled"], 5).await.unwrap();
    assert_eq!(reply.stdout, b"pulled\n");
    remove_pod(&daemon, &pod_id).await.unwrap();
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

#[tokio::test]
async fn a_client_that_gives_up_on_a_slow_run_pod_sandbox_gets_the_pod_on_retry() {
    let daemon = Skiffd::start_bare("").unwrap();
    // ADD takes a second, as a plugin waiting on a busy IPAM would.
    install_plugin(
        &daemon,
        "slow",
        &plugin_script(
            "ADD) sleep 1; echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.99.0.5/24\"}]}';;\n\
             *) exit 0;;\n",
        ),
    );
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("patient", "p", logs.path());

    // The kubelet's deadline passes while ADD runs: the client cancels the call.
    let first = tokio::time::timeout(Duration::from_millis(300), run_pod(&daemon, &config)).await;
    assert!(
        first.is_err(),
        "the call was meant to be cut short: {first:?}"
    );

    // Its retry of the same attempt gets the pod the first call went on to make.
    let id = run_pod(&daemon, &config).await.unwrap();
    let pods = list_all_pods(&daemon).await.unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pod_ip(&daemon, &id).await.unwrap(), "10.99.0.5");
    remove_pod(&daemon, &id).await.unwrap();
    assert_no_pod_left(&daemon).await;
}
