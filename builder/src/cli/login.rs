//! `kiln login` / `kiln logout`: TODO(registry) being written.

use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;

/// `kiln login` arguments.
#[derive(Debug, Args)]
pub struct LoginArgs {}

/// `kiln logout` arguments.
#[derive(Debug, Args)]
pub struct LogoutArgs {}

/// Runs `kiln login`.
pub fn login(_global: &GlobalArgs, _args: LoginArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiln login is not implemented yet")
}

/// Runs `kiln logout`.
pub fn logout(_global: &GlobalArgs, _args: LogoutArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiln logout is not implemented yet")
}
