//! Shared fixtures for the monitor tests: a fake OCI runtime, process lookup and cleanup.
#![allow(dead_code)] // each test binary uses a different subset

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use skiff_monitor::{
    parse_cri_log_line, read_exit_file, spawn_monitor, ExitStatus, LogRecord, MonitorError,
    MonitorSpec,
};

/// The monitor binary under test.
pub const MONITOR: &str = env!("CARGO_BIN_EXE_skiff-monitor");

/// A fake runc-shaped runtime: `--root R create --bundle B --pid-file P [--console-socket S] ID`
/// records its arguments in `bundle/args` next to itself, fails with the text of `B/fail` when that exists, and
/// otherwise starts `busybox sh -c "$(cat B/script)"` in the background with the inherited
/// stdio, writes its PID and exits 0: the shell is re-parented to the monitor, as a real
/// container init is.
const FAKE_RUNTIME: &str = r#"#!/bin/sh
echo "$@" > "$(dirname "$0")/bundle/args"
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--console-socket) shift 2 ;;
    --bundle) bundle=$2; shift 2 ;;
    --pid-file) pidfile=$2; shift 2 ;;
    create) shift ;;
    *) id=$1; shift ;;
  esac
done
if [ -f "$bundle/fail" ]; then cat "$bundle/fail" >&2; exit 1; fi
# An asynchronous command gets /dev/null as stdin unless redirected explicitly.
exec 3<&0
/bin/busybox sh -c "$(cat "$bundle/script")" <&3 3<&- &
echo $! > "$pidfile"
exit 0
"#;

/// A container driven by a monitor, with everything under one temp dir. Dropping it kills
/// every process of the monitor's session (monitor, runtime, container) and removes the files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub spec: MonitorSpec,
    /// The monitor's PID once found; its session ID too, since it calls setsid().
    monitor: Option<i32>,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    /// A fixture whose container runs `script` (busybox sh).
    pub fn new(script: &str) -> Fixture {
        Self::with_runtime(script, FAKE_RUNTIME)
    }

    /// A fixture with a custom runtime script (written as `runtime` in the temp dir).
    pub fn with_runtime(script: &str, runtime: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let bundle = root.join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        // skiffd creates the exit file's directory (the bundle) before starting a monitor.
        std::fs::create_dir(root.join("exit")).unwrap();
        std::fs::write(bundle.join("script"), script).unwrap();
        let runtime_path = root.join("runtime");
        std::fs::write(&runtime_path, runtime).unwrap();
        std::fs::set_permissions(&runtime_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let id = format!(
            "mon-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let spec = MonitorSpec {
            id,
            bundle,
            runtime: runtime_path,
            runtime_root: root.join("state"),
            log_path: root.join("logs/c.log"),
            exit_file: root.join("exit/c.json"),
            pid_file: root.join("c.pid"),
            socket_dir: root.join("sock"),
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        Fixture {
            dir,
            spec,
            monitor: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the monitor through the library API and remembers its PID for cleanup.
    pub fn spawn(&mut self) -> Result<u32, MonitorError> {
        let res = spawn_monitor(Path::new(MONITOR), &self.spec);
        self.monitor = find_monitor(&self.spec.id);
        res
    }

    /// Remembers the monitor's PID after it was started another way.
    pub fn track_monitor(&mut self) -> i32 {
        let pid = find_monitor(&self.spec.id).expect("monitor running");
        self.monitor = Some(pid);
        pid
    }

    /// The running monitor's PID (found by its `--id` argument).
    pub fn monitor_pid(&self) -> Option<i32> {
        find_monitor(&self.spec.id)
    }

    /// Waits for the exit file.
    pub fn wait_exit(&self) -> ExitStatus {
        let mut status = None;
        wait_until("exit file", || {
            status = read_exit_file(&self.spec.exit_file).unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// The records of a log file.
    pub fn records_of(path: &Path) -> Vec<LogRecord> {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes
            .split_inclusive(|&b| b == b'\n')
            .map(|l| parse_cri_log_line(l).unwrap_or_else(|| panic!("bad log line {l:?}")))
            .collect()
    }

    pub fn records(&self) -> Vec<LogRecord> {
        Self::records_of(&self.spec.log_path)
    }

    /// Waits until the log file at `path` holds a record whose content is `text`.
    pub fn wait_for_line(path: &Path, text: &str) {
        wait_until(&format!("log line {text:?}"), || {
            Self::records_of(path).iter().any(|r| r.text() == text)
        });
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let session = self.monitor.or_else(|| find_monitor(&self.spec.id));
        if let Some(sid) = session {
            // Everything the monitor started shares its session: runtime, container, strays.
            for pid in pids() {
                if session_of(pid) == Some(sid) {
                    // SAFETY: plain kill(2) of a process in our test's own session.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Polls `cond` every 10 ms for up to 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The monitor process whose `--id` is `id`: the detached one (its own session leader), not
/// the short-lived process that relays the handshake.
pub fn find_monitor(id: &str) -> Option<i32> {
    pids().into_iter().find(|&pid| {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"skiff-monitor"))
            && args
                .windows(2)
                .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
            && session_of(pid) == Some(pid)
    })
}

/// A field of /proc/<pid>/stat after the command name: 0 is the state, 1 ppid, 3 session.
pub fn stat_field(pid: i32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(index).map(str::to_owned)
}

pub fn session_of(pid: i32) -> Option<i32> {
    stat_field(pid, 3)?.parse().ok()
}

pub fn parent_of(pid: i32) -> Option<i32> {
    stat_field(pid, 1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|s| s != "Z")
}

/// `key: value kB` lines of /proc/<pid>/status (or smaps_rollup), in kB.
pub fn kb(pid: i32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

/// What an attach connection delivered: output by stream, and whether the monitor closed it.
#[derive(Debug, Default)]
pub struct Attached {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub closed: bool,
}

/// Reads attach frames from `conn` (written from the documented wire format, not the monitor's
/// code) until `done` holds for what arrived or the monitor closes the connection; 10 s at most.
pub fn read_attach(
    conn: &mut std::os::unix::net::UnixStream,
    mut done: impl FnMut(&Attached) -> bool,
) -> Attached {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Attached::default();
    while !done(&got) {
        let mut header = [0u8; 5];
        match conn.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                got.closed = true;
                return got;
            }
            Err(e) => panic!("reading an attach frame after {got:?}: {e}"),
        }
        let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).unwrap();
        match header[0] {
            1 => got.stdout.extend(payload),
            2 => got.stderr.extend(payload),
            tag => panic!("unknown attach frame tag {tag}"),
        }
    }
    got
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
