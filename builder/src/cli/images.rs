//! Image commands that work on the local store: `images`, `inspect`, `tag`, `rmi`, `import`,
//! `save`, `load` and `prune`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kiln_store::Store;
use kiln_store::export::archive::{self, ArchiveFormat, SaveEntry};
use kiln_store::export::{import, load};
use kiln_store::image::{Image, Platform};
use kiln_store::layer::Compression;
use kiln_store::lock::LockMode;
use kiln_store::registry::Reference;

use super::{GlobalArgs, open_store};

/// `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// How `kiln images` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns, like `docker images`.
    Table,
    /// One JSON array.
    Json,
}

/// `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image name, `sha256:` manifest digest, or image id (prefix).
    pub image: String,
}

/// `kiln tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to name.
    pub source: String,
    /// The new name.
    pub target: String,
}

/// `kiln rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Names to remove. Content no other name reaches is freed by `kiln prune`.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `kiln import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Root filesystem tarball (plain, gzip or zstd), or `-` for standard input.
    pub file: PathBuf,
    /// Name for the new image.
    pub reference: String,
    /// Platform recorded in the image config.
    #[arg(long)]
    pub platform: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Commit message recorded in the history.
    #[arg(short, long)]
    pub message: Option<String>,
}

/// Layer compression, as `--compression` spells it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    /// gzip (the most compatible).
    Gzip,
    /// zstd (smaller and faster; needs a recent runtime to pull).
    Zstd,
    /// No compression.
    Uncompressed,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Uncompressed => Compression::Uncompressed,
        }
    }
}

/// `kiln save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Output file (default: standard output, which must not be a terminal).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format: an OCI layout, or one `docker load` reads.
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
    /// Images to save.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `kiln save --format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    /// OCI image layout.
    Oci,
    /// docker-archive (an OCI layout plus `manifest.json`).
    Docker,
}

/// `kiln load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read (default: standard input).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Platform to take from multi-platform archives.
    #[arg(long)]
    pub platform: Option<String>,
}

/// Parses `--platform`, defaulting to the host's.
pub fn platform_arg(p: Option<&str>) -> anyhow::Result<Platform> {
    match p {
        Some(p) => p.parse().with_context(|| format!("--platform {p}")),
        None => Ok(Platform::host()),
    }
}

/// Names `image` `name` in the store (its content is stored: the store's contract).
pub(super) fn set_tag(store: &Store, name: &Reference, image: &Image) -> anyhow::Result<()> {
    store
        .set_tag(&name.to_string(), &image.manifest_digest, &image.manifest_media_type)
        .with_context(|| format!("tagging {name}"))?;
    Ok(())
}

/// Finds a local image by name, `sha256:` manifest digest, or image id (config digest) prefix.
pub fn resolve_image(store: &Store, spec: &str) -> anyhow::Result<(Option<Reference>, Image)> {
    if let Ok(name) = spec.parse::<Reference>()
        && let Some(record) = store.meta().tag(&name.to_string())?
    {
        let image = Image::load(store.blobs(), &record.digest).with_context(|| format!("reading image {name}"))?;
        return Ok((Some(name), image));
    }
    let id = spec.strip_prefix("sha256:").unwrap_or(spec);
    if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (name, record) in store.meta().tags()? {
            let image = Image::load(store.blobs(), &record.digest).with_context(|| format!("reading image {name}"))?;
            if image.config_digest.hex().starts_with(id) || image.manifest_digest.hex().starts_with(id) {
                return Ok((name.parse().ok(), image));
            }
        }
    }
    bail!("no such image: {spec}")
}

/// `kiln images`.
pub fn images(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let mut rows = Vec::new();
    for (name, record) in store.meta().tags()? {
        let image = Image::load(store.blobs(), &record.digest).with_context(|| format!("reading image {name}"))?;
        let reference: Option<Reference> = name.parse().ok();
        let (repository, tag) = match &reference {
            Some(r) => (r.familiar_repository(), r.tag().unwrap_or("<none>").to_owned()),
            None => (name.clone(), "<none>".to_owned()),
        };
        let size: u64 = image.layers.iter().map(|l| l.size).sum();
        rows.push(serde_json::json!({
            "Repository": repository,
            "Tag": tag,
            "ID": image.config_digest.to_string(),
            "Digest": image.manifest_digest.to_string(),
            "Created": image.config.created.clone().unwrap_or_default(),
            "Size": size,
        }));
    }
    let mut out = io::stdout().lock();
    match args.format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        ListFormat::Table => {
            writeln!(out, "{:<40} {:<16} {:<14} {:<21} {:>8}", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")?;
            for r in &rows {
                let id = r["ID"].as_str().unwrap_or_default();
                writeln!(
                    out,
                    "{:<40} {:<16} {:<14} {:<21} {:>8}",
                    r["Repository"].as_str().unwrap_or_default(),
                    r["Tag"].as_str().unwrap_or_default(),
                    id.strip_prefix("sha256:").unwrap_or(id).get(..12).unwrap_or(id),
                    r["Created"].as_str().unwrap_or_default(),
                    human_size(r["Size"].as_u64().unwrap_or(0)),
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", UNITS[unit]) }
}

/// `kiln inspect`: the manifest and config as stored, with the names that reach them.
pub fn inspect(global: &GlobalArgs, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let (_, image) = resolve_image(&store, &args.image)?;
    let names: Vec<String> = store
        .meta()
        .tags()?
        .into_iter()
        .filter(|(_, r)| r.digest == image.manifest_digest)
        .map(|(name, _)| name)
        .collect();
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest_raw)?;
    let config: serde_json::Value = serde_json::from_slice(&image.config_raw)?;
    let doc = serde_json::json!({
        "Id": image.config_digest.to_string(),
        "Digest": image.manifest_digest.to_string(),
        "RepoTags": names,
        "MediaType": image.manifest_media_type,
        "Manifest": manifest,
        "Config": config,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}

/// `kiln tag`.
pub fn tag(global: &GlobalArgs, args: TagArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let (_, image) = resolve_image(&store, &args.source)?;
    let target: Reference = args.target.parse().with_context(|| format!("invalid name {:?}", args.target))?;
    set_tag(&store, &target, &image)?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln rmi`.
pub fn rmi(global: &GlobalArgs, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    for spec in &args.images {
        let name: Reference = spec.parse().with_context(|| format!("invalid name {spec:?}"))?;
        match store.meta().remove_tag(&name.to_string())? {
            Some(_) => println!("Untagged: {}", name.familiar()),
            None => bail!("no such image: {spec}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln import`.
pub fn import(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let name: Reference = args.reference.parse().with_context(|| format!("invalid name {:?}", args.reference))?;
    let store = open_store(global)?;
    let options = import::ImportOptions {
        compression: args.compression.into(),
        platform: platform_arg(args.platform.as_deref())?,
        created: source_date_epoch()?.unwrap_or_else(SystemTime::now),
        comment: args.message.unwrap_or_else(|| format!("Imported from {}", args.file.display())),
    };
    let image = if args.file.as_os_str() == "-" {
        import::import_rootfs(store.blobs(), io::stdin().lock(), &options)
    } else {
        let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        import::import_rootfs(store.blobs(), file, &options)
    }
    .with_context(|| format!("importing {}", args.file.display()))?;
    set_tag(&store, &name, &image)?;
    println!("{}", image.config_digest);
    Ok(ExitCode::SUCCESS)
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for "now".
pub fn source_date_epoch() -> anyhow::Result<Option<SystemTime>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => {
            let secs: u64 = s.parse().with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?;
            Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)))
        }
        _ => Ok(None),
    }
}

/// `kiln save`.
pub fn save(global: &GlobalArgs, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let mut resolved = Vec::new();
    for spec in &args.images {
        resolved.push(resolve_image(&store, spec)?);
    }
    let entries: Vec<SaveEntry<'_>> = resolved
        .iter()
        .map(|(name, image)| SaveEntry {
            image,
            name: name.as_ref().map(|n| n.to_string()),
            familiar_name: name.as_ref().map(|n| n.familiar()),
        })
        .collect();
    let format = match args.format {
        SaveFormat::Oci => ArchiveFormat::Oci,
        SaveFormat::Docker => ArchiveFormat::Docker,
    };
    write_archive(&store, &entries, format, args.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `entries` as an archive to `output`, or to standard output (never a terminal).
pub fn write_archive(
    store: &Store,
    entries: &[SaveEntry<'_>],
    format: ArchiveFormat,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    write_file_or_stdout(output, |out| {
        archive::save(store.blobs(), entries, format, out)?;
        Ok(())
    })
}

/// Runs `write` on a buffered `output` file, or on standard output (never a terminal) when
/// there is none. A file is written beside its destination and renamed, so a failed write
/// leaves no partial file.
pub fn write_file_or_stdout<F>(output: Option<&std::path::Path>, write: F) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()>,
{
    match output {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
            let mut out = BufWriter::new(tmp);
            write(&mut out).with_context(|| format!("writing {}", path.display()))?;
            let tmp =
                out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&io::stdout()) {
                bail!("refusing to write an archive to a terminal: use a file or redirect standard output");
            }
            let mut out = BufWriter::new(io::stdout().lock());
            write(&mut out)?;
            out.flush().context("writing to standard output")?;
        }
    }
    Ok(())
}

/// `kiln prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also drop the build cache (like `docker builder prune -a`): the next build runs every step.
    #[arg(long)]
    pub build_cache: bool,
    /// Keep the contents of `RUN --mount=type=cache` directories (they are listed, with their sizes).
    #[arg(long)]
    pub keep_cache_mounts: bool,
}

/// `kiln prune`: waits for running kiln commands, then frees what no name, lease or (unless
/// `--build-cache`) build cache entry reaches.
pub fn prune(global: &GlobalArgs, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_with(&global.root, LockMode::Exclusive, |holders| {
        let who: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
        eprintln!("waiting for {} to finish", who.join(", "));
    })
    .with_context(|| format!("opening the store {}", global.root.display()))?;
    if args.build_cache {
        let dropped = store.meta().cache_clear().context("clearing the build cache")?;
        println!("Dropped {dropped} build cache entries");
    }
    let mut cache_mount_bytes = 0;
    if args.keep_cache_mounts {
        let kept = kiln_builder::solver::mounts::list_cache_mounts(&global.root)
            .with_context(|| format!("listing the cache mounts of {}", global.root.display()))?;
        for mount in kept {
            println!("kept cache mount: {} ({})", mount.id, human_size(mount.bytes));
        }
    } else {
        let removed = kiln_builder::solver::mounts::remove_cache_mounts(&global.root)
            .with_context(|| format!("removing the cache mounts of {}", global.root.display()))?;
        for mount in removed {
            println!("deleted cache mount: {} ({})", mount.id, human_size(mount.bytes));
            cache_mount_bytes += mount.bytes;
        }
    }
    let report = kiln_store::gc::prune(&store).context("pruning the store")?;
    for d in &report.blobs {
        println!("deleted: {d}");
    }
    println!(
        "Deleted {} blobs, {} snapshots, {} leftovers of interrupted writes\nTotal reclaimed space: {}",
        report.blobs.len(),
        report.snapshots.len(),
        report.temp.len(),
        human_size(report.bytes_freed + cache_mount_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// `kiln load`.
pub fn load(global: &GlobalArgs, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let platform = platform_arg(args.platform.as_deref())?;
    let loaded = match &args.input {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            load::load(store.blobs(), file, &platform).with_context(|| format!("loading {}", path.display()))?
        }
        None => load::load(store.blobs(), io::stdin().lock(), &platform).context("loading standard input")?,
    };
    for l in &loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.image.config_digest);
        }
        for n in &l.names {
            let name: Reference = n.parse().with_context(|| format!("the archive names an image {n:?}"))?;
            set_tag(&store, &name, &l.image)?;
            println!("Loaded image: {}", name.familiar());
        }
    }
    Ok(ExitCode::SUCCESS)
}
