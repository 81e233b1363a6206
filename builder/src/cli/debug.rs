//! `kiln debug …`: tools for looking inside kiln and at how it reads a Dockerfile.

use std::process::ExitCode;

use clap::Subcommand;

/// `kiln debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {}

/// Runs a `kiln debug` subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
