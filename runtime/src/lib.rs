//! skiff runtime: everything below the CRI that touches the host.
//!
//! - [`image`]: pulling images from registries into a content store and a layer store.
//! - [`oci`]: the runc-shaped OCI runtime on libcontainer behind the `skiff-oci` binary.
//! - [`db`]: redb databases that reopen themselves after an I/O error (a full disk).
//!
//! The per-container monitor is the small `skiff-monitor` crate in `runtime/monitor/`.

pub mod db;
pub mod image;
pub mod oci;
