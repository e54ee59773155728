//! Test support for skiff's end-to-end tests: a real skiffd ([`daemon`]), a real registry
//! ([`registry`]) and OCI images built from the host's busybox ([`busybox`], [`oci_layout`]).
pub mod busybox;
pub mod cluster_images;
pub mod cri;
pub mod critest_images;
pub mod daemon;
pub mod flaky_proxy;
pub mod kube;
pub mod oci_layout;
pub mod registry;
pub mod spdy_client;
pub mod ws_client;
