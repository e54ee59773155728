//! Pod sandbox mechanisms: pinned namespaces, the shared files, IDs and recovery after a
//! restart. The RPCs that use them live in `runtime_service/` (one file each).

pub mod files;
pub mod namespaces;
pub mod pause;
pub mod pin_space;
pub mod recover;

use crate::state::SandboxRecord;
use namespaces::NsKind;

/// A new random 64-hex-digit ID, like containerd's.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom writes at most bytes.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // The kernel's getrandom does not fail for 32 bytes once booted; fall back to time and
        // pid so an ID is still unique on this host.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(bytes)
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The namespaces a sandbox record has pinned.
pub fn pinned_kinds(record: &SandboxRecord) -> Vec<NsKind> {
    let mut kinds = Vec::new();
    if record.netns.is_some() {
        kinds.push(NsKind::Net);
    }
    if record.ipcns.is_some() {
        kinds.push(NsKind::Ipc);
    }
    if record.utsns.is_some() {
        kinds.push(NsKind::Uts);
    }
    if record.pidns.is_some() {
        kinds.push(NsKind::Pid);
    }
    kinds
}

/// Kills the pod's pause process (if it is still the one holding the pod's PID namespace) and
/// releases every pinned namespace. Blocking, best effort, idempotent.
pub fn teardown_namespaces(record: &SandboxRecord) {
    if let (Some(pid), Some(pidns)) = (record.pause_pid, &record.pidns) {
        if namespaces::process_in_ns(pid, pidns) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    namespaces::release(&record.dir, &pinned_kinds(record));
}

/// Undoes a sandbox's host state: [`teardown_namespaces`], then removes its directory.
/// Blocking, best effort, idempotent.
pub fn remove_from_host(record: &SandboxRecord) {
    teardown_namespaces(record);
    let _ = std::fs::remove_dir_all(&record.dir);
}

/// Finds the one record whose ID starts with `prefix` (crictl and users pass short IDs).
/// `None` when nothing or more than one matches.
pub fn by_prefix<T>(records: Vec<T>, prefix: &str, id: impl Fn(&T) -> &str) -> Option<T> {
    if prefix.is_empty() {
        return None;
    }
    let mut matches = records.into_iter().filter(|r| id(r).starts_with(prefix));
    match (matches.next(), matches.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn prefixes_must_be_unique() {
        let ids = vec!["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        assert_eq!(by_prefix(ids.clone(), "d", |s| s), Some("def".to_string()));
        assert_eq!(by_prefix(ids.clone(), "abc", |s| s), None);
        assert_eq!(
            by_prefix(ids.clone(), "abc2", |s| s),
            Some("abc2".to_string())
        );
        assert_eq!(by_prefix(ids, "", |s| s), None);
    }
}
