//! skiff runtime: everything below the CRI that touches the host.
//!
//! - [`image`]: pulling images from registries into a content store and a layer store.

pub mod image;
pub mod monitor;
pub mod oci;
