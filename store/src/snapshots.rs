//! Unpacked layers at `snapshots/<chain-id>/`, each made once and shared as an overlay lowerdir.
//!
//! A snapshot holds one layer's tar applied onto an empty directory in
//! [`WhiteoutMode::Overlay`] (whiteouts as 0/0 character devices, opaque directories as
//! `trusted.overlay.opaque`), named by the layer's OCI chain id
//! ([`image::chain_ids`](crate::image::chain_ids)) so that the same diff on another parent
//! stack is its own snapshot, as in containerd.
//!
//! # Making one
//!
//! [`Snapshots::ensure`] unpacks what is missing into a fresh directory in `snapshots/tmp/`,
//! verifying both the blob (its digest, checked when the blob has been read to its end) and the
//! diffID (the hash of the decompressed tar) before anything is published; it then `syncfs`es
//! the filesystem and renames the directory into place with `RENAME_NOREPLACE`. A directory
//! `snapshots/<chain-id>/` therefore always holds a complete, verified layer, and is trusted
//! from then on without re-hashing. A failed unpack removes its temp dir; a killed one leaves
//! it in `snapshots/tmp/`, where GC removes it.
//!
//! Two processes ensuring the same chain serialise on `snapshots/locks/<chain-id>.lock`: the
//! second waits for the first and then finds the snapshot made. (Without the lock the result
//! would be the same, only unpacked twice: the loser's rename fails with `EEXIST` and it uses
//! the winner's.)

use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with, syncfs};

use crate::blobs::{BlobError, BlobStore};
use crate::digest::Digest;
use crate::image::{Layer, chain_ids};
use crate::layer::{ApplyError, WhiteoutMode, apply_layer};
use crate::lock::{LockError, LockMode, lock_file};

/// Errors making or removing snapshots. Each names the layer or path involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation on the snapshot directories failed.
    #[error("snapshot store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Taking a snapshot's unpack lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The layer blob is missing or unreadable.
    #[error("unpacking layer {blob}: {source}")]
    Blob { blob: Digest, source: BlobError },
    /// Applying the layer failed: a corrupt or hostile tar, a blob that fails its digest.
    #[error("unpacking layer {blob}: {source}")]
    Apply { blob: Digest, source: ApplyError },
    /// The decompressed tar does not hash to the diffID the image config declares.
    #[error("unpacking layer {blob}: its tar hashes to {actual}, but the image config declares diff id {expected}")]
    DiffId { blob: Digest, expected: Digest, actual: Digest },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_owned(), source }
}

/// The snapshot directory of a store.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
}

impl Snapshots {
    /// Opens (creating if needed) the snapshot directories below `root`.
    pub fn create(root: &Path) -> Result<Snapshots, SnapshotError> {
        let dir = root.join("snapshots");
        let snapshots = Snapshots { tmp: dir.join("tmp"), locks: dir.join("locks"), dir };
        for d in [&snapshots.tmp, &snapshots.locks] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(snapshots)
    }

    /// Where the snapshot with this chain id lives (whether or not it exists).
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    /// Whether the snapshot exists (and so is complete).
    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Makes sure every layer of a stack (bottom first, as in a manifest) is unpacked, and
    /// returns the snapshot directories in the same order: bottom first. (overlayfs's
    /// `lowerdir=` lists the top first: reverse them.)
    pub fn ensure(&self, blobs: &BlobStore, layers: &[Layer]) -> Result<Vec<PathBuf>, SnapshotError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        layers
            .iter()
            .zip(chain_ids(&diff_ids))
            .map(|(layer, chain_id)| {
                let path = self.path(&chain_id);
                if !path.is_dir() {
                    self.unpack(blobs, layer, &chain_id, &path)?;
                }
                Ok(path)
            })
            .collect()
    }

    /// Publishes `tree`, the very tree a layer was just written from, in snapshot form (an
    /// overlay upperdir: whiteouts as 0/0 character devices, opaque directories marked), as
    /// the snapshot of `chain_id`, so the next step mounts it instead of unpacking the layer
    /// again. The tree is moved (same filesystem), made durable first like an unpack; when the
    /// snapshot exists already, `tree` is left where it is and `false` returned.
    pub fn adopt(&self, chain_id: &Digest, tree: &Path) -> Result<bool, SnapshotError> {
        let dest = self.path(chain_id);
        let _lock = self.lock(chain_id)?;
        if dest.is_dir() {
            return Ok(false);
        }
        fs::set_permissions(tree, fs::Permissions::from_mode(0o755)).map_err(io_err(tree))?;
        let dir = fs::File::open(tree).map_err(io_err(tree))?;
        syncfs(&dir).map_err(|e| SnapshotError::Io { path: tree.to_owned(), source: e.into() })?;
        match renameat_with(CWD, tree, CWD, &dest, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            Err(e) => return Err(SnapshotError::Io { path: dest, source: e.into() }),
        }
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        Ok(true)
    }

    /// The lock serialising the making of `chain_id`'s snapshot.
    fn lock(&self, chain_id: &Digest) -> Result<fs::File, SnapshotError> {
        let lock_path = self.locks.join(format!("{}.lock", chain_id.hex()));
        Ok(lock_file(&lock_path, LockMode::Exclusive, |holders| {
            tracing::info!("waiting for {holders:?} to finish making snapshot {chain_id}");
        })?)
    }

    fn unpack(&self, blobs: &BlobStore, layer: &Layer, chain_id: &Digest, dest: &Path) -> Result<(), SnapshotError> {
        let _lock = self.lock(chain_id)?;
        if dest.is_dir() {
            return Ok(());
        }
        // Dropping the TempDir on any error below removes the partial tree.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", chain_id.hex()))
            .tempdir_in(&self.tmp)
            .map_err(io_err(&self.tmp))?;
        // The layer's own "./" entry is skipped, so the root's mode is ours to choose: that of
        // a root filesystem, not tempdir's 0700.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(io_err(tmp.path()))?;
        let blob =
            blobs.open(&layer.digest).map_err(|source| SnapshotError::Blob { blob: layer.digest.clone(), source })?;
        let stats = apply_layer(BufReader::with_capacity(1 << 16, blob), tmp.path(), WhiteoutMode::Overlay)
            .map_err(|source| SnapshotError::Apply { blob: layer.digest.clone(), source })?;
        if stats.diff_id != layer.diff_id {
            return Err(SnapshotError::DiffId {
                blob: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        // Durable before visible: a snapshot directory must never be a half-written tree after
        // a power loss. syncfs flushes the unpacked files in one call instead of one per file.
        let dir = fs::File::open(tmp.path()).map_err(io_err(tmp.path()))?;
        syncfs(&dir).map_err(|e| SnapshotError::Io { path: tmp.path().to_owned(), source: e.into() })?;
        let tmp = tmp.keep();
        match renameat_with(CWD, &tmp, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            // Someone made it without our lock (an older kiln): theirs is as good as ours.
            Err(rustix::io::Errno::EXIST) => return remove_tree(&tmp),
            Err(e) => {
                let err = SnapshotError::Io { path: dest.to_owned(), source: e.into() };
                remove_tree(&tmp)?;
                return Err(err);
            }
        }
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))
    }

    /// Every snapshot present, by chain id. Entries that are not chain ids (`tmp`, `locks`)
    /// are skipped.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        crate::digest::list_named_by_digest(&self.dir).map_err(io_err(&self.dir))
    }

    /// Deletes a snapshot; a missing one is not an error. It is first renamed into `tmp/`, so
    /// a deletion cut short never leaves a partial tree under a chain id.
    pub fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        let path = self.path(chain_id);
        let doomed = self.tmp.join(format!("{}-removing", chain_id.hex()));
        // What an earlier, interrupted removal of this snapshot left.
        remove_tree(&doomed)?;
        match fs::rename(&path, &doomed) {
            Ok(()) => remove_tree(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::Io { path, source: e }),
        }
    }

    /// The temp directory of interrupted unpacks and deletions (cleaned by GC).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The directory of per-snapshot unpack locks (emptied by GC, which runs when nobody can
    /// hold them).
    pub fn locks_dir(&self) -> &Path {
        &self.locks
    }
}

/// Removes a file or directory tree; a missing one is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotError::Io { path: path.to_owned(), source: e }),
    }
}
