//! `skiff-oci state`: print a container's state as JSON, in runc's shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::SecondsFormat;
use libcontainer::oci_spec::runtime::Spec;
use serde::Serialize;

use super::bundle;
use super::container::{self, status_word};
use super::error::{OciError, Result};

/// Arguments of `state`.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Container id.
    pub id: String,
}

/// The JSON document `state` prints (the fields runc prints).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// OCI runtime spec version of the container's config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host PID of the init; 0 once the container has stopped.
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle passed to `create`.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// Owner name; empty as for runc running as root.
    pub owner: String,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
}

/// Reads the state of container `args.id`.
pub fn state(root: &Path, args: &StateArgs) -> Result<ContainerState> {
    let container = container::load(root, &args.id)?;
    let record = container::read_record(&container.root)?;
    let spec: Spec = bundle::load_spec(container.bundle())?;

    let stopped = container.status() == libcontainer::container::ContainerStatus::Stopped;
    let pid = match container.pid() {
        Some(pid) if !stopped => pid.as_raw(),
        _ => 0,
    };
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| OciError::Other(format!("container \"{}\" has no rootfs", args.id)))?;
    Ok(ContainerState {
        oci_version: spec.version().clone(),
        id: args.id.clone(),
        pid,
        status: status_word(container.status()).to_string(),
        // Containers created by other tools have no record; report libcontainer's path.
        bundle: record
            .map(|r| r.bundle)
            .unwrap_or_else(|| container.bundle().clone()),
        rootfs,
        created: container
            .created()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Nanos, true))
            .unwrap_or_default(),
        owner: String::new(),
        annotations: container.state.annotations.clone().unwrap_or_default(),
    })
}
