//! Kernel parameters under /proc/sys.
//!
//! /proc/sys/net shows the network namespace of the *calling thread*, so a
//! write made inside [`crate::netlink::netns::run_in`] affects the container.

use std::path::PathBuf;

/// A sysctl write or read failed.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {path}: {source}")]
pub struct SysctlError {
    /// The /proc/sys path.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// Path of a sysctl given as slash-separated components, e.g.
/// `["net", "ipv6", "conf", "eth0", "accept_dad"]`. Components are joined
/// with '/' so interface names containing '.' stay intact.
fn path(parts: &[&str]) -> PathBuf {
    let mut p = PathBuf::from("/proc/sys");
    p.extend(parts);
    p
}

/// Reads a sysctl value (trimmed).
pub fn read(parts: &[&str]) -> Result<String, SysctlError> {
    let path = path(parts);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError { path, source })
}

/// Writes `value` unless the sysctl already has it (writes can be refused
/// even when they would change nothing, e.g. in a read-only /proc).
pub fn ensure(parts: &[&str], value: &str) -> Result<(), SysctlError> {
    if read(parts).is_ok_and(|current| current == value) {
        return Ok(());
    }
    let path = path(parts);
    std::fs::write(&path, value).map_err(|source| SysctlError { path, source })
}

impl From<SysctlError> for crate::spec::CniError {
    fn from(e: SysctlError) -> Self {
        crate::spec::CniError::new(
            crate::spec::ErrorCode::System,
            "sysctl failed",
            e.to_string(),
        )
    }
}
