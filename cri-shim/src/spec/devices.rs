//! Device nodes (`linux.devices`) and the device cgroup rules that let the container use them.

use super::{HostInfo, SpecError};
use nix::sys::stat::{major, minor};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};
use skiff_proto::runtime::v1 as cri;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Device nodes to create and the device cgroup rules.
#[derive(Debug, Default)]
pub(super) struct DevicePlan {
    pub nodes: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// `/dev` entries never copied into a privileged container: mounts of their own, and the
/// console the runtime sets up.
const SKIPPED_DEV_ENTRIES: &[&str] = &[
    "pts",
    "shm",
    "fd",
    "mqueue",
    "console",
    ".lxc",
    ".lxd-mounts",
    ".udev",
];

/// Privileged containers get every host device and may use any device; others get the
/// requested devices only (the runtime adds the standard /dev/null, /dev/zero... itself).
pub(super) fn plan(
    config: &cri::ContainerConfig,
    privileged: bool,
    host: &HostInfo,
) -> Result<DevicePlan, SpecError> {
    let mut plan = DevicePlan::default();
    if privileged {
        plan.nodes = walk_devices(&host.dev_dir, Path::new("/dev"))
            .map_err(|e| SpecError::host_path(&host.dev_dir, e))?;
        plan.rules.push(rule(true, None, "rwm"));
    } else {
        plan.rules.push(rule(false, None, "rwm"));
    }

    for device in &config.devices {
        let container_path = Path::new(&device.container_path);
        if !container_path.starts_with("/dev/") {
            return Err(SpecError::Invalid(format!(
                "device path {:?} is not under /dev",
                device.container_path
            )));
        }
        let access = match device.permissions.as_str() {
            "" => "rwm",
            p if p.chars().all(|c| "rwm".contains(c)) => p,
            p => {
                return Err(SpecError::Invalid(format!(
                    "device permissions {p:?} for {} are not a combination of r, w and m",
                    device.host_path
                )))
            }
        };
        let host_path = fs::canonicalize(&device.host_path)
            .map_err(|e| SpecError::host_path(&device.host_path, e))?;
        let meta = fs::metadata(&host_path).map_err(|e| SpecError::host_path(&host_path, e))?;
        let nodes = if meta.is_dir() {
            // A directory (e.g. /dev/snd) brings every device below it.
            walk_devices(&host_path, container_path)
                .map_err(|e| SpecError::host_path(&host_path, e))?
        } else {
            match device_node(container_path.to_path_buf(), &meta) {
                Some(node) => vec![node],
                None => {
                    return Err(SpecError::HostPathUnsuitable {
                        path: host_path,
                        reason: "not a character or block device".to_string(),
                    })
                }
            }
        };
        for node in nodes {
            plan.rules.push(rule(true, Some(&node), access));
            // A requested device replaces a host device at the same path.
            plan.nodes.retain(|n| n.path() != node.path());
            plan.nodes.push(node);
        }
    }
    Ok(plan)
}

/// A device cgroup rule for one device, or for all devices (`node: None`).
fn rule(allow: bool, node: Option<&LinuxDevice>, access: &str) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow).set_access(Some(access.to_string()));
    if let Some(node) = node {
        rule.set_typ(Some(node.typ()))
            .set_major(Some(node.major()))
            .set_minor(Some(node.minor()));
    } else {
        rule.set_typ(Some(LinuxDeviceType::A));
    }
    rule
}

/// The device node for `meta` at `container_path`, or `None` if it is not a device.
fn device_node(container_path: PathBuf, meta: &fs::Metadata) -> Option<LinuxDevice> {
    let file_type = meta.file_type();
    let typ = if file_type.is_char_device() {
        LinuxDeviceType::C
    } else if file_type.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    let mut node = LinuxDevice::default();
    node.set_path(container_path)
        .set_typ(typ)
        .set_major(major(rdev) as i64)
        .set_minor(minor(rdev) as i64)
        .set_file_mode(Some(meta.mode() & 0o777))
        .set_uid(Some(meta.uid()))
        .set_gid(Some(meta.gid()));
    Some(node)
}

/// Every device node below `dir` (symlinks not followed), placed below `container_dir`.
fn walk_devices(dir: &Path, container_dir: &Path) -> std::io::Result<Vec<LinuxDevice>> {
    let mut nodes = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIPPED_DEV_ENTRIES.iter().any(|s| name == *s) {
            continue;
        }
        // A device can vanish while we walk; skip it rather than fail the container.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let container_path = container_dir.join(&name);
        if meta.is_dir() {
            nodes.extend(walk_devices(&entry.path(), &container_path)?);
        } else if let Some(node) = device_node(container_path, &meta) {
            nodes.push(node);
        }
    }
    Ok(nodes)
}
