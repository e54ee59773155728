//! Reading usage from, and writing limits to, a container's cgroup, on cgroup v1 (this host:
//! one hierarchy per controller) and v2 (one unified hierarchy). The file names and value
//! conversions are pure functions so both layouts are unit-tested here.

use skiff_proto::runtime::v1 as cri;
use std::path::PathBuf;

/// Which cgroup layout the host uses, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// One hierarchy per controller under `root` (`root/memory/...`).
    V1 {
        /// Usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
    /// One unified hierarchy at `root`.
    V2 {
        /// Usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
}

/// Resource usage of one cgroup; `None` where the kernel does not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Memory charged, bytes.
    pub memory_bytes: Option<u64>,
    /// Memory minus inactive file cache: what the kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory (RSS), bytes.
    pub rss_bytes: Option<u64>,
    /// Page faults.
    pub page_faults: Option<u64>,
    /// Major page faults.
    pub major_page_faults: Option<u64>,
    /// Processes in the cgroup.
    pub processes: Option<u64>,
}

impl Cgroups {
    /// The host's layout: v2 when the root itself has `cgroup.controllers`.
    pub fn detect() -> Self {
        let root = PathBuf::from("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            Cgroups::V2 { root }
        } else {
            Cgroups::V1 { root }
        }
    }

    /// The file holding `file` of `controller` for the cgroup `path` (as in `cgroupsPath`).
    fn file(&self, controller: &str, path: &str, file: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        match self {
            Cgroups::V1 { root } => root.join(controller).join(relative).join(file),
            Cgroups::V2 { root } => root.join(relative).join(file),
        }
    }

    /// Reads the usage of the cgroup `path`.
    pub fn usage(&self, path: &str) -> Usage {
        let read = |controller: &str, file: &str| {
            std::fs::read_to_string(self.file(controller, path, file)).ok()
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        match self {
            Cgroups::V1 { .. } => {
                let stat = read("memory", "memory.stat").unwrap_or_default();
                let memory = number(read("memory", "memory.usage_in_bytes"));
                let inactive = stat_value(&stat, "total_inactive_file");
                Usage {
                    cpu_nanos: number(read("cpuacct", "cpuacct.usage")),
                    memory_bytes: memory,
                    working_set_bytes: memory.map(|m| m.saturating_sub(inactive.unwrap_or(0))),
                    rss_bytes: stat_value(&stat, "total_rss"),
                    page_faults: stat_value(&stat, "total_pgfault"),
                    major_page_faults: stat_value(&stat, "total_pgmajfault"),
                    processes: number(read("pids", "pids.current")),
                }
            }
            Cgroups::V2 { .. } => {
                let stat = read("", "memory.stat").unwrap_or_default();
                let cpu = read("", "cpu.stat").unwrap_or_default();
                let memory = number(read("", "memory.current"));
                let inactive = stat_value(&stat, "inactive_file");
                Usage {
                    cpu_nanos: stat_value(&cpu, "usage_usec").map(|us| us * 1000),
                    memory_bytes: memory,
                    working_set_bytes: memory.map(|m| m.saturating_sub(inactive.unwrap_or(0))),
                    rss_bytes: stat_value(&stat, "anon"),
                    page_faults: stat_value(&stat, "pgfault"),
                    major_page_faults: stat_value(&stat, "pgmajfault"),
                    processes: number(read("", "pids.current")),
                }
            }
        }
    }

    /// The writes that apply `resources` to the cgroup `path`: (file, value) in order.
    pub fn resource_writes(
        &self,
        path: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Vec<(PathBuf, String)> {
        let mut writes = Vec::new();
        let mut put = |controller: &str, file: &str, value: String| {
            writes.push((self.file(controller, path, file), value));
        };
        match self {
            Cgroups::V1 { .. } => {
                if resources.cpu_shares > 0 {
                    put("cpu", "cpu.shares", resources.cpu_shares.to_string());
                }
                if resources.cpu_period > 0 {
                    put("cpu", "cpu.cfs_period_us", resources.cpu_period.to_string());
                }
                if resources.cpu_quota != 0 {
                    put("cpu", "cpu.cfs_quota_us", resources.cpu_quota.to_string());
                }
                if resources.memory_limit_in_bytes > 0 {
                    put(
                        "memory",
                        "memory.limit_in_bytes",
                        resources.memory_limit_in_bytes.to_string(),
                    );
                }
                if !resources.cpuset_cpus.is_empty() {
                    put("cpuset", "cpuset.cpus", resources.cpuset_cpus.clone());
                }
                if !resources.cpuset_mems.is_empty() {
                    put("cpuset", "cpuset.mems", resources.cpuset_mems.clone());
                }
            }
            Cgroups::V2 { .. } => {
                if resources.cpu_shares > 0 {
                    put(
                        "",
                        "cpu.weight",
                        shares_to_weight(resources.cpu_shares).to_string(),
                    );
                }
                if resources.cpu_quota != 0 || resources.cpu_period > 0 {
                    let period = if resources.cpu_period > 0 {
                        resources.cpu_period
                    } else {
                        100_000
                    };
                    let quota = if resources.cpu_quota > 0 {
                        resources.cpu_quota.to_string()
                    } else {
                        "max".to_string()
                    };
                    put("", "cpu.max", format!("{quota} {period}"));
                }
                if resources.memory_limit_in_bytes > 0 {
                    put(
                        "",
                        "memory.max",
                        resources.memory_limit_in_bytes.to_string(),
                    );
                }
                if !resources.cpuset_cpus.is_empty() {
                    put("", "cpuset.cpus", resources.cpuset_cpus.clone());
                }
                if !resources.cpuset_mems.is_empty() {
                    put("", "cpuset.mems", resources.cpuset_mems.clone());
                }
                let mut unified: Vec<_> = resources.unified.iter().collect();
                unified.sort();
                for (file, value) in unified {
                    put("", file, value.clone());
                }
            }
        }
        writes
    }

    /// Applies `resources` to the cgroup `path`.
    pub fn apply(
        &self,
        path: &str,
        resources: &cri::LinuxContainerResources,
    ) -> std::io::Result<()> {
        let mut writes = self.resource_writes(path, resources);
        if let Some(swap) = self.memsw_write(path, resources) {
            // v1 refuses a memory limit above memory+swap, and memory+swap below memory: raise
            // memory+swap first, lower it last.
            let memory = self.file("memory", path, "memory.limit_in_bytes");
            let current = std::fs::read_to_string(&memory)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            if resources.memory_limit_in_bytes > current {
                writes.insert(0, swap);
            } else {
                writes.push(swap);
            }
        }
        for (file, value) in writes {
            std::fs::write(&file, &value).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("writing {value:?} to {}: {e}", file.display()),
                )
            })?;
        }
        Ok(())
    }

    /// On v1 with swap accounting, the memory+swap limit that goes with a memory limit (equal
    /// to it unless a swap limit is given, as containerd sets it).
    fn memsw_write(
        &self,
        path: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Option<(PathBuf, String)> {
        if !matches!(self, Cgroups::V1 { .. }) || resources.memory_limit_in_bytes <= 0 {
            return None;
        }
        let file = self.file("memory", path, "memory.memsw.limit_in_bytes");
        if !file.exists() {
            return None;
        }
        let limit = if resources.memory_swap_limit_in_bytes > 0 {
            resources.memory_swap_limit_in_bytes
        } else {
            resources.memory_limit_in_bytes
        };
        Some((file, limit.to_string()))
    }
}

/// The value of `key` in a flat-keyed cgroup stat file (`key value` per line).
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), the mapping runc and
/// the kubelet use.
pub fn shares_to_weight(shares: i64) -> u64 {
    let shares = shares.clamp(2, 262_144) as u64;
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn v1_writes_one_file_per_controller() {
        let v1 = Cgroups::V1 { root: "/cg".into() };
        let writes = v1.resource_writes("/skiff/abc", &resources());
        let pairs: Vec<(String, String)> = writes
            .into_iter()
            .map(|(p, v)| (p.display().to_string(), v))
            .collect();
        assert!(pairs.contains(&("/cg/cpu/skiff/abc/cpu.shares".into(), "512".into())));
        assert!(pairs.contains(&("/cg/cpu/skiff/abc/cpu.cfs_quota_us".into(), "50000".into())));
        assert!(pairs.contains(&(
            "/cg/memory/skiff/abc/memory.limit_in_bytes".into(),
            "67108864".into()
        )));
        assert!(pairs.contains(&("/cg/cpuset/skiff/abc/cpuset.cpus".into(), "0".into())));
    }

    #[test]
    fn v2_writes_the_unified_files_with_converted_values() {
        let v2 = Cgroups::V2 { root: "/cg".into() };
        let mut res = resources();
        res.unified.insert("memory.high".into(), "50000000".into());
        let pairs: Vec<(String, String)> = v2
            .resource_writes("/skiff/abc", &res)
            .into_iter()
            .map(|(p, v)| (p.display().to_string(), v))
            .collect();
        assert!(pairs.contains(&("/cg/skiff/abc/cpu.weight".into(), "20".into())));
        assert!(pairs.contains(&("/cg/skiff/abc/cpu.max".into(), "50000 100000".into())));
        assert!(pairs.contains(&("/cg/skiff/abc/memory.max".into(), "67108864".into())));
        assert!(pairs.contains(&("/cg/skiff/abc/memory.high".into(), "50000000".into())));
        let no_quota = cri::LinuxContainerResources {
            cpu_period: 200_000,
            ..Default::default()
        };
        assert_eq!(
            v2.resource_writes("/x", &no_quota)[0].1,
            "max 200000".to_string()
        );
    }

    #[test]
    fn shares_map_to_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn usage_reads_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let v2_dir = dir.path().join("v2/skiff/abc");
        std::fs::create_dir_all(&v2_dir).unwrap();
        std::fs::write(v2_dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(v2_dir.join("memory.current"), "1000000\n").unwrap();
        std::fs::write(
            v2_dir.join("memory.stat"),
            "anon 600000\ninactive_file 100000\npgfault 7\npgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(v2_dir.join("pids.current"), "3\n").unwrap();
        let v2 = Cgroups::V2 {
            root: dir.path().join("v2"),
        };
        let usage = v2.usage("/skiff/abc");
        assert_eq!(usage.cpu_nanos, Some(1_500_000));
        assert_eq!(usage.working_set_bytes, Some(900_000));
        assert_eq!(usage.rss_bytes, Some(600_000));
        assert_eq!(usage.processes, Some(3));

        let v1_root = dir.path().join("v1");
        for (controller, file, value) in [
            ("cpuacct", "cpuacct.usage", "42\n"),
            ("memory", "memory.usage_in_bytes", "2000\n"),
            (
                "memory",
                "memory.stat",
                "total_rss 1500\ntotal_inactive_file 500\n",
            ),
            ("pids", "pids.current", "1\n"),
        ] {
            let d = v1_root.join(controller).join("skiff/abc");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), value).unwrap();
        }
        let usage = Cgroups::V1 { root: v1_root }.usage("/skiff/abc");
        assert_eq!(usage.cpu_nanos, Some(42));
        assert_eq!(usage.working_set_bytes, Some(1500));
        assert_eq!(usage.processes, Some(1));
    }
}
