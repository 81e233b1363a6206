//! Snapshots: a writable root filesystem over an image's layers for one step, and its change
//! as a layer afterwards.
//!
//! [`Snapshotter::prepare`] gives a [`Snapshot`] whose [`Snapshot::rootfs`] a step runs in;
//! [`Snapshot::diff`] turns what the step changed into a layer blob in the store; dropping the
//! snapshot (or [`Snapshot::cleanup`]) unmounts and deletes everything it made, after success,
//! failure or a panic. Two backends behind the one interface:
//!
//! - [`Backend::Overlay`] (the default): overlayfs with the store's unpacked layers
//!   (`snapshots/<chain-id>/`) as lowerdirs, top first, and a fresh upperdir and workdir. An
//!   image without layers (`FROM scratch`) gets an empty directory as its lowerdir. The diff
//!   is the upperdir ([`crate::diff::diff_upperdir`]), compared against a read-only overlay of
//!   the same lowerdirs mounted for the diff. See [`mount`] for mounting past the one-page
//!   option limit of `mount(2)`.
//! - [`Backend::Copy`]: for hosts where overlayfs cannot be used: inside a container without
//!   `CAP_SYS_ADMIN` (mounting is denied), a kernel without overlayfs, or a store on a
//!   filesystem overlayfs refuses as upperdir or where its whiteouts and opaque directories do
//!   not work (another overlayfs, NFS, most FUSE filesystems; any filesystem without
//!   `trusted.*` xattrs or `RENAME_WHITEOUT`). The layers are applied with the store's applier
//!   in delete-whiteout mode twice, into the `rootfs` and into a `base` kept aside; the diff is
//!   the comparison of the two ([`crate::diff::diff_trees`]), skipping the content comparison
//!   of inodes whose change time is older than a marker file made after the apply. Slower
//!   (every layer is written twice per step) and without the store's unpacked-layer cache, but
//!   it needs neither mounts nor xattrs, and its layers apply to the same tree as overlay's:
//!   for the same changes they are byte-identical, except that a directory deleted and made
//!   again is written as whiteouts of the old entries rather than an opaque marker.
//!
//! [`Snapshotter::new`] picks the backend by probing overlayfs once per store root and
//! process: it mounts an overlay in the store's temp dir and checks that a deletion becomes a
//! whiteout device and a recreated directory becomes opaque in the upperdir.
//!
//! # Where things live
//!
//! Each snapshot is a directory `<root>/tmp/runner/snap-XXXXXX/` (on the store's filesystem,
//! as overlayfs needs its upper and work directories to be, and so the layers can be applied
//! or renamed without copying) holding `rootfs`, `upper`, `work` (overlay) or `base` (copy),
//! and a `lock` file held (`flock`) while the snapshot is alive. A process killed outright
//! (SIGKILL) cannot clean up: [`Snapshotter::remove_stale`] unmounts and deletes the
//! snapshot directories whose lock nobody holds.
//!
//! # For the sandbox
//!
//! [`Snapshot::rootfs`] is an overlay mount point, or a plain directory with the copy backend:
//! bind-mount it onto itself in the sandbox's mount namespace before `pivot_root` (runc does
//! so anyway). Mounts made inside the sandbox's own namespace vanish with it.

pub mod mount;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kiln_store::Store;
use kiln_store::blobs::{BlobError, BlobStore};
use kiln_store::digest::Digest;
use kiln_store::image::Layer;
use kiln_store::layer::{ApplyError, WhiteoutMode, apply_layer};
use kiln_store::snapshots::Snapshots;
use rustix::fs::{FlockOperation, Timespec, flock};

use self::mount::{MountApi, OverlaySpec, is_mount_point, mount_overlay, unmount_overlay};
use crate::diff::{DiffError, DiffOptions, LayerDiff, diff_trees, diff_upperdir};

/// Errors preparing, diffing or removing a snapshot. Each names the path or layer involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation on the snapshot's directories failed.
    #[error("snapshot I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Mounting the overlay failed.
    #[error("mounting overlay at {target} over {layers} layer(s): {source}")]
    Mount { target: PathBuf, layers: usize, source: io::Error },
    /// Unmounting failed; the snapshot directory is left in place rather than deleted through a
    /// live mount.
    #[error("unmounting {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
    /// Unpacking the parent layers into the store's snapshots failed.
    #[error(transparent)]
    Unpack(#[from] kiln_store::snapshots::SnapshotError),
    /// A layer blob is missing or unreadable (copy backend).
    #[error("applying layer {blob}: {source}")]
    Blob { blob: Digest, source: BlobError },
    /// Applying a layer failed (copy backend).
    #[error("applying layer {blob} into {dest}: {source}")]
    Apply { blob: Digest, dest: PathBuf, source: ApplyError },
    /// A layer's tar does not hash to the diffID the image declares (copy backend).
    #[error("applying layer {blob}: its tar hashes to {actual}, but the image config declares diff id {expected}")]
    DiffId { blob: Digest, expected: Digest, actual: Digest },
    /// Writing the diff failed.
    #[error(transparent)]
    Diff(#[from] DiffError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_owned(), source }
}

/// How snapshots are made; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// overlayfs over the store's unpacked layers.
    Overlay,
    /// Layers applied into a plain directory; the diff compares it with a second copy.
    Copy,
}

/// Makes snapshots over the layers of one store.
///
/// Keep the [`Store`] open while snapshots live: its shared lock is what keeps `kiln prune`
/// (which takes the lock exclusively) from deleting a lowerdir under a mounted overlay.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    blobs: BlobStore,
    snapshots: Snapshots,
    tmp: PathBuf,
    backend: Backend,
    fallback_reason: Option<String>,
    mount_api: MountApi,
}

/// Probe results by store root: overlay works (`None`) or why not.
static PROBES: OnceLock<Mutex<HashMap<PathBuf, Option<String>>>> = OnceLock::new();

impl Snapshotter {
    /// A snapshotter for `store`, overlay if it works there (probed once per process and
    /// root), else copy. [`Snapshotter::fallback_reason`] says why copy was chosen.
    pub fn new(store: &Store) -> Result<Snapshotter, SnapshotError> {
        let mut s = Snapshotter::with_backend(store, Backend::Overlay)?;
        let probes = PROBES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut probes = probes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let reason = match probes.get(store.root()) {
            Some(r) => r.clone(),
            None => {
                let r = probe_overlay(&s.tmp, s.mount_api)?;
                if let Some(why) = &r {
                    let root = store.root().display();
                    tracing::warn!(%root, "overlayfs unusable, using copy-based snapshots: {why}");
                }
                probes.insert(store.root().to_owned(), r.clone());
                r
            }
        };
        if reason.is_some() {
            s.backend = Backend::Copy;
        }
        s.fallback_reason = reason;
        Ok(s)
    }

    /// A snapshotter with a chosen backend, not probed (tests, `--snapshotter`).
    pub fn with_backend(store: &Store, backend: Backend) -> Result<Snapshotter, SnapshotError> {
        let snapshots = Snapshots::create(store.root())?;
        let tmp = store.root().join("tmp/runner");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Snapshotter {
            blobs: store.blobs().clone(),
            snapshots,
            tmp,
            backend,
            fallback_reason: None,
            mount_api: MountApi::Auto,
        })
    }

    /// Chooses the mount call: [`MountApi::Legacy`] forces classic `mount(2)`, as on kernels
    /// before 6.8 (tests of that path).
    pub fn with_mount_api(mut self, api: MountApi) -> Snapshotter {
        self.mount_api = api;
        self
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why overlayfs was not usable, when [`Snapshotter::new`] fell back to copying.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The directory holding the snapshots' working directories (`<root>/tmp/runner`).
    pub fn work_dir(&self) -> &Path {
        &self.tmp
    }

    /// A writable root filesystem over `layers` (bottom first, as in a manifest; empty for
    /// `FROM scratch`). Overlay unpacks missing layers into the store's snapshots first.
    pub fn prepare(&self, layers: &[Layer]) -> Result<Snapshot, SnapshotError> {
        let dir = tempfile::Builder::new().prefix("snap-").tempdir_in(&self.tmp).map_err(io_err(&self.tmp))?;
        // Locked before it has the name remove_stale looks for, so a live snapshot is never
        // taken for a stale one.
        let (new_lock, lock_path) = (dir.path().join("lock.new"), dir.path().join("lock"));
        let lock = File::create(&new_lock).map_err(io_err(&new_lock))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| SnapshotError::Io { path: new_lock.clone(), source: e.into() })?;
        fs::rename(&new_lock, &lock_path).map_err(io_err(&lock_path))?;
        // From here on, Snapshot's Drop undoes whatever was made.
        let dir = dir.keep();
        let mut snapshot = Snapshot {
            rootfs: dir.join("rootfs"),
            dir,
            blobs: self.blobs.clone(),
            mount_api: self.mount_api,
            kind: Kind::Copy { unchanged_before: None },
            lock: Some(lock),
        };
        let rootfs = snapshot.rootfs.clone();
        make_dir(&rootfs)?;
        match self.backend {
            Backend::Overlay => {
                let mut lowers = self.snapshots.ensure(&self.blobs, layers)?;
                lowers.reverse();
                snapshot.kind = Kind::Overlay { lowers: lowers.clone(), mounted: Vec::new() };
                let (upper, work) = (snapshot.dir.join("upper"), snapshot.dir.join("work"));
                make_dir(&upper)?;
                make_dir(&work)?;
                if lowers.is_empty() {
                    let empty = snapshot.dir.join("empty");
                    make_dir(&empty)?;
                    lowers.push(empty);
                }
                snapshot.mount(&lowers, Some((&upper, &work)), &rootfs, "links")?;
            }
            Backend::Copy => {
                let base = snapshot.dir.join("base");
                make_dir(&base)?;
                for layer in layers {
                    for dest in [&base, &rootfs] {
                        apply_blob(&self.blobs, layer, dest)?;
                    }
                }
                // Whatever the step changes gets a ctime at or after this file's.
                let marker = snapshot.dir.join("prepared");
                let st = File::create(&marker).and_then(|f| Ok(rustix::fs::fstat(&f)?)).map_err(io_err(&marker))?;
                snapshot.kind = Kind::Copy {
                    unchanged_before: Some(Timespec { tv_sec: st.st_ctime, tv_nsec: st.st_ctime_nsec as _ }),
                };
            }
        }
        Ok(snapshot)
    }

    /// Cleans `snapshot` up once its diff was stored as the top layer of the stack whose chain
    /// id is `chain_id`, keeping its upperdir (overlay backend) as that layer's unpacked
    /// snapshot in the store: the next step mounts it instead of unpacking the blob again,
    /// which for a big COPY costs as much as the copy itself. Call it only when the diff's
    /// layer is the upperdir as it is (no `SOURCE_DATE_EPOCH` clamping of mtimes).
    pub fn keep(&self, mut snapshot: Snapshot, chain_id: &Digest) -> Result<(), SnapshotError> {
        if let Kind::Overlay { mounted, .. } = &snapshot.kind {
            for target in mounted.clone().iter().rev() {
                snapshot.unmount(target)?;
            }
            self.snapshots.adopt(chain_id, &snapshot.dir.join("upper"))?;
        }
        snapshot.cleanup()
    }

    /// Unmounts and deletes snapshot directories left by processes that died without cleaning
    /// up (their lock is free). Returns how many were removed. Safe while other processes use
    /// the store: a live snapshot's lock is held.
    pub fn remove_stale(&self) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp).map_err(io_err(&self.tmp))? {
            let path = entry.map_err(io_err(&self.tmp))?.path();
            let lock_path = path.join("lock");
            let Ok(lock) = File::open(&lock_path) else { continue };
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue;
            }
            let stale = Snapshot {
                rootfs: path.join("rootfs"),
                dir: path,
                blobs: self.blobs.clone(),
                mount_api: self.mount_api,
                kind: Kind::Copy { unchanged_before: None },
                lock: Some(lock),
            };
            stale.cleanup()?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn make_dir(path: &Path) -> Result<(), SnapshotError> {
    fs::create_dir(path).map_err(io_err(path))?;
    // A root filesystem's mode, whatever the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err(path))
}

fn apply_blob(blobs: &BlobStore, layer: &Layer, dest: &Path) -> Result<(), SnapshotError> {
    let blob =
        blobs.open(&layer.digest).map_err(|source| SnapshotError::Blob { blob: layer.digest.clone(), source })?;
    let stats = apply_layer(BufReader::with_capacity(1 << 16, blob), dest, WhiteoutMode::Delete)
        .map_err(|source| SnapshotError::Apply { blob: layer.digest.clone(), dest: dest.to_owned(), source })?;
    if stats.diff_id != layer.diff_id {
        return Err(SnapshotError::DiffId {
            blob: layer.digest.clone(),
            expected: layer.diff_id.clone(),
            actual: stats.diff_id,
        });
    }
    Ok(())
}

#[derive(Debug)]
enum Kind {
    Overlay {
        /// Lowerdirs, top first (without the empty one of a scratch image).
        lowers: Vec<PathBuf>,
        /// What is mounted now, in mount order.
        mounted: Vec<PathBuf>,
    },
    Copy {
        unchanged_before: Option<Timespec>,
    },
}

/// A prepared root filesystem; see the module docs. Dropping it unmounts and deletes it.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    rootfs: PathBuf,
    blobs: BlobStore,
    mount_api: MountApi,
    kind: Kind,
    /// Held while the snapshot lives; `None` once cleaned up.
    lock: Option<File>,
}

impl Snapshot {
    /// The root filesystem the step runs in.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The backend that made it.
    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Overlay { .. } => Backend::Overlay,
            Kind::Copy { .. } => Backend::Copy,
        }
    }

    /// The overlay upperdir (overlay backend only): where the step's writes land.
    pub fn upperdir(&self) -> Option<PathBuf> {
        matches!(self.kind, Kind::Overlay { .. }).then(|| self.dir.join("upper"))
    }

    /// The snapshot's working directory, `<root>/tmp/runner/snap-XXXXXX`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes what changed in [`Snapshot::rootfs`] since [`Snapshotter::prepare`] as a layer
    /// blob in the store. Call it once the step's processes have exited; the snapshot stays
    /// usable (and mounted) afterwards.
    pub fn diff(&mut self, options: &DiffOptions) -> Result<LayerDiff, SnapshotError> {
        match &self.kind {
            Kind::Overlay { lowers, .. } => {
                let upper = self.dir.join("upper");
                if lowers.is_empty() {
                    return Ok(diff_upperdir(&self.blobs, &upper, None, options)?);
                }
                // The base view: a read-only overlay of the lowers, plus an empty bottom layer
                // because older kernels want two lowerdirs when there is no upperdir.
                let (view, empty) = (self.dir.join("base-view"), self.dir.join("base-empty"));
                for d in [&view, &empty] {
                    if !d.exists() {
                        make_dir(d)?;
                    }
                }
                let mut view_lowers = lowers.clone();
                view_lowers.push(empty);
                self.mount(&view_lowers, None, &view, "base-links")?;
                let result = diff_upperdir(&self.blobs, &upper, Some(&view), options);
                self.unmount(&view)?;
                Ok(result?)
            }
            Kind::Copy { unchanged_before } => {
                let base = self.dir.join("base");
                Ok(diff_trees(&self.blobs, &self.rootfs, &base, *unchanged_before, options)?)
            }
        }
    }

    /// Unmounts and deletes the snapshot. Dropping it does the same, logging failures instead.
    pub fn cleanup(mut self) -> Result<(), SnapshotError> {
        self.clean()
    }

    fn mount(
        &mut self,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
        links: &str,
    ) -> Result<(), SnapshotError> {
        let scratch = self.dir.join(links);
        if !scratch.exists() {
            fs::create_dir(&scratch).map_err(io_err(&scratch))?;
        }
        let spec = OverlaySpec { lowers, upper, scratch: &scratch, target, api: self.mount_api };
        mount_overlay(&spec).map_err(|source| SnapshotError::Mount {
            target: target.to_owned(),
            layers: lowers.len(),
            source,
        })?;
        if let Kind::Overlay { mounted, .. } = &mut self.kind {
            mounted.push(target.to_owned());
        }
        Ok(())
    }

    fn unmount(&mut self, target: &Path) -> Result<(), SnapshotError> {
        unmount_overlay(target).map_err(|source| SnapshotError::Unmount { target: target.to_owned(), source })?;
        if let Kind::Overlay { mounted, .. } = &mut self.kind {
            mounted.retain(|m| m != target);
        }
        Ok(())
    }

    fn clean(&mut self) -> Result<(), SnapshotError> {
        if self.lock.is_none() {
            return Ok(());
        }
        if let Kind::Overlay { mounted, .. } = &self.kind {
            for target in mounted.clone().iter().rev() {
                self.unmount(target)?;
            }
        }
        // Also what a killed process left mounted (remove_stale knows no mount list): never
        // delete through a mount, which would reach into the store's layers.
        for name in ["rootfs", "base-view"] {
            let target = self.dir.join(name);
            let mounted = |t: &Path| is_mount_point(t).map_err(io_err(t));
            if mounted(&target)? {
                self.unmount(&target)?;
                if mounted(&target)? {
                    return Err(SnapshotError::Unmount {
                        target,
                        source: io::Error::other("still a mount point after unmounting"),
                    });
                }
            }
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SnapshotError::Io { path: self.dir.clone(), source: e }),
        }
        self.lock = None;
        Ok(())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = self.clean() {
            tracing::error!(dir = %self.dir.display(), "cleaning up snapshot: {e}");
        }
    }
}

/// Mounts a tiny overlay in `tmp` and checks what the differ relies on. `None` if overlay
/// works, else why not.
fn probe_overlay(tmp: &Path, api: MountApi) -> Result<Option<String>, SnapshotError> {
    let dir = tempfile::Builder::new().prefix("probe-").tempdir_in(tmp).map_err(io_err(tmp))?;
    let p = |n: &str| dir.path().join(n);
    for d in ["lower", "lower/d", "upper", "work", "merged", "links"] {
        fs::create_dir(p(d)).map_err(io_err(&p(d)))?;
    }
    for f in ["lower/f", "lower/d/x"] {
        fs::write(p(f), b"x").map_err(io_err(&p(f)))?;
    }
    let lowers = [p("lower")];
    let spec = OverlaySpec {
        lowers: &lowers,
        upper: Some((&p("upper"), &p("work"))),
        scratch: &p("links"),
        target: &p("merged"),
        api,
    };
    if let Err(e) = mount_overlay(&spec) {
        return Ok(Some(format!("mounting a test overlay in {}: {e}", tmp.display())));
    }
    let exercise = || -> io::Result<()> {
        fs::remove_file(p("merged/f"))?;
        fs::remove_dir_all(p("merged/d"))?;
        fs::create_dir(p("merged/d"))
    };
    let exercised = exercise();
    let unmounted = unmount_overlay(&p("merged"));
    if let Err(e) = exercised {
        return Ok(Some(format!("deleting and recreating files on a test overlay in {}: {e}", tmp.display())));
    }
    unmounted.map_err(|source| SnapshotError::Unmount { target: p("merged"), source })?;
    let whiteout = rustix::fs::lstat(p("upper/f")).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice && st.st_rdev == 0
    });
    let mut v = [0u8; 4];
    let opaque =
        rustix::fs::lgetxattr(p("upper/d"), c"trusted.overlay.opaque", &mut v[..]).is_ok_and(|n| &v[..n] == b"y");
    Ok(match (whiteout, opaque) {
        (true, true) => None,
        _ => Some(format!(
            "a test overlay in {} did not record a deletion as a whiteout device ({whiteout}) or a \
             recreated directory as opaque ({opaque})",
            tmp.display()
        )),
    })
}
