//! skiffd: the CRI v1 daemon of skiff.
//!
//! `main` parses the command line, loads the config, sets up logging and hands over to
//! [`skiffd::run`], which serves CRI on a unix socket.

use clap::{Parser, Subcommand};
use skiffd::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;

/// skiffd: a small CRI v1 container runtime daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Defaults apply to every key it leaves out.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve CRI on the configured socket (the default).
    Run,
    /// Internal: the init process that holds a pod's shared PID namespace.
    #[command(hide = true)]
    Pause,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the built-in defaults as TOML.
    Default,
    /// Print the effective configuration (file + defaults) as TOML.
    Show,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Pause)) {
        skiffd::pause();
    }
    let config = match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false)?,
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Config {
            action: ConfigAction::Default,
        } => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Pause => unreachable!("handled before the config is read"),
        Command::Run => {
            init_logging(&config.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(skiffd::run(config))
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the configured level.
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
