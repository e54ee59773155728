//! skiffd as a process: its socket, its answers to Version and Status, its refusal of work it
//! cannot do yet, and how it starts and stops.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::daemon::{skiffd_binary, Skiffd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use tonic::Code;

#[tokio::test]
async fn version_names_skiff_and_cri_v1() {
    let daemon = Skiffd::start("").unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    let v = runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
    assert!(!v.runtime_version.is_empty());
}

fn condition<'a>(status: &'a cri::StatusResponse, kind: &str) -> &'a cri::RuntimeCondition {
    status
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition"))
}

#[tokio::test]
async fn network_ready_follows_the_cni_config_and_verbose_shows_the_config() {
    let daemon = Skiffd::start_bare("").unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    let status = runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&status, "RuntimeReady").status);
    let network = condition(&status, "NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("no network config"),
        "{}",
        network.message
    );
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(config["socket"], daemon.socket.to_str().unwrap());

    std::fs::write(
        daemon.cni_conf_dir().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"skiff-bridge"}]}"#,
    )
    .unwrap();
    let status = runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let network = condition(&status, "NetworkReady");
    assert!(!network.status, "the plugin binary is still missing");
    assert!(
        network.message.contains("skiff-bridge"),
        "{}",
        network.message
    );
    assert!(status.info.is_empty());

    let plugin = daemon.cni_bin_dir().join("skiff-bridge");
    std::os::unix::fs::symlink(
        skiff_tests::daemon::sibling_binary("skiff-bridge", "SKIFF_BRIDGE_BIN"),
        &plugin,
    )
    .unwrap();
    let status = runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let network = condition(&status, "NetworkReady");
    assert!(network.status, "{network:?}");
}

#[tokio::test]
async fn rpcs_not_built_yet_say_so_by_name() {
    let daemon = Skiffd::start("").unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    let err = runtime
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"), "{err}");
    let err = runtime
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("ListMetricDescriptors"), "{err}");
}

#[tokio::test]
async fn runtime_config_names_the_cgroupfs_driver() {
    let daemon = Skiffd::start("").unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    let config = runtime
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn the_socket_is_private_exclusive_and_removed_on_sigterm() {
    let mut daemon = Skiffd::start("").unwrap();
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A second daemon on the same socket refuses to start and leaves the first one serving.
    let second = Command::new(skiffd_binary())
        .arg("--config")
        .arg(&daemon.config_path)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another skiffd"), "{stderr}");
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();

    let status = daemon.terminate().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!daemon.socket.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn a_stale_socket_left_by_a_crash_is_replaced() {
    let mut daemon = Skiffd::start("").unwrap();
    daemon.kill();
    assert!(
        daemon.socket.exists(),
        "SIGKILL leaves the socket file behind"
    );
    daemon.restart().unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[test]
fn config_default_prints_loadable_defaults_and_bad_config_fails_clearly() {
    let out = Command::new(skiffd_binary())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("socket = \"/run/skiff/skiff.sock\""),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let shown = Command::new(skiffd_binary())
        .args(["config", "show", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(shown.status.success());

    std::fs::write(&path, "no_such_key = 1\n").unwrap();
    let bad = Command::new(skiffd_binary())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_daemon_keeps_serving() {
    let daemon = Skiffd::start_bare("").unwrap();
    let mut images = daemon
        .images()
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    let huge = "a".repeat(17 << 20); // over skiffd's 16 MiB limit
    let err = images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: huge,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // tonic reports a message over the limit as OUT_OF_RANGE.
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    // A reference that is merely long and wrong is an argument error, not a crash.
    let err = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: format!("{}:tag", "x/".repeat(100_000)),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}
