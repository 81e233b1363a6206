//! `kiln build`: flags as docker/buildx spell them, the build itself ([`kiln_builder::build`]),
//! then the outputs: names in the store, a push, an archive, or a directory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use kiln_builder::build::{BuildError, BuildRequest, build};
use kiln_builder::progress::{Event, Progress, ProgressMode, Renderer, TransferProgress};
use kiln_builder::solver::mounts::{SecretSource, parse_size};
use kiln_builder::solver::{BuildContext, SolveError, SolveOptions};
use kiln_frontend::BuildOptions;
use kiln_frontend::dockerignore::find_ignore_file;
use kiln_frontend::graph::Platform as FrontendPlatform;
use kiln_runner::diff::{DiffOptions, write_tree};
use kiln_runner::sandbox::{HelperCommand, Network, Runtime, Sandbox};
use kiln_runner::snapshot::Snapshotter;
use kiln_store::Digest;
use kiln_store::Store;
use kiln_store::export::archive::{ArchiveFormat, SaveEntry};
use kiln_store::image::{Image, Platform};
use kiln_store::layer::{ApplyOptions, WhiteoutMode, apply_layer};
use kiln_store::registry::{Reference, RegistryClient};

use super::images::{CompressionArg, set_tag, write_archive, write_file_or_stdout};
use super::run::cancel_on_signals;
use super::{GlobalArgs, block_on, open_store, registry_client};

/// `kiln build` arguments.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the image (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: `CONTEXT/Dockerfile`; `-` reads it from standard input).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (`KEY=value`, or `KEY` to pass kiln's own environment value).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Set a label on the image (`KEY=value`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// The target platform (only the host's platform is supported).
    #[arg(long)]
    pub platform: Option<String>,
    /// Network of RUN steps: `default` (the host's), `host` or `none`.
    #[arg(long, default_value = "default", value_parser = ["default", "host", "none"])]
    pub network: String,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for these stages; repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Look base image tags up at their registry even when the store has them.
    #[arg(long)]
    pub pull: bool,
    /// Push the image to its registry (shorthand for `--output type=image,push=true`).
    #[arg(long)]
    pub push: bool,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build result's metadata (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Output: `type=image|registry|oci|docker|local|tar[,dest=PATH][,name=…][,push=true]`, a
    /// directory (`type=local`), or `-` (`type=tar` to standard output).
    #[arg(short, long, value_name = "SPEC")]
    pub output: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Progress output: `auto`, `tty`, `plain`, `rawjson` or `quiet`.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Memory limit of each RUN step (bytes, or with a suffix: 512k, 64m, 2g).
    #[arg(long, short = 'm', value_parser = parse_size)]
    pub memory: Option<u64>,
    /// RUN steps that may run at once (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`.
    #[arg(long, value_name = "SPEC")]
    pub secret: Vec<String>,
    /// An ssh agent for `RUN --mount=type=ssh`: `default` (`$SSH_AUTH_SOCK`) or `ID=SOCKET`.
    #[arg(long, value_name = "SPEC")]
    pub ssh: Vec<String>,
    /// OCI runtime for RUN: `embedded` (built in) or a runtime binary such as `runc`.
    #[arg(long, default_value = "embedded")]
    pub runtime: String,
    /// The build context: a directory.
    pub context: PathBuf,
}

/// Where the image goes.
#[derive(Debug, PartialEq)]
enum Output {
    /// Names in the store (and a push when asked).
    Image { names: Vec<String>, push: bool },
    /// An archive file (`None`: standard output) holding the image under `names`.
    Archive { format: ArchiveFormat, dest: Option<PathBuf>, names: Vec<String> },
    /// The root filesystem into a directory.
    Local { dest: PathBuf },
    /// The root filesystem as one tar file (`None`: standard output).
    Tar { dest: Option<PathBuf> },
}

impl Output {
    /// Whether the output goes to standard output, which then carries nothing else.
    fn to_stdout(&self) -> bool {
        matches!(self, Output::Archive { dest: None, .. } | Output::Tar { dest: None })
    }
}

/// Parses `--output` (with `-t` and `--push`) the way buildx does.
fn parse_output(args: &BuildArgs) -> anyhow::Result<Output> {
    let Some(spec) = &args.output else {
        return Ok(Output::Image { names: args.tags.clone(), push: args.push });
    };
    let files = |output: Output| {
        if !args.tags.is_empty() || args.push {
            bail!("--output {spec:?} writes files, not an image: -t and --push have nothing to name or push");
        }
        Ok(output)
    };
    // buildx's shorthands: `-` is a tar on standard output, anything else a directory.
    if spec == "-" {
        return files(Output::Tar { dest: None });
    }
    if !spec.contains('=') && !spec.contains(',') {
        return files(Output::Local { dest: PathBuf::from(spec) });
    }
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').with_context(|| format!("--output {spec:?}: {part:?} is not KEY=VALUE"))?;
        fields.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    // `-t` names and an output's `name=` both name the image.
    let names_with = |name: Option<String>| {
        let mut names = args.tags.clone();
        names.extend(name.iter().flat_map(|n| n.split(',')).map(str::to_owned));
        names
    };
    let kind = fields.remove("type").unwrap_or_else(|| "local".to_owned());
    let output = match kind.as_str() {
        "image" | "registry" => {
            let names = names_with(fields.remove("name"));
            let push = match fields.remove("push").as_deref() {
                None | Some("false") => kind == "registry" || args.push,
                Some("true") => true,
                Some(other) => bail!("--output {spec:?}: push={other:?} is not true or false"),
            };
            Output::Image { names, push }
        }
        "oci" | "docker" => {
            if args.push {
                bail!("--push needs an image output, not type={kind}");
            }
            let format = if kind == "oci" { ArchiveFormat::Oci } else { ArchiveFormat::Docker };
            let dest = fields.remove("dest").map(PathBuf::from);
            Output::Archive {
                format,
                dest: dest.filter(|d| d != Path::new("-")),
                names: names_with(fields.remove("name")),
            }
        }
        "local" => {
            let dest =
                fields.remove("dest").with_context(|| format!("--output {spec:?}: type=local needs dest=DIR"))?;
            files(Output::Local { dest: PathBuf::from(dest) })?
        }
        "tar" => {
            let dest = fields.remove("dest").with_context(|| {
                format!("--output {spec:?}: type=tar needs dest=FILE (or dest=- for standard output)")
            })?;
            files(Output::Tar { dest: Some(PathBuf::from(dest)).filter(|d| d != Path::new("-")) })?
        }
        other => bail!("--output {spec:?}: unknown type {other:?} (image, registry, oci, docker, local, tar)"),
    };
    if let Some(key) = fields.keys().next() {
        bail!("--output {spec:?}: option {key:?} is not supported for type={kind}");
    }
    Ok(output)
}

/// `KEY=value` flags as a map; a bare `KEY` takes kiln's environment value (or is skipped).
fn key_values(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some(("", _)) => bail!("{flag} {item:?}: empty key"),
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `--secret` flags, as buildx reads them: `id=ID[,src=FILE|,env=VAR][,type=file|env]`; with
/// neither source, the environment variable named like the id, else the file named like it.
fn parse_secrets(flags: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let mut fields = BTreeMap::new();
        for part in flag.split(',') {
            let (k, v) =
                part.split_once('=').with_context(|| format!("--secret {flag:?}: {part:?} is not KEY=VALUE"))?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let id = fields.remove("id").with_context(|| format!("--secret {flag:?}: id= is required"))?;
        let kind = fields.remove("type");
        let src = fields.remove("src").or_else(|| fields.remove("source"));
        let env = fields.remove("env");
        if let Some(key) = fields.keys().next() {
            bail!("--secret {flag:?}: unknown option {key:?}");
        }
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => bail!("--secret {flag:?}: give src= or env=, not both"),
            (Some("env"), Some(var), None) | (_, None, Some(var)) => SecretSource::Env(var),
            (Some("file") | None, Some(path), None) => SecretSource::File(PathBuf::from(path)),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (None, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            (None, None, None) => SecretSource::File(PathBuf::from(&id)),
            (Some(other), _, _) => bail!("--secret {flag:?}: unknown type {other:?} (file, env)"),
        };
        if let SecretSource::File(path) = &source
            && !path.is_file()
        {
            bail!("--secret {flag:?}: {} is not a file", path.display());
        }
        out.insert(id, source);
    }
    Ok(out)
}

/// `--ssh` flags: `default` or `ID` (the agent at `$SSH_AUTH_SOCK`) or `ID=SOCKET`.
fn parse_ssh(flags: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let (id, socket) = match flag.split_once('=') {
            Some((id, path)) => (id.to_owned(), PathBuf::from(path.split(',').next().unwrap_or(path))),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .with_context(|| format!("--ssh {flag}: SSH_AUTH_SOCK is not set: give --ssh {flag}=SOCKET"))?;
                (flag.clone(), PathBuf::from(sock))
            }
        };
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::metadata(&socket).with_context(|| format!("--ssh {flag}: {}", socket.display()))?;
        if !meta.file_type().is_socket() {
            bail!(
                "--ssh {flag}: {} is not a socket (only agent sockets are supported, not key files)",
                socket.display()
            );
        }
        out.insert(id, socket);
    }
    Ok(out)
}

/// The Dockerfile's text and the name errors give it.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String, PathBuf)> {
    let path = args.file.clone().unwrap_or_else(|| args.context.join("Dockerfile"));
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the Dockerfile from standard input")?;
        return Ok((text, "Dockerfile".to_owned(), path));
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the Dockerfile {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    Ok((text, name, path))
}

/// Runs `kiln build`.
pub fn run(global: &GlobalArgs, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let output = parse_output(&args)?;
    if let Output::Image { names, push: true } = &output
        && names.is_empty()
    {
        bail!("--push needs a name for the image: give -t NAME");
    }
    let names = match &output {
        Output::Image { names, .. } | Output::Archive { names, .. } => names,
        Output::Local { .. } | Output::Tar { .. } => &args.tags,
    };
    let names: Vec<Reference> =
        names.iter().map(|n| n.parse().with_context(|| format!("invalid tag {n:?}"))).collect::<Result<_, _>>()?;
    let host = Platform::host();
    if let Some(p) = &args.platform {
        let wanted: Platform = p.parse().with_context(|| format!("--platform {p}"))?;
        if wanted != host {
            bail!("--platform {p}: kiln builds for the host platform ({host}) only");
        }
    }
    let mode: ProgressMode =
        if args.quiet { ProgressMode::Quiet } else { args.progress.parse().map_err(anyhow::Error::msg)? };
    if !args.context.is_dir() {
        bail!("the build context {} is not a directory", args.context.display());
    }
    let (dockerfile, file_name, dockerfile_path) = read_dockerfile(&args)?;
    let from_stdin = dockerfile_path == Path::new("-");
    let ignore = find_ignore_file(&args.context, Some(dockerfile_path.as_path()).filter(|_| !from_stdin))
        .with_context(|| format!("reading the .dockerignore of {}", args.context.display()))?
        .map(|(_, ignore)| ignore);
    let build_args = key_values("--build-arg", &args.build_args)?;
    let source_date_epoch = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.parse::<i64>().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?),
        None => None,
    };
    let frontend = BuildOptions {
        build_args,
        target: args.target.clone(),
        platform: None,
        build_platform: FrontendPlatform::parse(&host.to_string()).map_err(anyhow::Error::msg)?,
        file_name: file_name.clone(),
        labels: key_values("--label", &args.labels)?,
    };
    let solve = SolveOptions {
        no_cache: args.no_cache,
        no_cache_vertices: Default::default(),
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        compression: args.compression.into(),
        source_date_epoch,
        memory: args.memory,
        default_network: if args.network == "none" { Network::None } else { Network::Host },
        platform: host,
        secrets: parse_secrets(&args.secret)?,
        ssh: parse_ssh(&args.ssh)?,
    };
    let request = BuildRequest {
        dockerfile: dockerfile.clone(),
        frontend,
        context: BuildContext { dir: args.context.clone(), ignore },
        solve,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        sandbox: Sandbox::new(Runtime::parse(&args.runtime), HelperCommand::current_exe()?),
        cancel: cancel_on_signals(),
    };

    let store = Arc::new(open_store(global)?);
    let registry = Arc::new(registry_client(global)?);
    let renderer = Arc::new(Renderer::stderr(mode));
    let result = block_on(build(Arc::clone(&store), Arc::clone(&registry), request, renderer.clone()))?;
    let built = match result {
        Ok(built) => built,
        Err(e) => {
            renderer.finish();
            report_failure(&e, &renderer, &dockerfile, &file_name);
            return Err(anyhow::Error::new(e).context("failed to solve"));
        }
    };
    let image = &built.image;
    // The outputs are still part of what progress shows (pushes as steps of their own).
    let exported = export(&store, &registry, &renderer, image, &output, &names);
    renderer.finish();
    // Summary lines are for people: not in rawjson (its stream is JSON only) or quiet progress.
    let human = matches!(mode, ProgressMode::Auto | ProgressMode::Tty | ProgressMode::Plain);
    for (name, digest) in exported? {
        if human {
            eprintln!("pushed {name}@{digest}");
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image.config_digest.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let mut metadata = serde_json::json!({
            "containerimage.digest": image.manifest_digest.to_string(),
            "containerimage.config.digest": image.config_digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": image.manifest_media_type,
                "digest": image.manifest_digest.to_string(),
                "size": image.manifest_raw.len(),
            },
        });
        // As buildx: the key only when the image has names.
        if !names.is_empty() {
            metadata["image.name"] = names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",").into();
        }
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        // Standard output may be carrying the image itself.
        if !output.to_stdout() {
            println!("{}", image.config_digest);
        }
    } else if human {
        eprintln!(
            "built {} ({} steps run, {} cached){}",
            image.config_digest,
            built.steps_run,
            built.steps_cached,
            if names.is_empty() {
                String::new()
            } else {
                format!(" as {}", names.iter().map(|n| n.familiar()).collect::<Vec<_>>().join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `image` to `output`; returns what was pushed, as (name, manifest digest).
fn export(
    store: &Arc<Store>,
    registry: &RegistryClient,
    renderer: &Arc<Renderer>,
    image: &Image,
    output: &Output,
    names: &[Reference],
) -> anyhow::Result<Vec<(Reference, Digest)>> {
    let mut pushed = Vec::new();
    match output {
        Output::Image { push, .. } => {
            for name in names {
                set_tag(store, name, image)?;
            }
            for name in names.iter().filter(|_| *push) {
                // A vertex of its own, its blobs as sub-tasks, as BuildKit's `pushing layers`.
                let vertex = Digest::of(format!("push {name}").as_bytes()).to_string();
                let at = std::time::SystemTime::now;
                renderer.event(Event::Started { vertex: vertex.clone(), name: format!("pushing {name}"), at: at() });
                let progress = TransferProgress::new(vertex.clone(), Arc::clone(renderer) as Arc<dyn Progress>);
                let result = block_on(registry.push(store, &image.manifest_digest, name, progress))?;
                let error = result.as_ref().err().map(ToString::to_string);
                renderer.event(Event::Completed { vertex, error, at: at() });
                pushed.push((name.clone(), result.with_context(|| format!("pushing {name}"))?));
            }
        }
        Output::Archive { format, dest, .. } => {
            let entries: Vec<SaveEntry<'_>> = if names.is_empty() {
                vec![SaveEntry { image, name: None, familiar_name: None }]
            } else {
                names
                    .iter()
                    .map(|n| SaveEntry { image, name: Some(n.to_string()), familiar_name: Some(n.familiar()) })
                    .collect()
            };
            write_archive(store, &entries, *format, dest.as_deref())?;
        }
        Output::Local { dest } => export_local(store, image, dest)?,
        Output::Tar { dest } => export_tar(store, image, dest.as_deref())?,
    }
    Ok(pushed)
}

/// Writes the image's root filesystem into `dest` (created if missing), layer by layer with
/// whiteouts applied as deletions.
fn export_local(store: &Store, image: &Image, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for layer in &image.layers {
        let blob = store.blobs().open(&layer.digest).with_context(|| format!("reading layer {}", layer.digest))?;
        let options = ApplyOptions { mode: WhiteoutMode::Delete, parents: Vec::new() };
        apply_layer(std::io::BufReader::new(blob), dest, options)
            .with_context(|| format!("writing layer {} into {}", layer.digest, dest.display()))?;
    }
    Ok(())
}

/// Writes the image's root filesystem as one tar to `dest` (`None`: standard output), read from
/// a snapshot of its layers, in the layout kiln's layers have (sorted, PAX, no whiteouts).
fn export_tar(store: &Store, image: &Image, dest: Option<&Path>) -> anyhow::Result<()> {
    let snapshotter = Snapshotter::new(store).context("setting up a snapshot of the image")?;
    let snapshot = snapshotter.prepare(&image.layers).context("preparing a snapshot of the image")?;
    let written = write_file_or_stdout(dest, |out| {
        write_tree(out, snapshot.rootfs(), &DiffOptions::default())?;
        Ok(())
    });
    // The snapshot goes either way; a failed write is the error to report.
    let cleaned = snapshot.cleanup().context("removing the image's snapshot");
    written?;
    cleaned
}

/// Prints what BuildKit prints for a failed step: its last output lines and its Dockerfile
/// line.
fn report_failure(error: &BuildError, renderer: &Renderer, dockerfile: &str, file_name: &str) {
    let BuildError::Solve(SolveError::Step { location, step, vertex, .. }) = error else { return };
    let logs = renderer.last_logs(vertex, 10);
    eprintln!("------\n > {step}:");
    for line in logs {
        eprintln!("{line}");
    }
    eprintln!("------");
    // `Dockerfile:LINE:COL: ` → the line, shown with its neighbours.
    let line: Option<usize> =
        location.strip_prefix(file_name).and_then(|rest| rest.trim_start_matches(':').split(':').next()?.parse().ok());
    if let Some(line) = line {
        eprintln!("{file_name}:{line}\n--------------------");
        for (n, text) in dockerfile.lines().enumerate().map(|(i, t)| (i + 1, t)) {
            if n + 2 >= line && n <= line + 1 {
                let marker = if n == line { ">>>" } else { "   " };
                eprintln!(" {n:>3} | {marker} {text}");
            }
        }
        eprintln!("--------------------");
    }
}
