//! Running code inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only.
//! We never do that on the main thread (which keeps working in the host
//! namespace); instead a short-lived thread enters the namespace, runs the
//! closure and exits, so nothing ever has to be switched back.

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::Path;

use super::NetlinkError;

/// Opens the namespace file at `path` (e.g. `/run/netns/x`).
pub fn open(path: &Path) -> Result<File, NetlinkError> {
    File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a new thread that has joined the network namespace at `path`.
pub fn run_in<T, E, F>(path: &Path, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<NetlinkError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let ns = open(path)?;
    let path = path.to_path_buf();
    let worker = std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|errno| NetlinkError::Netns {
            path,
            source: errno.into(),
        })?;
        f()
    });
    worker
        .join()
        .unwrap_or_else(|_| Err(NetlinkError::Other("netns worker thread panicked".into()).into()))
}
