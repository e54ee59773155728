//! `skiff-oci delete`: remove a container's processes, cgroups and state.

use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::container::{self, status_word};
use super::error::{OciError, Result};

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
    container
        .delete(args.force)
        .map_err(|err| OciError::libcontainer("delete", id, err))?;
    // Left behind only if a create died between building and recording.
    container::remove_quietly(&root.join(format!("{id}~bundle")));
    tracing::info!(id, "container deleted");
    Ok(())
}
