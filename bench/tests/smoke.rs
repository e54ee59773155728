//! The benchmark driver runs end to end against a test skiffd (one or two of everything, no
//! timing assertions) and leaves no pod behind.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::busybox::Variant;
use skiff_tests::cri::pull_busybox;
use skiff_tests::daemon::Skiffd;
use skiff_tests::registry::Registry;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_runs_against_skiffd() {
    let registry = Registry::start().unwrap();
    let daemon = Skiffd::start("").unwrap();
    let image = pull_busybox(&daemon, &registry, Variant::Plain)
        .await
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_skiff-bench"))
        .arg("cri")
        .arg("--skiff")
        .arg(&daemon.socket)
        .args(["--image", &image])
        .args(["--iterations", "2", "--exec-iterations", "2"])
        .args(["--memory-pods", "2", "--settle-secs", "0"])
        .args(["--concurrent", "2", "--ready-timeout-secs", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}{stdout}");
    assert!(
        out.status.success(),
        "skiff-bench failed:\n{stdout}\n{stderr}\n--- skiffd ---\n{}",
        daemon.log()
    );
    for row in [
        "| measurement | skiff |",
        "| pod ready (run+create+start) (ms, n=2) |",
        "| ExecSync `true` (ms, n=2) |",
        "| 2 pods: memory per pod, RSS (MiB) |",
        "| 2 pods: helper processes |",
        "| 2 pods at once: all answering (s) |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
    // Two pods ran a container each, so two monitors were found and counted.
    assert!(
        stdout.contains("| 2 pods: helper processes | 2 |"),
        "{stdout}"
    );

    let pods = daemon
        .runtime()
        .await
        .unwrap()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pods left behind: {pods:?}");
}
