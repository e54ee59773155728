//! skiffd as a library: the daemon's modules, so that the `skiffd` binary ([`run`]) and the
//! fuzz targets in `cri-shim/fuzz/` ([`spec`]) build the same code.
//!
//! [`run`] serves the RuntimeService (`runtime_service`) and the ImageService
//! (`image_service`) on a unix socket.

mod authority;
mod cni;
pub mod config;
mod container;
mod error;
mod events;
mod failpoint;
mod image_service;
mod instrument;
mod runtime_service;
mod sandbox;
mod server;
pub mod spec;
mod state;
mod streaming;

pub use sandbox::pause::run as pause;
pub use server::run;
