//! Pod sandboxes end to end: pinned namespaces a user can enter, generated files, idempotent
//! stop/remove, kubelet-style retries, filters and survival across a daemon crash.

use skiff_proto::runtime::v1 as cri;
use skiff_tests::cri::remove_pod;
use skiff_tests::daemon::Skiffd;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

fn pod_config(name: &str, hostname: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: hostname.into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "skiff".to_string())]),
        ..Default::default()
    }
}

async fn run_pod(daemon: &Skiffd, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_status(daemon: &Skiffd, id: &str) -> Result<cri::PodSandboxStatus, tonic::Status> {
    let mut runtime = daemon.runtime().await.unwrap();
    let reply = runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await?;
    Ok(reply.into_inner().status.expect("status"))
}

async fn list_pods(daemon: &Skiffd, filter: cri::PodSandboxFilter) -> Vec<cri::PodSandbox> {
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .items
}

fn sandbox_dir(daemon: &Skiffd, id: &str) -> PathBuf {
    daemon.dir().join("run/sandboxes").join(id)
}

/// Runs a busybox applet inside a pinned namespace with nsenter, as a user would.
fn in_ns(flag: &str, ns: &Path, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{flag}={}", ns.display()))
        .arg("/bin/busybox")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A pod's pinned namespace of `kind` (`net`, `ipc`, `uts`, `pid`), by the path skiffd gives
/// containers and CNI plugins: through `pinroot` into skiffd's pin space.
fn pin(daemon: &Skiffd, id: &str, kind: &str) -> PathBuf {
    daemon
        .dir()
        .join("run/pinroot/sandboxes")
        .join(id)
        .join("ns")
        .join(kind)
}

/// True when `path` is a pinned namespace (an nsfs file).
fn is_pinned(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
}

/// The mount table of skiffd's pin space (that of the thread `pinroot` points into).
fn pin_space_mounts(daemon: &Skiffd) -> String {
    let root = std::fs::read_link(daemon.dir().join("run/pinroot")).unwrap();
    std::fs::read_to_string(root.with_file_name("mountinfo")).unwrap()
}

#[tokio::test]
async fn a_pod_has_its_own_network_and_hostname_and_generated_files() {
    let daemon = Skiffd::start("").unwrap();
    let id = run_pod(&daemon, pod_config("web", "web-host"))
        .await
        .unwrap();
    let dir = sandbox_dir(&daemon, &id);

    // The network namespace has loopback (up) and the CNI plugin's eth0 with the pod's IP.
    let links = in_ns("net", &pin(&daemon, &id, "net"), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let status = pod_status(&daemon, &id).await.unwrap();
    let ip = status.network.expect("pod network").ip;
    let subnet = format!("10.216.{}.", daemon.network().unwrap().number);
    assert!(ip.starts_with(&subnet), "pod IP {ip} outside {subnet}0/24");
    let addrs = in_ns(
        "net",
        &pin(&daemon, &id, "net"),
        &["ip", "-o", "-4", "addr", "show", "eth0"],
    );
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    // /etc/hosts names the pod's IP.
    let hosts = std::fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(hosts.contains(&format!("{ip}\tweb-host")), "{hosts}");
    // The UTS namespace carries the pod's hostname; the host's is unchanged.
    assert_eq!(
        in_ns("uts", &pin(&daemon, &id, "uts"), &["hostname"]).trim(),
        "web-host"
    );
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_str().unwrap(),
        "web-host"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "web-host\n"
    );

    let status = pod_status(&daemon, &id).await.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.unwrap().name, "web");
    assert_eq!(status.labels["app"], "web");
    assert_eq!(status.annotations["note"], "skiff");
    assert!(status.created_at > 0);
    // By a short ID too, as crictl users type them.
    assert_eq!(pod_status(&daemon, &id[..12]).await.unwrap().id, id);

    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(
        !is_pinned(&pin(&daemon, &id, "net")),
        "netns pin released on stop"
    );
    let status = pod_status(&daemon, &id).await.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(!dir.exists(), "sandbox directory removed");
    let err = pod_status(&daemon, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Stop and remove of a missing sandbox succeed (critest checks idempotence).
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn two_pods_are_isolated_from_each_other() {
    let daemon = Skiffd::start("").unwrap();
    let a = run_pod(&daemon, pod_config("a", "host-a")).await.unwrap();
    let b = run_pod(&daemon, pod_config("b", "host-b")).await.unwrap();
    let (na, nb) = (
        std::fs::metadata(pin(&daemon, &a, "net")).unwrap(),
        std::fs::metadata(pin(&daemon, &b, "net")).unwrap(),
    );
    use std::os::unix::fs::MetadataExt;
    assert_ne!(na.ino(), nb.ino(), "each pod has its own network namespace");
    assert_eq!(
        in_ns("uts", &pin(&daemon, &b, "uts"), &["hostname"]).trim(),
        "host-b"
    );
    let mut runtime = daemon.runtime().await.unwrap();
    for id in [a, b] {
        runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_kubelet_retry_of_the_same_attempt_gets_the_same_sandbox() {
    let daemon = Skiffd::start("").unwrap();
    let (first, second) = tokio::join!(
        run_pod(&daemon, pod_config("retry", "r")),
        run_pod(&daemon, pod_config("retry", "r"))
    );
    assert_eq!(first.unwrap(), second.unwrap());
    let again = run_pod(&daemon, pod_config("retry", "r")).await.unwrap();
    assert_eq!(list_pods(&daemon, Default::default()).await.len(), 1);

    // A new attempt is a new sandbox.
    let mut next = pod_config("retry", "r");
    next.metadata.as_mut().unwrap().attempt = 1;
    let other = run_pod(&daemon, next).await.unwrap();
    assert_ne!(other, again);

    // A stopped sandbox keeps its name until it is removed.
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: again.clone(),
        })
        .await
        .unwrap();
    let err = run_pod(&daemon, pod_config("retry", "r"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    for id in [again, other] {
        runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn list_filters_by_id_state_and_labels() {
    let daemon = Skiffd::start("").unwrap();
    let a = run_pod(&daemon, pod_config("fa", "fa")).await.unwrap();
    let b = run_pod(&daemon, pod_config("fb", "fb")).await.unwrap();
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: b.clone(),
        })
        .await
        .unwrap();

    let ids = |pods: Vec<cri::PodSandbox>| pods.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(list_pods(&daemon, Default::default()).await.len(), 2);
    let by_label = cri::PodSandboxFilter {
        label_selector: HashMap::from([("app".to_string(), "fa".to_string())]),
        ..Default::default()
    };
    assert_eq!(ids(list_pods(&daemon, by_label).await), vec![a.clone()]);
    let ready = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    assert_eq!(ids(list_pods(&daemon, ready).await), vec![a.clone()]);
    let by_id = cri::PodSandboxFilter {
        id: b[..10].to_string(),
        ..Default::default()
    };
    assert_eq!(ids(list_pods(&daemon, by_id).await), vec![b.clone()]);
    for id in [a, b] {
        runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_sandbox_requests_are_refused_and_leave_nothing() {
    let daemon = Skiffd::start("").unwrap();
    let mut no_uid = pod_config("x", "x");
    no_uid.metadata.as_mut().unwrap().uid.clear();
    let err = run_pod(&daemon, no_uid).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let mut runtime = daemon.runtime().await.unwrap();
    let err = runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("h", "h")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = pod_status(&daemon, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let too_long = "h".repeat(65);
    let err = run_pod(&daemon, pod_config("long", &too_long))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(list_pods(&daemon, Default::default()).await.is_empty());
    let sandboxes = daemon.dir().join("run/sandboxes");
    assert_eq!(
        std::fs::read_dir(&sandboxes)
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn a_pod_without_a_hostname_gets_the_hosts_even_with_a_long_name() {
    // critest names its pods "create-PodSandbox-for-container-<uuid>", longer than a hostname
    // may be, and sets no hostname: like containerd, the pod keeps the host's.
    let daemon = Skiffd::start("").unwrap();
    let name = format!("create-PodSandbox-for-container-{}", "0".repeat(36));
    let id = run_pod(&daemon, pod_config(&name, "")).await.unwrap();
    let dir = sandbox_dir(&daemon, &id);
    let host = nix::unistd::gethostname().unwrap();
    let host = host.to_str().unwrap();
    assert_eq!(
        in_ns("uts", &pin(&daemon, &id, "uts"), &["hostname"]).trim(),
        host
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname"))
            .unwrap()
            .trim(),
        host
    );
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
}

#[tokio::test]
async fn host_network_pods_share_the_host_network() {
    let daemon = Skiffd::start("").unwrap();
    let mut config = pod_config("hostnet", "ignored");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_pod(&daemon, config).await.unwrap();
    let dir = sandbox_dir(&daemon, &id);
    assert!(
        !is_pinned(&pin(&daemon, &id, "net")),
        "no network namespace of its own"
    );
    assert!(
        is_pinned(&pin(&daemon, &id, "ipc")),
        "but its own IPC namespace"
    );
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname"))
            .unwrap()
            .trim(),
        host.to_str().unwrap()
    );
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
}

#[tokio::test]
async fn pods_survive_a_daemon_crash() {
    let mut daemon = Skiffd::start("").unwrap();
    let id = run_pod(&daemon, pod_config("survivor", "s")).await.unwrap();
    daemon.restart().unwrap();
    let status = pod_status(&daemon, &id).await.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    let netns = pin(&daemon, &id, "net");
    assert!(is_pinned(&netns));
    let mut runtime = daemon.runtime().await.unwrap();
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert!(!is_pinned(&netns));
}

/// A pod's pins are mounts in skiffd's pin space, not in the host's mount table, which every
/// container create reads (libcontainer) and copies: the host keeps one line for the whole
/// pin space however many pods run.
#[tokio::test]
async fn pins_live_in_the_pin_space_not_in_the_host_mount_table() {
    let daemon = Skiffd::start("").unwrap();
    let host_lines = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let id = run_pod(&daemon, pod_config("pinned", "pinned"))
        .await
        .unwrap();
    for kind in ["net", "ipc", "uts"] {
        assert!(is_pinned(&pin(&daemon, &id, kind)), "{kind} pinned");
    }
    assert!(!host_lines().contains(&id), "{}", host_lines());
    let inside = pin_space_mounts(&daemon);
    for kind in ["net", "ipc", "uts"] {
        assert!(inside.contains(&format!("{id}/ns/{kind} ")), "{inside}");
    }
    let space = daemon.dir().join("run/pins.mnt");
    assert!(
        host_lines().contains(&format!(" {} ", space.display())),
        "the host pins the pin space"
    );

    remove_pod(&daemon, &id).await.unwrap();
    let inside = pin_space_mounts(&daemon);
    assert!(!inside.contains(&id), "{inside}");
}

/// The pin space outlives skiffd. If the sandboxes directory is removed and made anew
/// meanwhile (an admin cleaning up /run by hand), a restarted skiffd binds the new directory
/// into the pin space, so new pods get their pins where containers and plugins look.
#[tokio::test]
async fn a_replaced_sandboxes_directory_is_bound_into_the_pin_space_again() {
    let mut daemon = Skiffd::start("").unwrap();
    let first = run_pod(&daemon, pod_config("before", "before"))
        .await
        .unwrap();
    remove_pod(&daemon, &first).await.unwrap();
    daemon.kill();
    let sandboxes = daemon.state_dir().join("sandboxes");
    std::fs::remove_dir_all(&sandboxes).unwrap();
    std::fs::create_dir(&sandboxes).unwrap();

    daemon.restart().unwrap();
    let id = run_pod(&daemon, pod_config("after", "after"))
        .await
        .unwrap();
    assert!(is_pinned(&pin(&daemon, &id, "net")));
    let status = pod_status(&daemon, &id).await.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    remove_pod(&daemon, &id).await.unwrap();
    assert!(
        daemon.mounts_left().is_empty(),
        "{:?}",
        daemon.mounts_left()
    );
}
