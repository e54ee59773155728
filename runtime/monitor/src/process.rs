//! Starting a monitor: daemonize behind a startup handshake, run `RUNTIME create` as a child
//! subreaper, then hand over to the event loop.
//!
//! Handshake: the process skiffd runs forks. The child detaches (`setsid`, stdio on
//! `/dev/null`, cwd `/`) and does all the work; when the container exists it writes
//! `ok <pid>\n` on a pipe, or `error <message>` when anything failed, and closes it. The
//! original process relays that: it prints the container PID and exits 0, or prints the
//! message on stderr and exits 1 once the failed child is gone. So the caller sees a plain
//! "run and wait" while the long-lived monitor is no longer its child, and survives it.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::prctl;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, dup2, fork, pipe2, setsid, ForkResult, Pid};

use super::attach::Attach;
use super::console::ConsoleSocket;
use super::control;
use super::cri_log::{LogFile, LogStream};
use super::event_loop::{drain_signalfd, reap_children, Monitor, Output};
use super::oom::OomCounter;
use super::pages::CleanPages;
use super::sys::{self, poll_entry};
use super::{MonitorError, MonitorSpec};

/// How long `RUNTIME create` may take before the monitor kills it and reports failure.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// The most runtime output kept for an error message.
const MAX_ERROR_OUTPUT: usize = 16 * 1024;
/// Children reaped before the init PID is known are remembered, up to this many.
const MAX_EARLY_EXITS: usize = 256;

/// Runs a monitor for `spec`: returns the container init's PID in the calling process once the
/// container is created, while a detached child carries on as the monitor (it never returns
/// from this function; it exits the process when the container has exited).
///
/// Must be called from a single-threaded process (it forks and keeps running Rust code in the
/// child): the `skiff-monitor` binary, never skiffd. Use [`super::spawn_monitor`] there.
pub fn run(spec: &MonitorSpec) -> Result<u32, MonitorError> {
    if !single_threaded() {
        return Err(MonitorError::Startup(
            "the monitor must run in a single-threaded process".into(),
        ));
    }
    let spec = spec.absolute()?;
    let (ready_r, ready_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| MonitorError::io("creating handshake pipe", e))?;
    // SAFETY: this process has one thread (checked above), so the child may run any code.
    match unsafe { fork() }.map_err(|e| MonitorError::io("fork", e))? {
        ForkResult::Parent { child } => {
            drop(ready_w);
            wait_for_handshake(ready_r, child)
        }
        ForkResult::Child => {
            drop(ready_r);
            std::process::exit(monitor_main(&spec, ready_w))
        }
    }
}

fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|n| n.trim() == "1")
        })
        .unwrap_or(false)
}

/// The original process: relay the child's verdict.
fn wait_for_handshake(ready: OwnedFd, child: Pid) -> Result<u32, MonitorError> {
    let mut msg = String::new();
    // EOF comes when the child reported (it closes the pipe) or died.
    let _ = File::from(ready).read_to_string(&mut msg);
    if let Some(pid) = msg.strip_prefix("ok ").and_then(|p| p.trim().parse().ok()) {
        return Ok(pid);
    }
    // The child is exiting: wait, so that no monitor process remains when the caller hears.
    let _ = waitpid(child, None);
    let reason = match msg.strip_prefix("error ") {
        Some(reason) => reason.to_owned(),
        None => format!("monitor exited without reporting (said {msg:?})"),
    };
    Err(MonitorError::Startup(reason))
}

/// The forked child: becomes the monitor; returns its exit code.
fn monitor_main(spec: &MonitorSpec, ready: OwnedFd) -> i32 {
    let mut ready = File::from(ready);
    match detach().and_then(|()| start(spec)) {
        Ok((monitor, pid)) => {
            // If the caller died meanwhile the write fails; the container exists, so carry on.
            let _ = ready.write_all(format!("ok {pid}\n").as_bytes());
            drop(ready);
            monitor.run()
        }
        Err(e) => {
            let _ = ready.write_all(format!("error {e}").as_bytes());
            1
        }
    }
}

/// Leaves the caller's session, stdio and working directory.
fn detach() -> Result<(), MonitorError> {
    setsid().map_err(|e| MonitorError::io("setsid", e))?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| MonitorError::io("opening /dev/null", e))?;
    for fd in 0..=2 {
        dup2(null.as_raw_fd(), fd).map_err(|e| MonitorError::io("redirecting stdio", e))?;
    }
    chdir("/").map_err(|e| MonitorError::io("chdir /", e))
}

/// The container's stdio as handed to the runtime (the init inherits it).
struct RuntimeStdio {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
}

/// The monitor's ends of the container's stdio.
struct MonitorEnds {
    /// Kept open for attach when `--stdin`.
    stdin_writer: Option<OwnedFd>,
    /// stdout, or with a TTY the runtime's own output (the container talks to the pty).
    stdout: OwnedFd,
    /// stderr; `None` with a TTY, where the runtime's stdout and stderr share one pipe.
    stderr: Option<OwnedFd>,
}

fn container_io(spec: &MonitorSpec) -> Result<(RuntimeStdio, MonitorEnds), MonitorError> {
    let (stdout, stdout_w) = output_pipe()?;
    let (stdin, stdin_writer) = if spec.stdin && !spec.tty {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| MonitorError::io("pipe", e))?;
        (Stdio::from(r), Some(w))
    } else {
        (Stdio::null(), None)
    };
    let (stderr_w, stderr) = if spec.tty {
        let w = stdout_w
            .try_clone()
            .map_err(|e| MonitorError::io("dup", e))?;
        (w, None)
    } else {
        let (r, w) = output_pipe()?;
        (w, Some(r))
    };
    let runtime = RuntimeStdio {
        stdin,
        stdout: Stdio::from(stdout_w),
        stderr: Stdio::from(stderr_w),
    };
    let ends = MonitorEnds {
        stdin_writer,
        stdout,
        stderr,
    };
    Ok((runtime, ends))
}

impl MonitorEnds {
    /// What the runtime printed, for an error message: stderr, else stdout.
    fn runtime_message(&self) -> String {
        let mut text = Vec::new();
        if let Some(stderr) = &self.stderr {
            read_available(stderr, &mut text);
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            read_available(&self.stdout, &mut text);
        }
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        if text.is_empty() {
            "(no output)".to_owned()
        } else {
            text
        }
    }
}

/// A pipe whose read end (the monitor's) is non-blocking and whose write end (the
/// container's) stays blocking.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| MonitorError::io("pipe", e))?;
    sys::set_nonblocking(r.as_raw_fd()).map_err(|e| MonitorError::io("pipe", e))?;
    Ok((r, w))
}

/// Reads what is buffered in a non-blocking pipe, up to [`MAX_ERROR_OUTPUT`] in all.
fn read_available(fd: &OwnedFd, out: &mut Vec<u8>) {
    let mut file = File::from(fd.try_clone().expect("dup of a pipe"));
    let mut chunk = [0u8; 1024];
    while out.len() < MAX_ERROR_OUTPUT {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Everything between the fork and the handshake: returns the ready monitor and the init PID.
fn start(spec: &MonitorSpec) -> Result<(Monitor, i32), MonitorError> {
    // The init is the child of the runtime process; when `create` exits it must be re-parented
    // to us, not to PID 1, so we can wait for it.
    prctl::set_child_subreaper(true).map_err(|e| MonitorError::io("PR_SET_CHILD_SUBREAPER", e))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    // Blocked before the runtime starts so no exit is missed; the runtime gets an empty mask.
    mask.thread_block()
        .map_err(|e| MonitorError::io("blocking SIGCHLD", e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| MonitorError::io("signalfd", e))?;
    // Everything that can fail on bad arguments fails before a container exists.
    let control = control::Server::bind(&spec.ctl_socket())?;
    let log = LogFile::open(&spec.log_path)
        .map_err(|e| MonitorError::io(format!("opening log {}", spec.log_path.display()), e))?;
    let (runtime_stdio, ends) = container_io(spec)?;
    let console = if spec.tty {
        Some(ConsoleSocket::bind(&spec.socket_dir.join("console.sock"))?)
    } else {
        None
    };
    match std::fs::remove_file(&spec.pid_file) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(MonitorError::io("removing stale pid file", e))
        }
        _ => {}
    }

    let mut cmd = Command::new(&spec.runtime);
    cmd.arg("--root")
        .arg(&spec.runtime_root)
        .arg("create")
        .arg("--bundle")
        .arg(&spec.bundle)
        .arg("--pid-file")
        .arg(&spec.pid_file);
    if let Some(console) = &console {
        cmd.arg("--console-socket").arg(&console.path);
    }
    cmd.arg(&spec.id)
        .stdin(runtime_stdio.stdin)
        .stdout(runtime_stdio.stdout)
        .stderr(runtime_stdio.stderr);
    // A blocked mask survives exec and Command does not reset it: without this the runtime,
    // and so the container, would start with SIGCHLD blocked.
    // SAFETY: sigprocmask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| MonitorError::io(format!("running {}", spec.runtime.display()), e))?;
    // The container's ends of the pipes were moved into `cmd`; close them so the monitor sees
    // EOF when the container closes its stdio.
    drop(cmd);
    let runtime = Pid::from_raw(child.id() as i32);

    let mut early = Vec::new();
    let (status, master) = wait_for_runtime(runtime, &signals, console.as_ref(), &mut early)?;
    if status != WaitStatus::Exited(runtime, 0) {
        return Err(MonitorError::RuntimeFailed {
            status: describe(status),
            message: ends.runtime_message(),
        });
    }
    let pid = read_pid_file(spec)?;
    let init = Pid::from_raw(pid);
    let mut init_exit = early
        .into_iter()
        .find(|(s, _): &(WaitStatus, i64)| s.pid() == Some(init));
    if init_exit.is_none() {
        // Make sure it is ours to wait for; a runtime that daemonized it elsewhere would leave
        // the monitor waiting forever.
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(s) => init_exit = Some((s, super::cri_log::now_unix_nanos())),
            Err(e) => {
                return Err(MonitorError::RuntimeProtocol(format!(
                    "container init {pid} is not a child of the monitor: {e}"
                )))
            }
        }
    }

    let MonitorEnds {
        stdin_writer,
        stdout,
        stderr,
    } = ends;
    let mut console = None;
    let mut stdin = match stdin_writer {
        Some(w) => {
            // Attach writes to it from the event loop, which must never block on a container
            // that does not read its stdin. The container's end stays blocking.
            sys::set_nonblocking(w.as_raw_fd()).map_err(|e| MonitorError::io("stdin pipe", e))?;
            Some(File::from(w))
        }
        None => None,
    };
    let outputs = match master {
        Some(master) => {
            // The runtime's own output pipe is not the container's: drop it.
            sys::set_nonblocking(master.as_raw_fd())
                .map_err(|e| MonitorError::io("console fd", e))?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(File::from)
                    .map_err(|e| MonitorError::io("dup of the console fd", e))
            };
            // A TTY container reads its input from the terminal.
            if spec.stdin {
                stdin = Some(dup(&master)?);
            }
            console = Some(dup(&master)?);
            vec![Output::new(master, LogStream::Stdout)]
        }
        None if spec.tty => {
            return Err(MonitorError::RuntimeProtocol(
                "runtime did not send the console fd".into(),
            ))
        }
        None => {
            let mut outs = vec![Output::new(stdout, LogStream::Stdout)];
            outs.extend(stderr.map(|fd| Output::new(fd, LogStream::Stderr)));
            outs
        }
    };
    let monitor = Monitor {
        init,
        init_exit,
        signals,
        outputs,
        attach: Attach::new(stdin, spec.stdin_once),
        console,
        log,
        control,
        oom: OomCounter::for_pid(pid),
        exit_file: spec.exit_file.clone(),
        pages: CleanPages::find(),
    };
    Ok((monitor, pid))
}

/// Waits for `RUNTIME create` to exit, receiving the pty master meanwhile when there is a
/// console socket. Other children reaped meanwhile (the init may already have exited) are
/// remembered in `early`.
fn wait_for_runtime(
    runtime: Pid,
    signals: &SignalFd,
    console: Option<&ConsoleSocket>,
    early: &mut Vec<(WaitStatus, i64)>,
) -> Result<(WaitStatus, Option<OwnedFd>), MonitorError> {
    let deadline = Instant::now() + CREATE_TIMEOUT;
    let mut master = None;
    let mut status = None;
    loop {
        // Checked before the exit status, so a runtime that sends and exits at once is seen.
        if let (Some(console), None) = (console, &master) {
            master = console.try_receive()?;
        }
        if let Some(status) = status {
            return Ok((status, master));
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            let _ = kill(runtime, Signal::SIGKILL);
            let _ = waitpid(runtime, None);
            return Err(MonitorError::RuntimeProtocol(format!(
                "did not finish within {}s",
                CREATE_TIMEOUT.as_secs()
            )));
        };
        let mut fds = vec![poll_entry(signals.as_fd())];
        if let (Some(console), None) = (console, &master) {
            fds.push(poll_entry(console.listener.as_fd()));
        }
        match sys::poll(&mut fds, left.as_millis().min(i32::MAX as u128) as i32) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(MonitorError::io("poll", e)),
        }
        drain_signalfd(signals);
        reap_children(|s, at| {
            if s.pid() == Some(runtime) {
                status = Some(s);
            } else if early.len() < MAX_EARLY_EXITS {
                early.push((s, at));
            }
        });
    }
}

fn read_pid_file(spec: &MonitorSpec) -> Result<i32, MonitorError> {
    let path = &spec.pid_file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| MonitorError::io(format!("reading pid file {}", path.display()), e))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(MonitorError::RuntimeProtocol(format!(
            "pid file {} holds {:?}, not a pid",
            path.display(),
            text
        ))),
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn describes_statuses() {
        let pid = Pid::from_raw(1);
        assert_eq!(describe(WaitStatus::Exited(pid, 1)), "exit status 1");
        assert_eq!(
            describe(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL"
        );
    }

    #[test]
    fn unit_tests_are_not_single_threaded() {
        // The test harness runs tests on worker threads, so `run` must refuse here.
        if !single_threaded() {
            let spec = MonitorSpec {
                id: "x".into(),
                bundle: "/nonexistent".into(),
                runtime: "/bin/false".into(),
                runtime_root: "/nonexistent".into(),
                log_path: "/nonexistent/log".into(),
                exit_file: "/nonexistent/exit".into(),
                pid_file: "/nonexistent/pid".into(),
                socket_dir: "/nonexistent".into(),
                stdin: false,
                stdin_once: false,
                tty: false,
            };
            assert!(matches!(run(&spec), Err(MonitorError::Startup(_))));
        }
    }

    #[test]
    fn errno_is_io_error() {
        let e = MonitorError::io("x", Errno::ENOENT);
        assert!(e.to_string().starts_with("x: "));
    }
}
