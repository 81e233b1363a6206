//! `kiln pull` and `kiln push`, with progress bars on a terminal and plain lines elsewhere.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_store::Digest;
use kiln_store::registry::{BlobOutcome, Progress, Reference, RemoteCause};

use super::images::{platform_arg, resolve_image};
use super::{GlobalArgs, block_on, open_store, registry_client};

/// `kiln pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image to pull, e.g. `registry.example.com/team/app:1.4`.
    pub reference: String,
    /// Platform to select from a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image digest.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `kiln push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local image to push.
    pub source: String,
    /// Where to push it (default: the source's own name).
    pub destination: Option<String>,
    /// Print only the pushed digest.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `kiln pull`.
pub fn pull(global: &GlobalArgs, args: PullArgs) -> anyhow::Result<ExitCode> {
    let reference: Reference =
        args.reference.parse().with_context(|| format!("invalid reference {:?}", args.reference))?;
    let platform = platform_arg(args.platform.as_deref())?;
    let store = open_store(global)?;
    let client = registry_client(global)?;
    let progress = TransferProgress::new(args.quiet, "Pull");
    let pulled = block_on(client.pull(&store, &reference, &platform, progress.clone()))?
        .with_context(|| format!("pulling {reference}"))?;
    progress.finish();
    store.set_tag(&reference.to_string(), &pulled.digest, &pulled.media_type)?;
    if args.quiet {
        println!("{}", pulled.digest);
    } else {
        println!("Digest: {}", pulled.digest);
        println!("Pulled {}", reference.familiar());
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln push`.
pub fn push(global: &GlobalArgs, args: PushArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let (name, image) = resolve_image(&store, &args.source)?;
    let dest: Reference = match &args.destination {
        Some(d) => d.parse().with_context(|| format!("invalid reference {d:?}"))?,
        None => name.with_context(|| format!("{} has no name to push to: give a destination", args.source))?,
    };
    let client = registry_client(global)?;
    let progress = TransferProgress::new(args.quiet, "Push");
    let digest = block_on(client.push(&store, &image.manifest_digest, &dest, progress.clone()))?
        .with_context(|| format!("pushing {} to {dest}", args.source))?;
    progress.finish();
    if args.quiet {
        println!("{digest}");
    } else {
        println!("{}: digest: {digest} size: {}", dest.manifest_name(), image.manifest_raw.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Blob transfer progress: a bar per blob on a terminal, one line per finished blob otherwise.
struct TransferProgress {
    bars: Option<MultiProgress>,
    active: Mutex<HashMap<Digest, ProgressBar>>,
    verb: &'static str,
    quiet: bool,
}

impl TransferProgress {
    fn new(quiet: bool, verb: &'static str) -> Arc<TransferProgress> {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Arc::new(TransferProgress { bars, active: Mutex::new(HashMap::new()), verb, quiet })
    }

    fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }

    fn line(&self, digest: &Digest, what: &str) {
        let short = &digest.hex()[..12];
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(format!("{short}: {what}"));
            }
            None if !self.quiet => eprintln!("{short}: {what}"),
            None => {}
        }
    }
}

impl Progress for TransferProgress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let Some(bars) = &self.bars else { return };
        let bar = bars.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(digest.hex()[..12].to_owned());
        if let Ok(mut active) = self.active.lock() {
            active.insert(digest.clone(), bar);
        }
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        if let Ok(active) = self.active.lock()
            && let Some(bar) = active.get(digest)
        {
            bar.inc(bytes);
        }
    }

    fn blob_retrying(&self, digest: &Digest, attempt: u32, cause: &RemoteCause) {
        if let Ok(active) = self.active.lock()
            && let Some(bar) = active.get(digest)
        {
            bar.set_position(0);
        }
        self.line(digest, &format!("retrying (attempt {attempt}): {cause}"));
    }

    fn blob_done(&self, digest: &Digest, outcome: &BlobOutcome) {
        if let Ok(mut active) = self.active.lock()
            && let Some(bar) = active.remove(digest)
        {
            bar.finish_and_clear();
            if let Some(bars) = &self.bars {
                bars.remove(&bar);
            }
        }
        let what = match outcome {
            BlobOutcome::Exists if self.verb == "Push" => "Layer already exists".to_owned(),
            BlobOutcome::Exists => "Already exists".to_owned(),
            BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
            BlobOutcome::Uploaded => "Pushed".to_owned(),
            BlobOutcome::Downloaded => "Pull complete".to_owned(),
        };
        self.line(digest, &what);
    }
}
