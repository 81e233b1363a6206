//! Garbage collection: `kiln prune`.
//!
//! Mark and sweep under the exclusive store lock, so no other kiln process is between storing
//! content and naming it (see [`Store`]'s contract).
//!
//! **Mark.** Roots are:
//! - every tag: its manifest, config and layer blobs, and the snapshots of its chain ids; a tag
//!   to an index keeps the index and, recursively, the child manifests that are present;
//! - every live lease: the blobs and snapshots it names. A lease whose owner process is gone
//!   (dead, or its pid reused) is stale: it is removed and protects nothing.
//! - every build cache entry: the layer blob it names and the snapshot of its chain id, so a
//!   cached step stays a hit (`kiln prune --build-cache` clears the entries first).
//!
//! A tag whose content cannot be read or parsed stops the prune before anything is deleted:
//! deleting "unreachable" content while a root cannot be followed could delete what it reaches.
//! The error names the tag, which `kiln rmi` removes.
//!
//! **Sweep.** Unmarked blobs (and their recorded sources), unmarked snapshots, and everything
//! in `blobs/tmp/`, `snapshots/tmp/` and `snapshots/locks/`: leftovers of killed writers,
//! since nobody else holds the store while GC runs.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Store;
use crate::blobs::BlobError;
use crate::digest::Digest;
use crate::image::{Image, ImageError, ManifestDocument, chain_ids, descriptor_digest};
use crate::lock::LockMode;
use crate::meta::{LeaseResource, MetaError};
use crate::snapshots::{SnapshotError, remove_tree};

/// Errors of a prune. Nothing is deleted when marking fails.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store was opened with the shared lock: other processes could be mid-write.
    #[error("pruning {root} needs the store opened exclusively (LockMode::Exclusive)")]
    NotExclusive { root: PathBuf },
    /// A tag's content cannot be followed.
    #[error("cannot follow tag {reference} ({digest}): {source}; remove it with `kiln rmi {reference}`")]
    Tag { reference: String, digest: Digest, source: Box<ImageError> },
    /// A blob store failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A metadata DB failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A snapshot store failure.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Listing a temp directory failed.
    #[error("cannot list {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed, sorted.
    pub blobs: Vec<Digest>,
    /// Snapshots removed, by chain id, sorted.
    pub snapshots: Vec<Digest>,
    /// Leftovers of interrupted writes removed from the temp and lock directories.
    pub temp: Vec<PathBuf>,
    /// Stale leases removed, by id.
    pub leases: Vec<String>,
    /// Bytes of file content freed (hard-linked files counted once).
    pub bytes_freed: u64,
}

/// What the roots reach.
#[derive(Default)]
struct Marks {
    blobs: HashSet<Digest>,
    snapshots: HashSet<Digest>,
}

/// Removes everything no tag or live lease reaches, and the leftovers of interrupted writes.
/// `store` must be opened with [`LockMode::Exclusive`].
pub fn prune(store: &Store) -> Result<PruneReport, GcError> {
    if store.lock_mode() != LockMode::Exclusive {
        return Err(GcError::NotExclusive { root: store.root().to_owned() });
    }
    let mut report = PruneReport::default();
    let mut marks = Marks::default();

    for (reference, tag) in store.meta().tags()? {
        mark_manifest(store, &tag.digest, &tag.media_type, &mut marks).map_err(|source| GcError::Tag {
            reference,
            digest: tag.digest.clone(),
            source: Box::new(source),
        })?;
    }
    for lease in store.meta().leases()? {
        if lease.is_stale() {
            report.leases.push(lease.id);
            continue;
        }
        for resource in lease.resources {
            match resource {
                LeaseResource::Blob(d) => marks.blobs.insert(d),
                LeaseResource::Snapshot(c) => marks.snapshots.insert(c),
            };
        }
    }

    for (_, record) in store.meta().cache_entries()? {
        marks.blobs.extend(record.layer.map(|l| l.digest));
        marks.snapshots.extend(record.chain_id);
    }

    store.meta().remove_leases(&report.leases)?;
    for digest in store.blobs().list()? {
        if !marks.blobs.contains(&digest) {
            report.bytes_freed += store.blobs().size(&digest)?;
            store.blobs().remove(&digest)?;
            report.blobs.push(digest);
        }
    }
    store.meta().remove_blob_sources(&report.blobs)?;
    for chain_id in store.snapshots().list()? {
        if !marks.snapshots.contains(&chain_id) {
            report.bytes_freed += tree_size(&store.snapshots().path(&chain_id));
            store.snapshots().remove(&chain_id)?;
            report.snapshots.push(chain_id);
        }
    }
    for dir in [store.blobs().tmp_dir(), store.snapshots().tmp_dir(), store.snapshots().locks_dir()] {
        let entries = fs::read_dir(dir).map_err(|source| GcError::Io { path: dir.to_owned(), source })?;
        for entry in entries {
            let path = entry.map_err(|source| GcError::Io { path: dir.to_owned(), source })?.path();
            report.bytes_freed += tree_size(&path);
            remove_tree(&path)?;
            report.temp.push(path);
        }
    }
    report.temp.sort();
    Ok(report)
}

/// Marks a manifest or index and what it reaches. An index's children that are not stored
/// (platforms never pulled) are skipped.
fn mark_manifest(store: &Store, digest: &Digest, media_type: &str, marks: &mut Marks) -> Result<(), ImageError> {
    let raw = store.blobs().read(digest)?;
    match ManifestDocument::parse(&raw, digest, Some(media_type))? {
        ManifestDocument::Index(index) => {
            marks.blobs.insert(digest.clone());
            for child in index.manifests() {
                let child_digest = descriptor_digest(child, digest)?;
                if store.blobs().contains(&child_digest) {
                    mark_manifest(store, &child_digest, child.media_type().as_ref(), marks)?;
                }
            }
        }
        ManifestDocument::Manifest(_) => {
            let image = Image::load(store.blobs(), digest)?;
            marks.blobs.extend(image.blobs().cloned());
            let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
            marks.snapshots.extend(chain_ids(&diff_ids));
        }
    }
    Ok(())
}

/// Bytes of regular-file content under `path` (a file or a tree), each inode counted once.
/// Best effort: what cannot be read counts as nothing.
pub fn tree_size(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(path) else { return 0 };
            entries.flatten().map(|e| walk(&e.path(), seen)).sum()
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            meta.len()
        } else {
            0
        }
    }
    walk(path, &mut HashSet::new())
}
