//! `skiff-oci exec`: run another process inside a running container.

use std::path::{Path, PathBuf};

use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::{Process, Spec};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::bundle;
use super::container::{self, status_word};
use super::enter;
use super::error::{OciError, Result};
use super::pid_file;

/// Arguments of `exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// JSON file with a complete OCI `process` object; the command-line process
    /// options are ignored when it is given.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Give the process a pty; requires `--console-socket`, which receives its master.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Unix socket that receives the pty master (with `--tty`).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable `KEY=VALUE`; replaces the container's value of KEY.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Run as `UID[:GID]` (numbers); defaults to the container's user.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Write the process's host PID here before waiting for it.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Return once the process has started instead of waiting for it.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Container id.
    pub id: String,
    /// Command and arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs a process in container `args.id` and returns the exit code to exit with:
/// the process's own exit code, 128 + signal number if a signal killed it, or 0
/// with `--detach`.
///
/// The process is a child of this one (see [`enter`]: it joins the container's
/// namespaces, cgroup and seccomp filter), and inherits our stdin, stdout and stderr
/// unless it has a pty. A command that does not exist or cannot run exits 127 or 126,
/// with the reason on our stderr, as in a shell.
pub fn exec(root: &Path, args: &ExecArgs) -> Result<i32> {
    let id = args.id.as_str();
    let container = container::load(root, id)?;
    if container.status() != ContainerStatus::Running {
        return Err(OciError::WrongStatus {
            id: id.to_string(),
            status: status_word(container.status()),
            needed: "cannot exec in a container that is not running",
        });
    }
    if args.tty && args.console_socket.is_none() {
        return Err(OciError::InvalidArgument(
            "--tty needs --console-socket (skiff-oci does not relay a pty itself)".into(),
        ));
    }

    let mut process = match &args.process {
        Some(path) => bundle::read_json::<Process>(path)?,
        None => process_from_args(&container, args)?,
    };
    bundle::clamp_oom_score_adj(&mut process)?;

    if process.terminal() == Some(true) && args.console_socket.is_none() {
        return Err(OciError::InvalidArgument(
            "a process with a terminal needs --console-socket".into(),
        ));
    }
    let init = container
        .pid()
        .ok_or_else(|| OciError::Other(format!("container \"{id}\" has no init process")))?;
    let cgroup_path = container
        .spec()
        .map_err(|err| OciError::libcontainer("exec in", id, err))?
        .cgroup_path;
    // The adjusted spec `create` kept: its seccomp filter is the one the init runs under.
    let spec: Spec = bundle::load_spec(container.bundle())?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let pid = enter::spawn(&enter::Entry {
        id,
        init,
        cgroup_path,
        process: &process,
        seccomp,
        console_socket: args.console_socket.as_deref(),
    })?;
    tracing::info!(id, pid = pid.as_raw(), "exec process started");

    // Written before waiting, so a caller can kill the process on a timeout.
    if let Some(path) = &args.pid_file {
        pid_file::write(path, pid.as_raw())?;
    }
    if args.detach {
        return Ok(0);
    }
    wait_for_exit(pid)
}

/// Builds the exec process as runc does: the container's own process (user,
/// capabilities, rlimits, no_new_privileges, ...) with the command-line overrides.
fn process_from_args(container: &Container, args: &ExecArgs) -> Result<Process> {
    if args.command.is_empty() {
        return Err(OciError::InvalidArgument(
            "exec needs a command (after --) or --process".into(),
        ));
    }
    // `bundle()` is the adjusted copy `create` keeps in the state directory.
    let spec: Spec = bundle::load_spec(container.bundle())?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        if cwd.is_relative() {
            return Err(OciError::InvalidArgument(format!(
                "--cwd must be absolute, got {}",
                cwd.display()
            )));
        }
        process.set_cwd(cwd.clone());
    }
    let env = merge_env(process.env().clone().unwrap_or_default(), &args.env)?;
    process.set_env(Some(env));
    if let Some(user) = &args.user {
        let (uid, gid) = parse_user(user)?;
        process.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            process.user_mut().set_gid(gid);
        }
    }
    Ok(process)
}

/// Applies `KEY=VALUE` overrides to an environment, replacing existing keys.
fn merge_env(mut env: Vec<String>, overrides: &[String]) -> Result<Vec<String>> {
    for entry in overrides {
        let Some((key, _)) = entry.split_once('=') else {
            return Err(OciError::InvalidArgument(format!(
                "--env wants KEY=VALUE, got {entry:?}"
            )));
        };
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(entry.clone());
    }
    Ok(env)
}

/// Parses `UID[:GID]`.
fn parse_user(text: &str) -> Result<(u32, Option<u32>)> {
    let invalid = || OciError::InvalidArgument(format!("--user wants UID[:GID], got {text:?}"));
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid = uid.parse().map_err(|_| invalid())?;
    let gid = gid.map(|g| g.parse().map_err(|_| invalid())).transpose()?;
    Ok((uid, gid))
}

/// Waits for our child `pid` and turns its end into a shell-style exit code.
fn wait_for_exit(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            // Stopped/continued notifications are not requested; keep waiting.
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => {
                return Err(OciError::io(
                    format!("wait for exec process {pid}"),
                    err.into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_keys() {
        let env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let merged = merge_env(env, &["A=2".to_string(), "B=".to_string()]).unwrap();
        assert_eq!(merged, ["PATH=/bin", "A=2", "B="]);
        assert!(merge_env(vec![], &["NOEQUALS".to_string()]).is_err());
    }

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, Some(50)));
        for bad in ["", "root", "1:", ":1", "1:2:3", "-1"] {
            assert!(parse_user(bad).is_err(), "{bad:?} accepted");
        }
    }
}
