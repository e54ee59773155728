//! The container rootfs: the image's unpacked layers stacked read-only under a per-container
//! writable layer with overlayfs.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Mounting or unmounting the rootfs failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct RootfsError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn err(what: impl Into<String>, source: impl Into<std::io::Error>) -> RootfsError {
    RootfsError {
        what: what.into(),
        source: source.into(),
    }
}

/// Mounts `layers` (bottom first) with `upper`/`work` at `target`. Blocking.
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}", dir.display()), e))?;
    }
    // overlayfs wants the top-most lower layer first; an image without layers gets an empty one.
    let empty = target.with_file_name("empty-lower");
    let lowers: Vec<String> = if layers.is_empty() {
        std::fs::create_dir_all(&empty).map_err(|e| err("creating an empty lower dir", e))?;
        vec![empty.display().to_string()]
    } else {
        layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect()
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| err(format!("mounting overlay at {}", target.display()), e))?;
    // Private, so the container's copy of it (made when the runtime creates the container's
    // mount namespace) is not its peer or slave: unmounting it here after `create` (see
    // [`unmount`]) leaves the container's root alone on a host whose mounts are shared.
    if let Err(e) = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(err(format!("making {} private", target.display()), e));
    }
    Ok(())
}

/// Unmounts the rootfs; not mounted is fine. Blocking.
///
/// skiffd calls this as soon as the container is created: the container keeps the overlay in
/// its own mount namespace (it lives as long as the container's processes), and the host's mount
/// table does not grow with every container. Each read of `/proc/self/mountinfo` costs time per
/// line, and the runtime reads it a dozen times per container (libcgroups looks up each cgroup
/// v1 controller's mount point separately), so with 100 pods the overlay lines were about half
/// the cost of creating a container.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(err(format!("unmounting {}", target.display()), e)),
    }
}
