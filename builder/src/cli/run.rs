//! `kiln run`: runs an image's entrypoint and command (or the given command) in the RUN
//! sandbox, on a throw-away overlay snapshot of the image, with kiln's own stdin, stdout and
//! stderr, and exits with the command's exit code.
//!
//! kiln keeps no containers: the snapshot is always discarded when the command ends, so `--rm`
//! is what always happens (the flag is accepted for `docker run` habits).

use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use clap::Args;
use kiln_runner::sandbox::{
    CancelToken, Exec, HelperCommand, Limits, Network, Outcome, Runtime, Sandbox, SandboxError, Stdio,
};
use kiln_runner::snapshot::Snapshotter;

use kiln_builder::solver::mounts::parse_size;

use super::GlobalArgs;
use super::images::resolve_image;

/// `kiln run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: kiln keeps no containers).
    #[arg(long)]
    pub rm: bool,
    /// Network: `host` (the default) or `none` (only a loopback interface).
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    pub network: String,
    /// Memory limit (bytes, or with a suffix: 512k, 64m, 2g).
    #[arg(long, short = 'm', value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Number of CPUs (fractions allowed).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Set an environment variable (`KEY=value`, or `KEY` to pass kiln's own value).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run as this user (`name`, `uid`, `name:group`, `uid:gid`), resolved in the image.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Working directory inside the container (created if missing).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// OCI runtime: `embedded` (youki's libcontainer, built in) or a runtime binary such as `runc`.
    #[arg(long, default_value = "embedded")]
    pub runtime: String,
    /// The image: a name, `sha256:` digest or image id prefix.
    pub image: String,
    /// The command, replacing the image's CMD (the ENTRYPOINT is kept).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `KEY=value` overrides on top of the image's environment, docker's way.
fn merge_env(image_env: &[String], overrides: &[String]) -> Vec<String> {
    let mut env: Vec<String> = image_env.to_vec();
    for item in overrides {
        let entry = match item.split_once('=') {
            Some(_) => item.clone(),
            None => match std::env::var(item) {
                Ok(value) => format!("{item}={value}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry);
    }
    env
}

/// Cancelled by SIGINT/SIGTERM, so kiln outlives them long enough to remove the snapshot.
static CANCEL: OnceLock<CancelToken> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    // An atomic store: async-signal-safe.
    if let Some(token) = CANCEL.get() {
        token.cancel();
    }
}

/// Ctrl-C and `kill` stop the command (the sandbox kills its processes) instead of kiln.
pub(super) fn cancel_on_signals() -> CancelToken {
    let token = CANCEL.get_or_init(CancelToken::new).clone();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: on_signal only does an atomic store; the sigaction is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    token
}

/// Runs `kiln run`.
pub fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let image_name = args.image.as_str();
    let store = super::open_store(global)?;
    let (_, image) = resolve_image(&store, image_name)?;
    let config = image.config.config.clone().unwrap_or_default();

    let mut argv = config.entrypoint.clone().unwrap_or_default();
    if args.command.is_empty() {
        argv.extend(config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(args.command.iter().cloned());
    }
    if argv.is_empty() {
        bail!("image {image_name} has no ENTRYPOINT or CMD: give a command after the image name");
    }

    let snapshotter = Snapshotter::new(&store).context("setting up snapshots")?;
    if let Err(e) = snapshotter.remove_stale() {
        tracing::warn!("removing snapshots left by killed processes: {e}");
    }
    let snapshot =
        snapshotter.prepare(&image.layers).with_context(|| format!("preparing a snapshot of {image_name}"))?;

    let mut exec = Exec::new(snapshot.rootfs(), argv);
    exec.env = merge_env(config.env.as_deref().unwrap_or_default(), &args.env);
    exec.user = args.user.clone().or(config.user.clone()).unwrap_or_default();
    exec.cwd =
        args.workdir.clone().or(config.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    exec.network = if args.network == "none" { Network::None } else { Network::Host };
    exec.limits = Limits { memory: args.memory, pids: args.pids_limit, cpus: args.cpus, cpu_shares: None };

    let sandbox = Sandbox::new(Runtime::parse(&args.runtime), HelperCommand::current_exe()?);
    let result = sandbox.run(&exec, Stdio::Inherit, &cancel_on_signals());
    snapshot.cleanup().context("removing the snapshot")?;
    let outcome = match result {
        Err(SandboxError::Cancelled { .. }) => return Ok(ExitCode::from(130)),
        other => other?,
    };
    if let Outcome::OomKilled { limit } = outcome {
        eprintln!("kiln run: {}: killed by the OOM killer (memory limit {limit} bytes)", exec.command());
    }
    Ok(ExitCode::from(outcome.code().clamp(0, 255) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_env() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        let env = merge_env(&["PATH=/bin".into(), "A=1".into()], &["A=2".into(), "B=x=y".into()]);
        assert_eq!(env, vec!["PATH=/bin", "A=2", "B=x=y"]);
    }
}
