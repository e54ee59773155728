//! Process capabilities: Docker's default set, CRI add/drop, privileged.

use super::{HostInfo, SpecError};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use skiff_proto::runtime::v1 as cri;

/// The capabilities Docker and containerd give a container by default.
pub(super) const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows, with its bit number in the kernel's capability masks.
pub(super) const ALL_CAPABILITIES: [(Capability, u32); 41] = [
    (Capability::Chown, 0),
    (Capability::DacOverride, 1),
    (Capability::DacReadSearch, 2),
    (Capability::Fowner, 3),
    (Capability::Fsetid, 4),
    (Capability::Kill, 5),
    (Capability::Setgid, 6),
    (Capability::Setuid, 7),
    (Capability::Setpcap, 8),
    (Capability::LinuxImmutable, 9),
    (Capability::NetBindService, 10),
    (Capability::NetBroadcast, 11),
    (Capability::NetAdmin, 12),
    (Capability::NetRaw, 13),
    (Capability::IpcLock, 14),
    (Capability::IpcOwner, 15),
    (Capability::SysModule, 16),
    (Capability::SysRawio, 17),
    (Capability::SysChroot, 18),
    (Capability::SysPtrace, 19),
    (Capability::SysPacct, 20),
    (Capability::SysAdmin, 21),
    (Capability::SysBoot, 22),
    (Capability::SysNice, 23),
    (Capability::SysResource, 24),
    (Capability::SysTime, 25),
    (Capability::SysTtyConfig, 26),
    (Capability::Mknod, 27),
    (Capability::Lease, 28),
    (Capability::AuditWrite, 29),
    (Capability::AuditControl, 30),
    (Capability::Setfcap, 31),
    (Capability::MacOverride, 32),
    (Capability::MacAdmin, 33),
    (Capability::Syslog, 34),
    (Capability::WakeAlarm, 35),
    (Capability::BlockSuspend, 36),
    (Capability::AuditRead, 37),
    (Capability::Perfmon, 38),
    (Capability::Bpf, 39),
    (Capability::CheckpointRestore, 40),
];

/// Parses a capability name as CRI clients write it: `NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`.
pub(super) fn parse(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse().ok()
}

/// The container's capability set: privileged gets everything the host has; otherwise the
/// default set, then `ALL` adds/drops, then the named adds, then the named drops (containerd's
/// order, so `add: [ALL], drop: [CHOWN]` is everything but CHOWN).
pub(super) fn capability_set(
    security: &cri::LinuxContainerSecurityContext,
    host: &HostInfo,
) -> Result<Capabilities, SpecError> {
    let all = || host.capabilities.iter().copied().collect::<Capabilities>();
    if security.privileged {
        return Ok(all());
    }
    let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let (add, drop) = match &security.capabilities {
        Some(c) => (
            c.add_capabilities.as_slice(),
            c.drop_capabilities.as_slice(),
        ),
        None => (&[][..], &[][..]),
    };
    let is_all = |name: &String| name.trim().eq_ignore_ascii_case("ALL");
    if add.iter().any(is_all) {
        set = all();
    }
    if drop.iter().any(is_all) {
        set.clear();
    }
    for name in add.iter().filter(|n| !is_all(n)) {
        set.insert(parse_or_invalid(name)?);
    }
    for name in drop.iter().filter(|n| !is_all(n)) {
        set.remove(&parse_or_invalid(name)?);
    }
    Ok(set)
}

fn parse_or_invalid(name: &str) -> Result<Capability, SpecError> {
    parse(name).ok_or_else(|| SpecError::Invalid(format!("unknown capability {name:?}")))
}

/// The OCI form. Like containerd: no inheritable or ambient capabilities, so a non-root
/// process loses its capabilities at `execve` (Kubernetes is not ambient-aware).
pub(super) fn to_oci(set: &Capabilities) -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set.clone()))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    caps
}
