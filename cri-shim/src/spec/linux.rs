//! The Linux-specific parts that do not touch files: namespaces, sysctls, cgroup resources
//! and the OOM score.

use super::{HostInfo, SandboxPaths, SpecError};
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxResources,
};
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::path::PathBuf;

/// The container's namespaces: the pod's network, IPC and UTS namespaces (none = the
/// host's), the pod's or a new PID namespace (none with host PID), a new mount namespace and,
/// on cgroup v2, a new cgroup namespace so `/sys/fs/cgroup` shows the container's own tree.
pub(super) fn namespaces(
    sandbox: &SandboxPaths,
    privileged: bool,
    host: &HostInfo,
) -> Vec<LinuxNamespace> {
    let mut list = Vec::new();
    let mut push = |typ, path: Option<&PathBuf>| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ).set_path(path.cloned());
        list.push(ns);
    };
    if !sandbox.host_pid {
        push(LinuxNamespaceType::Pid, sandbox.pidns.as_ref());
    }
    if let Some(path) = &sandbox.netns {
        push(LinuxNamespaceType::Network, Some(path));
    }
    if let Some(path) = &sandbox.ipcns {
        push(LinuxNamespaceType::Ipc, Some(path));
    }
    if let Some(path) = &sandbox.utsns {
        push(LinuxNamespaceType::Uts, Some(path));
    }
    push(LinuxNamespaceType::Mount, None);
    // Not on cgroup v1 (compatibility) nor for privileged containers, as containerd does.
    if host.cgroup2_unified && !privileged {
        push(LinuxNamespaceType::Cgroup, None);
    }
    list
}

/// IPC sysctls the kernel namespaces with the IPC namespace (plus `fs.mqueue.*`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The pod's sysctls, checked up front: only namespaced ones, and never in a namespace
/// shared with the host (a `net.*` sysctl in a host-network pod would change the host).
pub(super) fn sysctls(
    sandbox_config: &cri::PodSandboxConfig,
    sandbox: &SandboxPaths,
) -> Result<Option<HashMap<String, String>>, SpecError> {
    let Some(linux) = &sandbox_config.linux else {
        return Ok(None);
    };
    if linux.sysctls.is_empty() {
        return Ok(None);
    }
    let reject = |name: &str, why: &str| {
        Err(SpecError::Invalid(format!(
            "sysctl {name:?} is not allowed: {why}"
        )))
    };
    for name in linux.sysctls.keys() {
        let dotted = name.replace('/', ".");
        if IPC_SYSCTLS.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
            if sandbox.ipcns.is_none() {
                return reject(name, "the pod shares the host's IPC namespace");
            }
        } else if dotted.starts_with("net.") {
            if sandbox.netns.is_none() {
                return reject(name, "the pod uses the host network");
            }
        } else if dotted == "kernel.domainname" {
            if sandbox.utsns.is_none() {
                return reject(name, "the pod shares the host's UTS namespace");
            }
        } else {
            return reject(name, "it is not namespaced");
        }
    }
    Ok(Some(linux.sysctls.clone()))
}

/// `process.oomScoreAdj`: the requested value, but never below skiff's own. Lowering it needs
/// CAP_SYS_RESOURCE, which some hosts (this project's CI) do not give even to root, and the
/// runtime then fails in a confusing way.
pub(super) fn oom_score_adj(
    resources: Option<&cri::LinuxContainerResources>,
    current: i32,
) -> Option<i32> {
    // The kernel's range; clamping first makes the cast lossless.
    let requested = resources?.oom_score_adj.clamp(-1000, 1000) as i32;
    if requested < current {
        tracing::info!(
            requested,
            current,
            "raising oom_score_adj to skiffd's own: lowering it needs CAP_SYS_RESOURCE"
        );
        return Some(current);
    }
    Some(requested)
}

/// `linux.resources`: CPU, memory, hugepages and the v2 `unified` map from the request, plus
/// the device cgroup rules.
pub(super) fn resources(
    requested: Option<&cri::LinuxContainerResources>,
    device_rules: Vec<LinuxDeviceCgroup>,
    host: &HostInfo,
) -> LinuxResources {
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(device_rules));
    let Some(r) = requested else {
        return resources;
    };

    let mut cpu = LinuxCpu::default();
    let positive_u64 = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    cpu.set_shares(positive_u64(r.cpu_shares))
        .set_period(positive_u64(r.cpu_period))
        .set_quota((r.cpu_quota != 0).then_some(r.cpu_quota))
        .set_cpus((!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()))
        .set_mems((!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()));
    if cpu != LinuxCpu::default() {
        resources.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
    }
    if host.swap_limit {
        // Swap limit = memory limit by default, so the container cannot swap (containerd).
        let swap = match r.memory_swap_limit_in_bytes {
            0 => memory.limit(),
            swap => Some(swap),
        };
        memory.set_swap(swap);
    }
    if memory != LinuxMemory::default() {
        resources.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        if host.hugetlb {
            let limits = r
                .hugepage_limits
                .iter()
                .map(|h| {
                    let mut limit = LinuxHugepageLimit::default();
                    limit
                        .set_page_size(h.page_size.clone())
                        .set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
                    limit
                })
                .collect();
            resources.set_hugepage_limits(Some(limits));
        } else {
            // containerd's default (tolerate_missing_hugetlb_controller) does the same.
            tracing::warn!("hugetlb cgroup controller missing: ignoring hugepage limits");
        }
    }

    if !r.unified.is_empty() {
        resources.set_unified(Some(r.unified.clone()));
    }
    resources
}
