//! Pod networking through CNI plugins (libcni's role), per the CNI specification 1.1.0.
//!
//! [`Cni`] runs the chain of the network configuration found in the conf dir (re-read on every
//! call) for one pod sandbox: `add` on RunPodSandbox, `del` on Stop/RemovePodSandbox, `check`,
//! `status` for the NetworkReady condition and `gc` at startup. Each operation lives in its own
//! file; [`exec`] runs one plugin binary, [`request`] derives what it reads on stdin, [`version`]
//! negotiates the spec version and [`cache`] keeps what DEL and CHECK need from ADD.
//!
//! skiffd brings `lo` up itself when it pins the netns, so no loopback plugin is needed.

// Until RunPodSandbox/StopPodSandbox/Status/startup call into this module.

mod add;
mod cache;
mod check;
mod conf;
mod del;
mod exec;
mod gc;
mod request;
mod status;
mod template;
mod version;

#[cfg(test)]
mod tests;

pub use conf::{find_network, CniConfError, NetworkConfig};
pub use template::{write_from_template, TemplateError};

use conf::NetworkList;
use skiff_proto::runtime::v1::PortMapping;
use std::path::PathBuf;
use std::time::Duration;

/// The interface name of the pod's network attachment.
pub const IFNAME: &str = "eth0";

/// How long one plugin invocation may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs CNI plugins for pod sandboxes.
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache: cache::Cache,
    timeout: Duration,
    versions: version::VersionCache,
    /// GC must not overlap ADD or DEL (spec section 3): they share it, GC takes it alone.
    gc_lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Cni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cni")
            .field("conf_dir", &self.conf_dir)
            .field("bin_dirs", &self.bin_dirs)
            .finish_non_exhaustive()
    }
}

/// One pod sandbox's attachment to the network.
#[derive(Clone, Debug, Default)]
pub struct Attachment {
    /// The sandbox id, used as `CNI_CONTAINERID`.
    pub sandbox_id: String,
    /// The pinned network namespace (`CNI_NETNS`); may be gone for `del`.
    pub netns: PathBuf,
    /// The pod's name, for `K8S_POD_NAME`.
    pub pod_name: String,
    /// The pod's namespace, for `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// The pod's UID, for `K8S_POD_UID`.
    pub pod_uid: String,
    /// Host ports, given to plugins declaring the `portMappings` capability.
    pub port_mappings: Vec<PortMapping>,
}

/// What `add` gives the pod.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    /// The pod's addresses without prefix length, IPv4 first; the first is the primary.
    pub ips: Vec<String>,
    /// The final result of the chain, as the last plugin printed it.
    pub result: serde_json::Value,
}

/// Why a CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network configuration.
    #[error(transparent)]
    Config(#[from] CniConfError),
    /// A cached configuration is not a valid network configuration list.
    #[error("cached network config of sandbox {sandbox}: {reason}")]
    CachedConfig {
        /// The sandbox.
        sandbox: String,
        /// What is wrong.
        reason: String,
    },
    /// A plugin binary is in none of the bin dirs.
    #[error("network {network:?}: plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The configuration, skiffd and the plugins share no spec version.
    #[error("network {network:?}: {reason}")]
    IncompatibleVersion {
        /// The network.
        network: String,
        /// Which versions each side supports.
        reason: String,
    },
    /// ADD failed with the inner error, and DEL undid every plugin it had run: the caller
    /// owes no DEL (running one would wait on a hanging plugin again).
    #[error(transparent)]
    RolledBack(Box<CniError>),
    /// A plugin reported an error.
    #[error("plugin {plugin} {command} failed{}: {msg}{}", code_text(*.code), details_text(.details))]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The CNI error code, if the plugin printed one.
        code: Option<u64>,
        /// The error message (or what the plugin printed).
        msg: String,
        /// The error details.
        details: String,
    },
    /// A plugin ran longer than the timeout and was killed.
    #[error("plugin {plugin} {command} did not finish within {after:?} and was killed")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A plugin could not be run.
    #[error("running plugin {plugin} ({}): {source}", .path.display())]
    Spawn {
        /// The plugin type.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A plugin succeeded but printed something unusable.
    #[error("plugin {plugin} {command}: {reason}")]
    BadOutput {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with the output.
        reason: String,
    },
    /// The result cache could not be read or written.
    #[error("CNI result cache {}: {source}", .path.display())]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The attachment's parameters cannot be passed to plugins.
    #[error("invalid CNI attachment: {0}")]
    InvalidAttachment(String),
    /// CHECK of a sandbox without a cached ADD result.
    #[error("sandbox {0} has no cached CNI result (not added, or already deleted)")]
    NotAttached(String),
    /// Several steps failed (GC keeps going after errors).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CniError>),
}

fn code_text(code: Option<u64>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

fn details_text(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

impl Cni {
    /// A CNI runner reading network configs from `conf_dir`, plugins from `bin_dirs`, and
    /// keeping one result file per attachment in `cache_dir` (created when first needed).
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Cni {
            conf_dir,
            bin_dirs,
            cache: cache::Cache::new(cache_dir),
            timeout: DEFAULT_TIMEOUT,
            versions: version::VersionCache::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        }
    }

    /// Sets how long one plugin invocation may run (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Cni {
    /// The network configuration in the conf dir, read now so that changes are picked up.
    fn current_list(&self) -> Result<(NetworkConfig, NetworkList), CniError> {
        let net = find_network(&self.conf_dir)?;
        let list = NetworkList::from_value(&net.list).map_err(|reason| CniConfError::Invalid {
            path: net.path.clone(),
            reason,
        })?;
        Ok((net, list))
    }
}

/// Refuses sandbox ids that are not valid CNI container ids: a letter or digit, then letters,
/// digits, `_`, `.` or `-`. (They also name the cache file, so this keeps `/` out.)
fn check_sandbox_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::InvalidAttachment(format!(
            "sandbox id {id:?} is not a valid CNI container id"
        )))
    }
}
