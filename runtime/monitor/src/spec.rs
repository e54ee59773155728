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

    /// Parses the arguments [`MonitorSpec::to_args`] produces (the monitor's command line,
    /// without the program name). Hand-written rather than clap: the parsing code is paged in
    /// before the monitor forks and stays resident in every monitor, so it is kept small.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<MonitorSpec, String> {
        let mut values: std::collections::HashMap<&'static str, PathBuf> = Default::default();
        let (mut stdin, mut stdin_once, mut tty) = (false, false, false);
        const VALUED: [&str; 8] = [
            "--id",
            "--bundle",
            "--runtime",
            "--runtime-root",
            "--log-path",
            "--exit-file",
            "--pid-file",
            "--socket-dir",
        ];
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let arg = arg
                .into_string()
                .map_err(|a| format!("unexpected argument {a:?}"))?;
            match arg.as_str() {
                "--stdin" => stdin = true,
                "--stdin-once" => stdin_once = true,
                "--tty" => tty = true,
                flag => {
                    let key = VALUED
                        .iter()
                        .find(|k| **k == flag)
                        .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
                    let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    values.insert(key, PathBuf::from(value));
                }
            }
        }
        if stdin_once && !stdin {
            return Err("--stdin-once requires --stdin".into());
        }
        let mut take = |flag: &str| {
            values
                .remove(flag)
                .ok_or_else(|| format!("missing required argument {flag}"))
        };
        Ok(MonitorSpec {
            id: take("--id")?.to_string_lossy().into_owned(),
            bundle: take("--bundle")?,
            runtime: take("--runtime")?,
            runtime_root: take("--runtime-root")?,
            log_path: take("--log-path")?,
            exit_file: take("--exit-file")?,
            pid_file: take("--pid-file")?,
            socket_dir: take("--socket-dir")?,
            stdin,
            stdin_once,
            tty,
        })
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
