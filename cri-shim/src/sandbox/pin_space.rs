//! The pin space: a mount namespace of skiffd's own that holds the pods' namespace pins.
//!
//! A pod's network, IPC and UTS namespaces live as long as a bind mount of their nsfs files
//! does. Made in the host's mount namespace, those mounts add three lines per pod to
//! `/proc/self/mountinfo`, and every container create reads that table a dozen times
//! (libcontainer's cgroup v1 code looks there for controllers this host does not mount) and
//! copies it: with 300 such lines, `skiff-oci create` took 15 instead of 9 ms. So the pins are
//! made in a mount namespace that holds only a tmpfs root, a procfs and a bind mount of the
//! sandboxes directory (`/sandboxes` inside):
//! - the host keeps that namespace alive with one bind mount of its nsfs file
//!   (`<state_dir>/pins.mnt`), so pins outlive skiffd as before;
//! - a parked skiffd thread lives in it, and `<state_dir>/pinroot` is a symlink to that
//!   thread's root (`/proc/<pid>/task/<tid>/root`): CNI plugins, libcontainer and skiffd open
//!   pins by path through it (`<state_dir>/pinroot/sandboxes/<id>/ns/net`);
//! - pinning and unpinning run on short-lived threads that enter it with `setns`.
//!
//! Removing a sandbox directory on the host also drops the pins under it: the kernel detaches
//! mounts in other namespaces from files that are unlinked.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::namespaces::NsError;

/// The host-side bind mount that keeps the pin space alive.
const PIN_FILE: &str = "pins.mnt";
/// The symlink into the pin space.
const ROOT_LINK: &str = "pinroot";
/// The directory the pin space's tmpfs root is mounted on (inside the pin space only).
const ROOT_DIR: &str = "pins.root";
/// Where the sandboxes directory appears inside the pin space.
const SANDBOXES: &str = "/sandboxes";

/// The pin space of this skiffd, once [`open`] has run.
static SPACE: OnceLock<File> = OnceLock::new();

/// Enters (or, on the first start after boot, creates) the pin space of `state_dir`, parks a
/// thread in it and points `<state_dir>/pinroot` at that thread's root. Call once at startup,
/// before anything pins or releases namespaces. Blocking.
pub fn open(state_dir: &Path) -> Result<(), NsError> {
    let io = |what: String| move |source| NsError::Io { what, source };
    let sandboxes = state_dir.join("sandboxes");
    let root_dir = state_dir.join(ROOT_DIR);
    for dir in [&sandboxes, &root_dir] {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let pin_file = state_dir.join(PIN_FILE);
    let existing = is_nsfs(&pin_file)
        .then(|| File::open(&pin_file))
        .transpose()
        .map_err(io(format!("opening {}", pin_file.display())))?;
    let created = existing.is_none();

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("skiff-pinroot".into())
        .spawn(move || {
            let entered = match existing {
                Some(space) => {
                    // Taken while this thread is still in the host's namespace, for a pin space
                    // that outlived its directory.
                    let tree = clone_tree(&sandboxes);
                    enter(&space).and_then(|()| rebind_if_replaced(tree?))
                }
                None => create(&sandboxes, &root_dir),
            };
            let _ = tx.send(entered.map(|()| nix::unistd::gettid()));
            // The thread's root is the way into the pin space: it stays for skiffd's life.
            loop {
                std::thread::park();
            }
        })
        .map_err(io("starting the pin space thread".into()))?;
    let tid = rx.recv().map_err(|_| NsError::ThreadPanicked)??;
    let thread = format!("/proc/{}/task/{tid}", std::process::id());

    if created {
        std::fs::write(&pin_file, b"").map_err(io(format!("creating {}", pin_file.display())))?;
        let source = format!("{thread}/ns/mnt");
        mount(
            Some(source.as_str()),
            &pin_file,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NsError::Sys {
            what: format!("pinning the pin space at {}", pin_file.display()),
            source,
        })?;
    }
    let space = File::open(&pin_file).map_err(io(format!("opening {}", pin_file.display())))?;
    // Replaced atomically: a symlink made beside it, then renamed over it.
    let link = state_dir.join(ROOT_LINK);
    let staged = state_dir.join(format!("{ROOT_LINK}.new"));
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(format!("{thread}/root"), &staged)
        .map_err(io(format!("creating {}", staged.display())))?;
    std::fs::rename(&staged, &link).map_err(io(format!("replacing {}", link.display())))?;
    // A second `open` in one process (tests) keeps the first space.
    let _ = SPACE.set(space);
    Ok(())
}

/// The path through which processes on the host reach `sandbox_dir/ns/<name>` as the pin
/// space sees it. `sandbox_dir` is `<state_dir>/sandboxes/<id>`.
pub fn view(sandbox_dir: &Path, name: &str) -> PathBuf {
    let state_dir = sandbox_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let inside = inside(sandbox_dir, name);
    state_dir
        .join(ROOT_LINK)
        .join(inside.strip_prefix("/").unwrap_or(&inside))
}

/// `sandbox_dir/ns/<name>` as a path inside the pin space.
pub fn inside(sandbox_dir: &Path, name: &str) -> PathBuf {
    let id = sandbox_dir.file_name().unwrap_or_default();
    Path::new(SANDBOXES).join(id).join("ns").join(name)
}

/// Runs `work` on a new thread inside the pin space (and returns what it returns). The thread
/// exits afterwards, so `work` may also change its other namespaces. Blocking.
pub fn run_inside<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> Result<T, NsError> + Send + 'static,
) -> Result<T, NsError> {
    let space: &'static File = SPACE.get().ok_or_else(|| NsError::Io {
        what: "the pin space".into(),
        source: std::io::Error::other("not opened (skiffd opens it at startup)"),
    })?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            enter(space)?;
            work()
        })
        .map_err(|source| NsError::Io {
            what: format!("starting thread {name}"),
            source,
        })?
        .join()
        .map_err(|_| NsError::ThreadPanicked)?
}

/// True when `path` is an nsfs file: a pinned namespace (checked through symlinks).
pub fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
}

/// Moves the calling thread into the mount namespace `space`. The thread first stops sharing
/// its root and working directory with the rest of skiffd, which setns requires.
fn enter(space: &File) -> Result<(), NsError> {
    unshare(CloneFlags::CLONE_FS).map_err(|source| NsError::Sys {
        what: "unshare(CLONE_FS)".into(),
        source,
    })?;
    setns(space.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|source| NsError::Sys {
        what: "entering the pin space".into(),
        source,
    })
}

/// A detached bind mount of `dir` (`open_tree` with `OPEN_TREE_CLONE`), which a thread can
/// attach in another mount namespace: a plain bind mount only takes sources from its own.
fn clone_tree(dir: &Path) -> Result<OwnedFd, NsError> {
    let sys = |source| NsError::Sys {
        what: format!("open_tree({})", dir.display()),
        source,
    };
    let path =
        std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| sys(nix::Error::EINVAL))?;
    // SAFETY: open_tree with a NUL-terminated path; the result is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(sys(nix::Error::last()));
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `tree` (the host's sandboxes directory, from [`clone_tree`]) at `/sandboxes` when
/// the pin space (entered by the calling thread) holds another directory there: the
/// directory was removed and made anew while the pin space lived on, and new pins must land
/// where the host looks for them.
fn rebind_if_replaced(tree: OwnedFd) -> Result<(), NsError> {
    use std::os::unix::fs::MetadataExt;
    let tree = File::from(tree);
    let theirs = tree.metadata().map_err(|source| NsError::Io {
        what: "reading the sandboxes directory".into(),
        source,
    })?;
    let same = std::fs::metadata(SANDBOXES)
        .is_ok_and(|ours| ours.dev() == theirs.dev() && ours.ino() == theirs.ino());
    if same {
        return Ok(());
    }
    tracing::warn!("the sandboxes directory was replaced; binding the new one into the pin space");
    // The old directory is gone (nothing can be mounted on it), and with it its pods' files:
    // its pins go too.
    umount2(SANDBOXES, MntFlags::MNT_DETACH).map_err(|source| NsError::Sys {
        what: "detaching the old sandboxes directory from the pin space".into(),
        source,
    })?;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
    let (empty, target) = (c"", c"/sandboxes");
    // SAFETY: move_mount of a detached tree fd we own onto a NUL-terminated absolute path.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(NsError::Sys {
            what: "attaching the new sandboxes directory in the pin space".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Makes a new mount namespace on the calling thread whose whole tree is a tmpfs root with
/// `/proc` and `/sandboxes` (a bind mount of `sandboxes`).
fn create(sandboxes: &Path, root_dir: &Path) -> Result<(), NsError> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |source| NsError::Sys { what, source }
    };
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    // Nothing mounted here may propagate to the host, nor the other way.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making the pin space private"))?;
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        root_dir,
        Some("tmpfs"),
        quiet,
        Some("mode=0700,size=64k"),
    )
    .map_err(sys("mounting the pin space's root"))?;
    for dir in ["proc", "sandboxes"] {
        let path = root_dir.join(dir);
        std::fs::create_dir(&path).map_err(|source| NsError::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
    }
    mount(
        Some("proc"),
        &root_dir.join("proc"),
        Some("proc"),
        quiet,
        None::<&str>,
    )
    .map_err(sys("mounting /proc in the pin space"))?;
    mount(
        Some(sandboxes),
        &root_dir.join("sandboxes"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("binding the sandboxes directory into the pin space"))?;
    // The tmpfs becomes the root; the old tree (every host mount) is dropped from this
    // namespace, so it holds no copies of mounts the host later removes.
    nix::unistd::chdir(root_dir).map_err(sys("chdir to the pin space's root"))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root in the pin space"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_between_host_and_pin_space() {
        let dir = Path::new("/run/skiff/sandboxes/abc");
        assert_eq!(
            view(dir, "net"),
            Path::new("/run/skiff/pinroot/sandboxes/abc/ns/net")
        );
        assert_eq!(inside(dir, "uts"), Path::new("/sandboxes/abc/ns/uts"));
    }
}
