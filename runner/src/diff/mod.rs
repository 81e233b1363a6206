//! A step's filesystem change turned into an OCI layer blob in the store.
//!
//! Two sources of changes, one writer:
//!
//! - [`diff_upperdir`]: the overlay upperdir *is* the change. It is walked as it is; overlay
//!   whiteouts (character devices 0/0) become `.wh.<name>` entries and directories marked
//!   `trusted.overlay.opaque=y` get a `.wh..wh..opq` entry right after their own.
//! - [`diff_trees`]: a changed tree against the tree it started from (the copy-based
//!   snapshotter): entries that differ are written, entries only in the base become
//!   `.wh.<name>`. An optional "unchanged before" time lets files whose inode change time is
//!   older than the snapshot skip the comparison.
//!
//! # What is written, as BuildKit's overlay differ does
//!
//! Given the base (the lower layers' merged view), an upperdir entry is left out when it is
//! the same as the base's: for directories mode, owner, mtime and xattrs; for other files also
//! the device number, size, symlink target and, when both mtimes have no sub-second part (a
//! tar-extracted base), the content. This drops what overlayfs copied up without a change: a
//! file opened for writing and left alone, a directory copied up because something below
//! changed. Such a directory is still written when an entry below it is: BuildKit's
//! `ChangeWriter` includes every parent of a written entry (`includeParents`), so its layers
//! carry them and so do ours. Whiteouts of paths the base does not have and opaque markers on
//! directories the base does not have are left out (nothing to hide). Without a base
//! (`None`), every entry is written as it is.
//!
//! Deliberate differences from BuildKit: an opaque directory is written as its
//! `.wh..wh..opq` marker (BuildKit's overlay differ expands it into one whiteout per lower
//! entry), every xattr is kept (BuildKit keeps only `security.capability`; `trusted.overlay.*`
//! is never written), and mtimes keep their nanoseconds (containerd truncates to seconds).
//!
//! # The archive
//!
//! Entries in walk order: each directory's entries sorted byte-wise by name, a directory
//! before its content (the order of Go's `filepath.Walk`, which BuildKit uses). Hardlinks are
//! written once, then as links to the first name (whiteout devices, which overlayfs makes as
//! links of one inode, are translated first and never count). Sockets are skipped, as
//! containerd does. With [`DiffOptions::source_date_epoch`], mtimes later than it are clamped
//! to it (BuildKit's `rewrite-timestamp`); whiteouts carry that time, or 0 without it, so that
//! the same change always gives the same bytes. The `tar` submodule documents the header format.
//!
//! The tar streams into [`LayerWriter`], which hashes the diffID and compresses into the blob
//! store in the same pass; nothing is held in memory beyond one directory listing per level.

mod tar;

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use kiln_store::blobs::BlobStore;
use kiln_store::layer::Compression;
use kiln_store::layer::encode::{EncodeError, EncodedLayer, LayerWriter};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec};
use rustix::io::Errno;

use self::tar::{ContentError, Entry, Kind, TarWriter};

/// The overlayfs xattr marking a directory opaque.
const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";
/// overlayfs's private xattrs: never written into a layer.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// How to write a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// The blob's compression (gzip by default, as BuildKit).
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: mtimes later than this (seconds since the epoch) are written as it.
    /// The caller reads it (from a build arg or the environment); the library never does.
    pub source_date_epoch: Option<i64>,
    /// Paths, relative to the snapshot root (a leading `/` is allowed), left out of the layer
    /// with everything below them: what the sandbox mounted over during the step
    /// (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` stubs).
    pub skip: Vec<PathBuf>,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions { compression: Compression::Gzip, source_date_epoch: None, skip: Vec::new() }
    }
}

/// A written layer: the stored blob and how many tar entries it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDiff {
    /// The stored blob: digest, size, diffID, media type.
    pub layer: EncodedLayer,
    /// Entries written (files, directories, links, whiteouts, opaque markers); 0 when the step
    /// changed nothing, and the layer is the empty tar.
    pub entries: u64,
}

/// Why a diff could not be written. Paths are shown as in the image (`/etc/passwd`).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Reading the changed tree or its base failed.
    #[error("diff: cannot {op} {}: {source}", show(.path))]
    Io { path: Vec<u8>, op: &'static str, source: io::Error },
    /// Opening the root of the tree or the base failed.
    #[error("diff: cannot open {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    /// An entry cannot be represented in a tar.
    #[error("diff: {}: {reason}", show(.path))]
    Unsupported { path: Vec<u8>, reason: String },
    /// Writing the tar into the layer writer (compression, blob file) failed.
    #[error("diff: writing the layer: {0}")]
    Write(io::Error),
    /// Committing the layer blob failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// Writes the change an overlay upperdir holds as a layer blob in `blobs`. `base` is the merged
/// view of the lower layers (a read-only overlay of them), or `None` to write every entry of
/// `upper` as it is. See the module docs.
pub fn diff_upperdir(
    blobs: &BlobStore,
    upper: &Path,
    base: Option<&Path>,
    options: &DiffOptions,
) -> Result<LayerDiff, DiffError> {
    encode(blobs, options, |out| write_diff(out, upper, base, Source::Upper, options))
}

/// Writes the difference between the tree `changed` and the tree `base` it started from as a
/// layer blob in `blobs`. Entries of `changed` whose inode change time is before
/// `unchanged_before` are taken to be as in `base` without comparing them (pass the ctime of a
/// file made right after `changed` was populated, or `None` to compare everything).
pub fn diff_trees(
    blobs: &BlobStore,
    changed: &Path,
    base: &Path,
    unchanged_before: Option<Timespec>,
    options: &DiffOptions,
) -> Result<LayerDiff, DiffError> {
    encode(blobs, options, |out| write_diff(out, changed, Some(base), Source::Tree { unchanged_before }, options))
}

/// Writes every entry of the tree `root` (a snapshot's merged root filesystem) to `out` as one
/// uncompressed tar in the format of the layers above: `kiln build --output type=tar`.
pub fn write_tree<W: Write>(out: W, root: &Path, options: &DiffOptions) -> Result<u64, DiffError> {
    write_diff(out, root, None, Source::Upper, options)
}

fn encode(
    blobs: &BlobStore,
    options: &DiffOptions,
    write: impl FnOnce(&mut LayerWriter) -> Result<u64, DiffError>,
) -> Result<LayerDiff, DiffError> {
    let mut out = LayerWriter::new(blobs, options.compression)?;
    let entries = write(&mut out)?;
    Ok(LayerDiff { layer: out.finish()?, entries })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An overlay upperdir: whiteout devices and opaque xattrs carry the deletions.
    Upper,
    /// A full tree: deletions are what only the base has.
    Tree { unchanged_before: Option<Timespec> },
}

fn write_diff<W: Write>(
    out: W,
    tree: &Path,
    base: Option<&Path>,
    source: Source,
    options: &DiffOptions,
) -> Result<u64, DiffError> {
    let open_root = |p: &Path| {
        rfs::open(p, DIR_FLAGS, Mode::empty()).map_err(|e| DiffError::Root { path: p.to_owned(), source: e.into() })
    };
    let tree_fd = open_root(tree)?;
    let base_fd = base.map(open_root).transpose()?;
    let mut differ = Differ {
        tar: TarWriter::new(out),
        has_base: base.is_some(),
        source,
        epoch: options.source_date_epoch,
        skip: options.skip.iter().map(|p| clean_rel(p)).collect(),
        path: Vec::new(),
        pending: Vec::new(),
        links: HashMap::new(),
        entries: 0,
    };
    differ.walk(tree_fd.as_fd(), base_fd.as_ref().map(|b| b.as_fd()))?;
    differ.tar.finish().map_err(DiffError::Write)?;
    Ok(differ.entries)
}

/// `a/b` from `/a/b`, `./a//b/`: the form of the walk's paths.
fn clean_rel(p: &Path) -> Vec<u8> {
    let parts: Vec<&[u8]> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(std::os::unix::ffi::OsStrExt::as_bytes(s)),
            _ => None,
        })
        .collect();
    parts.join(&b'/')
}

/// A tree entry's metadata.
struct Node {
    st: Stat,
    /// Sorted by name, `trusted.overlay.*` removed.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    opaque: bool,
}

impl Node {
    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.st.st_mode)
    }
}

struct Differ<W: Write> {
    tar: TarWriter<W>,
    /// Whether there is a base to compare with at all (`None` writes everything as it is).
    has_base: bool,
    source: Source,
    epoch: Option<i64>,
    skip: HashSet<Vec<u8>>,
    /// The current entry's path, relative to the root.
    path: Vec<u8>,
    /// One slot per directory level being walked: an unchanged directory not written yet,
    /// written (and emptied) as soon as something below it is.
    pending: Vec<Option<(Vec<u8>, Node)>>,
    /// First name written for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
}

impl<W: Write> Differ<W> {
    fn walk(&mut self, dir: BorrowedFd<'_>, base: Option<BorrowedFd<'_>>) -> Result<(), DiffError> {
        let names = list_sorted(dir).map_err(self.io("list directory"))?;
        let base_names = match (self.source, base) {
            (Source::Tree { .. }, Some(b)) => list_sorted(b).map_err(self.io("list base directory"))?,
            _ => Vec::new(),
        };
        // The sorted union, each name with whether the tree has it.
        let (mut i, mut j) = (0, 0);
        while i < names.len() || j < base_names.len() {
            let (name, in_tree) = match (names.get(i), base_names.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                    (a, true)
                }
                (Some(a), Some(b)) if a > b => {
                    j += 1;
                    (b, false)
                }
                (Some(a), _) => {
                    i += 1;
                    (a, true)
                }
                (None, Some(b)) => {
                    j += 1;
                    (b, false)
                }
                (None, None) => break,
            };
            let len = self.path.len();
            if len > 0 {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name);
            let result = self.visit(dir, base, name, in_tree);
            self.path.truncate(len);
            result?;
        }
        Ok(())
    }

    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        base: Option<BorrowedFd<'_>>,
        name: &[u8],
        in_tree: bool,
    ) -> Result<(), DiffError> {
        if self.skip.contains(&self.path) {
            return Ok(());
        }
        let base_node = match base {
            Some(b) => lstat_opt(b, name).map_err(self.io("stat base entry"))?,
            None => None,
        };
        if !in_tree {
            return self.whiteout(WHITEOUT_PREFIX, true);
        }
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(self.io("stat"))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        if self.source == Source::Upper && file_type == FileType::CharacterDevice && st.st_rdev == 0 {
            // A deletion; pointless (and so dropped, as BuildKit does) if the base has nothing.
            if self.has_base && base_node.is_none() {
                return Ok(());
            }
            return self.whiteout(WHITEOUT_PREFIX, true);
        }
        if file_type == FileType::Socket {
            return Ok(());
        }
        let node = self.node(dir, name, st)?;
        let unchanged = match (&base_node, self.source) {
            (None, _) => false,
            (Some(_), Source::Tree { unchanged_before: Some(t) })
                if (node.st.st_ctime, node.st.st_ctime_nsec as i64) < (t.tv_sec, t.tv_nsec) =>
            {
                true
            }
            (Some(b), _) => self.same(dir, base, name, &node, b)?,
        };
        if file_type != FileType::Directory {
            if !unchanged {
                self.flush()?;
                self.entry(dir, name, &node)?;
            }
            return Ok(());
        }
        let base_is_dir = base_node.as_ref().is_some_and(|b| b.file_type() == FileType::Directory);
        // Opaque only matters over a base directory; with no base at all it is written as it is.
        let opaque = node.opaque && (base_is_dir || !self.has_base);
        if unchanged && !opaque {
            self.pending.push(Some((self.path.clone(), node)));
        } else {
            self.flush()?;
            self.entry(dir, name, &node)?;
            if opaque {
                self.whiteout(OPAQUE_MARKER, false)?;
            }
            self.pending.push(None);
        }
        let result = self.descend(dir, base, name, base_is_dir && !opaque);
        self.pending.pop();
        result
    }

    fn descend(
        &mut self,
        dir: BorrowedFd<'_>,
        base: Option<BorrowedFd<'_>>,
        name: &[u8],
        with_base: bool,
    ) -> Result<(), DiffError> {
        let sub = rfs::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(self.io("open directory"))?;
        let sub_base = match base {
            Some(b) if with_base => {
                Some(rfs::openat(b, name, DIR_FLAGS, Mode::empty()).map_err(self.io("open base directory"))?)
            }
            _ => None,
        };
        self.walk(sub.as_fd(), sub_base.as_ref().map(OwnedFd::as_fd))
    }

    fn node(&self, dir: BorrowedFd<'_>, name: &[u8], st: Stat) -> Result<Node, DiffError> {
        let mut xattrs = read_xattrs(dir, name).map_err(self.io("read xattrs of"))?;
        let opaque = xattrs.iter().any(|(k, v)| k.as_slice() == OVERLAY_OPAQUE.to_bytes() && v.as_slice() == b"y");
        xattrs.retain(|(k, _)| !k.starts_with(OVERLAY_XATTR_PREFIX));
        if let Some((k, _)) = xattrs.iter().find(|(k, _)| k.contains(&b'=')) {
            return Err(DiffError::Unsupported {
                path: self.path.clone(),
                reason: format!(
                    "xattr name {:?} contains '=', which a PAX record cannot carry",
                    String::from_utf8_lossy(k)
                ),
            });
        }
        Ok(Node { st, xattrs, opaque })
    }

    /// Whether the tree's entry is the base's (see the module docs).
    fn same(
        &self,
        dir: BorrowedFd<'_>,
        base: Option<BorrowedFd<'_>>,
        name: &[u8],
        node: &Node,
        base_node: &Node,
    ) -> Result<bool, DiffError> {
        let (a, b) = (&node.st, &base_node.st);
        let meta_equal = a.st_mode == b.st_mode
            && a.st_uid == b.st_uid
            && a.st_gid == b.st_gid
            && a.st_mtime == b.st_mtime
            && a.st_mtime_nsec == b.st_mtime_nsec
            && node.xattrs == base_node.xattrs;
        if !meta_equal || node.file_type() == FileType::Directory {
            return Ok(meta_equal);
        }
        if a.st_rdev != b.st_rdev || a.st_size != b.st_size {
            return Ok(false);
        }
        let Some(base) = base else { return Ok(false) };
        match node.file_type() {
            FileType::Symlink => {
                let read = |d| rfs::readlinkat(d, name, Vec::new()).map_err(self.io("read symlink"));
                Ok(read(dir)?.as_bytes() == read(base)?.as_bytes())
            }
            // Equal sub-second mtimes are trusted; whole seconds are what a tar gave both.
            FileType::RegularFile if a.st_mtime_nsec == 0 => {
                same_content(dir, base, name).map_err(self.io("compare content of"))
            }
            _ => Ok(true),
        }
    }

    /// Writes the unchanged directories above the current entry that are not written yet.
    fn flush(&mut self) -> Result<(), DiffError> {
        for i in 0..self.pending.len() {
            if let Some((path, node)) = self.pending[i].take() {
                self.header(&path, Kind::Dir, &node)?;
            }
        }
        Ok(())
    }

    /// Writes the current entry, `name` in `dir`.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &[u8], node: &Node) -> Result<(), DiffError> {
        let path = self.path.clone();
        let st = &node.st;
        let file_type = node.file_type();
        if file_type != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.header(&path, Kind::Link { target: &first }, node);
            }
            self.links.insert(key, path.clone());
        }
        let dev = || (rfs::major(st.st_rdev), rfs::minor(st.st_rdev));
        match file_type {
            FileType::Directory => self.header(&path, Kind::Dir, node),
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new()).map_err(self.io("read symlink"))?;
                self.header(&path, Kind::Symlink { target: target.as_bytes() }, node)
            }
            FileType::CharacterDevice => self.header(&path, Kind::Char { major: dev().0, minor: dev().1 }, node),
            FileType::BlockDevice => self.header(&path, Kind::Block { major: dev().0, minor: dev().1 }, node),
            FileType::Fifo => self.header(&path, Kind::Fifo, node),
            FileType::RegularFile => {
                let size = st.st_size as u64;
                // Opened before the header is written, so a vanished file fails cleanly.
                let fd = rfs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    .map_err(self.io("open"))?;
                self.header(&path, Kind::Regular { size }, node)?;
                self.tar.content(&mut File::from(fd), size).map_err(|e| match e {
                    ContentError::Read(source) => DiffError::Io { path: path.clone(), op: "read", source },
                    ContentError::Write(source) => DiffError::Write(source),
                })
            }
            other => Err(DiffError::Unsupported { path, reason: format!("unsupported file type {other:?}") }),
        }
    }

    fn header(&mut self, path: &[u8], kind: Kind<'_>, node: &Node) -> Result<(), DiffError> {
        let st = &node.st;
        let mut mtime = (st.st_mtime, st.st_mtime_nsec as u32);
        if let Some(epoch) = self.epoch {
            mtime = mtime.min((epoch, 0));
        }
        let entry = Entry {
            name: path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime,
            xattrs: &node.xattrs,
        };
        self.tar.header(&entry).map_err(DiffError::Write)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes a whiteout for the current path (`prefix` = `.wh.`, in its parent) or the opaque
    /// marker inside it (`prefix` = the marker, `in_parent` false).
    fn whiteout(&mut self, prefix: &[u8], in_parent: bool) -> Result<(), DiffError> {
        self.flush()?;
        let name = if in_parent {
            let (parent, base) = match self.path.iter().rposition(|b| *b == b'/') {
                Some(i) => (&self.path[..=i], &self.path[i + 1..]),
                None => (&b""[..], &self.path[..]),
            };
            [parent, prefix, base].concat()
        } else {
            [&self.path[..], b"/", prefix].concat()
        };
        let entry = Entry {
            name: &name,
            kind: Kind::Regular { size: 0 },
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (self.epoch.unwrap_or(0), 0),
            xattrs: &[],
        };
        self.tar.header(&entry).map_err(DiffError::Write)?;
        self.entries += 1;
        Ok(())
    }

    fn io<E: Into<io::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> DiffError + use<E, W> {
        let path = self.path.clone();
        move |e| DiffError::Io { path, op, source: e.into() }
    }
}

/// The entry `name` in `dir` with its xattrs, or `None` if there is none.
fn lstat_opt(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Node>> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut xattrs = read_xattrs(dir, name)?;
    xattrs.retain(|(k, _)| !k.starts_with(OVERLAY_XATTR_PREFIX));
    Ok(Some(Node { st, xattrs, opaque: false }))
}

/// A directory's names (without `.` and `..`), sorted byte-wise.
fn list_sorted(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// All xattrs of `name` in `dir` (not following a symlink), sorted by name. A filesystem
/// without xattrs has none.
fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // l*xattr take a path: the directory's fd link plus the last component, never followed.
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = &path[..];
    let mut list = Vec::new();
    loop {
        let size = match rfs::llistxattr_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        list.resize(size, 0);
        match rfs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            // Grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = Vec::new();
    for key in list.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let ckey = std::ffi::CString::new(key).map_err(io::Error::other)?;
        let mut value = Vec::new();
        loop {
            let size = match rfs::lgetxattr_query(path, ckey.as_c_str()) {
                Ok(n) => n,
                // Removed between the calls.
                Err(Errno::NODATA) => break,
                Err(e) => return Err(e.into()),
            };
            value.resize(size, 0);
            match rfs::lgetxattr(path, ckey.as_c_str(), &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    out.push((key.to_vec(), std::mem::take(&mut value)));
                    break;
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether two regular files (`name` in both directories) have the same bytes.
fn same_content(a: BorrowedFd<'_>, b: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let open = |d| -> io::Result<File> {
        Ok(File::from(rfs::openat(d, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?))
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0; 1 << 16], vec![0; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
