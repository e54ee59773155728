//! A runc-shaped OCI runtime built on youki's libcontainer: the library behind the
//! `skiff-oci` binary.
//!
//! libcontainer must run in a fresh single-threaded process for `create` and `exec`
//! (it clones the caller), so the per-container monitor and skiffd exec `skiff-oci`,
//! one process per command. The exception is [`start`], which clones nothing:
//! skiffd calls it on a blocking thread, one at a time, because libcontainer changes
//! the process's working directory while it notifies the init.
//!
//! One file per command ([`create`], [`start`], [`state`], [`kill`], [`delete`],
//! [`exec`]), each with its clap arguments and a function taking the state root
//! (`--root`). Supporting files: [`bundle`] reads and adjusts config.json,
//! [`container`] loads state and guards against recycled PIDs, [`enter`] starts an
//! exec'd process inside a running container, [`log`] writes
//! runc-style log lines, [`pid_file`] writes `--pid-file`.
//!
//! State layout under the root, per container: libcontainer's files
//! (`state.json`, `youki_config.json`, `notify.sock`), `bundle/config.json` (the
//! adjusted spec the container runs with) and `skiff-oci.json` (see
//! [`container::Record`]).
//!
//! # For callers (the monitor, skiffd)
//!
//! - `create` and `exec` hand their stdin/stdout/stderr to the container process.
//!   Wait for the command's exit status, never for EOF on pipes given to it: the
//!   container keeps them open. skiff-oci logs nothing to stderr unless
//!   `--debug`, but a failing command prints its error there, i.e. into the
//!   container's stderr for `create`; with `--log FILE` the error is also in FILE.
//! - The container init (and a detached or orphaned exec process) is reparented
//!   to the nearest subreaper when skiff-oci exits. A subreaper must reap every
//!   child, not only the init: a dying PID-namespace init only becomes a zombie
//!   once all processes of its namespace have been reaped.
//! - `--pid-file` is written atomically: by `create` once the container exists,
//!   by `exec` once the process runs and before waiting for it.
//! - Exit codes: 0 success, 1 any error (message on stderr); `exec` without
//!   `--detach` exits with the process's code, or 128 + signal.
//! - A missing container fails with `container "<id>" does not exist`;
//!   `delete --force` of a missing container succeeds.

pub mod bundle;
pub mod container;
pub mod create;
pub mod delete;
pub mod enter;
pub mod error;
pub mod exec;
pub mod kill;
pub mod log;
pub mod pid_file;
pub mod start;
pub mod state;

pub use error::{OciError, Result};
