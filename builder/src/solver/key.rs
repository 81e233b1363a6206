//! Cache keys (DESIGN.md "Cache keys") and the cache index they name.
//!
//! A vertex's key is the sha256 of: a format version, the vertex's graph digest (its op and,
//! transitively, its inputs' ops, base images pinned by digest), the cache keys of its inputs
//! in order, and for each COPY/ADD from the build context the content checksum of exactly the
//! files it selects (taken through the persistent stat cache, never from timestamps). So a
//! changed context file changes the keys of the steps that copy it and of everything built on
//! them, and nothing else. A vertex run with `--no-cache` (or filtered by `--no-cache-filter`)
//! has no key: it is neither looked up nor stored, and neither is anything built on it.
//!
//! The index lives in the store's DB: key → the layer the step added and the chain id of the
//! result. A hit whose layer blob is gone (a damaged store) is a miss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_frontend::graph::{Digest as VertexDigest, FileAction, FileOp, Mount, Op, Vertex};
use kiln_store::Digest;
use kiln_store::image::{Layer, chain_ids};
use kiln_store::meta::{CacheRecord, CachedLayer};
use serde::Serialize;

use super::mounts::RunMount;
use super::{Output, Solved, Solver};
use crate::fileop::{self, SourceTree};

/// Bumped when the meaning of a key changes, so old entries stop matching.
const KEY_VERSION: u32 = 1;

/// What a key hashes.
#[derive(Serialize)]
struct KeyInput<'a> {
    version: u32,
    vertex: &'a str,
    inputs: Vec<&'a str>,
    files: Vec<String>,
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
    /// The cache key of `vertex`, or `None` when it must not be cached.
    pub(super) fn cache_key(
        &self,
        digest: &VertexDigest,
        vertex: &Vertex,
        inputs: &BTreeMap<VertexDigest, Solved>,
        uncached: bool,
    ) -> Result<Option<String>, String> {
        if uncached {
            return Ok(None);
        }
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
            match inputs.get(d).and_then(|s| s.key.as_deref()) {
                Some(k) => input_keys.push(k),
                None => return Ok(None),
            }
        }
        let mut files = Vec::new();
        if let Op::Exec(e) = &vertex.op {
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
        let input = KeyInput { version: KEY_VERSION, vertex: vertex_id.as_str(), inputs: input_keys, files };
        // Plain data with string keys: serialising cannot fail.
        let bytes = serde_json::to_vec(&input).unwrap_or_default();
        Ok(Some(Digest::of(&bytes).to_string()))
    }

    /// The build context as COPY reads it.
    pub(super) fn context_tree(&self) -> SourceTree<'_> {
        SourceTree { root: &self.context.dir, ignore: self.context.ignore.as_ref(), reset_owner: true }
    }

    /// The cached result under `key` on top of `root` (the step's input filesystem).
    pub(super) fn cache_lookup(&self, key: &str, root: &[Layer]) -> Result<Option<Solved>, String> {
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
        Ok(Some(Solved {
            key: Some(key.to_owned()),
            output: Output::Fs { layers: root.iter().cloned().chain(own.clone()).collect(), own },
            cached: true,
            created: record.created,
        }))
    }

    /// Records `solved` (a step just run, its layer stored) under `key`.
    pub(super) fn cache_store(&self, key: &str, solved: &Solved) -> Result<(), String> {
        let Output::Fs { layers, own } = &solved.output else { return Ok(()) };
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let record = CacheRecord {
            layer: own.as_ref().map(|l| CachedLayer {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.clone(),
            }),
            chain_id: chain_ids(&diff_ids).pop(),
            created: solved.created,
        };
        self.store.meta().cache_put(key, &record).map_err(|e| format!("recording the cache entry: {e}"))
    }
}
