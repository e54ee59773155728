//! The error type shared by every `skiff-oci` command.

use std::io;
use std::path::PathBuf;

use libcontainer::error::LibcontainerError;

/// Everything that can go wrong in an OCI runtime command.
///
/// Each variant names the container or file involved; the underlying cause is the
/// error's `source()`, so print the whole chain (`{:#}` with anyhow) to see both.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// No state directory for this id under `--root`. Callers (skiffd) match on the
    /// words "does not exist" to treat a repeated delete as success.
    #[error("container \"{id}\" does not exist")]
    NotFound {
        /// The container id asked for.
        id: String,
    },

    /// `create` with an id that is already in use.
    #[error("container \"{id}\" already exists")]
    AlreadyExists {
        /// The container id asked for.
        id: String,
    },

    /// The id cannot be used as a directory name.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The operation needs a different container status (e.g. `exec` into a stopped one).
    #[error("container \"{id}\" is {status}, {needed}")]
    WrongStatus {
        /// The container id.
        id: String,
        /// Its current status, as `state` prints it.
        status: &'static str,
        /// What the operation needed, e.g. "not running".
        needed: &'static str,
    },

    /// A bad command-line value (signal name, user, env entry...).
    #[error("{0}")]
    InvalidArgument(String),

    /// A JSON file (config.json, process.json) that cannot be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A JSON file that is not a valid OCI document.
    #[error("invalid {path}")]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// What serde complained about.
        source: serde_json::Error,
    },

    /// Any other filesystem or syscall failure, with what we were doing.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Something that should not happen (a vanished process, an unexpected file).
    #[error("{0}")]
    Other(String),

    /// libcontainer failed; `op` says which step.
    #[error("{op} container \"{id}\"")]
    Libcontainer {
        /// The step, e.g. "create" or "start".
        op: &'static str,
        /// The container id.
        id: String,
        /// libcontainer's error (boxed: it is large).
        source: Box<LibcontainerError>,
    },
}

impl OciError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        OciError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a libcontainer error from step `op` on container `id`.
    pub fn libcontainer(op: &'static str, id: &str, source: LibcontainerError) -> Self {
        OciError::Libcontainer {
            op,
            id: id.to_string(),
            source: Box::new(source),
        }
    }
}

/// Shorthand for results in this module.
pub type Result<T, E = OciError> = std::result::Result<T, E>;
