//! Where a container's files live. The bundle (config.json, the rootfs mount point and the
//! monitor's files) is under the state dir; the writable overlay layer is under the root dir so
//! it is on disk, not in tmpfs.

use std::path::{Path, PathBuf};

/// The files of one container.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    /// The OCI bundle directory.
    pub bundle: PathBuf,
    /// The overlayfs mount point, `root.path` of the spec.
    pub rootfs: PathBuf,
    /// The container init's PID, written by skiff-oci.
    pub pid_file: PathBuf,
    /// The exit status, written by the monitor.
    pub exit_file: PathBuf,
    /// The monitor's control socket directory.
    pub socket_dir: PathBuf,
    /// Output kept when the CRI config names no log file.
    pub fallback_log: PathBuf,
}

impl ContainerPaths {
    /// The layout of the bundle `<state_dir>/containers/<id>`.
    pub fn new(bundle: &Path) -> Self {
        // Unix socket paths are limited to 108 bytes: the monitor's sockets go in a short
        // directory, `<state_dir>/s/<first 16 hex of the id>`, not inside the bundle.
        let id = bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state_dir = bundle.parent().and_then(Path::parent).unwrap_or(bundle);
        ContainerPaths {
            bundle: bundle.to_path_buf(),
            rootfs: bundle.join("rootfs"),
            pid_file: bundle.join("init.pid"),
            exit_file: bundle.join("exit.json"),
            socket_dir: state_dir.join("s").join(&id[..id.len().min(16)]),
            fallback_log: bundle.join("output.log"),
        }
    }

    /// The overlay's upper and work directories for container `id` under `root_dir`.
    pub fn overlay_dirs(root_dir: &Path, id: &str) -> (PathBuf, PathBuf, PathBuf) {
        let base = root_dir.join("containers").join(id);
        (base.join("upper"), base.join("work"), base)
    }
}
