//! Images: pulling from OCI registries, the content store, the layer store and image metadata.
//!
//! The flow of a pull, from [`ImageStore::pull`] down:
//! 1. [`reference`] normalizes the name (`busybox` → `docker.io/library/busybox:latest`);
//! 2. [`registry`] picks the endpoints to try (mirrors first, then the upstream host);
//! 3. [`pull`] fetches the manifest (choosing linux/amd64 from an index), the config and every layer
//!    into the [`content`] store, each verified against its digest;
//! 4. [`layers`] unpacks each layer with [`unpack`] into its own directory, keyed by chain ID;
//! 5. [`metadata`] records the image in a redb database, only once everything above succeeded.

pub mod config;
pub mod content;
pub mod layers;
pub mod locks;
pub mod metadata;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use metadata::ImageRecord;
pub use oci_client::secrets::RegistryAuth;
pub use registry::RegistryConfig;
pub use store::{ImageStore, StoreUsage};

/// Everything that can go wrong in the image module.
///
/// The variants are chosen so a caller can map each to one gRPC status code without looking at the
/// message text.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference given by the user cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// What the user sent.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// No local image matches the reference.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The registry refused our credentials.
    #[error("registry {registry} refused access to {reference}: {message}")]
    Unauthorized {
        /// The registry host that refused.
        registry: String,
        /// The reference being pulled.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry does not have the image.
    #[error("registry {registry} has no image {reference}: {message}")]
    RemoteNotFound {
        /// The registry host asked.
        registry: String,
        /// The reference being pulled.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("pulling {reference} from {registry} failed: {message}")]
    Registry {
        /// The registry host (or every endpoint tried).
        registry: String,
        /// The reference being pulled.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// A manifest or config the registry sent cannot be used.
    #[error("image {reference} is not usable: {reason}")]
    BadImage {
        /// The reference being pulled.
        reference: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Downloaded content does not match the digest that names it.
    #[error("content {digest} failed verification: {reason}")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What was found instead.
        reason: String,
    },
    /// A layer was refused while unpacking (hostile or broken tar).
    #[error("layer {digest} rejected: {source}")]
    LayerRejected {
        /// The digest of the compressed layer blob.
        digest: String,
        /// The unpacker's reason.
        #[source]
        source: unpack::UnpackError,
    },
    /// The metadata database failed.
    #[error("image metadata database: {0}")]
    Database(String),
    /// A filesystem operation on the stores failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Wraps an I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}
