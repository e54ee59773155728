//! Best-effort OOM-kill detection from the container's memory cgroup.
//!
//! The monitor notes the cgroup's `oom_kill` counter while the init is alive and compares it
//! when the init exits: any kill in the container's cgroup meanwhile means "OOMKilled", which is
//! how containerd reports it too. cgroup v1 keeps the counter in `memory.oom_control`, v2 in
//! `memory.events` (on a hybrid host v2 lives under `/sys/fs/cgroup/unified`).

use std::path::PathBuf;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A memory cgroup's `oom_kill` counter and its value when watching started.
pub(crate) struct OomCounter {
    file: PathBuf,
    baseline: u64,
}

impl OomCounter {
    /// Finds the memory cgroup of `pid`; `None` when it cannot be found or read.
    pub(crate) fn for_pid(pid: i32) -> Option<OomCounter> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        candidate_files(&cgroups).into_iter().find_map(|file| {
            let baseline = read_oom_kills(&file)?;
            Some(OomCounter { file, baseline })
        })
    }

    /// Whether the counter grew since [`for_pid`](Self::for_pid).
    pub(crate) fn oom_killed(&self) -> bool {
        read_oom_kills(&self.file).is_some_and(|now| now > self.baseline)
    }
}

/// The files that may hold the `oom_kill` counter, given `/proc/<pid>/cgroup`.
fn candidate_files(proc_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            files.push(
                [CGROUP_ROOT, "memory", rel, "memory.oom_control"]
                    .iter()
                    .collect(),
            );
        } else if id == "0" && controllers.is_empty() {
            for root in [CGROUP_ROOT, "/sys/fs/cgroup/unified"] {
                files.push([root, rel, "memory.events"].iter().collect());
            }
        }
    }
    files
}

fn read_oom_kills(file: &PathBuf) -> Option<u64> {
    parse_oom_kills(&std::fs::read_to_string(file).ok()?)
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_files() {
        let v1 = "4:memory:/skiff/c1\n3:cpu,cpuacct:/skiff/c1\n0::/\n";
        assert_eq!(
            candidate_files(v1),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/skiff/c1/memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/memory.events"),
                PathBuf::from("/sys/fs/cgroup/unified/memory.events"),
            ]
        );
        assert_eq!(
            candidate_files("0::/kubepods/pod1/c1\n"),
            vec![
                PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c1/memory.events"),
                PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1/c1/memory.events"),
            ]
        );
    }

    #[test]
    fn parses_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(1));
        assert_eq!(parse_oom_kills("under_oom 0\n"), None);
    }
}
