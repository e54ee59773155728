//! The `CNI_*` environment variables a runtime sets when it executes a plugin.

use std::path::PathBuf;

/// The operation requested through `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach the container (best effort, idempotent).
    Del,
    /// Verify an attachment against `prevResult`.
    Check,
    /// Report whether the plugin could service ADD.
    Status,
    /// Report supported versions.
    Version,
    /// Remove resources of attachments that are no longer valid.
    Gc,
}

/// Why the environment was rejected. Every variant maps to CNI code 4.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// A variable the command needs is unset or empty.
    #[error("required environment variables missing: {0}")]
    Missing(String),
    /// `CNI_COMMAND` names no known operation.
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, STATUS, VERSION, GC")]
    UnknownCommand(String),
    /// `CNI_CONTAINERID` has characters the spec forbids.
    #[error("CNI_CONTAINERID={0:?} is invalid: it must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'")]
    BadContainerId(String),
    /// `CNI_IFNAME` is not a valid Linux interface name.
    #[error("CNI_IFNAME={0:?} is invalid: it must be 1-15 bytes, not '.' or '..', without '/', ':' or whitespace")]
    BadIfName(String),
}

/// The parsed `CNI_*` variables. Fields a command does not need may be `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: a path to the network namespace file.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: the interface name inside the container.
    pub ifname: Option<String>,
    /// `CNI_ARGS` split into key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` split on ':'.
    pub path: Vec<PathBuf>,
}

impl Command {
    /// Reads `CNI_COMMAND` from `get`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, EnvError> {
        let raw = non_empty(get("CNI_COMMAND")).ok_or(EnvError::Missing("CNI_COMMAND".into()))?;
        match raw.as_str() {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "STATUS" => Ok(Command::Status),
            "VERSION" => Ok(Command::Version),
            "GC" => Ok(Command::Gc),
            _ => Err(EnvError::UnknownCommand(raw)),
        }
    }
}

impl Environment {
    /// Reads the variables `command` needs from `get` (normally `std::env::var`),
    /// checking required ones are present and well-formed.
    pub fn from_lookup(
        command: Command,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Environment, EnvError> {
        let env = Environment {
            container_id: non_empty(get("CNI_CONTAINERID")),
            netns: non_empty(get("CNI_NETNS")).map(PathBuf::from),
            ifname: non_empty(get("CNI_IFNAME")),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default()),
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        };

        // What each command requires, per the spec's "Required environment parameters".
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Version | Command::Gc => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|name| match *name {
                "CNI_CONTAINERID" => env.container_id.is_none(),
                "CNI_NETNS" => env.netns.is_none(),
                _ => env.ifname.is_none(),
            })
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Missing(missing.join(", ")));
        }

        if let Some(id) = &env.container_id {
            if !valid_container_id(id) {
                return Err(EnvError::BadContainerId(id.clone()));
            }
        }
        if let Some(ifname) = &env.ifname {
            if !valid_ifname(ifname) {
                return Err(EnvError::BadIfName(ifname.clone()));
            }
        }
        Ok(env)
    }

    /// The container id; only call after `from_lookup` for a command that requires it.
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The interface name; only call after `from_lookup` for a command that requires it.
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Splits "A=1;B=2" into pairs; entries without '=' are ignored.
fn parse_args(raw: &str) -> Vec<(String, String)> {
    raw.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The spec: an alphanumeric, then alphanumerics, '_', '.' or '-'.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface name rules (IFNAMSIZ is 16 including the NUL).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let get = lookup(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]);
        let cmd = Command::from_lookup(&get).unwrap();
        assert_eq!(cmd, Command::Add);
        let err = Environment::from_lookup(cmd, &get).unwrap_err();
        assert_eq!(
            err,
            EnvError::Missing("CNI_CONTAINERID, CNI_NETNS".to_string())
        );
    }

    #[test]
    fn del_does_not_need_netns() {
        let get = lookup(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=web;IgnoreUnknown=1;junk"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]);
        let env = Environment::from_lookup(Command::Del, &get).unwrap();
        assert_eq!(env.netns, None);
        assert_eq!(env.args.len(), 2);
        assert_eq!(env.path.len(), 2);
    }

    #[test]
    fn rejects_bad_ids_and_names() {
        assert!(valid_container_id("a-b_c.d9"));
        assert!(!valid_container_id("-abc"));
        assert!(!valid_container_id("a/b"));
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("this-is-too-long0"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a b"));
        let get = lookup(&[("CNI_COMMAND", "FROB")]);
        assert!(matches!(
            Command::from_lookup(&get),
            Err(EnvError::UnknownCommand(_))
        ));
    }
}
