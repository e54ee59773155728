//! skiff-monitor: one per container. Creates the container through the OCI runtime, logs its
//! output in the CRI format, keeps its stdin, and records its exit status; see
//! `skiff_runtime::monitor`.
//!
//! Exits 0 printing the container PID once the container is created (the monitor itself carries
//! on detached), or 1 with the error on stderr.

use std::process::ExitCode;

use skiff_monitor::{self as monitor, MonitorSpec};

const USAGE: &str = "usage: skiff-monitor --id ID --bundle DIR --runtime PATH --runtime-root DIR \
--log-path FILE --exit-file FILE --pid-file FILE --socket-dir DIR [--stdin [--stdin-once]] [--tty]";

fn main() -> ExitCode {
    // Before anything opens a descriptor: drop whatever the caller leaked to us.
    monitor::close_inherited_fds();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && (args[0] == "--help" || args[0] == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.len() == 1 && (args[0] == "--version" || args[0] == "-V") {
        println!("skiff-monitor {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let spec = match MonitorSpec::from_args(args) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("skiff-monitor: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match monitor::run(&spec) {
        Ok(pid) => {
            println!("{pid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("container {}: {e}", spec.id);
            ExitCode::FAILURE
        }
    }
}
