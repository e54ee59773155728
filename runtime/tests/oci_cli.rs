//! End-to-end tests of the `skiff-oci` binary: real containers from a busybox rootfs.
//!
//! They need root, cgroups and the host's static `/bin/busybox`; without them each
//! test prints why and returns. Every test uses its own `--root`, container id and
//! cgroup path, and a [`Fixture`] guard deletes the container and its cgroups even
//! when an assertion fails.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libcontainer::oci_spec::runtime as spec;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_skiff-oci");
/// Parent cgroup of the tests' containers (one child per container).
const TEST_CGROUP_PARENT: &str = "skiff-oci-test";
/// busybox applets linked into the rootfs.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "id", "echo", "true", "false", "hostname", "pwd", "ls", "kill",
];

/// True if this machine can run the tests; otherwise says why on stderr.
fn can_run() -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !Path::new("/bin/busybox").exists() {
        Some("no /bin/busybox (Debian busybox-static)")
    } else if !Path::new("/sys/fs/cgroup").exists() {
        Some("no /sys/fs/cgroup")
    } else {
        None
    };
    if let Some(why) = missing {
        eprintln!("skipping skiff-oci test: {why}");
    }
    missing.is_none()
}

/// A unique container id for this test process.
fn unique_id(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t-{name}-{}-{n}", std::process::id())
}

/// One container under test: a bundle, a state root and cleanup on drop.
struct Fixture {
    dir: tempfile::TempDir,
    id: String,
    /// The cgroupsPath written into config.json (`None`: left empty).
    cgroups_path: Option<String>,
}

impl Fixture {
    /// A bundle whose init runs `args`, with a cgroup path of its own.
    fn new(name: &str, args: &[&str]) -> Fixture {
        Self::with_spec(name, args, |_| {})
    }

    /// Like [`Fixture::new`], with a chance to edit the spec before it is written.
    fn with_spec(name: &str, args: &[&str], edit: impl FnOnce(&mut spec::Spec)) -> Fixture {
        // Orphaned container inits are reparented to us, so we can reap them and
        // read their exit status, as the per-container monitor does.
        set_child_subreaper();
        let id = unique_id(name);
        let fixture = Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            cgroups_path: Some(format!("/{TEST_CGROUP_PARENT}/{id}")),
            id,
        };
        fs::create_dir(fixture.root()).unwrap();
        fs::create_dir(fixture.bundle()).unwrap();
        make_rootfs(&fixture.bundle().join("rootfs"));
        let mut spec = default_spec(args, fixture.cgroups_path.as_deref());
        edit(&mut spec);
        fixture.write_spec(&spec);
        fixture
    }

    fn write_spec(&self, spec: &spec::Spec) {
        let json = serde_json::to_vec_pretty(spec).unwrap();
        fs::write(self.bundle().join("config.json"), json).unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `skiff-oci --root <root> <args...>`, stdio not yet set.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    /// Runs a command to completion with captured output.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run skiff-oci")
    }

    /// Runs a command that must succeed, returning its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff-oci {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `create` with the container's stdout and stderr going to `stdout`, and its
    /// pid file in the fixture; returns the init's host PID.
    fn create(&self, stdout: Stdio) -> Pid {
        let pid_file = self.path("init.pid");
        let bundle = self.bundle();
        let status = self
            .cmd(&["create", "--bundle", path_str(&bundle), "--pid-file"])
            .arg(&pid_file)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        assert!(status.success(), "create failed: {status}");
        read_pid(&pid_file)
    }

    /// `create` (output to a file) then `start`; returns the init PID.
    fn create_and_start(&self) -> Pid {
        let out = File::create(self.path("init.out")).unwrap();
        let pid = self.create(Stdio::from(out));
        self.ok(&["start", &self.id]);
        pid
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.ok(&["state", &self.id])).expect("state is JSON")
    }

    /// Polls `state` until the status is `want` (or fails after 10 s).
    fn wait_status(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.state()["status"].as_str().unwrap_or("").to_string();
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "status stayed {status}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's cgroup directories that exist now, across all hierarchies.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_relative())
    }

    /// The container's cgroup path relative to a hierarchy's root.
    fn cgroup_relative(&self) -> String {
        let path = self
            .cgroups_path
            .clone()
            .unwrap_or_else(|| format!("/skiff/{}", self.id));
        path.trim_start_matches('/').to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Kill and delete whatever is left; a missing container is fine.
        let _ = self.run(&["delete", "--force", &self.id]);
        let leaf = self.cgroup_relative();
        // Our test parent goes too (rmdir fails while another test uses it, so the
        // last test to finish removes it); `/skiff` may be skiffd's, so it stays.
        let parent = self
            .cgroups_path
            .as_ref()
            .map(|_| PathBuf::from(TEST_CGROUP_PARENT));
        for relative in [Some(PathBuf::from(&leaf)), parent].into_iter().flatten() {
            let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(&relative));
            for hierarchy in fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = fs::remove_dir(hierarchy.path().join(&relative));
            }
        }
    }
}

/// Existing directories `/sys/fs/cgroup/<hierarchy>/<relative>` (and cgroup v2's
/// `/sys/fs/cgroup/<relative>`).
fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let v2 = Path::new("/sys/fs/cgroup").join(relative);
    if v2.is_dir() {
        found.push(v2);
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = hierarchy.path().join(relative);
        if dir.is_dir() {
            found.push(dir);
        }
    }
    found
}

fn set_child_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// A rootfs with the host's static busybox and a few applet links.
fn make_rootfs(rootfs: &Path) {
    for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// oci-spec's default spec with our command, our cgroup path and the namespaces
/// a CRI container gets (pid, mount, uts, ipc, net).
fn default_spec(args: &[&str], cgroups_path: Option<&str>) -> spec::Spec {
    use spec::{LinuxNamespaceBuilder, LinuxNamespaceType};
    let mut s = spec::Spec::default();
    let process = s.process_mut().as_mut().unwrap();
    process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    process.set_terminal(Some(false));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().unwrap())
    .collect();
    let linux = s.linux_mut().as_mut().unwrap();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(cgroups_path.map(PathBuf::from));
    s
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn read_pid(path: &Path) -> Pid {
    let text = fs::read_to_string(path).expect("pid file written");
    Pid::from_raw(text.trim().parse().expect("pid file holds a number"))
}

/// Reaps our (adopted) child `pid` and returns its shell-style exit code.
fn reap(pid: Pid) -> i32 {
    match waitpid(pid, None).expect("waitpid") {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lifecycle_create_start_wait_delete() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("life", &["sh", "-c", "echo hello from $(hostname); exit 7"]);

    // The container's stdout is a pipe we hold, as the monitor does.
    let (reader, writer) = std::io::pipe().unwrap();
    let pid = f.create(Stdio::from(writer));

    let state = f.state();
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], f.id.as_str());
    assert_eq!(state["pid"], pid.as_raw());
    let bundle = fs::canonicalize(f.bundle()).unwrap();
    assert_eq!(state["bundle"], path_str(&bundle));
    assert_eq!(state["rootfs"], path_str(&bundle.join("rootfs")));
    assert!(state["created"].as_str().unwrap().ends_with('Z'));
    assert!(!f.cgroup_dirs().is_empty(), "no cgroup made");

    f.ok(&["start", &f.id]);
    // EOF once the init exits: neither skiff-oci nor libcontainer keeps the pipe.
    let mut output = String::new();
    let mut reader = reader;
    reader.read_to_string(&mut output).unwrap();
    assert_eq!(output, "hello from youki\n");
    assert_eq!(reap(pid), 7);

    f.wait_status("stopped");
    assert_eq!(f.state()["pid"], 0);
    let again = f.run(&["start", &f.id]);
    assert!(!again.status.success(), "second start succeeded");

    f.ok(&["delete", &f.id]);
    assert!(!f.root().join(&f.id).exists(), "state dir left");
    assert_eq!(f.cgroup_dirs(), Vec::<PathBuf>::new(), "cgroups left");

    for args in [["state", f.id.as_str()], ["delete", f.id.as_str()]] {
        let out = f.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr_of(&out).contains("does not exist"),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    f.ok(&["delete", "--force", &f.id]);
}

#[test]
fn kill_stops_the_container() {
    if !can_run() {
        return;
    }
    // A PID-namespace init only receives signals it handles (SIGKILL aside), so
    // TERM needs a trap; runc behaves the same.
    let f = Fixture::new(
        "term",
        &["sh", "-c", "trap 'exit 42' TERM; sleep 1000 & wait"],
    );
    let pid = f.create_and_start();
    f.wait_status("running");
    // Give sh time to install the trap before it is signalled.
    std::thread::sleep(Duration::from_millis(200));
    f.ok(&["kill", &f.id]);
    assert_eq!(reap(pid), 42);
    f.wait_status("stopped");

    // Signalling a stopped container is an error, like runc.
    let out = f.run(&["kill", &f.id, "KILL"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("not running"),
        "{}",
        stderr_of(&out)
    );

    let g = Fixture::new("kill", &["sleep", "1000"]);
    let pid = g.create_and_start();
    let out = g.run(&["kill", &g.id, "NOSUCHSIG"]);
    assert_eq!(out.status.code(), Some(1));
    g.ok(&["kill", &g.id, "SIGKILL"]);
    assert_eq!(reap(pid), 128 + 9);
    g.wait_status("stopped");
}

#[test]
fn delete_removes_state_and_cgroups() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("del", &["sleep", "1000"]);
    let pid = f.create_and_start();
    let cgroups = f.cgroup_dirs();
    assert!(
        cgroups
            .iter()
            .any(|d| d.starts_with("/sys/fs/cgroup/memory")),
        "{cgroups:?}"
    );

    let out = f.run(&["delete", &f.id]);
    assert_eq!(out.status.code(), Some(1), "deleted a running container");
    assert!(stderr_of(&out).contains("running"), "{}", stderr_of(&out));

    f.ok(&["delete", "--force", &f.id]);
    assert_eq!(reap(pid), 128 + 9);
    assert!(!f.root().join(&f.id).exists(), "state dir left");
    for dir in &cgroups {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

#[test]
fn empty_cgroups_path_defaults_to_skiff() {
    if !can_run() {
        return;
    }
    let mut f = Fixture::new("cg", &["sleep", "1000"]);
    f.cgroups_path = None;
    f.write_spec(&default_spec(&["sleep", "1000"], None));
    let pid = f.create(Stdio::null());
    let memory = Path::new("/sys/fs/cgroup/memory/skiff").join(&f.id);
    assert!(memory.is_dir(), "{} missing", memory.display());
    // The bundle on disk is untouched; the adjusted copy lives in the state dir.
    let on_disk: Value =
        serde_json::from_slice(&fs::read(f.bundle().join("config.json")).unwrap()).unwrap();
    assert!(on_disk["linux"].get("cgroupsPath").is_none());
    f.ok(&["delete", &f.id]);
    assert_eq!(reap(pid), 128 + 9);
    assert!(!memory.exists());
}

/// `key:` from a /proc/<pid>/status text.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn exec_joins_the_container_and_its_seccomp_filter() {
    if !can_run() {
        return;
    }
    // CAP_SYS_ADMIN lets sethostname through the capability check, so only the
    // filter can refuse it.
    let f = Fixture::with_spec("exec-confined", &["sleep", "1000"], |s| {
        let seccomp: spec::LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}],
        }))
        .unwrap();
        let mut linux = s.linux().clone().unwrap();
        linux.set_seccomp(Some(seccomp));
        s.set_linux(Some(linux));
        let mut process = s.process().clone().unwrap();
        let mut caps = process.capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(set.is_some());
        }
        let add = |set: &Option<spec::Capabilities>| {
            let mut set = set.clone().unwrap();
            set.insert(spec::Capability::SysAdmin);
            Some(set)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        process.set_capabilities(Some(caps));
        s.set_process(Some(process));
    });
    let init = f.create_and_start();
    let init_status = fs::read_to_string(format!("/proc/{init}/status")).unwrap();

    let out = f.run(&["exec", &f.id, "--", "cat", "/proc/self/status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "filter mode: {status}"
    );
    for key in ["CapEff", "CapBnd", "NoNewPrivs"] {
        assert_eq!(
            status_field(&status, key),
            status_field(&init_status, key),
            "{key}"
        );
    }
    let refused = f.run(&["exec", &f.id, "--", "hostname", "changed"]);
    assert_ne!(
        refused.status.code(),
        Some(0),
        "the filter let sethostname through"
    );

    // Same namespaces (PID 1 is the init's sleep) and the same cgroup as the init.
    let out = f.run(&[
        "exec",
        &f.id,
        "--",
        "cat",
        "/proc/1/cmdline",
        "/proc/self/cgroup",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("sleep\x001000\x00"), "{text}");
    let init_cgroups = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let memory = |t: &str| {
        t.lines()
            .find(|l| l.contains(":memory:"))
            .map(str::to_string)
    };
    assert!(
        memory(&init_cgroups).is_some_and(|l| l.contains(&f.id)),
        "{init_cgroups}"
    );
    assert_eq!(memory(&text), memory(&init_cgroups));

    // A missing command: the shell's exit code, and why on stderr.
    let out = f.run(&["exec", &f.id, "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr_of(&out).contains("not found"), "{}", stderr_of(&out));
}

#[test]
fn exec_captures_output_and_exit_codes() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("exec", &["sleep", "1000"]);
    f.create_and_start();

    let out = f.run(&["exec", &f.id, "--", "echo", "hi there"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there\n");

    let out = f.run(&["exec", &f.id, "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stderr_of(&out), "oops\n");

    let out = f.run(&[
        "exec",
        "--env",
        "GREETING=hey",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1001",
        &f.id,
        "--",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u) $(id -g)",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hey /tmp 1000 1001\n");

    // The pid file names the exec'd process (here it kills itself: 128 + 9).
    let pid_file = f.path("exec.pid");
    let out = f.run(&[
        "exec",
        "--pid-file",
        path_str(&pid_file),
        &f.id,
        "--",
        "sh",
        "-c",
        "echo $$ > /tmp/inner; kill -KILL $$",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr_of(&out));
    assert!(read_pid(&pid_file).as_raw() > 1);

    // --detach returns at once; the pid file lets the caller kill the process.
    // (stdout not captured: the detached process would hold the pipe open.)
    let status = f
        .cmd(&["exec", "--detach", "--pid-file", path_str(&pid_file), &f.id])
        .args(["--", "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "detached exec failed: {status}");
    let pid = read_pid(&pid_file);
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\x001000\x00");
    nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
    // It was adopted by us (the subreaper) when skiff-oci exited. Reap it: a dying
    // PID-namespace init waits until every process of its namespace is reaped.
    assert_eq!(reap(pid), 137);

    let out = f.run(&["exec", &f.id]);
    assert_eq!(out.status.code(), Some(1), "exec without a command");

    f.ok(&["kill", &f.id, "KILL"]);
    f.wait_status("stopped");
    let out = f.run(&["exec", &f.id, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("not running"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn low_oom_score_adj_is_clamped() {
    if !can_run() {
        return;
    }
    let ours: i32 = fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let f = Fixture::with_spec("oom", &["sleep", "1000"], |s| {
        s.process_mut()
            .as_mut()
            .unwrap()
            .set_oom_score_adj(Some(-1000));
    });
    let log = f.path("oci.log");
    // Not `output()`: the container inherits create's stdio, so pipes given to
    // create stay open as long as the container runs.
    let status = f
        .cmd(&[])
        .arg("--log")
        .arg(&log)
        .args(["create", "--bundle", path_str(&f.bundle()), "--pid-file"])
        .arg(f.path("init.pid"))
        .arg(&f.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "create failed: {status}");
    let pid = read_pid(&f.path("init.pid"));
    let adj: i32 = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(adj, ours.max(-1000));
    if ours > -1000 {
        let log = fs::read_to_string(&log).unwrap();
        assert!(log.contains("oomScoreAdj"), "clamp not logged: {log}");
    }
}

#[test]
fn bad_bundles_fail_cleanly() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("bad", &["true"]);
    let bundle = f.bundle();
    let config = bundle.join("config.json");
    let create = |f: &Fixture| f.run(&["create", "--bundle", path_str(&bundle), &f.id]);
    let assert_no_leftovers = |f: &Fixture| {
        let left: Vec<_> = fs::read_dir(f.root())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in state root: {left:?}");
        assert_eq!(f.cgroup_dirs(), Vec::<PathBuf>::new(), "cgroups left");
    };

    let good = fs::read(&config).unwrap();
    fs::remove_file(&config).unwrap();
    let out = create(&f);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("config.json"),
        "{}",
        stderr_of(&out)
    );
    assert_no_leftovers(&f);

    fs::write(&config, b"{ not json").unwrap();
    let out = create(&f);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("invalid"), "{}", stderr_of(&out));
    assert_no_leftovers(&f);

    fs::write(&config, &good).unwrap();
    fs::rename(bundle.join("rootfs"), bundle.join("elsewhere")).unwrap();
    let out = create(&f);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("rootfs"), "{}", stderr_of(&out));
    assert_no_leftovers(&f);

    // A program that does not exist in the rootfs fails at create, cleaned up.
    fs::rename(bundle.join("elsewhere"), bundle.join("rootfs")).unwrap();
    let mut spec = default_spec(&["/no/such/program"], f.cgroups_path.as_deref());
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(false));
    f.write_spec(&spec);
    let out = create(&f);
    assert_eq!(out.status.code(), Some(1));
    assert_no_leftovers(&f);

    let out = f.run(&["create", "--bundle", path_str(&bundle), "../escape"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("invalid container id"));
}

#[test]
fn duplicate_create_is_refused() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("dup", &["sleep", "1000"]);
    f.create(Stdio::null());
    let out = f.run(&["create", "--bundle", path_str(&f.bundle()), &f.id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("already exists"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(f.state()["status"], "created");
}

#[test]
fn recycled_pid_is_not_the_container() {
    if !can_run() {
        return;
    }
    let f = Fixture::new("reuse", &["sleep", "1000"]);
    let pid = f.create_and_start();
    // Pretend the init we created started at another time, as if its PID had
    // been recycled by an unrelated process.
    let record_path = f.root().join(&f.id).join("skiff-oci.json");
    let mut record: Value = serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    record["init_start_time"] = Value::from(1u64);
    fs::write(&record_path, record.to_string()).unwrap();

    let state = f.state();
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["pid"], 0);
    // kill must not signal the "unrelated" process.
    let out = f.run(&["kill", &f.id, "KILL"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // delete still cleans up by cgroup, which really holds our init.
    f.ok(&["delete", &f.id]);
    assert_eq!(reap(pid), 128 + 9);
}

/// Prints the median wall time of create + start + wait for `true`, for skiff-oci
/// and (if installed) runc, on the same bundle. Run explicitly:
/// `cargo nextest run -p skiff-runtime --run-ignored only oci_timing`.
#[test]
#[ignore = "benchmark; prints timings"]
fn oci_timing() {
    if !can_run() {
        return;
    }
    let runs = 20;
    let f = Fixture::new("bench", &["true"]);
    let bundle = f.bundle();
    let time_runtime = |binary: &str, root: &Path| -> Duration {
        let mut samples = Vec::new();
        for i in 0..runs {
            let id = format!("{}-{i}", f.id);
            let pid_file = f.path("bench.pid");
            let start = Instant::now();
            let run = |args: &[&str]| {
                let status = Command::new(binary)
                    .arg("--root")
                    .arg(root)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{binary} {args:?}");
            };
            run(&[
                "create",
                "--bundle",
                path_str(&bundle),
                "--pid-file",
                path_str(&pid_file),
                &id,
            ]);
            run(&["start", &id]);
            assert_eq!(reap(read_pid(&pid_file)), 0);
            samples.push(start.elapsed());
            run(&["delete", "--force", &id]);
        }
        samples.sort();
        samples[samples.len() / 2]
    };
    let ours = time_runtime(BIN, &f.root());
    println!("skiff-oci create+start+wait `true`: median {ours:?} over {runs} runs");
    if Command::new("runc").arg("--version").output().is_ok() {
        let runc_root = f.path("runc-root");
        let runc = time_runtime("runc", &runc_root);
        println!("runc      create+start+wait `true`: median {runc:?} over {runs} runs");
    } else {
        println!("runc not installed; no comparison");
    }
}

/// Accepts one connection on a console socket and receives the pty master that
/// libcontainer sends over it.
fn receive_pty_master(listener: &std::os::unix::net::UnixListener) -> File {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    use std::os::fd::{AsRawFd, FromRawFd};

    let (stream, _) = listener.accept().expect("console socket connection");
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    for cmsg in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
            return unsafe { File::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd on the console socket");
}

/// Reads a pty master until the other side is closed (EIO once no process has
/// the slave open).
fn read_pty(mut master: File) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(err) if err.raw_os_error() == Some(libc::EIO) => break,
            Err(err) => panic!("read pty: {err}"),
        }
    }
    String::from_utf8_lossy(&text).replace("\r\n", "\n")
}

#[test]
fn terminals_come_through_the_console_socket() {
    if !can_run() {
        return;
    }
    let f = Fixture::with_spec("tty", &["sh", "-c", "tty; sleep 1000"], |s| {
        s.process_mut().as_mut().unwrap().set_terminal(Some(true));
    });
    let socket = f.path("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    // create: the init's pty master arrives on the socket.
    let status = f
        .cmd(&[
            "create",
            "--bundle",
            path_str(&f.bundle()),
            "--console-socket",
        ])
        .arg(&socket)
        .arg(&f.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "create with a terminal failed: {status}");
    let mut init_master = receive_pty_master(&listener);
    f.ok(&["start", &f.id]);
    let mut line = [0u8; 64];
    let n = init_master.read(&mut line).unwrap();
    assert!(String::from_utf8_lossy(&line[..n]).starts_with("/dev/pts/"));

    // exec -t without --detach: a pty through the socket, and still the exit code.
    let mut exec = f
        .cmd(&[
            "exec",
            "--tty",
            "--console-socket",
            path_str(&socket),
            &f.id,
        ])
        .args(["--", "sh", "-c", "tty; exit 5"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let output = read_pty(receive_pty_master(&listener));
    assert!(output.starts_with("/dev/pts/"), "{output:?}");
    assert_eq!(exec.wait().unwrap().code(), Some(5));

    // Without a socket there is nobody to hand the pty to.
    let out = f.run(&["exec", "--tty", &f.id, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("console-socket"),
        "{}",
        stderr_of(&out)
    );
}
