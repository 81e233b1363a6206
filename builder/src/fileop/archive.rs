//! ADD of a local archive: detection (BuildKit's `isArchivePath`: it decompresses and has a
//! valid first tar header) and a streaming, confined extraction (BuildKit's
//! `applyRootArchive`), with the extraction directory as the root every path resolves in.
//!
//! Not `kiln_store::layer::apply`: a layer applier turns `.wh.` entries into deletions and keeps
//! header owners, while ADD extracts whiteout-looking files as files and lets `--chown`
//! override owners, and refuses (like BuildKit) names that climb out of the extraction root.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

use super::FileOpError;
use super::dest::{self, DIR, set_owner_mode};
use super::select::{Match, Root, fd_path, open_in_root};

/// A reader of `file` decompressed by its magic bytes (gzip, bzip2, xz, zstd; else as is), as
/// BuildKit's `archiveutil.DecompressStream`.
fn decompress(file: File) -> io::Result<Box<dyn Read>> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let magic = reader.fill_buf()?;
    Ok(if magic.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(reader))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader))
    } else {
        // gzip, zstd or a plain stream.
        Box::new(kiln_store::layer::decompress(reader)?)
    })
}

/// Whether the file is an archive ADD unpacks.
fn is_archive(open: impl Fn() -> io::Result<File>) -> bool {
    let Ok(file) = open() else { return false };
    let Ok(reader) = decompress(file) else { return false };
    let mut archive = tar::Archive::new(reader);
    matches!(archive.entries().map(|mut e| e.next()), Ok(Some(Ok(_))))
}

/// If the match is an archive, extracts it into `dest_rel` (created as a directory) and returns
/// true; false means it is to be copied as a file.
pub(crate) fn unpack(
    src: &Root,
    m: &Match,
    root: &Root,
    dest_rel: &Path,
    chown: Option<(u32, u32)>,
) -> Result<bool, FileOpError> {
    let path = m.tree_path(&m.entries[0]);
    if !is_archive(|| src.open_file(&path)) {
        return Ok(false);
    }
    let dir = dest::mkdir_all(root, dest_rel, chown.unwrap_or((0, 0)), 0o755)?;
    let host = fd_path(&dir).map_err(FileOpError::io("resolve", dest::shown(dest_rel)))?;
    let xroot = Root { fd: dir, host };
    let file = src.open_file(&path).map_err(FileOpError::io("open", src.host.join(&path)))?;
    let reader = decompress(file).map_err(FileOpError::io("read", src.host.join(&path)))?;
    Extractor { root: &xroot, archive: m.src.clone(), chown, dirs: Vec::new() }.run(reader)?;
    Ok(true)
}

struct Extractor<'a> {
    root: &'a Root,
    archive: String,
    chown: Option<(u32, u32)>,
    dirs: Vec<(PathBuf, Timestamps)>,
}

/// Cleans a tar name as BuildKit's `cleanRootTarPath`: leading `/` dropped, `path.Clean`; `None`
/// for the root itself, an error for a name that climbs out.
fn clean_name(raw: &[u8]) -> Result<Option<PathBuf>, String> {
    let text = String::from_utf8_lossy(raw);
    let cleaned = kiln_frontend::dockerignore::clean(text.trim_start_matches('/'));
    if cleaned == "." || cleaned.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(cleaned);
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("archive path is outside the extraction root".to_owned());
    }
    Ok(Some(path))
}

impl Extractor<'_> {
    fn fail(&self, entry: &str, reason: impl ToString) -> FileOpError {
        FileOpError::Archive { archive: self.archive.clone(), entry: entry.to_owned(), reason: reason.to_string() }
    }

    fn run(mut self, reader: Box<dyn Read>) -> Result<(), FileOpError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.fail("", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.fail("(next entry)", e))?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
                continue;
            }
            let Some(name) = clean_name(&raw).map_err(|r| self.fail(&shown, r))? else { continue };
            self.entry(&mut entry, kind, &name, &shown)?;
        }
        for (name, times) in self.dirs.iter().rev() {
            if let Ok(dir) = open_in_root(&self.root.fd, name, DIR) {
                rustix::fs::futimens(&dir, times).map_err(|e| self.fail(&name.display().to_string(), e))?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        entry: &mut tar::Entry<'_, Box<dyn Read>>,
        kind: EntryType,
        name: &Path,
        shown: &str,
    ) -> Result<(), FileOpError> {
        let header = entry.header();
        // Blank numeric fields read as 0, as in Go's archive/tar.
        let num = |raw: &[u8], v: io::Result<u64>| {
            if raw.iter().all(|b| *b == 0 || *b == b' ') {
                return Ok(0);
            }
            v.map_err(|e| self.fail(shown, format!("invalid header: {e}")))
        };
        let old = header.as_old();
        let id = |v: u64| u32::try_from(v).map_err(|_| self.fail(shown, format!("id {v} is out of range")));
        let owner = match self.chown {
            Some(o) => o,
            None => (id(num(&old.uid, header.uid())?)?, id(num(&old.gid, header.gid())?)?),
        };
        let mode = num(&old.mode, header.mode().map(u64::from))? as u32 & 0o7777;
        let mtime = Timespec { tv_sec: i64::try_from(num(&old.mtime, header.mtime())?).unwrap_or(0), tv_nsec: 0 };
        let times = Timestamps { last_access: mtime, last_modification: mtime };
        let parent_rel = name.parent().unwrap_or(Path::new(""));
        // Implied parents: 0755, root-owned, as BuildKit.
        let parent = dest::mkdir_all(self.root, parent_rel, (0, 0), 0o755)?;
        let base = name.file_name().unwrap_or_default();
        let fail_io = |op: &str| {
            let (archive, entry, op) = (self.archive.clone(), shown.to_owned(), op.to_owned());
            move |e: Errno| FileOpError::Archive { archive, entry, reason: format!("cannot {op}: {e}") }
        };
        let existing = match rustix::fs::statat(&parent, base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(fail_io("stat")(e)),
        };
        if kind == EntryType::Directory {
            // A directory merges into an existing one, also through a symlink (resolved in the root).
            let dir = match open_in_root(&self.root.fd, name, DIR) {
                Ok(fd) if existing.is_some() => fd,
                _ => {
                    if existing.is_some() {
                        remove_all(&parent, base, 0).map_err(fail_io("replace"))?;
                    }
                    rustix::fs::mkdirat(&parent, base, Mode::from_raw_mode(0o700)).map_err(fail_io("mkdir"))?;
                    rustix::fs::openat(&parent, base, DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                        .map_err(fail_io("open directory"))?
                }
            };
            set_owner_mode(&dir, owner, mode).map_err(|e| self.fail(shown, e))?;
            let real = self.root.relative(&dir)?;
            self.dirs.push((real, times));
            return Ok(());
        }
        if existing.is_some() {
            remove_all(&parent, base, 0).map_err(fail_io("replace"))?;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&parent, base, flags, Mode::from_raw_mode(0o600))
                    .map_err(fail_io("create file"))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(|e| self.fail(shown, format!("cannot write: {e}")))?;
                let fd: OwnedFd = file.into();
                set_owner_mode(&fd, owner, mode).map_err(|e| self.fail(shown, e))?;
                rustix::fs::futimens(&fd, &times).map_err(fail_io("set times"))?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| self.fail(shown, "symlink without a target"))?;
                rustix::fs::symlinkat(&target[..], &parent, base).map_err(fail_io("create symlink"))?;
                rustix::fs::chownat(
                    &parent,
                    base,
                    Some(Uid::from_raw(owner.0)),
                    Some(Gid::from_raw(owner.1)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(fail_io("set owner"))?;
                rustix::fs::utimensat(&parent, base, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail_io("set times"))?;
            }
            EntryType::Link => {
                let raw = entry.link_name_bytes().ok_or_else(|| self.fail(shown, "hardlink without a target"))?;
                let target = clean_name(&raw)
                    .map_err(|r| self.fail(shown, format!("hardlink target: {r}")))?
                    .ok_or_else(|| self.fail(shown, "hardlink targets the extraction root"))?;
                let (tparent, tbase) = dest::open_parent(self.root, &target)?;
                rustix::fs::linkat(&tparent, tbase, &parent, base, AtFlags::empty())
                    .map_err(fail_io("create hard link"))?;
                // The link's own header owner, mode and times then apply to the shared inode,
                // as BuildKit's `applyRootArchive` (and moby's archive) do for every entry.
                let uid = Some(Uid::from_raw(owner.0));
                let gid = Some(Gid::from_raw(owner.1));
                rustix::fs::chownat(&parent, base, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(fail_io("set owner"))?;
                let st = rustix::fs::statat(&parent, base, AtFlags::SYMLINK_NOFOLLOW).map_err(fail_io("stat"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    rustix::fs::chmodat(&parent, base, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(fail_io("set mode"))?;
                    rustix::fs::utimensat(&parent, base, &times, AtFlags::empty()).map_err(fail_io("set times"))?;
                }
            }
            other => return Err(self.fail(shown, format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }
}

/// Removes `name` in `dir`, recursively for a directory (never following symlinks).
fn remove_all(dir: &OwnedFd, name: &std::ffi::OsStr, depth: usize) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) if depth < 256 => {}
        Err(e) => return Err(e),
    }
    let sub = rustix::fs::openat(dir, name, DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&sub)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        remove_all(&sub, &n, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
