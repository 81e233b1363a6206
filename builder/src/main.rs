//! The `kiln` command: a daemonless OCI image builder.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // kiln re-executes itself as the single-threaded helper that runs sandboxed steps.
    kiln_runner::sandbox::helper_main_if_requested();
    let args = cli::Cli::parse();
    cli::init_logging(args.global.debug);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
