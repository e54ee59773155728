//! `skiff-oci create`: set up a container whose init waits for `start`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;

use super::bundle;
use super::container::{self, Record};
use super::error::{OciError, Result};
use super::pid_file;

/// Arguments of `create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Bundle directory holding config.json.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's host PID to this file once the container is created.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when `process.terminal` is true.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Container id (letters, digits, `_+-.`).
    pub id: String,
}

/// Creates container `args.id` from its bundle and returns once its init is
/// waiting for `start`.
///
/// The init inherits this process's stdin, stdout and stderr, and becomes a child
/// of this process's parent when we exit (libcontainer clones it with
/// CLONE_PARENT), so a subreaper parent can wait for it.
pub fn create(root: &Path, args: &CreateArgs) -> Result<()> {
    let id = args.id.as_str();
    container::validate_id(id)?;
    ensure_root(root)?;
    // One spelling of the root, so our paths match the ones libcontainer builds.
    let root = &fs::canonicalize(root)
        .map_err(|err| OciError::io(format!("state root {}", root.display()), err))?;
    let dir = container::container_dir(root, id);
    if dir.exists() {
        return Err(OciError::AlreadyExists { id: id.to_string() });
    }

    let bundle = fs::canonicalize(&args.bundle)
        .map_err(|err| OciError::io(format!("bundle {}", args.bundle.display()), err))?;
    let spec = bundle::prepare(bundle::load_spec(&bundle)?, &bundle, id)?;

    // libcontainer reads the spec from `<bundle>/config.json`, so the adjusted spec
    // goes into a staging bundle first and moves into the state directory once that
    // exists. `~` cannot appear in an id, so this name never clashes with a container.
    let staging = root.join(format!("{id}~bundle"));
    bundle::write_spec(&staging, &spec)?;

    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map(|b| b.with_console_socket(args.console_socket.as_ref()))
        .and_then(|b| {
            b.as_init(&staging)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    let mut created = match built {
        Ok(created) => created,
        Err(err) => {
            container::remove_quietly(&staging);
            // libcontainer cleans up failures once the init is forked, but not
            // earlier ones (e.g. a bad console socket) after it made the directory.
            // "Exists" means a concurrent create won the race: that one is not ours.
            if matches!(err, LibcontainerError::Exist) {
                return Err(OciError::AlreadyExists { id: id.to_string() });
            }
            container::remove_quietly(&dir);
            return Err(OciError::libcontainer("create", id, err));
        }
    };

    if let Err(err) = finish(&mut created, &staging, &bundle, args.pid_file.as_deref()) {
        // The init exists but we could not record it: take it down again.
        if let Err(delete_err) = created.delete(true) {
            tracing::warn!(id, err = %delete_err, "cleanup after failed create");
        }
        container::remove_quietly(&staging);
        container::remove_quietly(&dir);
        return Err(err);
    }
    tracing::info!(
        id,
        pid = created.pid().map(|p| p.as_raw()),
        "container created"
    );
    Ok(())
}

/// Moves the adjusted bundle into the state directory, records the init's start
/// time and the caller's bundle, and writes the pid file.
fn finish(
    created: &mut libcontainer::container::Container,
    staging: &Path,
    caller_bundle: &Path,
    pid_file: Option<&Path>,
) -> Result<()> {
    let id = created.id().to_string();
    let pid = created
        .pid()
        .ok_or_else(|| OciError::Other(format!("container \"{id}\" has no init pid")))?;

    let kept = created.root.join("bundle");
    fs::rename(staging, &kept).map_err(|err| {
        OciError::io(
            format!("move {} to {}", staging.display(), kept.display()),
            err,
        )
    })?;
    created.state.bundle = kept;
    created
        .save()
        .map_err(|err| OciError::libcontainer("save state of", &id, err))?;

    let init_start_time = container::process_start_time(pid.as_raw())
        .ok_or_else(|| OciError::Other(format!("init process {pid} of \"{id}\" vanished")))?;
    let record = Record {
        bundle: caller_bundle.to_path_buf(),
        init_start_time,
    };
    container::write_record(&created.root, &record)?;

    if let Some(path) = pid_file {
        pid_file::write(path, pid.as_raw())?;
    }
    Ok(())
}

/// Creates the state root (mode 0700: it holds sockets that control containers).
fn ensure_root(root: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|err| OciError::io(format!("create state root {}", root.display()), err))
}
