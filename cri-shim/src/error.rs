//! The one place where internal errors become gRPC status codes.

use skiff_runtime::image::ImageError;
use tonic::{Code, Status};

/// An error answering a CRI request.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The request itself is wrong (a required field missing, a bad value).
    #[error("{0}")]
    InvalidArgument(String),
    /// The RPC exists in CRI v1 but skiff does not implement it yet.
    #[error("{0} is not implemented by skiff yet")]
    Unimplemented(&'static str),
    /// An image operation failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Anything else: a bug or an environment problem, reported as INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// The gRPC code a client should see.
    pub fn code(&self) -> Code {
        match self {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::Internal(_) => Code::Internal,
            CriError::Image(e) => match e {
                ImageError::InvalidReference { .. } => Code::InvalidArgument,
                ImageError::NotFound(_) | ImageError::RemoteNotFound { .. } => Code::NotFound,
                ImageError::Unauthorized { .. } => Code::PermissionDenied,
                ImageError::Registry { .. } => Code::Unavailable,
                ImageError::BadImage { .. } | ImageError::LayerRejected { .. } => {
                    Code::FailedPrecondition
                }
                ImageError::DigestMismatch { .. } => Code::DataLoss,
                ImageError::Database(_) | ImageError::Io { .. } => Code::Internal,
            },
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        // The full source chain makes the message say *why* (e.g. which tar entry escaped).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        Status::new(e.code(), message)
    }
}
