//! skiff-monitor with the real runtime: skiff-oci creating a busybox container on libcontainer.
//!
//! Needs root, cgroups and the host's static `/bin/busybox`; without them each test says why
//! and returns.

#[path = "support/mod.rs"]
mod monitor_support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use monitor_support::{parent_of, Fixture};
use oci_spec::runtime as oci;
use skiff_monitor::{LogStream, MonitorError};

/// skiff-oci from the same target directory (built by `cargo build --workspace --bins`).
fn skiff_oci() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    profile_dir.join("skiff-oci")
}

fn can_run() -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !Path::new("/bin/busybox").exists() {
        Some("no /bin/busybox")
    } else {
        None
    };
    if let Some(why) = missing {
        eprintln!("skipping: {why}");
    }
    missing.is_none()
}

/// A monitor fixture whose runtime is skiff-oci and whose bundle runs `args` in a busybox
/// rootfs; dropping it deletes the container (processes, cgroups, state) first.
struct RealContainer {
    f: Fixture,
}

impl RealContainer {
    fn new(args: &[&str]) -> RealContainer {
        Self::with_spec(args, |_| {})
    }

    /// Like [`RealContainer::new`], with a chance to edit the spec before it is written.
    fn with_spec(args: &[&str], edit: impl FnOnce(&mut oci::Spec)) -> RealContainer {
        let mut f = Fixture::new("");
        f.spec.runtime = skiff_oci();
        let rootfs = f.spec.bundle.join("rootfs");
        for dir in ["bin", "proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "sleep", "head", "tr"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut spec = oci::Spec::default();
        let process = spec.process_mut().as_mut().unwrap();
        process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        process.set_terminal(Some(false));
        let namespaces = [
            oci::LinuxNamespaceType::Pid,
            oci::LinuxNamespaceType::Mount,
            oci::LinuxNamespaceType::Uts,
            oci::LinuxNamespaceType::Ipc,
        ]
        .into_iter()
        .map(|typ| {
            oci::LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .unwrap()
        })
        .collect();
        let linux = spec.linux_mut().as_mut().unwrap();
        linux.set_namespaces(Some(namespaces));
        // One cgroup level of our own, so `delete` removes all of it.
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}", f.spec.id))));
        edit(&mut spec);
        std::fs::write(
            f.spec.bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        RealContainer { f }
    }

    /// `skiff-oci --root R <command> ID <extra...>`.
    fn oci(&self, command: &str, extra: &[&str]) -> std::process::Output {
        Command::new(skiff_oci())
            .arg("--root")
            .arg(&self.f.spec.runtime_root)
            .args([command, &self.f.spec.id])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for RealContainer {
    fn drop(&mut self) {
        if self.f.spec.runtime_root.exists() {
            let _ = self.oci("delete", &["--force"]);
        }
    }
}

#[test]
fn real_container_logs_and_exit_code() {
    if !can_run() {
        return;
    }
    let mut c = RealContainer::new(&["sh", "-c", "echo hello from init; echo oops >&2; exit 5"]);
    let pid = c.f.spawn().expect("monitor with skiff-oci") as i32;
    // Created, not started: the init waits for `start`, already adopted by the monitor.
    assert_eq!(parent_of(pid), c.f.monitor_pid());
    assert!(c.f.records().is_empty());

    let out = c.oci("start", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = c.f.wait_exit();
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (5, None, false)
    );
    let lines: Vec<_> =
        c.f.records()
            .iter()
            .map(|r| (r.stream, r.partial, r.text().into_owned()))
            .collect();
    assert!(
        lines.contains(&(LogStream::Stdout, false, "hello from init".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(LogStream::Stderr, false, "oops".into())),
        "{lines:?}"
    );
}

#[test]
fn real_container_killed_reports_signal() {
    if !can_run() {
        return;
    }
    let mut c = RealContainer::new(&["sleep", "1000"]);
    c.f.spawn().expect("monitor with skiff-oci");
    let out = c.oci("start", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.oci("kill", &["KILL"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = c.f.wait_exit();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
}

#[test]
fn real_runtime_error_reaches_the_caller() {
    if !can_run() {
        return;
    }
    let mut c = RealContainer::new(&["true"]);
    std::fs::remove_dir_all(c.f.spec.bundle.join("rootfs")).unwrap();
    let err = c.f.spawn().unwrap_err();
    let MonitorError::Startup(msg) = &err else {
        panic!("unexpected error {err:?}");
    };
    assert!(msg.contains("skiff-oci") && msg.contains("rootfs"), "{msg}");
    assert_eq!(c.f.monitor_pid(), None);
}

#[test]
fn real_container_oom_kill_is_reported() {
    if !can_run() {
        return;
    }
    let mut c = RealContainer::with_spec(
        // The shell holds the whole command substitution in memory: far over the limit.
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\000' a); echo survived",
        ],
        |spec| {
            let memory = oci::LinuxMemoryBuilder::default()
                .limit(16 * 1024 * 1024)
                .build()
                .unwrap();
            let resources = oci::LinuxResourcesBuilder::default()
                .memory(memory)
                .build()
                .unwrap();
            spec.linux_mut()
                .as_mut()
                .unwrap()
                .set_resources(Some(resources));
        },
    );
    c.f.spawn().expect("monitor with skiff-oci");
    let out = c.oci("start", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = c.f.wait_exit();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
}

#[test]
fn real_container_attach_with_stdin_once() {
    use monitor_support::{contains, read_attach};
    use std::io::Write;
    if !can_run() {
        return;
    }
    let mut c = RealContainer::new(&[
        "sh",
        "-c",
        "while read l; do echo \"got $l\"; done; echo bye >&2",
    ]);
    c.f.spec.stdin = true;
    c.f.spec.stdin_once = true;
    c.f.spawn().expect("monitor with skiff-oci");
    // Attached before start: nothing the container writes is missed.
    let mut conn = skiff_monitor::attach(&c.f.spec.socket_dir, true).unwrap();
    let out = c.oci("start", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conn.write_all(b"hello\n").unwrap();
    read_attach(&mut conn, |a| contains(&a.stdout, "got hello\n"));
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = read_attach(&mut conn, |_| false);
    assert!(rest.closed);
    assert_eq!(rest.stderr, b"bye\n");
    assert_eq!(c.f.wait_exit().exit_code, 0);
}
