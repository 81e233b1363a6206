//! Cache keys (DESIGN.md "Cache keys") and the cache index they name.
//!
//! A vertex's key is the sha256 of: a format version, the vertex's graph digest (its op and,
//! transitively, its inputs' ops, base images pinned by digest), the result keys of its inputs
//! in order, `SOURCE_DATE_EPOCH` (it changes the layers' mtimes), for a RUN that does not
//! choose its network the one `--network` gives it, and for each COPY/ADD from
//! the build context the content checksum of exactly the files it selects (taken through the
//! persistent stat cache, never from timestamps). So a changed context file changes the keys of
//! the steps that copy it and of everything built on them, and nothing else.
//!
//! What a vertex hands on to its dependants is its *result key*: its own key, its root input's
//! result key and the diffID of the layer it added. Dependants are thus keyed on what their
//! input holds, not only on how it was made: a step forced to run again by `--no-cache` or
//! `--no-cache-filter` stores its new result under its key (replacing the old entry, as the
//! next build should see the fresh result, as BuildKit's does), and a dependant that is not
//! forced still hits only if the forced step gave back the same layer. A linked COPY's key
//! leaves its root out; its result key does not.
//!
//! Compression is not part of any key (as in BuildKit, a cache entry is a filesystem change):
//! a hit whose layer blob has another compression than the build asks for is re-encoded once
//! and the entry updated.
//!
//! The index lives in the store's DB: key → the layer the step added and the chain id of the
//! result. A hit whose layer blob is gone (a damaged store) is a miss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_frontend::graph::{Digest as VertexDigest, FileAction, FileOp, Mount, Network, Op, Vertex};
use kiln_runner::sandbox;
use kiln_store::Digest;
use kiln_store::image::{Layer, chain_ids};
use kiln_store::layer::Compression;
use kiln_store::layer::encode::recompress;
use kiln_store::meta::{CacheRecord, CachedLayer};
use serde::Serialize;

use super::mounts::RunMount;
use super::{Output, Solved, Solver};
use crate::fileop::{self, SourceTree};

/// Bumped when the meaning of a key changes, so old entries stop matching.
const KEY_VERSION: u32 = 2;

/// What a key hashes.
#[derive(Serialize)]
struct KeyInput<'a> {
    version: u32,
    vertex: &'a str,
    inputs: Vec<&'a str>,
    source_date_epoch: Option<i64>,
    /// For a RUN that does not choose its network: the one `--network` gives it.
    default_network: Option<&'static str>,
    files: Vec<String>,
}

/// The result key of a filesystem step: its key, the result key of its root input and the
/// diffID of the layer it added (see the module docs).
fn result_key(key: &str, root: &Solved, own: Option<&Layer>) -> String {
    let own = own.map_or_else(|| "-".to_owned(), |l| l.diff_id.to_string());
    Digest::of(format!("{key}\n{}\n{own}", root.key).as_bytes()).to_string()
}

/// Where the stat cache of the context `dir` is kept in the store at `store_root`: one file
/// per context directory, so two projects do not evict each other's entries.
pub fn stat_cache_path(store_root: &Path, dir: &Path) -> PathBuf {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let name = Digest::of(canonical.as_os_str().as_encoded_bytes());
    store_root.join("context-stats").join(name.hex())
}

/// Seconds since the Unix epoch, now.
pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Solver {
    /// The cache key of `vertex`, whose inputs are solved.
    pub(super) fn cache_key(
        &self,
        digest: &VertexDigest,
        vertex: &Vertex,
        inputs: &BTreeMap<VertexDigest, Solved>,
    ) -> Result<String, String> {
        // A linked copy's layer does not depend on its root: neither does its key.
        let linked = match &vertex.op {
            Op::File(f) if super::file::is_linked(f) => Some(f),
            _ => None,
        };
        let vertex_id = match linked {
            Some(f) => Op::File(FileOp { root: VertexDigest::of_bytes(b"link"), actions: f.actions.clone() }).digest(),
            None => digest.clone(),
        };
        let mut input_keys = Vec::new();
        for d in vertex.op.inputs() {
            if linked.is_some_and(|f| *d == f.root) {
                continue;
            }
            match inputs.get(d) {
                Some(solved) => input_keys.push(solved.key.as_str()),
                None => return Err(format!("input {d} of the step was not solved")),
            }
        }
        let mut files = Vec::new();
        let mut default_network = None;
        if let Op::Exec(e) = &vertex.op {
            if e.network == Network::Default {
                default_network = Some(match self.options.default_network {
                    sandbox::Network::Host => "host",
                    sandbox::Network::None => "none",
                });
            }
            // A bind of the context: exactly the files it shows.
            for mount in &e.mounts {
                if let Mount::Flag { spec, from: None, .. } = mount
                    && let Ok(parsed) = RunMount::parse(spec, 0, &e.cwd)
                    && let Some(copy) = parsed.context_selection()
                {
                    files.push(fileop::checksum(&self.context_tree(), &copy, &self.stats).map_err(|e| e.to_string())?);
                }
            }
        }
        if let Op::File(f) = &vertex.op {
            for action in &f.actions {
                let FileAction::Copy(copy) = action else { continue };
                if let Some(Output::Context) = inputs.get(&copy.from).map(|s| &s.output) {
                    let tree = self.context_tree();
                    files.push(fileop::checksum(&tree, copy, &self.stats).map_err(|e| e.to_string())?);
                }
            }
        }
        let input = KeyInput {
            version: KEY_VERSION,
            vertex: vertex_id.as_str(),
            inputs: input_keys,
            source_date_epoch: self.options.source_date_epoch,
            default_network,
            files,
        };
        // Plain data with string keys: serialising cannot fail.
        let bytes = serde_json::to_vec(&input).unwrap_or_default();
        Ok(Digest::of(&bytes).to_string())
    }

    /// The build context as COPY reads it.
    pub(super) fn context_tree(&self) -> SourceTree<'_> {
        SourceTree { root: &self.context.dir, ignore: self.context.ignore.as_ref(), reset_owner: true }
    }

    /// The cached result under `key` on top of `root` (the step's solved root input), its
    /// layer in the build's compression.
    pub(super) fn cache_lookup(&self, key: &str, root: &Solved) -> Result<Option<Solved>, String> {
        let Some(record) = self.store.meta().cache_get(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let own = record.layer.map(|l| Layer {
            digest: l.digest,
            size: l.size,
            media_type: l.media_type,
            diff_id: l.diff_id,
        });
        if own.as_ref().is_some_and(|l| !self.store.blobs().contains(&l.digest)) {
            tracing::warn!("cache entry {key} names a missing layer: running the step again");
            return Ok(None);
        }
        if let Some(layer) = &own
            && Compression::from_media_type(&layer.media_type) != Some(self.options.compression)
        {
            let encoded = recompress(self.store.blobs(), &layer.digest, self.options.compression)
                .map_err(|e| format!("re-encoding the cached layer as {}: {e}", self.options.compression))?;
            let layer = Layer {
                digest: encoded.digest,
                size: encoded.size,
                media_type: encoded.media_type.to_owned(),
                diff_id: encoded.diff_id,
            };
            let solved = self.cache_store(key, root, Some(&layer), record.created)?;
            return Ok(Some(Solved { cached: true, ..solved }));
        }
        Ok(Some(fs_result(key, root, own, record.created, true)))
    }

    /// Records under `key` that the step on `root` added `own` at `created`, and returns its
    /// result; the layer is stored already.
    pub(super) fn cache_store(
        &self,
        key: &str,
        root: &Solved,
        own: Option<&Layer>,
        created: u64,
    ) -> Result<Solved, String> {
        let solved = fs_result(key, root, own.cloned(), created, false);
        let diff_ids: Vec<Digest> = solved.layers().iter().map(|l| l.diff_id.clone()).collect();
        let record = CacheRecord {
            layer: own.map(|l| CachedLayer {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.clone(),
            }),
            chain_id: chain_ids(&diff_ids).pop(),
            created,
        };
        self.store.meta().cache_put(key, &record).map_err(|e| format!("recording the cache entry: {e}"))?;
        Ok(solved)
    }
}

/// The result of the step under `key` that added `own` on `root`.
fn fs_result(key: &str, root: &Solved, own: Option<Layer>, created: u64, cached: bool) -> Solved {
    Solved {
        key: result_key(key, root, own.as_ref()),
        output: Output::Fs { layers: root.layers().iter().cloned().chain(own.clone()).collect(), own },
        cached,
        created,
    }
}
