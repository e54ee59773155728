//! `skiff-oci` against `runc` on the same OCI bundle: create, start, wait for the init (`true`)
//! to exit, delete; interleaved like the CRI measurements.

use crate::report::{Report, Unit};
use crate::stats::ms;
use anyhow::{bail, Context, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The cgroup every benchmark container gets (one at a time), removed at the end.
const CGROUP: &str = "/skiff-bench-oci/ctr";

/// A runc-shaped runtime binary and its own state root.
pub struct OciRuntime {
    pub name: String,
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl OciRuntime {
    fn run(&self, args: &[&str]) -> Result<()> {
        // Not a pipe: a created container inherits these descriptors as its stdio and keeps
        // them open, so reading a pipe to its end would wait for the container.
        let errors = tempfile::tempfile()?;
        let status = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors.try_clone()?)
            .status()
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !status.success() {
            let mut message = String::new();
            let mut errors = errors;
            errors.seek(SeekFrom::Start(0))?;
            errors.read_to_string(&mut message)?;
            bail!(
                "{} {args:?} failed ({status}): {}",
                self.name,
                message.trim()
            );
        }
        Ok(())
    }
}

/// Writes a bundle under `dir`: a busybox rootfs and `runc spec`'s default config (the
/// namespaces, mounts, capabilities and masked paths every runtime is expected to handle),
/// running `true` without a terminal in cgroup [`CGROUP`].
pub fn write_bundle(dir: &Path, runc: &Path) -> Result<PathBuf> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copying /bin/busybox (Debian busybox-static)")?;
    for applet in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let status = Command::new(runc)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .with_context(|| format!("running {} spec", runc.display()))?;
    if !status.success() {
        bail!("runc spec failed: {status}");
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    spec["linux"]["cgroupsPath"] = CGROUP.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(bundle)
}

/// Times `iterations` create/start/wait/delete cycles per runtime on `bundle`.
pub fn lifecycle(
    runtimes: &[OciRuntime],
    bundle: &Path,
    iterations: usize,
    report: &mut Report,
) -> Result<()> {
    // Detached inits are orphaned when `create` returns; as their subreaper we can wait for
    // them, as a shim or monitor does.
    nix::sys::prctl::set_child_subreaper(true)?;
    let pid_file = bundle.with_file_name("init.pid");
    let bundle_arg = bundle.to_str().context("non-UTF-8 bundle path")?;
    let pid_arg = pid_file.to_str().context("non-UTF-8 pid file path")?;
    // One untimed cycle each: page cache, cgroup parents.
    for runtime in runtimes {
        cycle(runtime, "warmup", bundle_arg, pid_arg)?;
    }
    for i in 0..iterations {
        let mut order: Vec<usize> = (0..runtimes.len()).collect();
        if i % 2 == 1 {
            order.reverse();
        }
        for r in order {
            let id = format!("bench-{}-{i}", std::process::id());
            let times = cycle(&runtimes[r], &id, bundle_arg, pid_arg)?;
            let names = ["create", "start", "wait for exit", "delete"];
            for (name, value) in names.iter().zip(times.phases) {
                report.add(name, Unit::Millis, None, r, value);
            }
            report.add(
                "create+start+wait+delete `true`",
                Unit::Millis,
                None,
                r,
                times.total,
            );
        }
    }
    Ok(())
}

struct CycleTimes {
    phases: [f64; 4],
    total: f64,
}

fn cycle(runtime: &OciRuntime, id: &str, bundle: &str, pid_file: &str) -> Result<CycleTimes> {
    let t0 = Instant::now();
    runtime.run(&["create", "--bundle", bundle, "--pid-file", pid_file, id])?;
    let t1 = Instant::now();
    let pid: i32 = std::fs::read_to_string(pid_file)?.trim().parse()?;
    let started = runtime.run(&["start", id]);
    if let Err(e) = started {
        let _ = runtime.run(&["delete", "--force", id]);
        return Err(e);
    }
    let t2 = Instant::now();
    match waitpid(Pid::from_raw(pid), None)? {
        WaitStatus::Exited(_, 0) => {}
        other => bail!("{}: container init ended with {other:?}", runtime.name),
    }
    let t3 = Instant::now();
    runtime.run(&["delete", id])?;
    let t4 = Instant::now();
    Ok(CycleTimes {
        phases: [ms(t1 - t0), ms(t2 - t1), ms(t3 - t2), ms(t4 - t3)],
        total: ms(t4 - t0),
    })
}

/// Removes the benchmark cgroup parent from every hierarchy (only if empty).
pub fn remove_cgroups() {
    let parent = Path::new(CGROUP)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup").join(&parent)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(entries.flatten().map(|e| e.path().join(&parent)));
    }
    for dir in dirs {
        let _ = std::fs::remove_dir(dir.join("ctr"));
        let _ = std::fs::remove_dir(dir);
    }
}
