//! One CRI endpoint under test: a persistent gRPC connection (shared by every call, as a
//! kubelet's), the requests a kubelet sends, and the runtime's processes.

use crate::procs::{self, Process};
use anyhow::{anyhow, Context, Result};
use hyper_util::rt::TokioIo;
use skiff_proto::runtime::v1 as cri;
use skiff_proto::runtime::v1::image_service_client::ImageServiceClient;
use skiff_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Cgroup parent of every benchmark pod (as a kubelet would pass `/kubepods/...`), removed at
/// the end; see [`remove_cgroup_parent`].
pub const CGROUP_PARENT: &str = "/skiff-bench";
/// No single RPC of a healthy runtime takes this long; a hung daemon fails the run instead.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// Which runtime serves the socket: decides which helper processes count as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Skiff,
    Containerd,
}

/// A runtime under test.
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub socket: PathBuf,
    /// The daemon's PID (the peer of the socket).
    pub daemon_pid: u32,
    daemon_exe: Option<PathBuf>,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Pods created and not yet removed, so a failed run still cleans up.
    live_pods: Mutex<HashSet<String>>,
    /// Where pod log directories go.
    log_root: PathBuf,
}

/// Dials `socket` once; every client made from the channel shares that HTTP/2 connection.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://cri.invalid")?
        .timeout(RPC_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .context("connecting")
}

impl Target {
    /// Connects to the runtime at `socket`.
    pub async fn connect(name: &str, kind: Kind, socket: &Path, log_root: &Path) -> Result<Target> {
        let channel = connect(socket)
            .await
            .with_context(|| format!("{name}: {}", socket.display()))?;
        let daemon_pid = procs::socket_owner(socket)?;
        let target = Target {
            name: name.into(),
            kind,
            socket: socket.into(),
            daemon_pid,
            daemon_exe: procs::read(daemon_pid).and_then(|p| p.exe),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            live_pods: Mutex::new(HashSet::new()),
            log_root: log_root.join(name),
        };
        let version = target
            .rt()
            .version(cri::VersionRequest::default())
            .await
            .with_context(|| format!("{name}: Version"))?
            .into_inner();
        eprintln!(
            "{name}: {} {} (CRI {}), pid {daemon_pid}",
            version.runtime_name, version.runtime_version, version.runtime_api_version
        );
        Ok(target)
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// One of the calls a kubelet makes all the time, by name (`ImageStatus`, `ListImages`,
    /// `PodSandboxStatus`, `ContainerStatus`, `ListPodSandbox`, `ListContainers`), about `pod`,
    /// its `container` and `image`.
    pub async fn poll(&self, call: &str, pod: &str, container: &str, image: &str) -> Result<()> {
        let image = Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        });
        match call {
            "ImageStatus" => drop(
                self.images
                    .clone()
                    .image_status(cri::ImageStatusRequest {
                        image,
                        verbose: false,
                    })
                    .await?,
            ),
            "ListImages" => drop(
                self.images
                    .clone()
                    .list_images(cri::ListImagesRequest::default())
                    .await?,
            ),
            "PodSandboxStatus" => drop(
                self.rt()
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: pod.into(),
                        verbose: false,
                    })
                    .await?,
            ),
            "ContainerStatus" => drop(
                self.rt()
                    .container_status(cri::ContainerStatusRequest {
                        container_id: container.into(),
                        verbose: false,
                    })
                    .await?,
            ),
            "ListPodSandbox" => drop(
                self.rt()
                    .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                    .await?,
            ),
            "ListContainers" => drop(
                self.rt()
                    .list_containers(cri::ListContainersRequest::default())
                    .await?,
            ),
            other => anyhow::bail!("no call {other}"),
        }
        Ok(())
    }

    /// PullImage, unless the runtime already has it.
    pub async fn ensure_image(&self, image: &str) -> Result<()> {
        let spec = Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        });
        let status = self
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: spec.clone(),
                verbose: false,
            })
            .await?
            .into_inner();
        if status.image.is_none() {
            self.images
                .clone()
                .pull_image(cri::PullImageRequest {
                    image: spec,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("{}: pulling {image}", self.name))?;
        }
        Ok(())
    }

    /// A pod config as a kubelet sends it for a plain pod: own network, PID namespace per
    /// container, a log directory, DNS settings and a cgroup parent.
    pub fn pod_config(&self, name: &str) -> Result<cri::PodSandboxConfig> {
        let log_dir = self.log_root.join(name);
        std::fs::create_dir_all(&log_dir)?;
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", std::process::id()),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["bench.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([("bench".to_string(), name.to_string())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: CGROUP_PARENT.into(),
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
        })
    }

    /// RunPodSandbox.
    pub async fn run_pod(&self, config: &cri::PodSandboxConfig) -> Result<String> {
        let id = self
            .rt()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("{}: RunPodSandbox", self.name))?
            .into_inner()
            .pod_sandbox_id;
        self.live_pods.lock().unwrap().insert(id.clone());
        Ok(id)
    }

    /// CreateContainer of `command` from `image` in the pod.
    pub async fn create_container(
        &self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: "main.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: cri::NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(self
            .rt()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .with_context(|| format!("{}: CreateContainer", self.name))?
            .into_inner()
            .container_id)
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.rt()
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .with_context(|| format!("{}: StartContainer", self.name))?;
        Ok(())
    }

    /// ExecSync; fails unless the command exits 0.
    pub async fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<()> {
        let reply = self
            .rt()
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .with_context(|| format!("{}: ExecSync", self.name))?
            .into_inner();
        if reply.exit_code != 0 {
            return Err(anyhow!(
                "{}: ExecSync {cmd:?} exited {}: {}",
                self.name,
                reply.exit_code,
                String::from_utf8_lossy(&reply.stderr)
            ));
        }
        Ok(())
    }

    /// The pod's IPv4 address from PodSandboxStatus.
    pub async fn pod_ip(&self, pod_id: &str) -> Result<String> {
        let status = self
            .rt()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: false,
            })
            .await
            .with_context(|| format!("{}: PodSandboxStatus", self.name))?
            .into_inner();
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| anyhow!("{}: pod {pod_id} has no IP", self.name))
    }

    /// StopPodSandbox (which kills its containers, as a kubelet's grace period of 0 does).
    pub async fn stop_pod(&self, pod_id: &str) -> Result<()> {
        self.rt()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .with_context(|| format!("{}: StopPodSandbox", self.name))?;
        Ok(())
    }

    /// RemovePodSandbox (with its containers).
    pub async fn remove_pod(&self, pod_id: &str) -> Result<()> {
        self.rt()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .with_context(|| format!("{}: RemovePodSandbox", self.name))?;
        self.live_pods.lock().unwrap().remove(pod_id);
        Ok(())
    }

    /// Stop + remove, untimed.
    pub async fn delete_pod(&self, pod_id: &str) -> Result<()> {
        self.stop_pod(pod_id).await?;
        self.remove_pod(pod_id).await
    }

    /// Removes every pod this run created and did not remove (after a failure), and the log
    /// directories. Returns how many pods were left.
    pub async fn cleanup(&self) -> usize {
        let left: Vec<String> = self.live_pods.lock().unwrap().iter().cloned().collect();
        for id in &left {
            if let Err(e) = self.delete_pod(id).await {
                eprintln!("{}: cleaning up pod {id}: {e:#}", self.name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_root);
        left.len()
    }

    /// The runtime's per-pod and per-container helper processes serving `containers` (skiff:
    /// `skiff-monitor --id <container>` and `skiffd pause`; containerd: its shims). `baseline`
    /// holds PIDs that existed before the pods, so older processes never count.
    pub fn helpers(&self, containers: &HashSet<String>, baseline: &HashSet<u32>) -> Vec<Process> {
        let socket = self.socket.display().to_string();
        procs::all()
            .into_iter()
            .filter(|p| !baseline.contains(&p.pid) && p.pid != self.daemon_pid)
            .filter(|p| match self.kind {
                Kind::Skiff => {
                    let monitor_of_ours = p.comm == "skiff-monitor"
                        && p.cmdline
                            .windows(2)
                            .any(|w| w[0] == "--id" && containers.contains(&w[1]));
                    // `skiffd pause` carries no ID; it is ours if it runs our daemon's binary.
                    let pause = p.cmdline.get(1).is_some_and(|a| a == "pause")
                        && p.exe.is_some()
                        && p.exe == self.daemon_exe;
                    monitor_of_ours || pause
                }
                // `comm` is cut at 15 bytes: "containerd-shim".
                Kind::Containerd => {
                    p.comm.starts_with("containerd-shim") && p.cmdline.contains(&socket)
                }
            })
            .collect()
    }
}

/// Removes the benchmark's cgroup parent from every hierarchy (v1 controllers and v2); only
/// empty cgroups can be removed, so this never disturbs a pod that is still running.
pub fn remove_cgroup_parent() {
    let name = CGROUP_PARENT.trim_start_matches('/');
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup").join(name)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    for dir in dirs {
        remove_cgroup_tree(&dir);
    }
}

/// rmdir of a cgroup and its (empty) children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
