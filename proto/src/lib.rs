//! The Kubernetes Container Runtime Interface, API `runtime.v1`, as Rust types.
//!
//! `cri/api.proto` is wire-compatible with upstream `k8s.io/cri-api` (see the
//! commit named at the top of that file). `build.rs` compiles it with `protox`
//! and generates, under [`runtime::v1`]:
//!
//! - prost messages and enums (`runtime::v1::PodSandboxConfig`, ...);
//! - tonic servers: `runtime_service_server::{RuntimeService, RuntimeServiceServer}`
//!   and `image_service_server::{ImageService, ImageServiceServer}`;
//! - tonic clients: `runtime_service_client::RuntimeServiceClient` and
//!   `image_service_client::ImageServiceClient`.
//!
//! [`FILE_DESCRIPTOR_SET`] holds the encoded descriptor set, e.g. for gRPC
//! reflection.

/// Generated code for the `runtime` proto package.
pub mod runtime {
    /// Generated code for the `runtime.v1` proto package.
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of `cri/api.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cri_descriptor.bin"));
