//! Entering a running container for `exec`: a new process joins the init's namespaces
//! and cgroup, takes the process's credentials, rlimits, capabilities and the
//! container's seccomp filter, then execs the command.
//!
//! libcontainer's tenant builder would do most of this, but it rebuilds the spec's
//! `linux` section from namespaces and cgroups only, so the container's seccomp profile
//! is dropped and an exec'd process would run unconfined. The steps are few, so they
//! are done here, in the order runc and libcontainer's init use:
//!
//! ```text
//! skiff-oci (host)                       child (container PID namespace)
//!   open /proc/<init>/ns/*                 |
//!   setns(pid)  -- affects children only   |
//!   fork ------------------------------->  wait for "go"
//!   add child to the container's cgroup    |
//!   send "go" -------------------------->  setns(ipc, uts, net, cgroup, mnt)
//!   read the report pipe                   rlimits, oom_score_adj, no_new_privs
//!     EOF (close-on-exec): it runs         groups, uid/gid (keeping caps)
//!     text: why it failed                  seccomp (before dropping caps unless NNP)
//!                                          capabilities, cwd, [seccomp if NNP]
//!                                          execve  (or write the error, exit)
//! ```
//!
//! The child only runs after `fork` in a single-threaded process (skiff-oci), so it may
//! allocate freely.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::capabilities;
use libcontainer::oci_spec::runtime::{LinuxSeccomp, Process};
use libcontainer::seccomp;
use libcontainer::syscall::syscall::create_syscall;
use libcontainer::tty;
use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

use super::error::{OciError, Result};

/// Exit code of a child that could not start the command because it does not exist,
/// as a shell reports it.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code of a child that found the command but could not run it.
pub const EXIT_CANNOT_RUN: i32 = 126;

/// The namespaces an exec'd process joins, in joining order; the mount namespace goes
/// last because it changes what every path (even /proc) means. The PID namespace is
/// joined by the parent before forking (it only applies to children).
const JOINED: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// The fallback search path when the process's environment has no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a process needs to enter a container.
pub struct Entry<'a> {
    /// Container id, for messages.
    pub id: &'a str,
    /// The container's init process (host PID).
    pub init: Pid,
    /// The container's cgroup path, as libcontainer created it.
    pub cgroup_path: PathBuf,
    /// The process to run (args, env, cwd, user, capabilities, rlimits...).
    pub process: &'a Process,
    /// The container's seccomp filter, if it has one.
    pub seccomp: Option<&'a LinuxSeccomp>,
    /// Where to send the pty master, if the process gets a terminal.
    pub console_socket: Option<&'a Path>,
}

/// Namespaces of the init that differ from ours, opened before anything changes.
struct Namespaces {
    pid: Option<File>,
    others: Vec<(CloneFlags, File)>,
}

/// Starts `entry.process` inside the container and returns its host PID once it has
/// exec'd. A failure before the exec is returned as an error (after reaping the
/// child), except a missing or non-executable command, which the child reports by
/// its exit code ([`EXIT_NOT_FOUND`], [`EXIT_CANNOT_RUN`]) as a shell would.
pub fn spawn(entry: &Entry) -> Result<Pid> {
    let namespaces = open_namespaces(entry.init)?;
    let console = entry
        .console_socket
        .map(|path| {
            UnixStream::connect(path)
                .map_err(|e| OciError::io(format!("connect to {}", path.display()), e))
        })
        .transpose()?;
    let cgroup = create_cgroup_manager(CgroupConfig {
        cgroup_path: entry.cgroup_path.clone(),
        systemd_cgroup: false,
        container_name: entry.id.to_string(),
    })
    .map_err(|e| OciError::Other(format!("cgroup of container \"{}\": {e}", entry.id)))?;

    let (go_read, go_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    if let Some(pid_ns) = &namespaces.pid {
        setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| OciError::io("join the container's PID namespace", e.into()))?;
    }

    // SAFETY: skiff-oci is single-threaded, so the child may run any code.
    match unsafe { fork() }.map_err(|e| OciError::io("fork", e.into()))? {
        ForkResult::Child => {
            drop((go_write, report_read));
            let failure = child(entry, namespaces, console, go_read);
            let code = report(report_write, &failure);
            // SAFETY: leave without running the parent's exit handlers twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((go_read, report_write, namespaces, console));
            parent(entry, child, cgroup.add_task(child), go_write, report_read)
        }
    }
}

/// The parent's side: put the child in the cgroup, let it go, learn whether it exec'd.
fn parent<E: std::fmt::Display>(
    entry: &Entry,
    child: Pid,
    joined: std::result::Result<(), E>,
    go: OwnedFd,
    report: OwnedFd,
) -> Result<Pid> {
    if let Err(e) = joined {
        // Dropping `go` unsent makes the child exit without running anything.
        drop(go);
        reap(child);
        return Err(OciError::Other(format!(
            "add exec process to the cgroup of container \"{}\": {e}",
            entry.id
        )));
    }
    let mut go = File::from(go);
    if let Err(e) = go.write_all(b"g") {
        reap(child);
        return Err(OciError::io("start the exec process", e));
    }
    let mut text = String::new();
    let _ = File::from(report).read_to_string(&mut text);
    if text.is_empty() {
        return Ok(child);
    }
    let (code, message) = text.split_once(' ').unwrap_or(("1", &text));
    if code == EXIT_NOT_FOUND.to_string() || code == EXIT_CANNOT_RUN.to_string() {
        // The command is the problem, not the container: report it the shell's way and
        // let the caller collect the exit code.
        eprintln!("skiff-oci: {message}");
        return Ok(child);
    }
    reap(child);
    Err(OciError::Other(format!(
        "exec in container \"{}\": {message}",
        entry.id
    )))
}

/// The child's side: everything up to `execve`. Only returns on failure.
fn child(
    entry: &Entry,
    namespaces: Namespaces,
    console: Option<UnixStream>,
    go: OwnedFd,
) -> Failure {
    let mut byte = [0u8; 1];
    match File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Failure::setup("the parent gave up before the start"),
    }
    match enter_and_exec(entry, namespaces, console) {
        Ok(never) => match never {},
        Err(failure) => failure,
    }
}

/// Why the child did not exec, and the exit code that says so.
struct Failure {
    message: String,
    code: i32,
}

impl Failure {
    fn setup(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    fn step(step: &str, err: impl std::fmt::Display) -> Failure {
        Failure::setup(format!("{step}: {err}"))
    }
}

/// Sends the failure through the report pipe as "<exit code> <message>"; returns the
/// exit code to use.
fn report(pipe: OwnedFd, failure: &Failure) -> i32 {
    let text = format!("{} {}", failure.code, failure.message);
    let _ = File::from(pipe).write_all(text.as_bytes());
    failure.code
}

/// Joins the namespaces, applies the process settings and execs.
fn enter_and_exec(
    entry: &Entry,
    namespaces: Namespaces,
    console: Option<UnixStream>,
) -> std::result::Result<std::convert::Infallible, Failure> {
    let process = entry.process;
    // Still in the host's mount namespace: /proc/self is this process either way.
    if let Some(score) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())
            .map_err(|e| Failure::step("set oom_score_adj", e))?;
    }
    for (flag, file) in &namespaces.others {
        setns(file.as_fd(), *flag).map_err(|e| Failure::step("join namespace", e))?;
    }
    drop(namespaces);

    nix::unistd::setsid().map_err(|e| Failure::step("setsid", e))?;
    let syscall = create_syscall();
    if let Some(console) = console {
        // Opens the pty in the container's devpts (we are in its mount namespace now),
        // sends the master, makes the slave our stdio and controlling terminal, and
        // closes the socket.
        tty::setup_console(syscall.as_ref(), console.into_raw_fd(), false)
            .map_err(|e| Failure::step("set up the terminal", e))?;
    }
    for rlimit in process.rlimits().iter().flatten() {
        syscall
            .set_rlimit(rlimit)
            .map_err(|e| Failure::step("set rlimit", e))?;
    }
    let no_new_privs = process.no_new_privileges() == Some(true);
    if no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| Failure::step("set no_new_privs", e))?;
    }

    let user = process.user();
    if let Some(umask) = user.umask() {
        let mode = nix::sys::stat::Mode::from_bits_truncate(umask);
        nix::sys::stat::umask(mode);
    }
    // Always set, so an empty list clears skiff-oci's own supplementary groups.
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    syscall
        .set_groups(&groups)
        .map_err(|e| Failure::step("set supplementary groups", e))?;
    syscall
        .set_id(Uid::from_raw(user.uid()), Gid::from_raw(user.gid()))
        .map_err(|e| Failure::step("set user", e))?;

    // Loading a filter needs CAP_SYS_ADMIN unless no_new_privs is set: without it, load
    // before the capabilities go (the filter allows what follows: capset, chdir, execve).
    if !no_new_privs {
        load_seccomp(entry.seccomp)?;
    }
    capabilities::reset_effective(syscall.as_ref())
        .map_err(|e| Failure::step("reset capabilities", e))?;
    if let Some(caps) = process.capabilities() {
        capabilities::drop_privileges(caps, syscall.as_ref())
            .map_err(|e| Failure::step("drop capabilities", e))?;
    }
    std::env::set_current_dir(process.cwd()).map_err(|e| {
        Failure::step(
            &format!("change to directory {}", process.cwd().display()),
            e,
        )
    })?;
    if no_new_privs {
        load_seccomp(entry.seccomp)?;
    }
    exec(process)
}

/// Loads the container's seccomp filter into this process.
fn load_seccomp(filter: Option<&LinuxSeccomp>) -> std::result::Result<(), Failure> {
    let Some(filter) = filter else {
        return Ok(());
    };
    match seccomp::initialize_seccomp(filter) {
        Ok(None) => Ok(()),
        // A notify profile needs a listener (the `listenerPath` agent), which we do not run.
        Ok(Some(_)) => Err(Failure::setup(
            "seccomp profiles with SCMP_ACT_NOTIFY are not supported for exec",
        )),
        Err(e) => Err(Failure::step("load the seccomp filter", e)),
    }
}

/// Replaces this process with the command, looked up in the process's own PATH.
fn exec(process: &Process) -> std::result::Result<std::convert::Infallible, Failure> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(command) = args.first() else {
        return Err(Failure::setup("the process has no args"));
    };
    let env = process.env().as_deref().unwrap_or_default();
    let path = resolve(command, env).ok_or_else(|| Failure {
        message: format!("exec: {command:?}: executable file not found in $PATH"),
        code: EXIT_NOT_FOUND,
    })?;
    let c = |s: &str| CString::new(s).map_err(|_| Failure::setup(format!("NUL byte in {s:?}")));
    let argv = args
        .iter()
        .map(|a| c(a))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| c(e))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let program = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Failure::setup("NUL byte in the command path"))?;
    let err = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    let code = match err {
        nix::errno::Errno::ENOENT => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_RUN,
    };
    Err(Failure {
        message: format!("exec: {}: {err}", path.display()),
        code,
    })
}

/// Finds `command` as execvp would: as given if it has a slash, otherwise the first
/// executable regular file of that name in the environment's PATH.
fn resolve(command: &str, env: &[String]) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    let search = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    search
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(command))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Opens the init's namespaces that we are not already in (a host-network pod shares
/// our network namespace, and joining it again would be pointless).
fn open_namespaces(init: Pid) -> Result<Namespaces> {
    let open = |name: &str| -> Result<Option<File>> {
        let theirs = format!("/proc/{init}/ns/{name}");
        let file = File::open(&theirs).map_err(|e| OciError::io(format!("open {theirs}"), e))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(|e| OciError::io(format!("stat /proc/self/ns/{name}"), e))?;
        let same = file.metadata().is_ok_and(|m| m.ino() == ours.ino());
        Ok((!same).then_some(file))
    };
    if open("user")?.is_some() {
        return Err(OciError::InvalidArgument(
            "exec into a container with its own user namespace is not supported".into(),
        ));
    }
    let mut others = Vec::new();
    for (name, flag) in JOINED {
        if let Some(file) = open(name)? {
            others.push((flag, file));
        }
    }
    Ok(Namespaces {
        pid: open("pid")?,
        others,
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| OciError::io("pipe", e.into()))
}

/// Waits for a child that failed to start.
fn reap(child: Pid) {
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_in_the_process_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];

        assert_eq!(resolve("tool", &env), Some(tool));
        assert_eq!(resolve("plain", &env), None, "not executable");
        assert_eq!(resolve("missing", &env), None);
        // With a slash the path is taken as given; execve reports if it is wrong.
        assert_eq!(resolve("./x", &env), Some(PathBuf::from("./x")));
        assert!(resolve("sh", &[]).is_some(), "default PATH");
    }
}
