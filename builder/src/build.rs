//! One `kiln build`: the Dockerfile lowered with base images resolved, the target stage
//! solved, and its image (config, history, layers) stored. Naming, pushing and the other
//! outputs are the caller's.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln_frontend::graph::{BuildGraph, Digest as VertexDigest, Op, Source, StageOutput};
use kiln_frontend::{BuildOptions, FrontendError};
use kiln_runner::sandbox::{CancelToken, Sandbox};
use kiln_store::Store;
use kiln_store::image::{Image, ImageError, commit_image};
use kiln_store::registry::{Reference, RegistryClient};

use crate::image::{BuiltStage, image_config};
use crate::progress::Progress;
use crate::resolver::StoreResolver;
use crate::solver::{BuildContext, Output, SolveError, SolveOptions, Solved, Solver};

/// Everything a build needs.
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Build args, target, labels, the Dockerfile's name for errors.
    pub frontend: BuildOptions,
    /// The context.
    pub context: BuildContext,
    /// Cache, jobs, compression, limits.
    pub solve: SolveOptions,
    /// `--no-cache-filter`: stages whose steps run again.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: re-resolve base image tags at their registry.
    pub pull: bool,
    /// Runs RUN steps.
    pub sandbox: Sandbox,
    /// Stops the build.
    pub cancel: CancelToken,
}

/// A finished build.
pub struct Built {
    /// The stored image of the target stage.
    pub image: Image,
    /// How many steps ran and how many came from the cache.
    pub steps_run: usize,
    /// Steps that were cache hits.
    pub steps_cached: usize,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong (located).
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// A step failed.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// `--no-cache-filter` names no stage.
    #[error("--no-cache-filter: no stage named {0:?}")]
    UnknownStage(String),
    /// Setting up or storing failed.
    #[error("{what}: {message}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The cause.
        message: String,
    },
}

/// Runs a build and stores the target's image (untagged: the caller names it).
pub async fn build(
    store: Arc<Store>,
    registry: Arc<RegistryClient>,
    request: BuildRequest,
    progress: Arc<dyn Progress>,
) -> Result<Built, BuildError> {
    let store_err = |what: &'static str| move |e: String| BuildError::Store { what, message: e };
    let resolver = StoreResolver {
        store: Arc::clone(&store),
        registry: Arc::clone(&registry),
        handle: tokio::runtime::Handle::current(),
        pull: request.pull,
        platform: request.solve.platform.clone(),
        progress: Arc::clone(&progress),
    };
    let (text, options) = (request.dockerfile, request.frontend.clone());
    // Lowering resolves base images, which may pull: off the async workers.
    let graph = tokio::task::spawn_blocking(move || kiln_frontend::lower(&text, &options, &resolver))
        .await
        .map_err(|e| store_err("lowering the Dockerfile")(e.to_string()))??;
    let graph = Arc::new(graph);
    let target =
        graph.target_stage().ok_or_else(|| store_err("lowering the Dockerfile")("no target stage".into()))?.clone();

    let mut solve = request.solve;
    let epoch = solve.source_date_epoch.map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    solve.no_cache_vertices = no_cache_vertices(&graph, &request.no_cache_filter)?;
    let solver = Arc::new(Solver::new(
        Arc::clone(&store),
        request.sandbox,
        registry,
        request.context,
        progress,
        solve,
        request.cancel,
        request.frontend.file_name.clone(),
    ));
    solver.check_supported(&graph, std::slice::from_ref(&target.root))?;
    let solved = solver.solve(Arc::clone(&graph), std::slice::from_ref(&target.root)).await?;

    let image = store_stage(&store, &graph, &target, &solved, epoch)
        .map_err(|e| store_err("storing the image")(e.to_string()))?;
    let steps: Vec<&Solved> = solved
        .iter()
        .filter(|(d, _)| matches!(graph.vertices[*d].op, Op::Exec(_) | Op::File(_)))
        .map(|(_, s)| s)
        .collect();
    let steps_cached = steps.iter().filter(|s| s.cached).count();
    Ok(Built { image, steps_run: steps.len() - steps_cached, steps_cached })
}

/// The vertices of the stages `names` (their own steps, not their bases').
fn no_cache_vertices(graph: &BuildGraph, names: &[String]) -> Result<HashSet<VertexDigest>, BuildError> {
    let mut out = HashSet::new();
    for name in names {
        let stage = graph.stage(name).ok_or_else(|| BuildError::UnknownStage(name.clone()))?;
        let other_roots: HashSet<&VertexDigest> =
            graph.stages.iter().filter(|s| s.index != stage.index).map(|s| &s.root).collect();
        let mut at = Some(stage.root.clone());
        while let Some(d) = at.take() {
            if d != stage.root && other_roots.contains(&d) {
                break;
            }
            at = match &graph.vertices.get(&d).map(|v| &v.op) {
                Some(Op::Exec(e)) => Some(e.root.clone()),
                Some(Op::File(f)) => Some(f.root.clone()),
                _ => None,
            };
            out.insert(d);
        }
    }
    Ok(out)
}

/// Stores the image of `stage`: its config and history (matched to the layers its steps
/// produced) over its filesystem's layers.
fn store_stage(
    store: &Store,
    graph: &BuildGraph,
    stage: &StageOutput,
    solved: &std::collections::HashMap<VertexDigest, Solved>,
    epoch: Option<SystemTime>,
) -> Result<Image, ImageError> {
    // Walk the chain of roots down to the base: the steps, top first, and the base image.
    let mut step_layers = Vec::new();
    let mut newest_step = 0;
    let mut base = None;
    let mut at = Some(&stage.root);
    while let Some(d) = at.take() {
        match graph.vertices.get(d).map(|v| &v.op) {
            Some(Op::Exec(e)) => at = Some(&e.root),
            Some(Op::File(f)) => at = Some(&f.root),
            Some(Op::Source(Source::Image { reference, .. })) => {
                base = Reference::parse(reference).ok().and_then(|r| r.digest());
                continue;
            }
            _ => continue,
        }
        step_layers.push(matches!(solved.get(d).map(|s| &s.output), Some(Output::Fs { own: Some(_), .. })));
        newest_step = newest_step.max(solved.get(d).map_or(0, |s| s.created));
    }
    step_layers.reverse();
    let base = base.map(|d| Image::load(store.blobs(), &d)).transpose()?;
    let layers = solved.get(&stage.root).map(Solved::layers).unwrap_or_default();
    // As BuildKit: the image is as new as its newest step, so a rebuild from the cache gives
    // the same config, hence the same image id. Without steps, the base's time.
    let base_created =
        base.as_ref().and_then(|b| b.config.created.as_deref()).and_then(|c| humantime::parse_rfc3339_weak(c).ok());
    let created = match (epoch, newest_step) {
        (Some(epoch), _) => epoch,
        (None, 0) => base_created.unwrap_or_else(SystemTime::now),
        (None, secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    };
    let config = image_config(&BuiltStage {
        config: &stage.image,
        platform: &stage.platform,
        base: base.as_ref(),
        step_layers,
        layers,
        created,
    });
    commit_image(store.blobs(), &config, layers)
}
