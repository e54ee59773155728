//! `skiff-oci`: a runc-shaped OCI runtime CLI on libcontainer.
//!
//! `skiff-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] <command>`
//! with the commands `create`, `start`, `state`, `kill`, `delete` and `exec`
//! (see `skiff_runtime::oci`). Errors are printed on stderr (and logged) and the
//! exit code is 1; `exec` exits with the exec'd process's exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_runtime::oci::{create, delete, exec, kill, log, start, state};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-oci",
    version,
    about = "OCI runtime for skiff, on libcontainer"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, default_value = "/run/skiff-oci")]
    root: PathBuf,
    /// Append log lines to this file (otherwise only errors, on stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Format of the log lines.
    #[arg(long, value_enum, default_value = "text")]
    log_format: log::LogFormat,
    /// Log debug details too (to stderr when there is no --log).
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container; its init waits for `start`.
    Create(create::CreateArgs),
    /// Run the user's program in a created container.
    Start(start::StartArgs),
    /// Print a container's state as JSON.
    State(state::StateArgs),
    /// Send a signal to a container.
    Kill(kill::KillArgs),
    /// Delete a container's processes, cgroups and state.
    Delete(delete::DeleteArgs),
    /// Run a process in a running container and exit with its exit code.
    Exec(exec::ExecArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("skiff-oci: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen command and returns the exit code.
fn run(cli: &Cli) -> anyhow::Result<u8> {
    log::init(cli.log.as_deref(), cli.log_format, cli.debug)?;
    let root = cli.root.as_path();
    match &cli.command {
        Command::Create(args) => create::create(root, args)?,
        Command::Start(args) => start::start(root, args)?,
        Command::State(args) => {
            let state = state::state(root, args)?;
            let json = serde_json::to_string_pretty(&state).context("encode state")?;
            println!("{json}");
        }
        Command::Kill(args) => kill::kill(root, args)?,
        Command::Delete(args) => delete::delete(root, args)?,
        Command::Exec(args) => {
            let code = exec::exec(root, args)?;
            // Exit codes are 0..=255 (128 + signal included); anything else is a bug.
            return u8::try_from(code).with_context(|| format!("exit code {code} out of range"));
        }
    }
    Ok(0)
}
