//! skiff-bridge, a CNI plugin (spec 1.1.0) attaching containers to a Linux
//! bridge with bundled host-local compatible IPAM, and skiff-portmap, its
//! chained host port plugin.
//!
//! Reading order: `bin/skiff-bridge.rs` → [`plugin::main`] (environment,
//! stdin, error output) → [`plugin::bridge`] → one `cmd_*` module per CNI
//! command → [`ipam`], [`netlink`], [`nft`], [`sysctl`] for the work.

pub mod cmd_add;
pub mod cmd_check;
pub mod cmd_del;
pub mod cmd_gc;
pub mod cmd_status;
pub mod cmd_version;
pub mod config;
pub mod ipam;
pub mod masq;
pub mod netlink;
pub mod nft;
pub mod plugin;
pub mod portmap;
pub mod spec;
pub mod sysctl;
