//! The process table from /proc: which processes belong to a runtime, and their memory.

use anyhow::{Context, Result};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// One process as /proc shows it.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    /// `comm`: the executable name, truncated by the kernel to 15 bytes.
    pub comm: String,
    pub cmdline: Vec<String>,
    pub exe: Option<PathBuf>,
}

/// Every process we can read.
pub fn all() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(read)
        .collect()
}

/// One process, or `None` if it is gone (or a kernel thread with no cmdline).
pub fn read(pid: u32) -> Option<Process> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let cmdline: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if cmdline.is_empty() {
        return None;
    }
    Some(Process {
        pid,
        comm: comm.trim_end().to_string(),
        cmdline,
        exe: std::fs::read_link(dir.join("exe")).ok(),
    })
}

/// Resident and proportional memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    /// VmRSS: what `ps` and the peers' published numbers count (shared pages counted in full).
    pub rss_kib: u64,
    /// Pss: shared pages split between the processes that map them, so it adds up.
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
        }
    }
}

/// The memory of `pid`; zero if it is gone.
pub fn memory(pid: u32) -> Memory {
    let field = |file: &str, name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("status", "VmRSS:"),
        pss_kib: field("smaps_rollup", "Pss:"),
    }
}

/// The PID of the process serving the unix socket `path` (SO_PEERCRED of a fresh connection):
/// the daemon itself, whatever it is called and however it was started.
pub fn socket_owner(path: &Path) -> Result<u32> {
    let stream =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .context("SO_PEERCRED")?;
    Ok(creds.pid() as u32)
}

/// CPU time the whole machine spent busy (every CPU, every process, kernel included) since
/// boot, in seconds, from the first line of /proc/stat.
pub fn busy_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    busy as f64 / hz as f64
}
