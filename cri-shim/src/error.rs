//! The one place where internal errors become gRPC status codes.

use skiff_runtime::image::unpack::UnpackError;
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
    /// The object the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken by another object.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in a state that does not allow the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation did not finish in the time the client gave it.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The container request cannot become an OCI spec.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
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
        if self.out_of_space() {
            return Code::ResourceExhausted;
        }
        match self {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::Internal(_) | CriError::State(_) => Code::Internal,
            CriError::NotFound(_) => Code::NotFound,
            CriError::Spec(e) => e.code(),
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Image(ImageError::LayerRejected { source, .. }) if source.is_limit() => {
                Code::ResourceExhausted
            }
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

impl CriError {
    /// True when the disk (or a quota) is full: the node, not the request, is at fault, and
    /// RESOURCE_EXHAUSTED tells a client to retry once space is freed.
    fn out_of_space(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    return true;
                }
            }
            source = error.source();
        }
        // Errors flattened to text on the way here (redb, sandbox setup) keep the OS message.
        // Only those: other messages may quote the request.
        let flattened = matches!(
            self,
            CriError::Internal(_) | CriError::State(_) | CriError::Image(ImageError::Database(_))
        );
        let text = self.to_string();
        flattened
            && [libc::ENOSPC, libc::EDQUOT]
                .iter()
                .any(|code| text.contains(&format!("(os error {code})")))
    }

    /// What a user can do about the error, when skiffd's config is the answer.
    fn hint(&self) -> Option<&'static str> {
        let CriError::Image(ImageError::LayerRejected { source, .. }) = self else {
            return None;
        };
        match source {
            UnpackError::TooLarge { .. } | UnpackError::EntryTooLarge { .. } => {
                Some("raise [images] max_layer_bytes in skiffd's config to allow it")
            }
            UnpackError::TooManyEntries { .. } => {
                Some("raise [images] max_layer_entries in skiffd's config to allow it")
            }
            _ => None,
        }
    }

    /// An INTERNAL error for a blocking task that panicked or was cancelled.
    pub fn task(e: tokio::task::JoinError) -> Self {
        CriError::Internal(format!("background task failed: {e}"))
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
        if let Some(hint) = e.hint() {
            message = format!("{message} ({hint})");
        }
        Status::new(e.code(), cap_message(message))
    }
}

/// gRPC carries the status message in an HTTP/2 header; one that echoes a huge request (a
/// 200 KB image name) makes clients drop the whole connection. Keep messages header-sized.
const MAX_MESSAGE: usize = 4096;

fn cap_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (truncated)");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_to_header_size() {
        let status = Status::from(CriError::InvalidArgument("é".repeat(10_000)));
        assert!(status.message().len() <= MAX_MESSAGE + 20);
        assert!(status.message().ends_with("(truncated)"));
        assert_eq!(
            Status::from(CriError::NotFound("short".into())).message(),
            "short"
        );
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_wherever_it_is_reported() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let typed = CriError::Image(ImageError::io("writing blob sha256:ab", enospc));
        assert_eq!(typed.code(), Code::ResourceExhausted);
        let unpacking = CriError::Image(ImageError::LayerRejected {
            digest: "sha256:ab".into(),
            source: UnpackError::Io {
                entry: "bin/busybox".into(),
                op: "writing file",
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
        });
        assert_eq!(unpacking.code(), Code::ResourceExhausted);
        let flattened = CriError::Internal(format!(
            "writing pod files: {}",
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        ));
        assert_eq!(flattened.code(), Code::ResourceExhausted);
        let other = CriError::Internal(format!(
            "writing pod files: {}",
            std::io::Error::from_raw_os_error(libc::EACCES)
        ));
        assert_eq!(other.code(), Code::Internal);
        let quoted = CriError::InvalidArgument("image \"x (os error 28)\" is invalid".into());
        assert_eq!(quoted.code(), Code::InvalidArgument);
    }

    #[test]
    fn a_layer_over_the_limits_is_resource_exhausted_and_says_which_knob() {
        let error = CriError::Image(ImageError::LayerRejected {
            digest: "sha256:ab".into(),
            source: UnpackError::TooLarge { limit: 1 << 20 },
        });
        assert_eq!(error.code(), Code::ResourceExhausted);
        let status = Status::from(error);
        assert!(status.message().contains("1048576"), "{}", status.message());
        assert!(
            status.message().contains("max_layer_bytes"),
            "{}",
            status.message()
        );
    }
}
