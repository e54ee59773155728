//! The few host facts a spec depends on, gathered in one place so tests can fake them.

use super::caps::ALL_CAPABILITIES;
use oci_spec::runtime::Capability;
use std::fs;
use std::path::{Path, PathBuf};

/// Host facts that change what a correct spec looks like.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `/sys/fs/cgroup` is a pure cgroup v2 mount (containers then get a cgroup namespace).
    pub cgroup2_unified: bool,
    /// Swap can be limited (`memory.memsw.*` on v1, `memory.swap.max` on v2); setting a swap
    /// limit without it makes container creation fail.
    pub swap_limit: bool,
    /// The hugetlb controller is where the runtime's cgroup manager looks for it.
    pub hugetlb: bool,
    /// The capabilities in skiff's own bounding set. "All capabilities" means these: asking
    /// for one the runtime lacks (here CAP_SYS_RESOURCE) makes `capset` fail.
    pub capabilities: Vec<Capability>,
    /// Running kernel `(major, minor)`, for `minKernel` conditions in seccomp profiles.
    pub kernel: (u32, u32),
    /// The host's hostname, for `HOSTNAME` when the pod has none (host network).
    pub hostname: String,
    /// Where to read the mount table (`/proc/self/mountinfo`), to check mount propagation.
    pub mountinfo: PathBuf,
    /// The host's `/dev`, walked to give privileged containers every host device.
    pub dev_dir: PathBuf,
}

impl HostInfo {
    /// Looks at this host. Cheap (a statfs and a few small files), so it runs per container.
    pub fn detect() -> HostInfo {
        let cgroup2_unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        let swap_limit = if cgroup2_unified {
            own_cgroup_v2()
                .is_some_and(|cg| cgroup_root().join(cg).join("memory.swap.max").exists())
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
        let hugetlb = if cgroup2_unified {
            fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "hugetlb"))
        } else {
            Path::new("/sys/fs/cgroup/hugetlb").is_dir()
        };
        let capabilities = match bounding_set() {
            Some(mask) => ALL_CAPABILITIES
                .iter()
                .filter(|(_, bit)| mask & (1u64 << bit) != 0)
                .map(|(cap, _)| *cap)
                .collect(),
            None => ALL_CAPABILITIES.iter().map(|(cap, _)| *cap).collect(),
        };
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| parse_kernel_version(&release))
            .unwrap_or((0, 0));
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        HostInfo {
            cgroup2_unified,
            swap_limit,
            hugetlb,
            capabilities,
            kernel,
            hostname,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

fn cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

/// Our cgroup v2 path relative to the cgroup root, from the `0::/path` line.
fn own_cgroup_v2() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_start_matches('/').to_string())
}

/// `CapBnd` of `/proc/self/status` as a bit mask.
fn bounding_set() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `"6.1.0-18-amd64"` → `(6, 1)`.
pub(super) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
