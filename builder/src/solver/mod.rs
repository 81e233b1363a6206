//! The solver: walks the build graph and turns every vertex the targets need into a result,
//! running independent vertices at once.
//!
//! Each vertex gets a cache key (see [`key`]) once its inputs are solved; a key found in the
//! store's cache index is a hit and nothing runs. A miss runs the vertex: RUN in the sandbox
//! ([`exec`]), COPY/ADD/WORKDIR as file actions ([`file`]), sources by loading or downloading
//! them ([`source`]). Hits continue after a miss for every vertex whose inputs kept their keys,
//! as BuildKit's per-vertex cache does (not linear like buildah's or kaniko's).
//!
//! Scheduling is one loop on the async runtime: a vertex starts as soon as all its inputs are
//! solved, on the blocking pool (the work is filesystem and CPU bound); `jobs` caps how many
//! RUN steps run at once. Equal vertices are one vertex of the graph, so they run once. A
//! failure cancels the running steps (their process trees are killed) and waits for them to
//! clean up before the error is returned.

mod exec;
mod file;
mod git;
pub mod key;
pub mod mounts;
mod source;
mod ssh_proxy;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use kiln_frontend::dockerignore::DockerIgnore;
use kiln_frontend::graph::{BuildGraph, Digest as VertexDigest, Mount, Op, Security, Source, Vertex};
use kiln_runner::sandbox::{CancelToken, Sandbox};
use kiln_runner::snapshot::Snapshotter;
use kiln_store::Store;
use kiln_store::image::{Layer, Platform};
use kiln_store::layer::Compression;
use kiln_store::registry::RegistryClient;

use crate::fileop::StatCache;
use crate::progress::{Event, Progress};

/// The build context: a directory read in place, and its `.dockerignore`.
#[derive(Debug)]
pub struct BuildContext {
    /// The context directory.
    pub dir: PathBuf,
    /// Its ignore patterns, if it has a `.dockerignore` (or a Dockerfile-specific one).
    pub ignore: Option<DockerIgnore>,
}

/// What the user asked of the solver.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// `--no-cache`: run every step, look nothing up.
    pub no_cache: bool,
    /// `--no-cache-filter`: vertices (of the named stages) that must run again.
    pub no_cache_vertices: HashSet<VertexDigest>,
    /// `--jobs`: RUN steps at most running at once.
    pub jobs: usize,
    /// Compression of new layers.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: new layers' mtimes are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// `--memory`: the memory limit of every RUN.
    pub memory: Option<u64>,
    /// `--network`: the network of RUN steps that do not choose one.
    pub default_network: kiln_runner::sandbox::Network,
    /// The platform of the images the build uses (the host's).
    pub platform: Platform,
    /// `--secret`: where each secret id's bytes come from.
    pub secrets: BTreeMap<String, mounts::SecretSource>,
    /// `--ssh`: each id's agent socket.
    pub ssh: BTreeMap<String, PathBuf>,
}

/// A solved vertex's result.
#[derive(Debug, Clone)]
pub enum Output {
    /// A filesystem: its layers, bottom first (empty for scratch).
    Fs {
        /// Every layer of the filesystem.
        layers: Vec<Layer>,
        /// The layer this vertex added on top of its root input, if it changed anything.
        own: Option<Layer>,
    },
    /// The build context (read in place).
    Context,
    /// A downloaded file, alone in a directory removed when the last user is done.
    Download(Arc<tempfile::TempDir>),
}

/// A vertex's result and the key its dependants' cache keys are made of.
#[derive(Debug, Clone)]
pub struct Solved {
    /// The result key (see [`key`]): what the result holds, as far as caching is concerned.
    pub key: String,
    /// The result.
    pub output: Output,
    /// Whether it came from the cache.
    pub cached: bool,
    /// When a step's result was made (seconds since the epoch; from its cache entry on a hit,
    /// so a rebuild from the cache yields the same image); 0 for sources.
    pub created: u64,
}

impl Solved {
    /// The layers of a filesystem result (none for the context or a download).
    pub fn layers(&self) -> &[Layer] {
        match &self.output {
            Output::Fs { layers, .. } => layers,
            _ => &[],
        }
    }
}

/// Why a build failed. Step failures name the step and its Dockerfile location.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A step failed.
    #[error("{location}{step}: {message}")]
    Step {
        /// `Dockerfile:12:1: ` or empty.
        location: String,
        /// The step as progress names it.
        step: String,
        /// What went wrong.
        message: String,
        /// The graph digest of the failed vertex (for its logs).
        vertex: String,
    },
    /// The build was cancelled (Ctrl-C).
    #[error("build cancelled")]
    Cancelled,
    /// The graph is inconsistent (a bug in the frontend).
    #[error("build graph: vertex {0} is missing")]
    MissingVertex(String),
}

/// Everything one build's vertices share.
pub struct Solver {
    pub(crate) store: Arc<Store>,
    /// Set up on first use: a build whose steps all hit the cache mounts nothing, so it
    /// skips the overlay probe and the stale-snapshot sweep.
    snapshotter: OnceLock<Result<Snapshotter, String>>,
    pub(crate) sandbox: Sandbox,
    pub(crate) registry: Arc<RegistryClient>,
    pub(crate) context: BuildContext,
    pub(crate) stats: StatCache,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) options: SolveOptions,
    pub(crate) cancel: CancelToken,
    /// The Dockerfile's name in error locations.
    pub(crate) file_name: String,
}

impl Solver {
    /// A solver for one build. The store stays open (and locked shared) while it lives, so no
    /// prune runs under a build.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        sandbox: Sandbox,
        registry: Arc<RegistryClient>,
        context: BuildContext,
        progress: Arc<dyn Progress>,
        options: SolveOptions,
        cancel: CancelToken,
        file_name: String,
    ) -> Solver {
        let stats = StatCache::load(key::stat_cache_path(store.root(), &context.dir));
        let snapshotter = OnceLock::new();
        Solver { store, snapshotter, sandbox, registry, context, stats, progress, options, cancel, file_name }
    }

    /// Checks, before anything runs, that every vertex `targets` need is something kiln can
    /// do, so an unsupported feature fails at once with its Dockerfile location.
    pub fn check_supported(&self, graph: &BuildGraph, targets: &[VertexDigest]) -> Result<(), SolveError> {
        for digest in needed(graph, targets) {
            let vertex = graph.get(&digest).ok_or_else(|| SolveError::MissingVertex(digest.to_string()))?;
            let unsupported = match &vertex.op {
                Op::Exec(e) => e
                    .mounts
                    .iter()
                    .find_map(|m| match m {
                        Mount::Flag { spec, .. } => {
                            mounts::RunMount::parse(spec, 0, &e.cwd).err().map(|e| format!("--mount={spec}: {e}"))
                        }
                        Mount::Input { .. } => None,
                    })
                    .or_else(|| {
                        (e.security == Security::Insecure)
                            .then(|| "RUN --security=insecure is not allowed (no entitlement)".to_owned())
                    }),
                _ => None,
            };
            if let Some(message) = unsupported {
                return Err(self.step_error(&digest, vertex, message));
            }
        }
        Ok(())
    }

    /// Solves every vertex `targets` need; returns the results by graph digest.
    pub async fn solve(
        self: &Arc<Self>,
        graph: Arc<BuildGraph>,
        targets: &[VertexDigest],
    ) -> Result<HashMap<VertexDigest, Solved>, SolveError> {
        let needed = needed(&graph, targets);
        let mut waiting: HashMap<VertexDigest, usize> = HashMap::new();
        let mut users: HashMap<VertexDigest, Vec<VertexDigest>> = HashMap::new();
        let mut ready = VecDeque::new();
        for digest in &needed {
            let vertex = graph.get(digest).ok_or_else(|| SolveError::MissingVertex(digest.to_string()))?;
            let inputs: HashSet<&VertexDigest> = vertex.op.inputs().into_iter().collect();
            for input in &inputs {
                users.entry((*input).clone()).or_default().push(digest.clone());
            }
            if inputs.is_empty() {
                ready.push_back(digest.clone());
            } else {
                waiting.insert(digest.clone(), inputs.len());
            }
        }

        let mut solved: HashMap<VertexDigest, Solved> = HashMap::new();
        let mut running = tokio::task::JoinSet::new();
        let (mut running_execs, mut deferred_execs) = (0usize, VecDeque::new());
        let mut failure: Option<SolveError> = None;
        loop {
            if failure.is_none() {
                // RUN steps beyond `jobs` wait their turn; everything else starts at once.
                while let Some(digest) = ready.pop_front() {
                    if matches!(graph.vertices[&digest].op, Op::Exec(_)) {
                        deferred_execs.push_back(digest);
                    } else {
                        self.spawn_vertex(&mut running, &graph, digest, &solved, false);
                    }
                }
                while running_execs < self.options.jobs.max(1) {
                    let Some(digest) = deferred_execs.pop_front() else { break };
                    running_execs += 1;
                    self.spawn_vertex(&mut running, &graph, digest, &solved, true);
                }
            }
            let Some(joined) = running.join_next().await else { break };
            let (digest, is_exec, result) = match joined {
                Ok(done) => done,
                Err(e) => {
                    failure.get_or_insert(SolveError::Step {
                        location: String::new(),
                        step: "solver".into(),
                        message: format!("a build task failed: {e}"),
                        vertex: String::new(),
                    });
                    self.cancel.cancel();
                    continue;
                }
            };
            if is_exec {
                running_execs -= 1;
            }
            match result {
                Ok(result) => {
                    for user in users.get(&digest).into_iter().flatten() {
                        if let Some(n) = waiting.get_mut(user) {
                            *n -= 1;
                            if *n == 0 {
                                waiting.remove(user);
                                ready.push_back(user.clone());
                            }
                        }
                    }
                    solved.insert(digest, result);
                }
                Err(e) => {
                    // The first failure is the one reported; the rest are its consequences.
                    if failure.is_none() {
                        failure = Some(e);
                        self.cancel.cancel();
                    }
                }
            }
        }
        tracing::debug!(
            files_read = self.stats.files_read(),
            known = self.stats.len(),
            "context checksums: files read for their content, and the stat cache's entries"
        );
        if let Err(e) = self.stats.save() {
            tracing::warn!("saving the context stat cache: {e}");
        }
        match failure {
            Some(e) => Err(e),
            None if self.cancel.is_cancelled() => Err(SolveError::Cancelled),
            None => Ok(solved),
        }
    }

    /// Starts solving `digest` on the blocking pool with its inputs' results.
    fn spawn_vertex(
        self: &Arc<Self>,
        running: &mut tokio::task::JoinSet<(VertexDigest, bool, Result<Solved, SolveError>)>,
        graph: &Arc<BuildGraph>,
        digest: VertexDigest,
        solved: &HashMap<VertexDigest, Solved>,
        is_exec: bool,
    ) {
        let vertex = graph.vertices[&digest].clone();
        let inputs: BTreeMap<VertexDigest, Solved> =
            vertex.op.inputs().into_iter().filter_map(|d| solved.get(d).map(|s| (d.clone(), s.clone()))).collect();
        let this = Arc::clone(self);
        let handle = tokio::runtime::Handle::current();
        running.spawn_blocking(move || {
            let result = this.solve_vertex(&handle, &digest, &vertex, &inputs);
            (digest, is_exec, result)
        });
    }

    /// Finds `vertex` in the cache or runs it, reporting progress.
    fn solve_vertex(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        vertex: &Vertex,
        inputs: &BTreeMap<VertexDigest, Solved>,
    ) -> Result<Solved, SolveError> {
        let id = digest.to_string();
        // Internal vertices (scratch, the context) are not steps a user wrote: BuildKit does not
        // show them either.
        let shown = !matches!(vertex.op, Op::Source(Source::Scratch | Source::Context { .. }));
        if shown {
            self.progress.event(Event::Started { vertex: id.clone(), name: vertex.description.clone(), at: now() });
        }
        let result = self.solve_uncounted(handle, digest, vertex, inputs);
        if shown {
            match &result {
                Ok(s) if s.cached && !matches!(vertex.op, Op::Source(_)) => {
                    self.progress.event(Event::Cached { vertex: id.clone() });
                    self.progress.event(Event::Completed { vertex: id, error: None, at: now() });
                }
                Ok(_) => self.progress.event(Event::Completed { vertex: id, error: None, at: now() }),
                Err(e) => {
                    let error = match e {
                        SolveError::Step { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    self.progress.event(Event::Completed { vertex: id, error: Some(error), at: now() });
                }
            }
        }
        result
    }

    /// [`solve_vertex`](Self::solve_vertex) without the progress events.
    fn solve_uncounted(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        vertex: &Vertex,
        inputs: &BTreeMap<VertexDigest, Solved>,
    ) -> Result<Solved, SolveError> {
        if self.cancel.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        let fail = |message: String| self.step_error(digest, vertex, message);
        let input = |d: &VertexDigest| inputs.get(d).ok_or_else(|| SolveError::MissingVertex(d.to_string()));
        match &vertex.op {
            Op::Source(src) => self.solve_source(handle, digest, src).map_err(fail),
            Op::Exec(e) => {
                self.solve_step(digest, vertex, input(&e.root)?, inputs, || self.run_exec(digest, e, inputs))
            }
            Op::File(f) => self.solve_step(digest, vertex, input(&f.root)?, inputs, || self.run_file(f, inputs)),
        }
    }

    /// A RUN or file step on `root`: a cache hit, or `run` (which returns the layer it added)
    /// and a new cache entry.
    fn solve_step(
        &self,
        digest: &VertexDigest,
        vertex: &Vertex,
        root: &Solved,
        inputs: &BTreeMap<VertexDigest, Solved>,
        run: impl FnOnce() -> Result<Option<Layer>, String>,
    ) -> Result<Solved, SolveError> {
        let fail = |message: String| self.step_error(digest, vertex, message);
        let key = self.cache_key(digest, vertex, inputs).map_err(fail)?;
        // A forced step is not looked up, but its result replaces the entry (see `key`).
        let forced = self.options.no_cache || self.options.no_cache_vertices.contains(digest);
        if !forced && let Some(hit) = self.cache_lookup(&key, root).map_err(fail)? {
            return Ok(hit);
        }
        let own = run().map_err(fail)?;
        self.cache_store(&key, root, own.as_ref(), key::now_secs()).map_err(fail)
    }

    /// The snapshotter, set up (and snapshots left by killed builds removed) on first use.
    pub(crate) fn snapshotter(&self) -> Result<&Snapshotter, String> {
        self.snapshotter
            .get_or_init(|| {
                let snapshotter = Snapshotter::new(&self.store).map_err(|e| format!("setting up snapshots: {e}"))?;
                if let Err(e) = snapshotter.remove_stale() {
                    tracing::warn!("removing snapshots left by killed builds: {e}");
                }
                Ok(snapshotter)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A step error located at `vertex`'s instruction.
    pub(crate) fn step_error(&self, digest: &VertexDigest, vertex: &Vertex, message: String) -> SolveError {
        SolveError::Step {
            location: vertex.pos.map(|p| format!("{}:{}:{}: ", self.file_name, p.line, p.column)).unwrap_or_default(),
            step: vertex.description.clone(),
            message,
            vertex: digest.to_string(),
        }
    }
}

/// Every vertex `targets` reach, inputs first.
pub fn needed(graph: &BuildGraph, targets: &[VertexDigest]) -> Vec<VertexDigest> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in targets {
        for d in graph.closure(t) {
            if seen.insert(d.clone()) {
                out.push(d);
            }
        }
    }
    out
}

/// The time for events.
fn now() -> SystemTime {
    SystemTime::now()
}
