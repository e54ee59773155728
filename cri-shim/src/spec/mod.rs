//! The OCI runtime spec (`config.json`) of a container, built from its CRI request.
//!
//! [`build_spec`] merges the image config with the CRI `ContainerConfig` the way containerd
//! and CRI-O do: Docker's entrypoint/cmd rules, the default capability set, the RuntimeDefault
//! seccomp profile, masked `/proc` paths, the pod's namespaces and files. Besides its inputs
//! it reads only the container rootfs (`/etc/passwd`, `/etc/group`, resolved in-root), the host
//! paths the request names (mounts, devices, a Localhost seccomp profile) and a few host facts
//! ([`HostInfo`]).

mod caps;
mod devices;
mod error;
mod host;
mod linux;
mod mounts;
mod process;
mod seccomp;
mod seccomp_default;
mod user;

#[cfg(test)]
mod tests;

pub use error::SpecError;
pub use host::HostInfo;

use oci_spec::runtime::{Linux, Process, Root, Spec, User};
use skiff_proto::runtime::v1 as cri;
use skiff_runtime::image::config::{ImageConfigFile, RunConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the pod sandbox provides to its containers.
#[derive(Debug, Clone, Default)]
pub struct SandboxPaths {
    /// The pinned network namespace; `None` = host network.
    pub netns: Option<PathBuf>,
    /// The pinned IPC namespace; `None` = host IPC.
    pub ipcns: Option<PathBuf>,
    /// The pinned UTS namespace; `None` = host UTS.
    pub utsns: Option<PathBuf>,
    /// The pod's shared PID namespace; `None` = a new one per container (unless `host_pid`).
    pub pidns: Option<PathBuf>,
    /// The pod uses the host's PID namespace.
    pub host_pid: bool,
    /// The pod's hostname (set in the UTS namespace and as `HOSTNAME`).
    pub hostname: String,
    /// The pod's `/etc/hosts`.
    pub hosts_file: PathBuf,
    /// The pod's `/etc/hostname`.
    pub hostname_file: PathBuf,
    /// The pod's `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// The pod's shared `/dev/shm`; `None` = a private tmpfs (or the host's with host IPC).
    pub shm_dir: Option<PathBuf>,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    /// The id of the pod sandbox it belongs to (for the `io.kubernetes.cri.sandbox-id`
    /// annotation).
    pub sandbox_id: &'a str,
    /// The CRI request's container config.
    pub config: &'a cri::ContainerConfig,
    /// The CRI request's sandbox config.
    pub sandbox_config: &'a cri::PodSandboxConfig,
    /// The image's config.
    pub image: &'a ImageConfigFile,
    /// The mounted container rootfs. `/etc/passwd` and `/etc/group` are read from it.
    pub rootfs: &'a Path,
    /// What the sandbox provides.
    pub sandbox: &'a SandboxPaths,
    /// `linux.cgroupsPath`, computed by the caller.
    pub cgroups_path: String,
    /// skiffd's own `oom_score_adj`: the container's is never set lower.
    pub current_oom_score_adj: i32,
}

/// Builds the OCI spec for a container on this host.
pub fn build_spec(inputs: &SpecInputs) -> Result<Spec, SpecError> {
    build_spec_on(inputs, &HostInfo::detect())
}

/// [`build_spec`] with the host facts given (tests use made-up ones).
pub fn build_spec_on(inputs: &SpecInputs, host: &HostInfo) -> Result<Spec, SpecError> {
    let config = inputs.config;
    let no_security = cri::LinuxContainerSecurityContext::default();
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&no_security);
    let resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let no_run_config = RunConfig::default();
    let image = inputs.image.config.as_ref().unwrap_or(&no_run_config);
    let sandbox = inputs.sandbox;

    if security.privileged && !sandbox_is_privileged(inputs.sandbox_config) {
        return Err(SpecError::Invalid(
            "a privileged container needs a privileged pod sandbox".to_string(),
        ));
    }
    let userns = security
        .namespace_options
        .as_ref()
        .and_then(|n| n.userns_options.as_ref())
        .map(|u| u.mode());
    if userns.is_some_and(|mode| mode != cri::NamespaceMode::Node) {
        return Err(SpecError::Unsupported("user namespaces"));
    }

    // HOSTNAME is the pod's hostname, or the host's for a host-network pod without one.
    let hostname = if sandbox.hostname.is_empty() {
        host.hostname.as_str()
    } else {
        sandbox.hostname.as_str()
    };
    let capabilities = caps::capability_set(security, host)?;
    let user = user::resolve(inputs.rootfs, security, image.user.as_deref())?;

    let mut oci_process = Process::default();
    oci_process
        .set_terminal(Some(config.tty))
        .set_args(Some(process::args(config, image)?))
        .set_env(Some(process::env(config, image, hostname)?))
        .set_cwd(process::cwd(config, image).into())
        .set_user(oci_user(&user))
        .set_capabilities(Some(caps::to_oci(&capabilities)))
        .set_no_new_privileges(Some(security.no_new_privs))
        .set_oom_score_adj(linux::oom_score_adj(
            resources,
            inputs.current_oom_score_adj,
        ))
        // No rlimits: the container inherits skiff's, as with containerd.
        .set_rlimits(None)
        // AppArmor and SELinux are not enabled on the hosts skiff targets.
        .set_apparmor_profile(None)
        .set_selinux_label(None);

    let mounts = mounts::plan(config, security, sandbox, &inputs.cgroups_path, host)?;
    let devices = devices::plan(config, security.privileged, host)?;
    let (masked, readonly) = mounts::masked_and_readonly(security);

    let mut oci_linux = Linux::default();
    oci_linux
        .set_namespaces(Some(linux::namespaces(sandbox, security.privileged, host)))
        .set_resources(Some(linux::resources(resources, devices.rules, host)))
        .set_cgroups_path(Some(PathBuf::from(&inputs.cgroups_path)))
        .set_devices((!devices.nodes.is_empty()).then_some(devices.nodes))
        .set_sysctl(linux::sysctls(inputs.sandbox_config, sandbox)?)
        .set_seccomp(seccomp::for_container(security, &capabilities, host)?)
        .set_rootfs_propagation(mounts.rootfs_propagation)
        .set_masked_paths(masked)
        .set_readonly_paths(readonly)
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_mount_label(None);

    let mut root = Root::default();
    root.set_path(inputs.rootfs.to_path_buf())
        .set_readonly(Some(security.readonly_rootfs));

    // Setting a hostname needs our own UTS namespace; a host-network pod has none.
    let spec_hostname =
        (sandbox.utsns.is_some() && sandbox.netns.is_some() && !sandbox.hostname.is_empty())
            .then(|| sandbox.hostname.clone());

    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(mounts.mounts))
        .set_process(Some(oci_process))
        .set_hostname(spec_hostname)
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(annotations(inputs)))
        .set_linux(Some(oci_linux));
    Ok(spec)
}

fn sandbox_is_privileged(sandbox_config: &cri::PodSandboxConfig) -> bool {
    sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
}

fn oci_user(user: &user::ResolvedUser) -> User {
    let mut oci = User::default();
    oci.set_uid(user.uid)
        .set_gid(user.gid)
        .set_additional_gids(Some(user.additional_gids.clone()));
    oci
}

/// The request's annotations plus the ones containerd sets, which tools (and NRI plugins)
/// use to tell what a container is.
fn annotations(inputs: &SpecInputs) -> HashMap<String, String> {
    let config = inputs.config;
    let metadata = inputs.sandbox_config.metadata.clone().unwrap_or_default();
    let mut annotations = config.annotations.clone();
    let cri_annotations = [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        (
            "io.kubernetes.cri.sandbox-id",
            inputs.sandbox_id.to_string(),
        ),
        ("io.kubernetes.cri.sandbox-name", metadata.name),
        ("io.kubernetes.cri.sandbox-namespace", metadata.namespace),
        ("io.kubernetes.cri.sandbox-uid", metadata.uid),
        (
            "io.kubernetes.cri.container-name",
            config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        ),
        (
            "io.kubernetes.cri.image-name",
            config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
        ),
    ];
    for (key, value) in cri_annotations {
        annotations.insert(key.to_string(), value);
    }
    annotations
}
