//! `kiln login` / `kiln logout`: verify and store, or remove, registry credentials the way
//! `docker login`/`docker logout` do, in docker's `config.json` (`$DOCKER_CONFIG`, else
//! `~/.docker`) or the credential helper it names, so docker, skopeo and kiln share them.
//!
//! Registries reachable only over plain HTTP or with unverified TLS (beyond loopback) need
//! `--insecure-registry`, or a `$KILN_ROOT/registries.json` listing them, as for pull and push.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use kiln_store::registry::auth;

use super::GlobalArgs;

/// `kiln login` arguments.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password or access token (visible to other processes: prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password or token from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (`host[:port]`); Docker Hub when omitted.
    pub registry: Option<String>,
}

/// `kiln logout` arguments.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`); Docker Hub when omitted.
    pub registry: Option<String>,
}

/// The registry as docker files it: scheme and path dropped, Docker Hub's aliases unified.
fn registry_name(arg: Option<&str>) -> String {
    let raw = arg.unwrap_or("docker.io");
    let raw = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://")).unwrap_or(raw);
    let host = raw.split('/').next().unwrap_or(raw);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}

/// Reads a line from the terminal after a prompt on stderr.
fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs `kiln login`.
pub fn login(global: &GlobalArgs, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry.as_deref());
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if interactive && !args.password_stdin => prompt("Username")?,
        None => bail!("kiln login {registry}: a username is required (-u USER)"),
    };
    if username.is_empty() {
        bail!("kiln login {registry}: the username is empty");
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the password from stdin")?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        bail!("kiln login {registry}: give the password with --password-stdin (or -p)");
    };
    if password.is_empty() {
        bail!("kiln login {registry}: the password is empty");
    }

    let client = super::registry_client(global)?;
    super::block_on(client.login(&registry, &username, &password))??;
    let dir = auth::docker_config_dir(None)?;
    match auth::save_credentials(&dir, &registry, &username, &password)? {
        auth::StoredIn::File(path) => {
            eprintln!("WARNING! Your password is stored unencrypted in {}.", path.display());
        }
        auth::StoredIn::Helper(helper) => tracing::debug!("credentials stored in {helper}"),
    }
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// Runs `kiln logout`.
pub fn logout(_global: &GlobalArgs, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry.as_deref());
    let dir = auth::docker_config_dir(None)?;
    if auth::erase_credentials(&dir, &registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_like_docker() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(registry_name(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(registry_name(Some("localhost:5000")), "localhost:5000");
        assert_eq!(registry_name(Some("http://reg.lan:5000/")), "reg.lan:5000");
    }
}
