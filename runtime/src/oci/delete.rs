//! `skiff-oci delete`: remove a container's processes, cgroups and state.

use std::path::Path;
use std::time::{Duration, Instant};

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::container::{Container, ContainerStatus};
use nix::sys::signal::{kill, Signal};

use super::container::{self, status_word};
use super::error::{OciError, Result};

/// How long `delete` waits for the processes it killed to leave the container's cgroups.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running; succeed if it does not exist.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// Deletes container `args.id`.
///
/// A created container is deleted (its init killed) without `--force`, as runc
/// does; a running or paused one needs `--force`. A missing container is an error
/// ("does not exist") unless `--force` is given.
pub fn delete(root: &Path, args: &DeleteArgs) -> Result<()> {
    let id = args.id.as_str();
    container::validate_id(id)?;
    let dir = container::container_dir(root, id);
    if !container::has_state(&dir) {
        // An interrupted create can leave a directory (or staging bundle) without
        // state.json, which libcontainer cannot load: just remove them.
        container::remove_quietly(&dir);
        container::remove_quietly(&root.join(format!("{id}~bundle")));
        if args.force {
            return Ok(());
        }
        return Err(OciError::NotFound { id: id.to_string() });
    }

    let mut container = container::load(root, id)?;
    let status = container.status();
    if matches!(status, ContainerStatus::Running | ContainerStatus::Paused) && !args.force {
        return Err(OciError::WrongStatus {
            id: id.to_string(),
            status: status_word(status),
            needed: "stop it first or use --force",
        });
    }
    kill_leftovers(&container);
    container
        .delete(args.force)
        .map_err(|err| OciError::libcontainer("delete", id, err))?;
    // Left behind only if a create died between building and recording.
    container::remove_quietly(&root.join(format!("{id}~bundle")));
    tracing::info!(id, "container deleted");
    Ok(())
}

/// Kills every process left in the container's cgroups and waits (up to [`KILL_GRACE`]) until
/// none is left. A container without a PID namespace of its own (one its pod shares, or the
/// host's) keeps its other processes when its init dies, and its cgroups cannot be removed
/// while they are there; runc kills them the same way. Best effort: if the processes stay,
/// removing the cgroups reports it.
fn kill_leftovers(container: &Container) {
    let id = container.id();
    let config = match container.spec() {
        Ok(config) => config,
        Err(err) => {
            tracing::warn!(id, %err, "no config to find the container's cgroups");
            return;
        }
    };
    let manager = match create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path.clone(),
        systemd_cgroup: container.systemd(),
        container_name: id.to_string(),
    }) {
        Ok(manager) => manager,
        Err(err) => {
            tracing::warn!(id, %err, "cannot open the container's cgroups");
            return;
        }
    };
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        // Cgroups that are already gone hold nothing.
        let pids = manager.get_all_pids().unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                id,
                ?pids,
                "processes outlived SIGKILL in the container's cgroups"
            );
            return;
        }
        for pid in pids {
            // ESRCH: it exited meanwhile.
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
