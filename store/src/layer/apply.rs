//! Applying a layer tar onto a directory: kiln's own streaming, confined layer applier.
//!
//! tar-rs only parses header fields; extended headers (PAX records, GNU long names, sparse maps)
//! are resolved by kiln's own reader (`layer/pax.rs`), which reads PAX records by their length (tar-rs
//! splits them on newlines, corrupting binary xattr values). Every change on disk is made here
//! with fd-relative syscalls, because tar-rs's own unpacker turns devices and whiteouts into
//! plain files and resolves paths with the host's view of symlinks.
//!
//! # Confinement (DESIGN.md invariant 3)
//!
//! Every parent directory is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! relative to the destination, so `..`, absolute symlinks and symlinked parents are resolved as
//! they would be inside a container whose root is the destination: a symlink `a -> /` or
//! `a -> ../..` makes `a/x` land in `<dest>/x`, never outside. Entries are then created relative
//! to that parent fd by their last component only (`mkdirat`, `openat(O_CREAT|O_EXCL|
//! O_NOFOLLOW)`, `symlinkat`, `linkat`, `mknodat`), so a symlink in the last component is
//! replaced, never followed. Hardlink targets are resolved in the root the same way. Removal
//! (replacing an entry, whiteouts, opaque directories) walks with `O_NOFOLLOW` fds.
//!
//! # Names
//!
//! - Names (and hardlink targets) are cleaned lexically as if rooted at `/`, as containerd does
//!   (`filepath.Clean` then `fs.RootPath`): empty and `.` components are dropped and `..` removes
//!   the previous component but stops at the root, so `/a/../../b`, `../b` and `b` all name
//!   `<dest>/b`. (moby rejects a `..` climbing above the root instead; both are safe, and
//!   following containerd means whatever unpacks there unpacks here.)
//! - A directory entry naming the root itself (`./`, `/`, the first entry of `tar -C dir .`) is
//!   skipped, as containerd does: the snapshot root is not the layer's to change. Any other entry
//!   naming the root would replace the destination and is rejected, as are empty names, names
//!   with a NUL byte, and whiteouts of `.`, `..` or of nothing.
//! - Legacy AUFS metadata (`.wh..wh.*` other than the opaque marker) is skipped.
//!
//! # Whiteouts
//!
//! See [`WhiteoutMode`]. Entries replace whatever is at their path, except that a directory
//! entry over a directory merges (the directory keeps its content and takes the entry's owner,
//! mode, xattrs and mtime).
//!
//! # Metadata
//!
//! Owner (numeric uid/gid; user and group names are ignored), xattrs from `SCHILY.xattr.*` PAX
//! records (incl. `security.capability`), mode incl. setuid/setgid/sticky, and mtime with PAX
//! nanoseconds, in that order: chown clears setuid bits and file capabilities. Symlinks get
//! owner, xattrs and times (`AT_SYMLINK_NOFOLLOW`), not a mode. Directory times are set after the
//! whole layer, as containerd does, so creating their content does not change them. Hardlinks
//! share their target's inode and metadata; their own header metadata is not applied.
//! `trusted.overlay.*` xattrs from an archive are never set: they would let a layer forge
//! overlayfs whiteouts, opaque dirs or redirects in its lowerdir. xattrs the filesystem does not
//! support (`ENOTSUP`) are skipped. Both are counted in [`ApplyStats::skipped_xattrs`].
//! As in Go's archive/tar and containerd: blank numeric header fields read as 0, and times
//! before 1970 or after 2262 become the epoch. Parent directories a layer implies without
//! listing them are made 0755 and root-owned, or copied from [`ApplyOptions::parents`].
//!
//! # Refused
//!
//! Entry types other than file, directory, symlink, hardlink, char/block device and fifo (PAX
//! global headers are skipped); GNU PAX sparse files (old GNU `S` sparse files are applied);
//! malformed PAX records or numbers (the entry they describe is named); PAX headers and GNU long
//! names over 1 MiB, or two of a kind for one entry; uids/gids beyond 32 bits; symlinks with
//! an empty target; hardlinks to a directory or to nothing inside the destination; names longer
//! than the kernel takes (`ENAMETOOLONG`); a parent that is a symlink loop or a symlink to a
//! missing directory (kiln does not create the directories a dangling symlink points to).
//!
//! A failed apply leaves a partial tree: callers apply into a fresh directory and discard it on
//! error.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

use super::pax::{self, TarReader};
use super::{Compression, decompress};
use crate::digest::{Digest, Hasher};

/// Prefix of a whiteout entry's last component: `.wh.NAME` deletes `NAME`.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Last component marking its directory opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`), which carry no content.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// The overlayfs xattr marking a directory opaque.
const OVERLAY_OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
/// overlayfs's private xattr namespace, never taken from an archive.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
/// PAX record prefix carrying an xattr (GNU tar, Go's archive/tar, BuildKit).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// PAX record prefix of GNU tar's sparse file formats 0.x and 1.0.
const PAX_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

/// Resolution of every parent path: inside the destination, as if it were `/`.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
/// How many times to retry `openat2` when the kernel reports a concurrent rename (`EAGAIN`).
const RESOLVE_RETRIES: usize = 16;
/// How deep removals recurse (one open fd per level). Names are limited to PATH_MAX, but
/// symlink chains let a layer build deeper trees: those fail cleanly instead of running out of
/// fds or stack.
const MAX_DEPTH: usize = 512;
/// Longest prefix of an entry name quoted in an error message (names can be megabytes long).
const NAME_DISPLAY_MAX: usize = 200;

/// What whiteouts and opaque markers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The destination is an empty directory for this one layer, to be an overlayfs lowerdir:
    /// `.wh.NAME` becomes a character device 0/0 named `NAME` (owned as the whiteout entry), and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// The destination holds the layers below (flattening, copy-based snapshots): `.wh.NAME`
    /// removes `NAME` (nothing if it does not exist), and `.wh..wh..opq` empties its directory of
    /// what earlier layers put there, keeping what this layer adds, wherever the marker appears
    /// among the directory's entries.
    Delete,
}

/// How to apply a layer. A bare [`WhiteoutMode`] converts into options without parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// What whiteouts and opaque markers do.
    pub mode: WhiteoutMode,
    /// The unpacked layers below this one, nearest first (for `Overlay` mode: the lowerdirs). A
    /// directory the layer implies without an entry of its own (`a/b` but no `a/`) takes its
    /// mode, owner and times from the nearest of them that has it (stopping at one where the
    /// path is not a directory, e.g. a whiteout), as containerd does, so it does not mask them
    /// in the merged view as a fresh 0755 root directory.
    pub parents: Vec<PathBuf>,
}

impl From<WhiteoutMode> for ApplyOptions {
    fn from(mode: WhiteoutMode) -> ApplyOptions {
        ApplyOptions { mode, parents: Vec::new() }
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream, read to its end: the layer's diffID.
    pub diff_id: Digest,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// The compression detected ([`apply_layer`]); `Uncompressed` from [`apply`].
    pub compression: Compression,
    /// Files, directories, links, devices and fifos applied.
    pub entries: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Entries skipped by design: the root directory, PAX global headers, AUFS metadata.
    pub skipped_entries: u64,
    /// xattrs not set: `trusted.overlay.*` from the archive, or unsupported by the filesystem.
    pub skipped_xattrs: u64,
}

/// Why a layer could not be applied. Every variant about an entry names it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The destination (or a parent layer's) directory could not be opened.
    #[error("cannot open layer directory {path}: {source}")]
    Destination { path: PathBuf, source: io::Error },
    /// The layer stream is corrupt, truncated or fails its digest check.
    #[error("reading the layer stream{}: {source}", .entry.as_ref().map(|e| format!(" (last tar entry {e})")).unwrap_or_default())]
    Read {
        /// The entry being read, or the last one read, if any.
        entry: Option<String>,
        source: io::Error,
    },
    /// An entry kiln refuses: unsafe or invalid name, invalid header, unsupported type.
    #[error("tar entry {entry}: {reason}")]
    Rejected { entry: String, reason: String },
    /// A filesystem operation for an entry failed (e.g. a symlink loop in its parents, a missing
    /// hardlink target, a name too long).
    #[error("tar entry {entry}: cannot {op}: {source}")]
    Io { entry: String, op: String, source: io::Error },
}

impl ApplyError {
    /// The entry the error is about, quoted as in the message.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ApplyError::Destination { .. } => None,
            ApplyError::Read { entry, .. } => entry.as_deref(),
            ApplyError::Rejected { entry, .. } | ApplyError::Io { entry, .. } => Some(entry),
        }
    }
}

/// Detects the compression of a layer blob (gzip, zstd or none, by magic bytes), applies it onto
/// `dest`, and reads the blob to its very end, so a verifying reader underneath checks the blob
/// digest; [`ApplyStats::diff_id`] is then checked by the caller against the image config.
///
/// For a stored blob: `apply_layer(BufReader::new(blobs.open(&digest)?), dest, mode)`.
pub fn apply_layer<R: BufRead>(
    blob: R,
    dest: &Path,
    options: impl Into<ApplyOptions>,
) -> Result<ApplyStats, ApplyError> {
    let mut tar = decompress(blob).map_err(|source| ApplyError::Read { entry: None, source })?;
    let stats = apply(&mut tar, dest, options)?;
    let compression = tar.compression();
    tar.finish().map_err(|source| ApplyError::Read { entry: None, source })?;
    Ok(ApplyStats { compression, ..stats })
}

/// Applies an uncompressed layer tar onto `dest` (which must exist), reading the stream to its
/// end (past the end-of-archive blocks) and hashing it for the diffID.
pub fn apply<R: Read>(tar: R, dest: &Path, options: impl Into<ApplyOptions>) -> Result<ApplyStats, ApplyError> {
    let ApplyOptions { mode, parents } = options.into();
    let open = |path: &Path| {
        rfs::open(path, DIR_FLAGS, Mode::empty())
            .map_err(|e| ApplyError::Destination { path: path.to_owned(), source: e.into() })
    };
    let mut applier = Applier {
        root: open(dest)?,
        parents: parents.iter().map(|p| open(p)).collect::<Result<_, _>>()?,
        created: (mode == WhiteoutMode::Delete).then(HashSet::new),
        mode,
        dirs: Vec::new(),
        buf: vec![0; 1 << 17],
        stats: Counts::default(),
    };
    let hashing = HashingReader { inner: tar, hasher: Hasher::new() };
    let mut archive = TarReader::new(BufReader::with_capacity(1 << 16, hashing));
    let mut last: Option<String> = None;
    while let Some(entry) = archive.next_entry().map_err(|source| ApplyError::Read { entry: last.clone(), source })? {
        last = Some(applier.entry(&entry, &mut archive)?);
    }
    applier.set_dir_times()?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| ApplyError::Read { entry: last, source })?;
    let hasher = rest.into_inner().hasher;
    let s = applier.stats;
    Ok(ApplyStats {
        tar_size: hasher.len(),
        diff_id: hasher.finish(),
        compression: Compression::Uncompressed,
        entries: s.entries,
        whiteouts: s.whiteouts,
        skipped_entries: s.skipped_entries,
        skipped_xattrs: s.skipped_xattrs,
    })
}

/// Hashes everything read through it (the diffID is over the whole uncompressed stream).
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Default)]
struct Counts {
    entries: u64,
    whiteouts: u64,
    skipped_entries: u64,
    skipped_xattrs: u64,
}

/// An inode, by device and number.
type Inode = (u64, u64);

/// A directory whose times are set once the whole layer is applied.
struct DirTimes {
    path: CleanPath,
    inode: Inode,
    times: Timestamps,
}

struct Applier {
    root: OwnedFd,
    /// [`ApplyOptions::parents`], opened.
    parents: Vec<OwnedFd>,
    mode: WhiteoutMode,
    /// `Delete` mode: inodes this layer created or changed, which opaque markers keep.
    created: Option<HashSet<Inode>>,
    dirs: Vec<DirTimes>,
    buf: Vec<u8>,
    stats: Counts,
}

impl Applier {
    /// Applies one entry and returns its quoted name.
    fn entry(&mut self, entry: &pax::Entry, content: &mut impl Read) -> Result<String, ApplyError> {
        let raw = &entry.path;
        let name = display_name(raw);
        let reject = |reason: String| ApplyError::Rejected { entry: name.clone(), reason };
        if let Some(invalid) = &entry.invalid {
            return Err(reject(invalid.clone()));
        }
        let mut kind = entry.header.entry_type();
        if kind.is_pax_global_extensions() {
            self.stats.skipped_entries += 1;
            return Ok(name);
        }
        let path = CleanPath::new(raw).map_err(|r| reject(r.to_owned()))?;
        let meta = Meta::read(entry).map_err(reject)?;
        let (parent, base) = path.split();

        if base == OPAQUE_MARKER {
            self.opaque(parent, &name)?;
            self.stats.whiteouts += 1;
            return Ok(name);
        }
        if base.starts_with(AUFS_META_PREFIX) || path.0.starts_with(AUFS_META_PREFIX) {
            self.stats.skipped_entries += 1;
            return Ok(name);
        }
        if let Some(target) = base.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(target, b"" | b"." | b"..") {
                return Err(reject(format!("whiteout of {:?} is not allowed", String::from_utf8_lossy(target))));
            }
            self.whiteout(parent, target, &meta, &name)?;
            self.stats.whiteouts += 1;
            return Ok(name);
        }
        // Old tars mark directories with a trailing slash on a regular entry (Go does the same).
        if kind == EntryType::Regular && raw.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        if path.is_root() {
            if kind.is_dir() {
                self.stats.skipped_entries += 1;
                return Ok(name);
            }
            return Err(reject("names the destination directory itself and would replace it".to_owned()));
        }

        let dir = self.open_parent(parent).map_err(fail(&name, "open parent directory"))?;
        let (dir, root) = (dir.as_fd(), self.root.as_fd());
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = replacing(dir, base, || {
                    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    rfs::openat(dir, base, flags, Mode::from_raw_mode(0o600))
                })
                .map_err(fail(&name, "create file"))?;
                let mut file = File::from(fd);
                let expected = entry.size;
                let copied = self.copy_content(content, &mut file, &name)?;
                if copied < expected {
                    return Err(reject(format!(
                        "truncated: {expected} bytes declared, the archive ends after {copied}"
                    )));
                }
                self.set_meta_fd(file.as_fd(), &meta, &name)?;
                rfs::futimens(&file, &meta.times()).map_err(fail(&name, "set times"))?;
                self.record_fd(file.as_fd(), &name)?;
            }
            EntryType::Directory => {
                let fd = make_dir(dir, base).map_err(fail(&name, "create directory"))?;
                self.set_meta_fd(fd.as_fd(), &meta, &name)?;
                let st = rfs::fstat(&fd).map_err(fail(&name, "stat directory"))?;
                self.dirs.push(DirTimes { path: path.clone(), inode: inode(&st), times: meta.times() });
                if let Some(created) = &mut self.created {
                    created.insert(inode(&st));
                }
            }
            EntryType::Symlink => {
                let target = &entry.link;
                if target.is_empty() || target.contains(&0) {
                    return Err(reject("symlink target is empty or contains a NUL byte".to_owned()));
                }
                replacing(dir, base, || rfs::symlinkat(&target[..], dir, base))
                    .map_err(fail(&name, "create symlink"))?;
                self.set_meta_at(dir, base, &meta, true, &name)?;
            }
            EntryType::Link => {
                let raw_target = &entry.link;
                let target = CleanPath::new(raw_target).map_err(|r| reject(format!("invalid hardlink target: {r}")))?;
                if target.is_root() {
                    return Err(reject("hardlink to the destination directory itself".to_owned()));
                }
                let (target_parent, target_base) = target.split();
                let op = || format!("link to {}", display_name(raw_target));
                let target_dir = open_in_root(root, target_parent).map_err(|e| fail(&name, &op())(e))?;
                // No AT_SYMLINK_FOLLOW: a hardlink to a symlink links the symlink, as tar does.
                replacing(dir, base, || rfs::linkat(&target_dir, target_base, dir, base, AtFlags::empty()))
                    .map_err(|e| fail(&name, &op())(e))?;
                self.record_at(dir, base, &name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = &entry.header;
                let fields = header.as_ustar().map(|u| (u.dev_major, u.dev_minor));
                let fields = fields.or_else(|| header.as_gnu().map(|g| (g.dev_major, g.dev_minor)));
                let (raw_major, raw_minor) = fields.unwrap_or_default();
                let number = |raw: &[u8], n: io::Result<Option<u32>>| {
                    blank_is_zero(raw, n.map(Option::unwrap_or_default))
                        .map_err(|e| reject(format!("invalid device number: {e}")))
                };
                let major = number(&raw_major, header.device_major())?;
                let minor = number(&raw_minor, header.device_minor())?;
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rfs::makedev(major, minor);
                let perm = Mode::from_raw_mode(meta.mode & 0o777);
                replacing(dir, base, || rfs::mknodat(dir, base, file_type, perm, dev))
                    .map_err(fail(&name, "create device node"))?;
                self.set_meta_at(dir, base, &meta, false, &name)?;
            }
            other => return Err(reject(format!("unsupported entry type {other:?}"))),
        }
        self.stats.entries += 1;
        Ok(name)
    }

    /// Copies an entry's content into `file`, returning how many bytes the archive had.
    fn copy_content(&mut self, content: &mut impl Read, file: &mut File, name: &str) -> Result<u64, ApplyError> {
        let mut copied = 0;
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ApplyError::Read { entry: Some(name.to_owned()), source }),
            };
            file.write_all(&self.buf[..n]).map_err(fail(name, "write file"))?;
            copied += n as u64;
        }
    }

    /// Owner, xattrs, then mode (chown clears setuid bits and capabilities) through an fd.
    fn set_meta_fd(&mut self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), ApplyError> {
        rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(fail(name, "set owner"))?;
        self.set_xattrs(meta, name, |key, value| rfs::fsetxattr(fd, key, value, rfs::XattrFlags::empty()))?;
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(fail(name, "set mode"))
    }

    /// Owner, xattrs, mode (not for symlinks) and times of `base` in `dir`, without following it:
    /// for symlinks, devices and fifos, which cannot be opened for that.
    fn set_meta_at(
        &mut self,
        dir: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        symlink: bool,
        name: &str,
    ) -> Result<(), ApplyError> {
        rfs::chownat(dir, base, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail(name, "set owner"))?;
        if !meta.xattrs.is_empty() {
            // l*xattr needs a path: the parent fd's /proc link (trusted: we opened it inside the
            // root) plus the last component, which lsetxattr does not follow.
            let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            path.extend_from_slice(base);
            self.set_xattrs(meta, name, |key, value| rfs::lsetxattr(&path[..], key, value, rfs::XattrFlags::empty()))?;
        }
        if !symlink {
            // Linux has no lchmod; `base` is the node this entry just created, not a symlink.
            rfs::chmodat(dir, base, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(fail(name, "set mode"))?;
        }
        rfs::utimensat(dir, base, &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(fail(name, "set times"))?;
        self.record_at(dir, base, name)
    }

    fn set_xattrs(
        &mut self,
        meta: &Meta,
        name: &str,
        set: impl Fn(&CStr, &[u8]) -> rustix::io::Result<()>,
    ) -> Result<(), ApplyError> {
        for (key, value) in &meta.xattrs {
            if key.to_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
                self.stats.skipped_xattrs += 1;
                continue;
            }
            match set(key, value) {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    tracing::warn!(entry = name, xattr = ?key, "filesystem does not support this xattr; skipped");
                    self.stats.skipped_xattrs += 1;
                }
                Err(e) => return Err(fail(name, &format!("set xattr {key:?}"))(e)),
            }
        }
        Ok(())
    }

    /// `Delete` mode: remembers that this layer made the inode behind `fd`.
    fn record_fd(&mut self, fd: BorrowedFd<'_>, name: &str) -> Result<(), ApplyError> {
        if let Some(created) = &mut self.created {
            created.insert(inode(&rfs::fstat(fd).map_err(fail(name, "stat"))?));
        }
        Ok(())
    }

    /// `Delete` mode: remembers that this layer made `base` in `dir`.
    fn record_at(&mut self, dir: BorrowedFd<'_>, base: &[u8], name: &str) -> Result<(), ApplyError> {
        if let Some(created) = &mut self.created {
            let st = rfs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW).map_err(fail(name, "stat"))?;
            created.insert(inode(&st));
        }
        Ok(())
    }

    /// Opens the directory `rel` resolved inside the root, creating missing components (mode
    /// 0755, owned by root, as containerd and moby do for parents a layer does not list, or as
    /// the nearest of [`ApplyOptions::parents`] has them). In `Delete` mode, new directories
    /// count as this layer's.
    fn open_parent(&mut self, rel: &[u8]) -> io::Result<OwnedFd> {
        let root = self.root.as_fd();
        match open_in_root(root, rel) {
            Err(Errno::NOENT) => {}
            result => return Ok(result?),
        }
        let mut dir = open_in_root(root, b"")?;
        let mut end = 0;
        let mut fresh = false;
        for part in rel.split(|b| *b == b'/') {
            end += part.len();
            let prefix = &rel[..end];
            // Below a directory we just made, nothing exists yet.
            let existing = if fresh { Err(Errno::NOENT) } else { open_in_root(root, prefix) };
            dir = match existing {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        // It exists but does not resolve: a symlink to nothing (in the root).
                        Err(Errno::EXIST) => {
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "{:?} is a symlink to a directory that does not exist",
                                    String::from_utf8_lossy(prefix)
                                ),
                            ));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    let fd = rfs::openat(&dir, part, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
                    rfs::fchmod(&fd, Mode::from_raw_mode(0o755))?; // whatever the umask
                    let copied_times = copy_dir_info(&self.parents, prefix, fd.as_fd())?;
                    let made = inode(&rfs::fstat(&fd)?);
                    if let Some(times) = copied_times {
                        // Set again at the end: creating the entries below changes them.
                        self.dirs.push(DirTimes { path: CleanPath(prefix.to_vec()), inode: made, times });
                    }
                    if let Some(created) = &mut self.created {
                        created.insert(made);
                    }
                    fresh = true;
                    fd
                }
                Err(e) => return Err(e.into()),
            };
            end += 1;
        }
        Ok(dir)
    }

    /// `.wh.NAME` in directory `parent`.
    fn whiteout(&mut self, parent: &[u8], target: &[u8], meta: &Meta, name: &str) -> Result<(), ApplyError> {
        match self.mode {
            WhiteoutMode::Overlay => {
                let dir = self.open_parent(parent).map_err(fail(name, "open parent directory"))?;
                replacing(dir.as_fd(), target, || {
                    rfs::mknodat(&dir, target, FileType::CharacterDevice, Mode::empty(), rfs::makedev(0, 0))
                })
                .map_err(fail(name, "create whiteout device"))?;
                rfs::chownat(&dir, target, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail(name, "set whiteout owner"))
            }
            WhiteoutMode::Delete => match open_in_root(self.root.as_fd(), parent) {
                // Nothing below to delete.
                Err(Errno::NOENT | Errno::NOTDIR) => Ok(()),
                Err(e) => Err(fail(name, "open parent directory")(e)),
                Ok(dir) => remove_all(dir.as_fd(), target, 0).map_err(fail(name, "remove whited-out path")),
            },
        }
    }

    /// `.wh..wh..opq` in directory `parent`.
    fn opaque(&mut self, parent: &[u8], name: &str) -> Result<(), ApplyError> {
        let dir = self.open_parent(parent).map_err(fail(name, "open opaque directory"))?;
        match &self.created {
            None => rfs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())
                .map_err(fail(name, "set trusted.overlay.opaque")),
            Some(created) => {
                clear_opaque(dir.as_fd(), created, 0).map(drop).map_err(fail(name, "empty opaque directory"))
            }
        }
    }

    /// Sets directory times last, so creating their content did not change them. A directory
    /// that was since removed or replaced (by another inode) is left alone.
    fn set_dir_times(&mut self) -> Result<(), ApplyError> {
        for d in &self.dirs {
            let name = display_name(&d.path.0);
            let dir = match open_in_root(self.root.as_fd(), &d.path.0) {
                Ok(dir) => dir,
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => return Err(fail(&name, "open directory")(e)),
            };
            if inode(&rfs::fstat(&dir).map_err(fail(&name, "stat directory"))?) == d.inode {
                rfs::futimens(&dir, &d.times).map_err(fail(&name, "set times"))?;
            }
        }
        Ok(())
    }
}

/// An entry's metadata, from its header and PAX records (which override the header's).
struct Meta {
    uid: Uid,
    gid: Gid,
    /// Permission bits incl. setuid, setgid and sticky.
    mode: u32,
    atime: Timespec,
    mtime: Timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    fn read(entry: &pax::Entry) -> Result<Meta, String> {
        let header = &entry.header;
        let raw = header.as_old();
        let invalid = |field: &'static str| move |e: io::Error| format!("invalid {field} in header: {e}");
        let id = |field: &'static str, raw: &[u8], v: io::Result<u64>| {
            let v = match pax::number(&entry.records, field)? {
                Some(v) => v,
                None => blank_is_zero(raw, v).map_err(invalid(field))?,
            };
            u32::try_from(v).map_err(|_| format!("{field} {v} is out of range"))
        };
        let uid = Uid::from_raw(id("uid", &raw.uid, header.uid())?);
        let gid = Gid::from_raw(id("gid", &raw.gid, header.gid())?);
        let mode = blank_is_zero(&raw.mode, header.mode()).map_err(invalid("mode"))? & 0o7777;
        let secs = blank_is_zero(&raw.mtime, header.mtime()).map_err(invalid("mtime"))?;
        let mut mtime = Timespec { tv_sec: i64::try_from(secs).unwrap_or(-1), tv_nsec: 0 };
        let mut atime = None;
        let mut xattrs = Vec::new();
        // path, linkpath and size were applied by the reader; uname and gname are ignored.
        for pax::Record { key, value } in &entry.records {
            let time = || {
                parse_pax_time(value).ok_or_else(|| format!("invalid PAX time {:?}", String::from_utf8_lossy(value)))
            };
            if key == b"mtime" {
                mtime = time()?;
            } else if key == b"atime" {
                atime = Some(time()?);
            } else if key.starts_with(PAX_SPARSE_PREFIX) {
                // Its content is a sparse map, not the file: writing it would corrupt the file.
                return Err("PAX (GNU.sparse.*) sparse files are not supported".to_owned());
            } else if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                let xattr = CString::new(xattr).map_err(|_| "xattr name contains a NUL byte".to_owned())?;
                xattrs.push((xattr, value.clone()));
            }
        }
        // containerd sets atime to the later of the two, and times it cannot represent (before
        // 1970, after 2262) to the epoch.
        let mtime = bound_time(mtime);
        let atime = atime.map(bound_time).filter(|a| (a.tv_sec, a.tv_nsec) > (mtime.tv_sec, mtime.tv_nsec));
        let atime = atime.unwrap_or(mtime);
        Ok(Meta { uid, gid, mode, atime, mtime, xattrs })
    }

    fn times(&self) -> Timestamps {
        Timestamps { last_access: self.atime, last_modification: self.mtime }
    }
}

/// Times before the epoch or past what nanoseconds in an i64 can hold become the epoch, as in
/// containerd (`boundTime`).
fn bound_time(t: Timespec) -> Timespec {
    const MAX_SECS: i64 = i64::MAX / 1_000_000_000;
    if (0..MAX_SECS).contains(&t.tv_sec) { t } else { Timespec { tv_sec: 0, tv_nsec: 0 } }
}

/// A numeric header field of only NULs and spaces reads as 0, as in Go's archive/tar: some
/// writers leave uid, gid or device numbers blank.
fn blank_is_zero<T: Default>(raw: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') { Ok(T::default()) } else { parsed }
}

/// Parses a PAX time (`1700000000`, `1700000000.123456789`, `-1.5`); digits past nanoseconds
/// are truncated, as Go does.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let (negative, value) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = match value.iter().position(|b| *b == b'.') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if secs.is_empty() || !secs.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(secs).ok()?.parse().ok()?;
    let nanos = (0..9).fold(0i64, |n, i| n * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0')));
    Some(match (negative, nanos) {
        (false, _) => Timespec { tv_sec: secs, tv_nsec: nanos },
        (true, 0) => Timespec { tv_sec: -secs, tv_nsec: 0 },
        (true, _) => Timespec { tv_sec: -secs - 1, tv_nsec: 1_000_000_000 - nanos },
    })
}

/// A name cleaned lexically inside the root: components joined by `/`, none empty, `.` or `..`;
/// empty for the root itself.
#[derive(Clone)]
struct CleanPath(Vec<u8>);

impl CleanPath {
    fn new(raw: &[u8]) -> Result<CleanPath, &'static str> {
        if raw.is_empty() {
            return Err("empty name");
        }
        if raw.contains(&0) {
            return Err("name contains a NUL byte");
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in raw.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        Ok(CleanPath(parts.join(&b'/')))
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// (parent, last component); the parent is empty for entries directly in the root.
    fn split(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (b"", &self.0),
        }
    }
}

/// Quotes a name for error messages, shortening huge ones.
fn display_name(raw: &[u8]) -> String {
    if raw.len() <= NAME_DISPLAY_MAX {
        format!("{:?}", String::from_utf8_lossy(raw))
    } else {
        format!("{:?}... ({} bytes)", String::from_utf8_lossy(&raw[..NAME_DISPLAY_MAX]), raw.len())
    }
}

/// Maps an OS error to [`ApplyError::Io`] for `entry`.
fn fail<E: Into<io::Error>>(entry: &str, op: &str) -> impl FnOnce(E) -> ApplyError {
    let (entry, op) = (entry.to_owned(), op.to_owned());
    move |e| ApplyError::Io { entry, op, source: e.into() }
}

fn inode(st: &rfs::Stat) -> Inode {
    (st.st_dev, st.st_ino)
}

/// Opens the directory `rel` (a cleaned path, empty for the root) resolved inside `root`.
fn open_in_root(root: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let mut tries = 0;
    loop {
        match rfs::openat2(root, rel, DIR_FLAGS, Mode::empty(), RESOLVE) {
            Err(Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
            result => return result,
        }
    }
}

/// Gives the new directory `dir` the mode and owner `rel` has in the nearest parent layer where
/// it exists, unless it is not a directory there (whited out or replaced), and returns the
/// times to give it.
fn copy_dir_info(parents: &[OwnedFd], rel: &[u8], dir: BorrowedFd<'_>) -> io::Result<Option<Timestamps>> {
    for parent in parents {
        let found = match rfs::openat2(parent, rel, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), RESOLVE) {
            Ok(found) => found,
            Err(Errno::NOENT) => continue,
            Err(Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&found)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(None);
        }
        rfs::fchown(dir, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)))?;
        rfs::fchmod(dir, Mode::from_raw_mode(st.st_mode & 0o7777))?;
        let at = |tv_sec, tv_nsec| Timespec { tv_sec, tv_nsec };
        return Ok(Some(Timestamps {
            last_access: at(st.st_atime, st.st_atime_nsec as _),
            last_modification: at(st.st_mtime, st.st_mtime_nsec as _),
        }));
    }
    Ok(None)
}

/// Runs `create`; if something is in the way, removes it (recursively, never following
/// symlinks) and runs `create` again.
fn replacing<T>(dir: BorrowedFd<'_>, base: &[u8], mut create: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    match create() {
        Err(Errno::EXIST) => {
            remove_all(dir, base, 0)?;
            Ok(create()?)
        }
        result => Ok(result?),
    }
}

/// Makes directory `base` in `dir` and opens it; an existing directory is kept (merged), any
/// other file type is replaced.
fn make_dir(dir: BorrowedFd<'_>, base: &[u8]) -> io::Result<OwnedFd> {
    let mode = Mode::from_raw_mode(0o700);
    match rfs::mkdirat(dir, base, mode) {
        Err(Errno::EXIST) => {
            let st = rfs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                remove_all(dir, base, 0)?;
                rfs::mkdirat(dir, base, mode)?;
            }
        }
        result => result?,
    }
    Ok(rfs::openat(dir, base, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?)
}

/// Removes `name` in `dir` and everything below it, never following a symlink. A missing
/// `name` is not an error.
fn remove_all(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rfs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    for child in list_dir(sub.as_fd())? {
        remove_all(sub.as_fd(), &child, deeper(depth)?)?;
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One level deeper in a recursive removal, within [`MAX_DEPTH`].
fn deeper(depth: usize) -> io::Result<usize> {
    if depth < MAX_DEPTH {
        Ok(depth + 1)
    } else {
        Err(io::Error::other(format!("directory tree deeper than {MAX_DEPTH} levels")))
    }
}

/// The names in a directory, read fully before the caller changes it.
fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// `Delete`-mode opaque directory: removes everything below `dir` that this layer did not
/// create, keeping directories that lead to something it did. Returns whether anything was kept.
fn clear_opaque(dir: BorrowedFd<'_>, created: &HashSet<Inode>, depth: usize) -> io::Result<bool> {
    let mut kept = false;
    for name in list_dir(dir)? {
        let st = match rfs::statat(dir, &name[..], AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let ours = created.contains(&inode(&st));
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rfs::openat(dir, &name[..], DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
            let kept_below = clear_opaque(sub.as_fd(), created, deeper(depth)?)?;
            if ours || kept_below {
                kept = true;
            } else {
                rfs::unlinkat(dir, &name[..], AtFlags::REMOVEDIR)?;
            }
        } else if ours {
            kept = true;
        } else {
            rfs::unlinkat(dir, &name[..], AtFlags::empty())?;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names_inside_the_root() {
        let clean = |s: &str| CleanPath::new(s.as_bytes()).map(|p| String::from_utf8(p.0).unwrap());
        assert_eq!(clean("a/b/c").unwrap(), "a/b/c");
        assert_eq!(clean("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean("/a/../../b").unwrap(), "b");
        assert_eq!(clean("../../../etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(clean("a/b/../..").unwrap(), "");
        assert_eq!(clean("./").unwrap(), "");
        assert_eq!(clean(".wh...").unwrap(), ".wh...");
        assert!(clean("").is_err());
        assert!(clean("a\0b").is_err());
        let p = CleanPath::new(b"x/y/z").unwrap();
        assert_eq!(p.split(), (&b"x/y"[..], &b"z"[..]));
        let p = CleanPath::new(b"z").unwrap();
        assert_eq!(p.split(), (&b""[..], &b"z"[..]));
    }

    #[test]
    fn parses_pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1700000000.1234567891"), Some((1_700_000_000, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t(""), None);
        assert_eq!(t(".5"), None);
        assert_eq!(t("12a"), None);
        assert_eq!(t("1.-5"), None);
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let long = vec![b'a'; 5000];
        let shown = display_name(&long);
        assert!(shown.len() < 300 && shown.ends_with("(5000 bytes)"), "{shown}");
        assert_eq!(display_name(b"a/\xffb"), "\"a/\u{fffd}b\"");
    }
}
