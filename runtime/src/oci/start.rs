//! `skiff-oci start`: let a created container's init run the user's program.

use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::container::{self, status_word};
use super::error::{OciError, Result};

/// Arguments of `start`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// Container id.
    pub id: String,
}

/// Starts container `args.id`, which must be in the `created` state.
///
/// The init has been blocked on the container's notify socket since `create`;
/// libcontainer writes to that socket and the init execs the user's program.
pub fn start(root: &Path, args: &StartArgs) -> Result<()> {
    let mut container = container::load(root, &args.id)?;
    if container.status() != ContainerStatus::Created {
        return Err(OciError::WrongStatus {
            id: args.id.clone(),
            status: status_word(container.status()),
            needed: "cannot start a container that is not created",
        });
    }
    container
        .start()
        .map_err(|err| OciError::libcontainer("start", &args.id, err))?;
    tracing::info!(id = %args.id, "container started");
    Ok(())
}
