//! Pinned namespaces: a pod's network, IPC and UTS namespaces are created by `unshare` on a
//! short-lived dedicated thread and kept alive by bind-mounting `/proc/thread-self/ns/*` onto
//! files in the sandbox directory — no pause process. The bind mounts are made in skiffd's
//! pin space ([`super::pin_space`]), not in the host's mount table; containers and CNI plugins
//! reach them by path through `<state_dir>/pinroot`.
//!
//! `unshare` changes the calling thread's namespaces, so it never runs on a tokio worker: the
//! thread that does it exits right after, taking the changed namespaces with it.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::{Path, PathBuf};

use super::pin_space;

/// A namespace kind that a sandbox pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    /// Network: the pod's interfaces and IPs.
    Net,
    /// IPC: shared memory and semaphores shared by the pod's containers.
    Ipc,
    /// UTS: the pod's hostname.
    Uts,
    /// PID: shared by the pod's containers; held by the pod's pause process, not unshared here.
    Pid,
}

impl NsKind {
    fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Pid => "pid",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            // A PID namespace applies to children, not to this thread: see `pin_pid`.
            NsKind::Pid => CloneFlags::empty(),
        }
    }
}

/// Pinning or releasing namespaces failed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A syscall failed.
    #[error("{what}: {source}")]
    Sys {
        /// What we were doing.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The pinning thread died.
    #[error("namespace thread panicked")]
    ThreadPanicked,
}

/// The path of a sandbox's pinned namespace, as the host opens it (through the pin space).
pub fn ns_path(dir: &Path, kind: NsKind) -> PathBuf {
    pin_space::view(dir, kind.name())
}

/// Where skiffd pinned namespaces before the pin space existed: in the host's mount table.
/// Sandboxes recorded then still use these paths, and releasing unmounts them.
fn host_path(dir: &Path, kind: NsKind) -> PathBuf {
    dir.join("ns").join(kind.name())
}

/// Creates new namespaces of `kinds`, sets `hostname` in the new UTS namespace, brings up
/// loopback in the new network namespace, and pins each under `dir/ns/` in the pin space.
/// Blocking. On error, whatever was pinned is released again.
pub fn pin(dir: &Path, kinds: &[NsKind], hostname: &str) -> Result<(), NsError> {
    let (dir, kinds, hostname) = (dir.to_path_buf(), kinds.to_vec(), hostname.to_string());
    let result = pin_space::run_inside("skiff-pinns", {
        let (dir, kinds) = (dir.clone(), kinds.clone());
        move || pin_on_this_thread(&dir, &kinds, &hostname)
    });
    if result.is_err() {
        release(&dir, &kinds);
    }
    result
}

/// Runs on a thread inside the pin space.
fn pin_on_this_thread(dir: &Path, kinds: &[NsKind], hostname: &str) -> Result<(), NsError> {
    let ns_dir = pin_space::inside(dir, "");
    std::fs::create_dir_all(&ns_dir).map_err(|source| NsError::Io {
        what: format!("creating {}", ns_dir.display()),
        source,
    })?;
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |flags, kind| flags | kind.flag());
    unshare(flags).map_err(|source| NsError::Sys {
        what: format!("unshare({flags:?})"),
        source,
    })?;
    if kinds.contains(&NsKind::Uts) && !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|source| NsError::Sys {
            what: format!("sethostname({hostname:?})"),
            source,
        })?;
    }
    if kinds.contains(&NsKind::Net) {
        loopback_up()?;
    }
    for kind in kinds.iter().filter(|k| **k != NsKind::Pid) {
        bind_ns(
            &format!("/proc/thread-self/ns/{}", kind.name()),
            &pin_space::inside(dir, kind.name()),
        )?;
    }
    Ok(())
}

/// Bind-mounts the nsfs file `source` onto a new file `target` (paths in the calling thread's
/// mount namespace).
fn bind_ns(source: &str, target: &Path) -> Result<(), NsError> {
    std::fs::File::create(target).map_err(|source| NsError::Io {
        what: format!("creating {}", target.display()),
        source,
    })?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| NsError::Sys {
        what: format!("bind-mounting {source}"),
        source: errno,
    })
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> Result<(), NsError> {
    let sys = |what: &str| {
        let source = nix::Error::last();
        NsError::Sys {
            what: what.into(),
            source,
        }
    };
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(sys("socket for loopback"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let result = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(sys("reading flags of lo"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(sys("bringing lo up"))
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        result
    }
}

/// Pins the PID namespace of process `pid` (the pod's pause process) under `dir/ns/pid` in the
/// pin space. Blocking.
pub fn pin_pid(dir: &Path, pid: u32) -> Result<(), NsError> {
    let target = pin_space::inside(dir, NsKind::Pid.name());
    pin_space::run_inside("skiff-pinpid", move || {
        bind_ns(&format!("/proc/{pid}/ns/pid"), &target)
    })
}

/// True when process `pid` is still the one inside the namespace pinned at `pinned` (guards
/// against a recycled PID before signalling it).
pub fn process_in_ns(pid: u32, pinned: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(theirs), Ok(ours)) = (
        std::fs::metadata(format!("/proc/{pid}/ns/pid")),
        std::fs::metadata(pinned),
    ) else {
        return false;
    };
    theirs.ino() == ours.ino() && theirs.dev() == ours.dev()
}

/// Unmounts and removes the pins of `kinds` under `dir`, in the pin space and (for sandboxes
/// pinned before it existed) on the host. Best effort and idempotent: a pin that is already
/// gone is fine. Blocking.
pub fn release(dir: &Path, kinds: &[NsKind]) {
    if kinds.is_empty() {
        return;
    }
    // MNT_DETACH: a process still inside does not block teardown; the namespace dies with
    // its last user.
    let inside: Vec<PathBuf> = kinds
        .iter()
        .map(|kind| pin_space::inside(dir, kind.name()))
        .collect();
    let _ = pin_space::run_inside("skiff-unpin", move || {
        for target in &inside {
            let _ = umount2(target, MntFlags::MNT_DETACH);
        }
        Ok(())
    });
    for kind in kinds {
        let target = host_path(dir, *kind);
        let _ = umount2(&target, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&target);
    }
}
