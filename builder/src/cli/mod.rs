//! Command-line parsing (clap) and dispatch to one module per command group.

mod build;
mod debug;
mod images;
mod login;
mod run;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kiln_store::Store;
use kiln_store::registry::{RegistryClient, RegistryOptions};

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
    /// Store root.
    #[arg(long, global = true, env = "KILN_ROOT", default_value = kiln_store::Store::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// A registry (`host[:port]`) that may be reached over plain HTTP or unverified TLS
    /// (repeatable; also read from `<root>/registries.json`).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Log debug detail to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (like `docker build`).
    Build(build::BuildArgs),
    /// Pull an image from a registry.
    Pull(transfer::PullArgs),
    /// Push an image to a registry.
    Push(transfer::PushArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(images::InspectArgs),
    /// Give an image another name.
    Tag(images::TagArgs),
    /// Remove image names (`kiln prune` frees what nothing reaches any more).
    Rmi(images::RmiArgs),
    /// Make a one-layer image from a root filesystem tarball (like `docker import`).
    Import(images::ImportArgs),
    /// Write images to a tar archive (OCI layout or docker-archive).
    Save(images::SaveArgs),
    /// Read images from a tar archive (OCI layout or docker-archive).
    Load(images::LoadArgs),
    /// Free the space of everything no name, cache entry or running command uses.
    Prune(images::PruneArgs),
    /// Run a command in a new container of an image (like `docker run`).
    Run(run::RunArgs),
    /// Log in to a registry (stores credentials like `docker login`).
    Login(login::LoginArgs),
    /// Log out from a registry (removes stored credentials).
    Logout(login::LogoutArgs),
    /// Tools for debugging kiln and Dockerfiles.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
}

/// Sets up `tracing` output on stderr, coloured only on a terminal (CI logs get plain text);
/// `RUST_LOG` overrides the level.
pub fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Build(args) => build::run(global, args),
        Command::Pull(args) => transfer::pull(global, args),
        Command::Push(args) => transfer::push(global, args),
        Command::Images(args) => images::images(global, args),
        Command::Inspect(args) => images::inspect(global, args),
        Command::Tag(args) => images::tag(global, args),
        Command::Rmi(args) => images::rmi(global, args),
        Command::Import(args) => images::import(global, args),
        Command::Save(args) => images::save(global, args),
        Command::Load(args) => images::load(global, args),
        Command::Prune(args) => images::prune(global, args),
        Command::Run(args) => run::run(global, args),
        Command::Login(args) => login::login(global, args),
        Command::Logout(args) => login::logout(global, args),
        Command::Debug(cmd) => debug::run(cmd),
    }
}

/// Opens the store for reading and adding content.
pub fn open_store(global: &GlobalArgs) -> anyhow::Result<Store> {
    Store::open(&global.root).with_context(|| format!("opening the store {}", global.root.display()))
}

/// The registry settings: `<root>/registries.json` plus `--insecure-registry` flags.
pub fn registry_options(global: &GlobalArgs) -> anyhow::Result<RegistryOptions> {
    let mut options = RegistryOptions::load(&global.root)?;
    options.insecure_registries.extend(global.insecure_registries.iter().cloned());
    Ok(options)
}

/// A registry client with [`registry_options`].
pub fn registry_client(global: &GlobalArgs) -> anyhow::Result<RegistryClient> {
    Ok(RegistryClient::new(registry_options(global)?))
}

/// Runs a future to completion on a runtime made for this command: kiln's commands are
/// one-shot, so the runtime lives as long as the command.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}
