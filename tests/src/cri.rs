//! Small CRI helpers shared by the end-to-end tests: a pod config, a container config and the
//! usual call sequences, so each test reads as the steps a kubelet takes.

use crate::busybox::{busybox_layout, Variant};
use crate::daemon::Skiffd;
use crate::registry::{push, Format, Registry};
use anyhow::Result;
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;

/// A pod config with a unique name, `hostname`, DNS settings and a log directory.
pub fn pod_config(name: &str, hostname: &str, log_dir: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: hostname.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `command` from `image`, logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// Every pod sandbox the daemon lists, unfiltered.
pub async fn list_all_pods(daemon: &Skiffd) -> Result<Vec<cri::PodSandbox>> {
    let request = cri::ListPodSandboxRequest::default();
    let reply = daemon.runtime().await?.list_pod_sandbox(request).await?;
    Ok(reply.into_inner().items)
}

/// Every container the daemon lists, unfiltered.
pub async fn list_all_containers(daemon: &Skiffd) -> Result<Vec<cri::Container>> {
    let request = cri::ListContainersRequest::default();
    let reply = daemon.runtime().await?.list_containers(request).await?;
    Ok(reply.into_inner().containers)
}

/// Every image the daemon lists, unfiltered.
pub async fn list_all_images(daemon: &Skiffd) -> Result<Vec<cri::Image>> {
    let request = cri::ListImagesRequest::default();
    let reply = daemon.images().await?.list_images(request).await?;
    Ok(reply.into_inner().images)
}

/// Pushes the busybox image to `registry` and pulls it through `daemon`; returns its name.
pub async fn pull_busybox(
    daemon: &Skiffd,
    registry: &Registry,
    variant: Variant<'_>,
) -> Result<String> {
    let repo = format!("busybox-{}:1", variant.name());
    push(
        &busybox_layout(variant),
        "latest",
        registry,
        &repo,
        Format::Oci,
    )?;
    let name = format!("{}/{repo}", registry.addr());
    pull_image(daemon, &name).await?;
    Ok(name)
}

/// PullImage of `image`; the image ref, or the call's status for tests of failing pulls.
pub async fn pull_image(daemon: &Skiffd, image: &str) -> Result<String, tonic::Status> {
    let mut images = daemon
        .images()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// PodSandboxStatus, not verbose.
pub async fn pod_status(daemon: &Skiffd, pod_id: &str) -> Result<cri::PodSandboxStatusResponse> {
    Ok(daemon
        .runtime()
        .await?
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: false,
        })
        .await?
        .into_inner())
}

/// The pod's IP as PodSandboxStatus reports it; an error when it has none.
pub async fn pod_ip(daemon: &Skiffd, pod_id: &str) -> Result<String> {
    pod_status(daemon, pod_id)
        .await?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| anyhow::anyhow!("pod {pod_id} has no IP"))
}

/// RunPodSandbox.
pub async fn run_pod(daemon: &Skiffd, config: &cri::PodSandboxConfig) -> Result<String> {
    Ok(daemon
        .runtime()
        .await?
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

/// CreateContainer + StartContainer; returns the container ID.
pub async fn start_container(
    daemon: &Skiffd,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String> {
    let mut runtime = daemon.runtime().await?;
    let id = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    Ok(id)
}

/// ExecSync with a timeout in seconds.
pub async fn exec(
    daemon: &Skiffd,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let mut runtime = daemon
        .runtime()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// ContainerStatus.
pub async fn container_status(daemon: &Skiffd, id: &str) -> Result<cri::ContainerStatus> {
    daemon
        .runtime()
        .await?
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("no status"))
}

/// Polls ContainerStatus until the container exited (bounded); returns the final status.
pub async fn wait_exited(daemon: &Skiffd, id: &str, seconds: u64) -> Result<cri::ContainerStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let status = container_status(daemon, id).await?;
        if status.state == cri::ContainerState::ContainerExited as i32 {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("container {id} still {:?} after {seconds}s", status.state);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// StopPodSandbox + RemovePodSandbox (which also removes the pod's containers).
pub async fn remove_pod(daemon: &Skiffd, pod_id: &str) -> Result<()> {
    let mut runtime = daemon.runtime().await?;
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await?;
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await?;
    Ok(())
}

/// The setup most container tests start from: a registry, a daemon with the busybox image
/// pulled, and one running pod. Dropping it tears everything down (the daemon fixture cleans
/// what a failed test left).
pub struct PodEnv {
    /// The registry the image came from (kept running for further pulls).
    pub registry: Registry,
    /// The daemon.
    pub daemon: Skiffd,
    /// The pulled busybox image's name.
    pub image: String,
    /// The pod's log directory.
    pub logs: tempfile::TempDir,
    /// The pod's config.
    pub pod: cri::PodSandboxConfig,
    /// The pod's ID.
    pub pod_id: String,
}

impl PodEnv {
    /// Starts a registry and a daemon, pulls busybox and runs the pod `name`.
    pub async fn new(name: &str) -> Result<PodEnv> {
        let Node {
            registry,
            daemon,
            image,
            logs,
        } = Node::new().await?;
        let pod = pod_config(name, name, logs.path());
        let pod_id = run_pod(&daemon, &pod).await?;
        Ok(PodEnv {
            registry,
            daemon,
            image,
            logs,
            pod,
            pod_id,
        })
    }

    /// Creates and starts container `name` running `command` in the pod.
    pub async fn start(&self, name: &str, command: &[&str]) -> Result<String> {
        let config = container_config(name, &self.image, command);
        start_container(&self.daemon, &self.pod_id, &self.pod, config).await
    }

    /// Creates and starts a container from a config of the caller's.
    pub async fn start_config(&self, config: cri::ContainerConfig) -> Result<String> {
        start_container(&self.daemon, &self.pod_id, &self.pod, config).await
    }
}

/// A registry and a daemon with the busybox image pulled, plus a log directory: what most
/// end-to-end tests start from before making their own pods.
pub struct Node {
    /// The registry the image came from (kept running for further pushes and pulls).
    pub registry: Registry,
    /// The daemon.
    pub daemon: Skiffd,
    /// The pulled busybox image's name.
    pub image: String,
    /// A log directory for pods.
    pub logs: tempfile::TempDir,
}

impl Node {
    /// Starts a registry and a daemon (with its own test network) and pulls busybox.
    pub async fn new() -> Result<Node> {
        let registry = Registry::start()?;
        let daemon = Skiffd::start("")?;
        let image = pull_busybox(&daemon, &registry, Variant::Plain).await?;
        let logs = tempfile::tempdir()?;
        Ok(Node {
            registry,
            daemon,
            image,
            logs,
        })
    }
}
