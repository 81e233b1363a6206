//! COPY/ADD of one source onto a rootfs (fsutil's `copy.Copy` per match): destination naming,
//! then entry by entry with metadata, hardlinks kept, directory times set last.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_frontend::graph::Copy;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::chmod::Chmod;
use super::dest::{self, CREATED_DIR_MODE, DIR, shown};
use super::select::{self, Entry, Match, Root, open_in_root};
use super::{FileOpError, SourceTree, archive};

/// Applies `c` (one COPY/ADD source) from `tree` onto `rootfs`.
pub(crate) fn copy(rootfs: &Path, tree: &SourceTree<'_>, c: &Copy) -> Result<(), FileOpError> {
    let chmod = c.chmod.as_deref().map(Chmod::parse).transpose()?;
    let chown = c.chown.as_deref().map(|spec| dest::owner(rootfs, spec)).transpose()?;
    let (src, matches) = select::select(tree, c)?;
    let root = Root::open(rootfs)?;
    let created_owner = chown.unwrap_or((0, 0));
    let dest_rel = dest::relative(&c.dest);
    let ensure = if c.dest.ends_with('/') { dest_rel.clone() } else { parent(&dest_rel) };
    let mut copier = Copier {
        src: &src,
        root: &root,
        reset_owner: tree.reset_owner,
        chown,
        chmod,
        links: HashMap::new(),
        dir_times: Vec::new(),
        parent: None,
    };
    for m in &matches {
        dest::mkdir_all(&root, &ensure, created_owner, CREATED_DIR_MODE)?;
        if c.attempt_unpack && m.entries[0].meta.is_file() && archive::unpack(&src, m, &root, &dest_rel, chown)? {
            continue;
        }
        let (dst, exists) = dest::resolve(&root, &dest_rel)?;
        let src_dir = m.entries[0].meta.is_dir();
        let base = m.base_name();
        let into = (!c.dir_contents_only && src_dir && exists.is_some()) || (!src_dir && exists == Some(true));
        let target = if into && !base.is_empty() { dst.join(base) } else { dst };
        let make = if c.dir_contents_only && src_dir && exists.is_none() { target.clone() } else { parent(&target) };
        dest::mkdir_all(&root, &make, created_owner, CREATED_DIR_MODE)?;
        copier.copy_match(m, &target)?;
    }
    Ok(())
}

fn parent(rel: &Path) -> PathBuf {
    rel.parent().map(Path::to_path_buf).unwrap_or_default()
}

struct Copier<'a> {
    src: &'a Root,
    root: &'a Root,
    reset_owner: bool,
    chown: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    /// (dev, inode) of a source file with several links → where its first copy is.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose times are set once everything below them is written.
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// The last destination directory entries were created in.
    parent: Option<(PathBuf, OwnedFd)>,
}

fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() as _ },
    }
}

impl Copier<'_> {
    fn copy_match(&mut self, m: &Match, target: &Path) -> Result<(), FileOpError> {
        // fsutil keeps hardlinks within one `copy.Copy`, i.e. within one match.
        self.links.clear();
        for (i, e) in m.entries.iter().enumerate() {
            let to = if e.rel.as_os_str().is_empty() { target.to_path_buf() } else { target.join(&e.rel) };
            self.entry(m, e, &to, i == 0)?;
        }
        for (rel, times) in self.dir_times.drain(..).rev() {
            let dir = open_in_root(&self.root.fd, &rel, DIR)
                .map_err(|e| FileOpError::io("open directory", shown(&rel))(e.into()))?;
            rustix::fs::futimens(&dir, &times).map_err(|e| FileOpError::io("set times of", shown(&rel))(e.into()))?;
        }
        Ok(())
    }

    fn entry(&mut self, m: &Match, e: &Entry, to: &Path, top: bool) -> Result<(), FileOpError> {
        if to.as_os_str().is_empty() {
            // Contents copied into the rootfs's `/`: it exists and keeps its metadata.
            return Ok(());
        }
        let parent_rel = parent(to);
        // Entries come parents first, by directory: consecutive entries mostly share a parent.
        let parent = match self.parent.take() {
            Some((rel, fd)) if rel == parent_rel => fd,
            _ => open_in_root(&self.root.fd, &parent_rel, DIR)
                .map_err(|e| FileOpError::io("open directory", shown(&parent_rel))(e.into()))?,
        };
        let result = self.entry_in(&parent, m, e, to, top);
        self.parent = Some((parent_rel, parent));
        result
    }

    fn entry_in(&mut self, parent: &OwnedFd, m: &Match, e: &Entry, to: &Path, top: bool) -> Result<(), FileOpError> {
        let src_rel = m.tree_path(e);
        let src_host = self.src.host.join(&src_rel);
        let meta = &e.meta;
        let name = to.file_name().unwrap_or_default();
        let io = |op: &str| FileOpError::io(op.to_owned(), shown(to));
        let existing = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(err) => return Err(io("stat")(err.into())),
        };
        let existing_dir = existing.as_ref().map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        let ft = meta.file_type();
        if ft.is_dir() {
            let created = match existing_dir {
                None => {
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(|e| io("mkdir")(e.into()))?;
                    true
                }
                Some(true) => false,
                Some(false) => return Err(FileOpError::NotADirectory(shown(to).display().to_string())),
            };
            if created || !top {
                self.set_meta(parent, name, meta, &src_host, to, false)?;
                self.dir_times.push((to.to_path_buf(), times_of(meta)));
            } else if let Some(st) = existing {
                // The existing destination keeps its metadata; writing into it must not change its times.
                let at = |s, n| Timespec { tv_sec: s, tv_nsec: n as _ };
                let times = Timestamps {
                    last_access: at(st.st_atime, st.st_atime_nsec),
                    last_modification: at(st.st_mtime, st.st_mtime_nsec),
                };
                self.dir_times.push((to.to_path_buf(), times));
            }
            return Ok(());
        }
        match existing_dir {
            Some(true) => return Err(FileOpError::ReplaceDirectory(shown(to).display().to_string())),
            Some(false) => rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(|e| io("remove")(e.into()))?,
            None => {}
        }
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).filter(|_| meta.nlink() > 1) {
                let (first_parent, first_name) = dest::open_parent(self.root, first)?;
                rustix::fs::linkat(&first_parent, first_name, parent, name, AtFlags::empty())
                    .map_err(|e| io("create hard link")(e.into()))?;
            } else {
                let mut from = self.src.open_file(&src_rel).map_err(FileOpError::io("open", &src_host))?;
                let fd = rustix::fs::openat(parent, name, create, Mode::from_raw_mode(0o600))
                    .map_err(|e| io("create file")(e.into()))?;
                let mut out = std::fs::File::from(fd);
                std::io::copy(&mut from, &mut out).map_err(io("copy into"))?;
                if meta.nlink() > 1 {
                    self.links.insert(key, to.to_path_buf());
                }
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src_host).map_err(FileOpError::io("read link", &src_host))?;
            rustix::fs::symlinkat(target.as_os_str(), parent, name).map_err(|e| io("create symlink")(e.into()))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = FileType::from_raw_mode(meta.mode());
            rustix::fs::mknodat(parent, name, kind, Mode::from_raw_mode(0o600), meta.rdev())
                .map_err(|e| io("create device")(e.into()))?;
        } else {
            // A socket: BuildKit's context transfer turns it into an empty regular file.
            rustix::fs::openat(parent, name, create, Mode::from_raw_mode(0o600))
                .map_err(|e| io("create file")(e.into()))?;
        }
        self.set_meta(parent, name, meta, &src_host, to, ft.is_symlink())?;
        rustix::fs::utimensat(parent, name, &times_of(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io("set times of")(e.into()))
    }

    /// Owner, mode (not for symlinks) and xattrs of a new entry; times are the caller's.
    fn set_meta(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &std::fs::Metadata,
        src_host: &Path,
        to: &Path,
        symlink: bool,
    ) -> Result<(), FileOpError> {
        let io = |op: &str| FileOpError::io(op.to_owned(), shown(to));
        let (uid, gid) = self.chown.unwrap_or(if self.reset_owner { (0, 0) } else { (meta.uid(), meta.gid()) });
        rustix::fs::chownat(
            parent,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io("set owner of")(e.into()))?;
        if !symlink {
            let mode = match &self.chmod {
                Some(c) => c.apply(meta.mode(), meta.is_dir()),
                None => meta.mode() & 0o7777,
            };
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| io("set mode of")(e.into()))?;
        }
        let xattrs = select::copied_xattrs(src_host)?;
        if !xattrs.is_empty() {
            let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            path.extend_from_slice(name.as_bytes());
            for (key, value) in xattrs {
                match rustix::fs::lsetxattr(&path[..], key.as_c_str(), &value, rustix::fs::XattrFlags::empty()) {
                    Ok(()) => {}
                    // fsutil's xattr error handler only logs.
                    Err(e) => {
                        tracing::warn!(path = %shown(to).display(), xattr = ?key, error = %e, "cannot copy xattr")
                    }
                }
            }
        }
        Ok(())
    }
}
