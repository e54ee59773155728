//! `skiff-oci kill`: send a signal to a container's init (or all its processes).

use std::path::Path;
use std::str::FromStr;

use libcontainer::container::ContainerStatus;
use nix::sys::signal::Signal;

use super::container::{self, status_word};
use super::error::{OciError, Result};

/// Arguments of `kill`.
#[derive(Debug, Clone, clap::Args)]
pub struct KillArgs {
    /// Signal every process in the container's cgroup, not just the init.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name (`TERM`, `SIGTERM`, `term`) or number.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

/// Sends `args.signal` to container `args.id`.
///
/// Like runc, signalling a stopped container is an error unless `--all` is given
/// (then whatever is left in its cgroup is signalled).
pub fn kill(root: &Path, args: &KillArgs) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    let mut container = container::load(root, &args.id)?;
    let stopped = container.status() == ContainerStatus::Stopped;
    if stopped && !args.all {
        return Err(OciError::WrongStatus {
            id: args.id.clone(),
            status: status_word(container.status()),
            needed: "cannot signal a container that is not running",
        });
    }
    container
        .kill(signal, args.all)
        .map_err(|err| OciError::libcontainer("kill", &args.id, err))?;
    tracing::info!(id = %args.id, %signal, all = args.all, "signal sent");
    Ok(())
}

/// Parses a signal given as a number or a name, with or without `SIG`, any case.
/// Real-time signals are not supported.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let invalid = || OciError::InvalidArgument(format!("unknown signal {text:?}"));
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        for bad in ["", "NOPE", "0", "999", "-1", "SIG"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} accepted");
        }
    }
}
