//! Why a CRI container request could not be turned into an OCI spec.

use std::io;
use std::path::PathBuf;
use tonic::Code;

/// An error building a container's OCI spec.
///
/// Every variant but one is the caller's (or the image's) fault: [`SpecError::code`] says
/// whether it is INVALID_ARGUMENT (the request is wrong) or FAILED_PRECONDITION (the request is
/// fine, but the image or the host lacks what it names). [`SpecError::Unsupported`] is skiff's
/// own limit: UNIMPLEMENTED.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the request (command/args) nor the image (Entrypoint/Cmd) names a program.
    #[error("no command specified: the request has no command or args and the image no Entrypoint or Cmd")]
    NoCommand,
    /// A request field is invalid: a relative path, an unknown capability, a sysctl that is not
    /// namespaced, `run_as_group` without a user...
    #[error("{0}")]
    Invalid(String),
    /// The user to run as is not in the image's `/etc/passwd`.
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    /// The group to run as is not in the image's `/etc/group`.
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    /// A file of the container rootfs (e.g. `/etc/passwd`) could not be read safely.
    #[error("cannot read {path} from the container rootfs")]
    RootfsFile {
        /// The path inside the container.
        path: String,
        /// What went wrong (e.g. a symlink loop).
        #[source]
        source: io::Error,
    },
    /// A host path named by the request (mount source, device, seccomp profile) is unusable.
    #[error("host path {}", .path.display())]
    HostPath {
        /// The host path as the request gave it.
        path: PathBuf,
        /// Why it cannot be used (usually: it does not exist).
        #[source]
        source: io::Error,
    },
    /// A host path exists but is not what the request needs (not a device, not a shared mount).
    #[error("host path {}: {reason}", .path.display())]
    HostPathUnsuitable {
        /// The host path.
        path: PathBuf,
        /// What it should have been.
        reason: String,
    },
    /// A Localhost seccomp profile is not valid JSON of the Docker/OCI profile format.
    #[error("seccomp profile {}", .path.display())]
    SeccompProfile {
        /// The profile file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The request asks for something skiff does not support (user namespaces, image volumes).
    #[error("{0} is not supported by skiff")]
    Unsupported(&'static str),
}

impl SpecError {
    /// The gRPC code a CRI client should see for this error.
    pub fn code(&self) -> Code {
        match self {
            SpecError::NoCommand | SpecError::Invalid(_) | SpecError::SeccompProfile { .. } => {
                Code::InvalidArgument
            }
            SpecError::UnknownUser(_)
            | SpecError::UnknownGroup(_)
            | SpecError::RootfsFile { .. }
            | SpecError::HostPath { .. }
            | SpecError::HostPathUnsuitable { .. } => Code::FailedPrecondition,
            // How a client tells a missing feature from a bad request: critest skips its image
            // volume specs on UNIMPLEMENTED, and fails them on anything else.
            SpecError::Unsupported(_) => Code::Unimplemented,
        }
    }

    /// Shorthand for [`SpecError::HostPath`].
    pub(super) fn host_path(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpecError::HostPath {
            path: path.into(),
            source,
        }
    }
}
