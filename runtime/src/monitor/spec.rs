//! What a monitor is asked to do: the fields of the `skiff-monitor` command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::MonitorError;

/// One container's monitor configuration; [`MonitorSpec::to_args`] renders it as the
/// `skiff-monitor` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    /// The container ID passed to the runtime.
    pub id: String,
    /// The OCI bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// The runc-shaped OCI runtime binary (skiff-oci).
    pub runtime: PathBuf,
    /// The runtime's state directory (`--root`).
    pub runtime_root: PathBuf,
    /// The CRI log file; its parent directory is created when missing.
    pub log_path: PathBuf,
    /// Where the exit status is written (JSON, atomically) when the container exits.
    pub exit_file: PathBuf,
    /// Where the runtime writes the container init's PID.
    pub pid_file: PathBuf,
    /// Directory of the control socket (`ctl`) and, with a TTY, the console socket.
    pub socket_dir: PathBuf,
    /// Give the container a stdin pipe, kept open while it runs (for attach).
    pub stdin: bool,
    /// Close stdin after the first attach session ends (CRI `stdin_once`); needs `stdin`.
    pub stdin_once: bool,
    /// Allocate a pty: the runtime sends its master over `--console-socket`.
    pub tty: bool,
}

/// The control socket of the monitor whose socket directory is `socket_dir`.
pub fn ctl_socket_path(socket_dir: &Path) -> PathBuf {
    socket_dir.join("ctl")
}

impl MonitorSpec {
    /// The `skiff-monitor` arguments (without the program name) for this spec.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::with_capacity(20);
        let mut push = |flag: &str, value: &Path| {
            args.push(flag.into());
            args.push(value.into());
        };
        push("--id", Path::new(&self.id));
        push("--bundle", &self.bundle);
        push("--runtime", &self.runtime);
        push("--runtime-root", &self.runtime_root);
        push("--log-path", &self.log_path);
        push("--exit-file", &self.exit_file);
        push("--pid-file", &self.pid_file);
        push("--socket-dir", &self.socket_dir);
        for (set, flag) in [
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
            (self.tty, "--tty"),
        ] {
            if set {
                args.push(flag.into());
            }
        }
        args
    }

    /// The control socket path.
    pub fn ctl_socket(&self) -> PathBuf {
        ctl_socket_path(&self.socket_dir)
    }

    /// The same spec with every path made absolute, because the monitor changes to `/` so it
    /// does not pin the caller's working directory.
    pub(crate) fn absolute(&self) -> Result<MonitorSpec, MonitorError> {
        let abs = |p: &Path| {
            std::path::absolute(p)
                .map_err(|e| MonitorError::io(format!("resolving {}", p.display()), e))
        };
        Ok(MonitorSpec {
            id: self.id.clone(),
            bundle: abs(&self.bundle)?,
            runtime: if self.runtime.components().count() > 1 {
                abs(&self.runtime)?
            } else {
                // A bare name is looked up in PATH, as Command does.
                self.runtime.clone()
            },
            runtime_root: abs(&self.runtime_root)?,
            log_path: abs(&self.log_path)?,
            exit_file: abs(&self.exit_file)?,
            pid_file: abs(&self.pid_file)?,
            socket_dir: abs(&self.socket_dir)?,
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MonitorSpec {
        MonitorSpec {
            id: "c1".into(),
            bundle: "/b".into(),
            runtime: "skiff-oci".into(),
            runtime_root: "/r".into(),
            log_path: "/l/c1.log".into(),
            exit_file: "/e/c1.json".into(),
            pid_file: "/b/pid".into(),
            socket_dir: "/s".into(),
            stdin: true,
            stdin_once: false,
            tty: true,
        }
    }

    #[test]
    fn args_render_every_field() {
        let args: Vec<String> = spec()
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "--id c1 --bundle /b --runtime skiff-oci --runtime-root /r --log-path /l/c1.log \
             --exit-file /e/c1.json --pid-file /b/pid --socket-dir /s --stdin --tty"
        );
    }

    #[test]
    fn absolute_keeps_bare_runtime_name() {
        let mut s = spec();
        s.log_path = "rel/c1.log".into();
        let abs = s.absolute().unwrap();
        assert_eq!(abs.runtime, PathBuf::from("skiff-oci"));
        assert!(abs.log_path.is_absolute());
        assert!(abs.log_path.ends_with("rel/c1.log"));
    }
}
