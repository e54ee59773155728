//! Seccomp: choosing the profile a container asks for and turning it into `linux.seccomp`.
//!
//! Profiles are written in Docker's format (what Kubernetes users put under
//! `/var/lib/kubelet/seccomp`, and what the RuntimeDefault profile in [`super::seccomp_default`]
//! is): the plain OCI form plus `archMap` and per-rule `includes`/`excludes` conditions on the
//! container's capabilities, the CPU architecture and the kernel version. [`Profile::to_oci`]
//! evaluates those conditions for one container.

use super::{caps, seccomp_default, HostInfo, SpecError};
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;
use skiff_proto::runtime::v1 as cri;
use std::path::Path;

/// A seccomp profile in Docker's format (the plain OCI format parses too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// Native architecture → the extra ones its syscalls can come in as (x86_64 → x86, x32).
    #[serde(default)]
    pub arch_map: Vec<ArchMap>,
    /// The OCI form of the same, used when `archMap` is absent.
    #[serde(default)]
    pub architectures: Vec<Arch>,
    #[serde(default)]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// One `archMap` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

/// One syscall rule, applied only when its conditions hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rule {
    /// Old single-name form.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<Arg>,
    /// The rule applies only if all of these hold.
    #[serde(default)]
    pub includes: Filter,
    /// The rule is dropped if any of these holds.
    #[serde(default)]
    pub excludes: Filter,
}

/// A condition on one syscall argument. For `SCMP_CMP_MASKED_EQ`, `value` is the mask and
/// `value_two` the expected result (runc's reading of the OCI format).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg {
    pub index: usize,
    pub value: u64,
    #[serde(default)]
    pub value_two: Option<u64>,
    pub op: LinuxSeccompOperator,
}

impl Arg {
    fn to_oci(self) -> Result<LinuxSeccompArg, SpecError> {
        let mut builder = LinuxSeccompArgBuilder::default()
            .index(self.index)
            .value(self.value)
            .op(self.op);
        if let Some(two) = self.value_two {
            builder = builder.value_two(two);
        }
        builder
            .build()
            .map_err(|e| SpecError::Invalid(format!("seccomp argument condition: {e}")))
    }
}

/// Conditions of a [`Rule`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filter {
    /// Capability names (`CAP_SYS_ADMIN`).
    #[serde(default)]
    pub caps: Vec<String>,
    /// Go-style architecture names (`amd64`, `arm64`, `s390x`...).
    #[serde(default)]
    pub arches: Vec<String>,
    /// `"4.8"`.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

impl Profile {
    /// The OCI seccomp section for a container with capabilities `caps` on `host`.
    pub fn to_oci(&self, caps: &Capabilities, host: &HostInfo) -> Result<LinuxSeccomp, SpecError> {
        let native = native_arch();
        let architectures = match self
            .arch_map
            .iter()
            .find(|m| Some(m.architecture) == native)
        {
            Some(map) => std::iter::once(map.architecture)
                .chain(map.sub_architectures.iter().flatten().copied())
                .collect(),
            None if self.arch_map.is_empty() => self.architectures.clone(),
            // An archMap without this machine's architecture: the native one only.
            None => Vec::new(),
        };
        let has_cap = |name: &String| caps::parse(name).is_some_and(|c| caps.contains(&c));
        let arch = go_arch();
        let kernel_at_least = |min: &Option<String>| {
            min.as_deref()
                .and_then(super::host::parse_kernel_version)
                .is_none_or(|min| host.kernel >= min)
        };
        let syscalls: Vec<LinuxSyscall> = self
            .syscalls
            .iter()
            .filter(|r| r.includes.caps.iter().all(has_cap))
            .filter(|r| r.includes.arches.is_empty() || r.includes.arches.iter().any(|a| a == arch))
            .filter(|r| kernel_at_least(&r.includes.min_kernel))
            .filter(|r| !r.excludes.caps.iter().any(has_cap))
            .filter(|r| !r.excludes.arches.iter().any(|a| a == arch))
            .filter(|r| r.excludes.min_kernel.is_none() || !kernel_at_least(&r.excludes.min_kernel))
            .map(|rule| {
                let names = rule.name.iter().chain(&rule.names).cloned().collect();
                let args = rule
                    .args
                    .iter()
                    .map(|arg| arg.to_oci())
                    .collect::<Result<Vec<_>, _>>()?;
                let mut syscall = LinuxSyscall::default();
                syscall
                    .set_names(names)
                    .set_action(rule.action)
                    .set_errno_ret(rule.errno_ret)
                    .set_args((!args.is_empty()).then_some(args));
                Ok(syscall)
            })
            .collect::<Result<_, SpecError>>()?;

        let mut seccomp = LinuxSeccomp::default();
        seccomp
            .set_default_action(self.default_action)
            .set_default_errno_ret(self.default_errno_ret)
            .set_architectures((!architectures.is_empty()).then_some(architectures))
            .set_flags((!self.flags.is_empty()).then(|| self.flags.clone()))
            .set_syscalls(Some(syscalls));
        Ok(seccomp)
    }
}

/// What the container asked for, after folding in the deprecated `seccomp_profile_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

/// The `linux.seccomp` section, or `None` for an unconfined (or privileged) container.
///
/// `seccomp` wins over the deprecated `seccomp_profile_path`, whose empty value means
/// unconfined (what containerd and critest expect).
pub(super) fn for_container(
    security: &cri::LinuxContainerSecurityContext,
    caps: &Capabilities,
    host: &HostInfo,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if security.privileged {
        return Ok(None);
    }
    let choice = match &security.seccomp {
        Some(profile) => match profile.profile_type() {
            cri::security_profile::ProfileType::RuntimeDefault => Choice::RuntimeDefault,
            cri::security_profile::ProfileType::Unconfined => Choice::Unconfined,
            cri::security_profile::ProfileType::Localhost => {
                // Kubelet sends a bare path; older clients may still prefix it.
                let path = profile.localhost_ref.as_str();
                Choice::Localhost(path.strip_prefix("localhost/").unwrap_or(path).to_string())
            }
        },
        // Deprecated, but older clients (and critest) still send it.
        #[allow(deprecated)]
        None => match security.seccomp_profile_path.as_str() {
            "" | "unconfined" => Choice::Unconfined,
            "runtime/default" | "docker/default" => Choice::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => Choice::Localhost(path.to_string()),
                None => {
                    return Err(SpecError::Invalid(format!(
                        "unknown seccomp profile {other:?} (want runtime/default, unconfined or localhost/<path>)"
                    )))
                }
            },
        },
    };
    Ok(match choice {
        Choice::Unconfined => None,
        Choice::RuntimeDefault => Some(seccomp_default::profile().to_oci(caps, host)?),
        Choice::Localhost(path) => Some(load(Path::new(&path))?.to_oci(caps, host)?),
    })
}

/// Reads a Localhost profile.
fn load(path: &Path) -> Result<Profile, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::Invalid(format!(
            "seccomp profile path {} is not absolute",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| SpecError::host_path(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        source,
    })
}

/// This machine's seccomp architecture, to pick the `archMap` entry.
fn native_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::ScmpArchX86_64),
        "x86" => Some(Arch::ScmpArchX86),
        "aarch64" => Some(Arch::ScmpArchAarch64),
        "arm" => Some(Arch::ScmpArchArm),
        "riscv64" => Some(Arch::ScmpArchRiscv64),
        "s390x" => Some(Arch::ScmpArchS390x),
        "powerpc64" if cfg!(target_endian = "little") => Some(Arch::ScmpArchPpc64le),
        "loongarch64" => Some(Arch::ScmpArchLoongarch64),
        _ => None,
    }
}

/// This machine's architecture as profiles name it in `includes.arches` (Go's GOARCH).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}
