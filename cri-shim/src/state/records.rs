//! What is persisted about a pod sandbox and a container.

use prost::Message;
use serde::{Deserialize, Serialize};
use skiff_proto::runtime::v1 as cri;
use std::path::PathBuf;

/// Lifecycle of a sandbox. `Creating` is written before any host work so a crash mid-way is
/// visible (and cleaned up) after restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// RunPodSandbox is in progress (or crashed mid-way).
    Creating,
    /// Namespaces pinned, files written, network set up.
    Ready,
    /// Stopped: containers stopped, network and namespaces torn down.
    NotReady,
}

/// A pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 64 hex digits.
    pub id: String,
    /// `name_namespace_uid_attempt`: unique among live sandboxes.
    pub name_key: String,
    /// Where it is in its life.
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The CRI config, protobuf-encoded (the CRI type is the source of truth).
    pub config: Vec<u8>,
    /// The runtime handler asked for.
    pub runtime_handler: String,
    /// Directory with the pinned namespaces and generated files.
    pub dir: PathBuf,
    /// Pinned network namespace; `None` for host network.
    pub netns: Option<PathBuf>,
    /// Pinned IPC namespace; `None` for host IPC.
    pub ipcns: Option<PathBuf>,
    /// Pinned UTS namespace; `None` for host network (which shares the host's UTS).
    pub utsns: Option<PathBuf>,
    /// Pinned PID namespace shared by the pod's containers (`pid = POD`).
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    /// Host PID of the pause process holding `pidns`.
    #[serde(default)]
    pub pause_pid: Option<u32>,
    /// Pod IPs, first is the primary.
    pub ips: Vec<String>,
    /// The CNI result of the last ADD, for verbose status.
    #[serde(default)]
    pub cni_result: Option<serde_json::Value>,
    /// CNI ADD succeeded and no DEL has succeeded since: a DEL is still owed.
    #[serde(default)]
    pub network_attached: bool,
}

impl SandboxRecord {
    /// The CRI config this sandbox was created with.
    pub fn config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig::decode(self.config.as_slice()).unwrap_or_default()
    }
}

/// Lifecycle of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer in progress (or crashed mid-way).
    Creating,
    /// Created, waiting for StartContainer.
    Created,
    /// Started.
    Running,
    /// Its process exited (see the exit fields).
    Exited,
    /// Its monitor disappeared without recording an exit: the truth is unknown.
    Unknown,
}

/// A container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its pod.
    pub sandbox_id: String,
    /// `name_sandboxname_namespace_uid_attempt`: unique among live containers.
    pub name_key: String,
    /// Where it is in its life.
    pub state: ContainerState,
    /// The CRI config, protobuf-encoded.
    pub config: Vec<u8>,
    /// Image ID it was created from.
    pub image_id: String,
    /// The image reference the client asked for.
    pub image_ref: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Unix nanoseconds, 0 until started.
    pub started_at: i64,
    /// Unix nanoseconds, 0 until exited.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// CRI reason (Completed, Error, OOMKilled…).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// Absolute path of the CRI log file, if any.
    pub log_path: Option<PathBuf>,
    /// Bundle directory (config.json, rootfs mount point, monitor files).
    pub bundle: PathBuf,
    /// PID of the container's init while it runs.
    pub pid: u32,
    /// `linux.cgroupsPath` of its spec: where its usage is read and limits are written.
    #[serde(default)]
    pub cgroups_path: String,
}

impl ContainerRecord {
    /// The CRI config this container was created with.
    pub fn config(&self) -> cri::ContainerConfig {
        cri::ContainerConfig::decode(self.config.as_slice()).unwrap_or_default()
    }
}
