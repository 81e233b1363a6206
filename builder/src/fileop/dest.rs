//! The destination side: directories and files created inside a rootfs, every path resolved
//! with `RESOLVE_IN_ROOT` and every entry created relative to its parent directory's fd. Also
//! the WORKDIR (`Mkdir`) and inline file (`Mkfile`) actions.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_runner::user::UserError;
use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::FileOpError;
use super::select::{Root, open_in_root};

/// Flags of a directory fd entries are created in.
pub(crate) const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY);
/// Mode of the directories a copy creates on the way to its destination (see the module doc).
pub(crate) const CREATED_DIR_MODE: u32 = 0o755;

/// `path` as shown in errors: absolute inside the rootfs.
pub(crate) fn shown(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

/// The relative form of an absolute action path, `..` cleaned as if rooted at `/`.
pub(crate) fn relative(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolves an owner spec in `rootfs` (empty = root).
pub(crate) fn owner(rootfs: &Path, spec: &str) -> Result<(u32, u32), FileOpError> {
    kiln_runner::user::resolve_owner(rootfs, spec).map_err(|source| FileOpError::Owner {
        spec: spec.to_owned(),
        rootfs: rootfs.to_owned(),
        source,
    })
}

/// `MkdirAll` inside the root: existing components (symlinks followed inside the root) are
/// kept as they are; missing ones are created with `mode` and `owner`. Returns the directory.
pub(crate) fn mkdir_all(root: &Root, rel: &Path, owner: (u32, u32), mode: u32) -> Result<OwnedFd, FileOpError> {
    let not_dir = |p: &Path| FileOpError::io("mkdir", shown(p))(Errno::NOTDIR.into());
    match open_in_root(&root.fd, rel, DIR) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(Errno::NOTDIR) => {
            // Either `rel` itself or one of its parents is not a directory; name the first.
            let mut prefix = PathBuf::new();
            for c in rel.components() {
                prefix.push(c);
                if !matches!(open_in_root(&root.fd, &prefix, DIR), Ok(_) | Err(Errno::NOENT)) {
                    return Err(not_dir(&prefix));
                }
            }
            return Err(not_dir(rel));
        }
        Err(e) => return Err(FileOpError::io("open directory", shown(rel))(e.into())),
    }
    // Through dangling symlinks too: their targets are created, inside the root.
    let rel = &root.root_path(rel)?;
    let mut dir = open_in_root(&root.fd, Path::new(""), DIR).map_err(|e| FileOpError::io("open", "/")(e.into()))?;
    let mut prefix = PathBuf::new();
    let mut fresh = false;
    for part in rel.components() {
        prefix.push(part);
        let existing = if fresh { Err(Errno::NOENT) } else { open_in_root(&root.fd, &prefix, DIR) };
        dir = match existing {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let name = part.as_os_str();
                match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        return Err(FileOpError::io("mkdir", shown(&prefix))(std::io::Error::other(
                            "it is a symlink to a directory that does not exist",
                        )));
                    }
                    Err(e) => return Err(FileOpError::io("mkdir", shown(&prefix))(e.into())),
                }
                let fd = rustix::fs::openat(&dir, name, DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| FileOpError::io("open", shown(&prefix))(e.into()))?;
                set_owner_mode(&fd, owner, mode).map_err(FileOpError::io("set owner and mode of", shown(&prefix)))?;
                fresh = true;
                fd
            }
            Err(Errno::NOTDIR) => return Err(not_dir(&prefix)),
            Err(e) => return Err(FileOpError::io("open directory", shown(&prefix))(e.into())),
        };
    }
    Ok(dir)
}

/// chown then chmod (chown clears setuid bits).
pub(crate) fn set_owner_mode(fd: &OwnedFd, (uid, gid): (u32, u32), mode: u32) -> std::io::Result<()> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Where `rel` is inside the root (fsutil's `fs.RootPath(dstRoot, dest)`: symlinks resolved
/// inside it, dangling ones too) and, if it exists, whether it is a directory.
pub(crate) fn resolve(root: &Root, rel: &Path) -> Result<(PathBuf, Option<bool>), FileOpError> {
    let real = root.root_path(rel)?;
    match std::fs::metadata(root.host.join(&real)) {
        Ok(meta) => Ok((real, Some(meta.is_dir()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((real, None)),
        Err(e) => Err(FileOpError::io("stat", shown(&real))(e)),
    }
}

/// The parent directory (opened, resolved inside the root) and last component of `rel`.
pub(crate) fn open_parent<'p>(root: &Root, rel: &'p Path) -> Result<(OwnedFd, &'p OsStr), FileOpError> {
    let name = rel.file_name().ok_or_else(|| FileOpError::InvalidPath(shown(rel).display().to_string()))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let fd =
        open_in_root(&root.fd, parent, DIR).map_err(|e| FileOpError::io("open directory", shown(parent))(e.into()))?;
    Ok((fd, name))
}

/// WORKDIR: creates `path` (with parents when asked); created directories get `mode` and are
/// owned by `user` resolved in the rootfs, as BuildKit's `mkdir` with `WithUser`.
pub(crate) fn mkdir(rootfs: &Path, path: &str, mode: u32, make_parents: bool, user: &str) -> Result<(), FileOpError> {
    let root = Root::open(rootfs)?;
    let rel = relative(path);
    let owner = match owner(rootfs, user) {
        // BuildKit's `readUser` silently uses 0 for a USER its image does not list; a WORKDIR
        // must not fail where BuildKit builds (only `--chown` names are checked strictly).
        Err(FileOpError::Owner { source: UserError::UnknownUser { .. } | UserError::UnknownGroup { .. }, .. }) => {
            tracing::warn!(user, path, "WORKDIR owner is not in the image's /etc/passwd or /etc/group; using root");
            (0, 0)
        }
        resolved => resolved?,
    };
    if make_parents {
        return mkdir_all(&root, &rel, owner, mode & 0o777).map(drop);
    }
    let (parent, name) = open_parent(&root, &rel)?;
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        // BuildKit: an existing path is not an error.
        Err(Errno::EXIST) => return Ok(()),
        Err(e) => return Err(FileOpError::io("mkdir", shown(&rel))(e.into())),
    }
    let fd = rustix::fs::openat(&parent, name, DIR | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| FileOpError::io("open", shown(&rel))(e.into()))?;
    set_owner_mode(&fd, owner, mode & 0o777).map_err(FileOpError::io("set owner and mode of", shown(&rel)))
}

/// A unique name for a temp file beside the file being written.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(".kiln-mkfile-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// An inline file: written beside `path` and renamed over it (whatever was there is replaced,
/// never written through), root-owned, `mode`; the parent directory must exist.
pub(crate) fn mkfile(rootfs: &Path, path: &str, mode: u32, content: &[u8]) -> Result<(), FileOpError> {
    let root = Root::open(rootfs)?;
    let rel = relative(path);
    let (parent, name) = open_parent(&root, &rel)?;
    let tmp = temp_name();
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&parent, tmp.as_str(), flags, Mode::from_raw_mode(0o600))
        .map_err(|e| FileOpError::io("create file", shown(&rel))(e.into()))?;
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::from(fd);
        file.write_all(content)?;
        set_owner_mode(&file.into(), (0, 0), mode & 0o777)?;
        rustix::fs::renameat(&parent, tmp.as_str(), &parent, name)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), rustix::fs::AtFlags::empty());
        return Err(FileOpError::io("write", shown(&rel))(e));
    }
    Ok(())
}
