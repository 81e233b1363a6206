//! Command-line parsing (clap) and dispatch to one module per command group.

mod debug;
mod login;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// kiln: build, run and ship OCI images without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Store root (default /var/lib/kiln).
    #[arg(long, global = true, env = "KILN_ROOT", default_value = kiln_store::Store::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log debug detail to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tools for debugging kiln and Dockerfiles.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Log in to a registry (stores credentials like `docker login`).
    Login(login::LoginArgs),
    /// Log out from a registry (removes stored credentials).
    Logout(login::LogoutArgs),
}

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides the level.
pub fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Debug(cmd) => debug::run(cmd),
        Command::Login(args) => login::login(&cli.global, args),
        Command::Logout(args) => login::logout(&cli.global, args),
    }
}
