//! Mounts: the standard Linux filesystems, the pod's files (`/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`, `/dev/shm`) and the request's bind mounts; and the masked and read-only
//! `/proc` and `/sys` paths.

use super::{HostInfo, SandboxPaths, SpecError};
use oci_spec::runtime::Mount;
use skiff_proto::runtime::v1 as cri;
use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Paths hidden from unprivileged containers (host information or kernel attack surface).
pub(super) const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths unprivileged containers see read-only.
pub(super) const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The mounts of a container, in mount order, and the root mount's propagation.
#[derive(Debug)]
pub(super) struct MountPlan {
    pub mounts: Vec<Mount>,
    /// `rshared`/`rslave` when a bind mount needs propagation through the root mount.
    pub rootfs_propagation: Option<String>,
}

/// Builds the mount list as containerd does: default filesystems (minus those a bind mount
/// replaces, and everything under `/dev` if `/dev` itself is bind-mounted), then the bind
/// mounts sorted by depth so `/a` is mounted before `/a/b`.
pub(super) fn plan(
    config: &cri::ContainerConfig,
    security: &cri::LinuxContainerSecurityContext,
    sandbox: &SandboxPaths,
    cgroups_path: &str,
    host: &HostInfo,
) -> Result<MountPlan, SpecError> {
    let mut propagation: Option<&'static str> = None;
    let mut binds = Vec::new();
    for mount in &config.mounts {
        binds.push(request_bind(mount, host, &mut propagation)?);
    }
    let requested: HashSet<PathBuf> = binds.iter().map(|m| m.destination().clone()).collect();

    // The pod's files, unless the request mounts its own (kubelet manages /etc/hosts itself).
    let readonly = security.readonly_rootfs;
    let pod_files = [
        ("/etc/hostname", &sandbox.hostname_file),
        ("/etc/hosts", &sandbox.hosts_file),
        ("/etc/resolv.conf", &sandbox.resolv_conf),
    ];
    for (destination, source) in pod_files {
        // Like containerd, a file the sandbox did not create is simply not mounted.
        if !requested.contains(Path::new(destination)) && source.exists() {
            binds.push(bind(
                source.clone(),
                destination.into(),
                "rprivate",
                readonly,
            ));
        }
    }
    // The pod's shared /dev/shm; with host IPC, the host's (its POSIX shm lives there).
    let shm = match (&sandbox.shm_dir, &sandbox.ipcns) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(PathBuf::from("/dev/shm")),
        (None, Some(_)) => None,
    };
    if let Some(shm) = shm.filter(|_| !requested.contains(Path::new("/dev/shm"))) {
        binds.push(bind(shm, "/dev/shm".into(), "rprivate", false));
    }

    binds.sort_by_key(|m| m.destination().components().count());
    let bind_targets: HashSet<PathBuf> = binds.iter().map(|m| m.destination().clone()).collect();
    let dev_replaced = bind_targets.contains(Path::new("/dev"));
    let mut mounts: Vec<Mount> = Vec::new();
    for mount in default_mounts(security.privileged) {
        if bind_targets.contains(mount.destination())
            || (dev_replaced && mount.destination().starts_with("/dev"))
        {
            continue;
        }
        if mount.typ().as_deref() == Some("cgroup") && !host.cgroup2_unified {
            mounts.extend(cgroup_v1_mounts(cgroups_path, host, !security.privileged)?);
        } else {
            mounts.push(mount);
        }
    }
    mounts.extend(binds);
    Ok(MountPlan {
        mounts,
        rootfs_propagation: propagation.map(str::to_string),
    })
}

/// The filesystems every container gets. Privileged containers get `/sys` and the cgroup
/// tree read-write.
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys],
        ),
    ]
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(destination.into())
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

/// The controllers the runtime's cgroup manager (libcgroups v1) puts every container in, each
/// in a directory `<cgroups_path>` of its hierarchy.
const MANAGED_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The container's view of its cgroups on a cgroup v1 host, as runc mounts it: a tmpfs at
/// `/sys/fs/cgroup` and, for each controller hierarchy, a bind mount of the container's own
/// cgroup there (under each controller's name too when several share a hierarchy, where runc
/// makes symlinks).
///
/// Why not an OCI `cgroup` mount, which libcontainer (0.7) emulates the same way: to learn
/// which prefix to strip from cgroup paths it reads `/proc/<pid>/cgroup` from the host's
/// `/proc`, with the PID the container's init has in its own PID namespace. In a pod-shared PID
/// namespace that PID names an unrelated host process, or none, and then the container fails
/// to start with "failed to prepare rootfs" (critest's multi-container specs hit it).
fn cgroup_v1_mounts(
    cgroups_path: &str,
    host: &HostInfo,
    readonly: bool,
) -> Result<Vec<Mount>, SpecError> {
    let table = fs::read_to_string(&host.mountinfo)
        .map_err(|e| SpecError::host_path(&host.mountinfo, e))?;
    let root = Path::new("/sys/fs/cgroup");
    let mut tmpfs = Mount::default();
    tmpfs
        .set_destination(root.into())
        .set_typ(Some("tmpfs".to_string()))
        .set_source(Some("tmpfs".into()))
        .set_options(Some(
            // Read-write even for read-only containers: the binds need their mount points.
            ["rw", "nosuid", "noexec", "nodev", "mode=755"]
                .map(String::from)
                .to_vec(),
        ));
    let hierarchies = cgroup_v1_hierarchies(&table);
    let mut mounts = vec![tmpfs];
    let own = cgroups_path.trim_start_matches('/');
    for (dir, controllers) in &hierarchies {
        let source = root.join(dir).join(own);
        // `cpu,cpuacct` is also reachable as `cpu` and `cpuacct`, unless those are
        // hierarchies of their own.
        let aliases = controllers
            .iter()
            .filter(|c| *c != dir && !hierarchies.iter().any(|(d, _)| d == *c));
        for name in std::iter::once(dir).chain(aliases) {
            mounts.push(bind(source.clone(), root.join(name), "rprivate", readonly));
        }
    }
    Ok(mounts)
}

/// The cgroup v1 hierarchies mounted directly under `/sys/fs/cgroup` in a mountinfo `table`
/// that hold a managed controller: each one's directory name and its controllers.
fn cgroup_v1_hierarchies(table: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(&"cgroup"), Some(options)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
        else {
            continue;
        };
        let Some(dir) = unescape_octal(point)
            .strip_prefix("/sys/fs/cgroup/")
            .filter(|d| !d.is_empty() && !d.contains('/'))
            .map(str::to_string)
        else {
            continue;
        };
        let controllers: Vec<String> = options
            .split(',')
            .filter(|o| MANAGED_CONTROLLERS.contains(o))
            .map(str::to_string)
            .collect();
        if !controllers.is_empty() && !found.iter().any(|(d, _)| *d == dir) {
            found.push((dir, controllers));
        }
    }
    found
}

fn bind(source: PathBuf, destination: PathBuf, propagation: &str, readonly: bool) -> Mount {
    let mode = if readonly { "ro" } else { "rw" };
    let mut mount = Mount::default();
    mount
        .set_destination(destination)
        .set_typ(Some("bind".to_string()))
        .set_source(Some(source))
        .set_options(Some(vec![
            "rbind".to_string(),
            propagation.to_string(),
            mode.to_string(),
        ]));
    mount
}

/// A CRI mount as an OCI bind mount. The host path must exist and is canonicalized first:
/// a host path that is a symlink mounts its target (critest checks this).
fn request_bind(
    mount: &cri::Mount,
    host: &HostInfo,
    rootfs_propagation: &mut Option<&'static str>,
) -> Result<Mount, SpecError> {
    let destination = clean_container_path(&mount.container_path)?;
    if mount
        .image
        .as_ref()
        .is_some_and(|image| !image.image.is_empty())
    {
        return Err(SpecError::Unsupported("mounting an image as a volume"));
    }
    if mount.recursive_read_only {
        return Err(SpecError::Unsupported("recursive read-only mounts"));
    }
    if mount.host_path.is_empty() {
        return Err(SpecError::Invalid(format!(
            "mount at {} has no host path",
            mount.container_path
        )));
    }
    let source = fs::canonicalize(&mount.host_path)
        .map_err(|e| SpecError::host_path(&mount.host_path, e))?;
    // The root's propagation takes the spec's words (shared, slave): runc also takes rshared and
    // rslave there, libcontainer refuses them; the root is always changed recursively.
    let propagation = match mount.propagation() {
        cri::MountPropagation::PropagationPrivate => "rprivate",
        cri::MountPropagation::PropagationHostToContainer => {
            require_propagation(&source, host, false)?;
            if *rootfs_propagation != Some("shared") {
                *rootfs_propagation = Some("slave");
            }
            "rslave"
        }
        cri::MountPropagation::PropagationBidirectional => {
            require_propagation(&source, host, true)?;
            *rootfs_propagation = Some("shared");
            "rshared"
        }
    };
    Ok(bind(source, destination, propagation, mount.readonly))
}

/// Mount events can only reach the container if the host mount holding `source` is shared
/// (or, for host-to-container, a slave); otherwise fail now rather than silently not
/// propagating.
fn require_propagation(
    source: &Path,
    host: &HostInfo,
    bidirectional: bool,
) -> Result<(), SpecError> {
    let table = fs::read_to_string(&host.mountinfo)
        .map_err(|e| SpecError::host_path(&host.mountinfo, e))?;
    let (mount_point, optional) = mount_holding(&table, source).unwrap_or_default();
    let shared = optional.iter().any(|f| f.starts_with("shared:"));
    let slave = optional.iter().any(|f| f.starts_with("master:"));
    if shared || (slave && !bidirectional) {
        return Ok(());
    }
    let (wanted, mode) = if bidirectional {
        ("shared", "bidirectional")
    } else {
        ("shared or slave", "host-to-container")
    };
    Err(SpecError::HostPathUnsuitable {
        path: source.to_path_buf(),
        reason: format!(
            "it is on mount {} which is not {wanted}, as {mode} mount propagation needs",
            mount_point.display()
        ),
    })
}

/// The mount point holding `path` in a `/proc/self/mountinfo` table, with its optional
/// fields (`shared:N`, `master:N`). The deepest mount point wins; among mounts stacked on the
/// same point, the last one (the visible one).
fn mount_holding(table: &str, path: &Path) -> Option<(PathBuf, Vec<String>)> {
    let mut best: Option<(PathBuf, Vec<String>)> = None;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| PathBuf::from(unescape_octal(p))) else {
            continue;
        };
        if !path.starts_with(&point) {
            continue;
        }
        let deeper = best
            .as_ref()
            .is_none_or(|(b, _)| point.components().count() >= b.components().count());
        if deeper {
            let optional = fields
                .iter()
                .skip(6)
                .take_while(|f| **f != "-")
                .map(|f| f.to_string())
                .collect();
            best = Some((point, optional));
        }
    }
    best
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`-style octal escapes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match escape {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An absolute container path with `.`, `..` and repeated slashes resolved lexically.
pub(super) fn clean_container_path(path: &str) -> Result<PathBuf, SpecError> {
    if !path.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "container path {path:?} is not absolute"
        )));
    }
    let mut clean = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

/// `linux.maskedPaths` and `linux.readonlyPaths`: none for privileged containers, else the
/// request's lists (kubelet sends them) or the defaults.
pub(super) fn masked_and_readonly(
    security: &cri::LinuxContainerSecurityContext,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if security.privileged {
        return (None, None);
    }
    let or_default = |given: &[String], default: &[&str]| {
        if given.is_empty() {
            default.iter().map(|p| p.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    (
        Some(or_default(&security.masked_paths, DEFAULT_MASKED_PATHS)),
        Some(or_default(&security.readonly_paths, DEFAULT_READONLY_PATHS)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_hierarchies_are_the_managed_controllers_under_sys_fs_cgroup() {
        let table = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory
35 1 0:30 / /elsewhere/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup_v1_hierarchies(table),
            [
                (
                    "cpu,cpuacct".to_string(),
                    vec!["cpu".to_string(), "cpuacct".to_string()]
                ),
                ("memory".to_string(), vec!["memory".to_string()]),
            ]
        );
    }

    #[test]
    fn mountinfo_lookup_picks_the_deepest_visible_mount() {
        let table = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 27 254:0 /x /mnt/a\\040b rw,relatime - ext4 /dev/vda rw
43 27 0:50 / /mnt/a\\040b rw,relatime master:7 - tmpfs tmpfs rw
";
        let (point, optional) = mount_holding(table, Path::new("/mnt/a b/c")).unwrap();
        assert_eq!(point, Path::new("/mnt/a b"));
        assert_eq!(optional, vec!["master:7"]);
        let (point, optional) = mount_holding(table, Path::new("/srv")).unwrap();
        assert_eq!(point, Path::new("/"));
        assert_eq!(optional, vec!["shared:1"]);
    }

    #[test]
    fn container_paths_are_cleaned() {
        assert_eq!(
            clean_container_path("/a//b/./c/../d/").unwrap(),
            Path::new("/a/b/d")
        );
        assert_eq!(clean_container_path("/../..").unwrap(), Path::new("/"));
        assert!(clean_container_path("relative").is_err());
    }
}
