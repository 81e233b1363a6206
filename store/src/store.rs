//! [`Store`]: one opened store root, the handle every kiln command works through.
//!
//! # The store's contract (crash safety)
//!
//! A name never points at content that is not durable and verified (DESIGN.md invariant 1):
//!
//! 1. Writers store content bottom-up: layer blobs, then the config, then the manifest (then an
//!    index, if any). [`BlobStore`](crate::blobs::BlobStore) makes each blob durable (fsync,
//!    rename, directory fsync) before it is visible, and verifies its digest on the way in.
//! 2. Only then is a name set: [`Store::set_tag`] checks that the manifest and everything it
//!    references are present, and commits the tag in a durable redb transaction.
//!
//! A process killed at any point therefore leaves at worst unreferenced blobs, temp files in
//! `blobs/tmp/` and temp dirs in `snapshots/tmp/`: garbage [`gc::prune`](crate::gc::prune)
//! removes, never a tag to missing content. Removing a tag first and content later (by GC) keeps
//! the same property on the way out.
//!
//! # Concurrency
//!
//! A `Store` holds the store lock ([`lock`](crate::lock)) for as long as it lives: shared for
//! everything ([`Store::open`]), exclusive for `kiln prune`. So GC never runs while another
//! process has stored a blob it has not tagged yet, or has a snapshot mounted. Leases
//! ([`Meta::lease`]) record what a live process holds without a name; while every command holds
//! the shared lock for its whole run they are a second line of defence, and they are what lets
//! a later long-running command release the lock between phases without exposing its content.
//! The metadata DB is shared by all processes through short per-operation transactions
//! ([`meta`](crate::meta)); blobs and snapshots are published with atomic renames, so
//! concurrent writers of the same content both succeed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::blobs::{BlobError, BlobStore};
use crate::digest::Digest;
use crate::image::{Image, ImageError, ManifestDocument};
use crate::lock::{self, LockError, LockHolder, LockMode, StoreLock};
use crate::meta::{Meta, MetaError, TagRecord};
use crate::snapshots::{SnapshotError, Snapshots};

/// Errors opening or using a store root.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the store root failed.
    #[error("cannot create store root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    /// A blob store failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A metadata DB failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Taking the store lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A snapshot store failure.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A tag's target is not a complete, valid image in the store.
    #[error("cannot tag {reference} as {digest}: {source}")]
    Incomplete { reference: String, digest: Digest, source: Box<ImageError> },
}

/// An opened store root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
    meta: Meta,
    snapshots: Snapshots,
    lock: StoreLock,
}

impl Store {
    /// The root used when neither `--root` nor `KILN_ROOT` names one.
    pub const DEFAULT_ROOT: &'static str = "/var/lib/kiln";

    /// Opens the store at `root` for reading and adding content (the shared lock), creating its
    /// layout if needed. While `kiln prune` runs this waits, logging whom it waits for.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, LockMode::Shared, |holders| {
            tracing::warn!("waiting for {} to release the store {}", lock::describe(holders), root.display());
        })
    }

    /// Opens the store at `root` holding its lock in `mode` (`Exclusive` for `kiln prune`).
    /// If the lock is taken, `on_wait` is called with its holders, then this waits.
    pub fn open_with(root: &Path, mode: LockMode, on_wait: impl FnOnce(&[LockHolder])) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(|source| StoreError::Root { path: root.to_owned(), source })?;
        let lock = StoreLock::acquire(root, mode, on_wait)?;
        Ok(Store {
            root: root.to_owned(),
            blobs: BlobStore::create(root)?,
            snapshots: Snapshots::create(root)?,
            meta: Meta::open(root)?,
            lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The metadata DB.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The unpacked layers.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// How this handle holds the store lock.
    pub fn lock_mode(&self) -> LockMode {
        self.lock.mode()
    }

    /// Points `reference` (canonical, e.g. `docker.io/library/busybox:latest`) at the manifest
    /// or index `digest`, after checking it is complete: a manifest, its config and all its
    /// layer blobs must be stored (an index needs only itself: the platforms not pulled are
    /// absent by design). This is how names are set; see the contract above.
    pub fn set_tag(&self, reference: &str, digest: &Digest, media_type: &str) -> Result<TagRecord, StoreError> {
        let incomplete = |source: ImageError| StoreError::Incomplete {
            reference: reference.to_owned(),
            digest: digest.clone(),
            source: Box::new(source),
        };
        let raw = self.blobs.read(digest).map_err(|e| incomplete(e.into()))?;
        if let ManifestDocument::Manifest(_) =
            ManifestDocument::parse(&raw, digest, Some(media_type)).map_err(incomplete)?
        {
            let image = Image::load(&self.blobs, digest).map_err(incomplete)?;
            if let Some(missing) = image.layers.iter().find(|l| !self.blobs.contains(&l.digest)) {
                return Err(incomplete(BlobError::NotFound(missing.digest.clone()).into()));
            }
        }
        let record = TagRecord {
            digest: digest.clone(),
            media_type: media_type.to_owned(),
            size: raw.len() as u64,
            tagged: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        self.meta.set_tag(reference, &record)?;
        Ok(record)
    }
}
