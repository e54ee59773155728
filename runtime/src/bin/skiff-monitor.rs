//! skiff-monitor: one per container. Creates the container through the OCI runtime, logs its
//! output in the CRI format, keeps its stdin, and records its exit status; see
//! `skiff_runtime::monitor`.
//!
//! Exits 0 printing the container PID once the container is created (the monitor itself carries
//! on detached), or 1 with the error on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use skiff_runtime::monitor::{self, MonitorSpec};

/// Per-container monitor for skiff.
#[derive(Parser)]
#[command(name = "skiff-monitor", version)]
struct Args {
    /// Container ID, passed to the runtime.
    #[arg(long)]
    id: String,
    /// OCI bundle directory.
    #[arg(long)]
    bundle: PathBuf,
    /// runc-shaped OCI runtime binary.
    #[arg(long)]
    runtime: PathBuf,
    /// The runtime's state directory (its --root).
    #[arg(long)]
    runtime_root: PathBuf,
    /// CRI log file.
    #[arg(long)]
    log_path: PathBuf,
    /// Where to write the exit status (JSON).
    #[arg(long)]
    exit_file: PathBuf,
    /// Where the runtime writes the container PID.
    #[arg(long)]
    pid_file: PathBuf,
    /// Directory for the control socket.
    #[arg(long)]
    socket_dir: PathBuf,
    /// Give the container a stdin pipe, kept open for attach.
    #[arg(long)]
    stdin: bool,
    /// Close stdin after the first attach session.
    #[arg(long, requires = "stdin")]
    stdin_once: bool,
    /// Allocate a pty (received over --console-socket).
    #[arg(long)]
    tty: bool,
}

fn main() -> ExitCode {
    // Before anything opens a descriptor: drop whatever the caller leaked to us.
    monitor::close_inherited_fds();
    let args = Args::parse();
    match start(args) {
        Ok(pid) => {
            println!("{pid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<u32> {
    let spec = MonitorSpec {
        id: args.id,
        bundle: args.bundle,
        runtime: args.runtime,
        runtime_root: args.runtime_root,
        log_path: args.log_path,
        exit_file: args.exit_file,
        pid_file: args.pid_file,
        socket_dir: args.socket_dir,
        stdin: args.stdin,
        stdin_once: args.stdin_once,
        tty: args.tty,
    };
    monitor::run(&spec).with_context(|| format!("container {}", spec.id))
}
