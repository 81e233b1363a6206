//! Preparing a step's rootfs: the working directory, and the mount points of the files a step
//! gets only for its duration (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).
//!
//! Bind-mounting a file needs a file to mount over. When the image has none, one is created
//! before the step and removed after it, and the times of the directory it was created in are
//! put back (BuildKit's `MountStubsCleaner` does the same), so no trace of it reaches the
//! upperdir beyond a directory copied up with unchanged metadata. Every path is resolved with
//! `RESOLVE_IN_ROOT`: a symlinked `/etc` in an image is followed inside the rootfs, as the runtime
//! will follow it, and never onto the host.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use super::SandboxError;

/// Files provided to a step by bind mounts and never part of its layer: the diff of a step must
/// skip them (they can only appear in an upperdir as a stub the runner failed to remove).
pub const STEP_ONLY_PATHS: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// Whether `path` (relative to the rootfs, with or without a leading `/`) is one of
/// [`STEP_ONLY_PATHS`].
pub fn is_step_only_path(path: &Path) -> bool {
    let relative = path.strip_prefix("/").unwrap_or(path);
    STEP_ONLY_PATHS.iter().any(|p| relative == Path::new(p))
}

/// Stubs created for one step; removed (and the parent's times restored) on drop, also when
/// the step fails or kiln unwinds from a panic.
pub(super) struct Stubs {
    /// (directory, name, is a directory) in creation order.
    created: Vec<(OwnedFd, String, bool)>,
    /// Directories whose times must be put back, with those times.
    touched: Vec<(OwnedFd, Timestamps)>,
    /// The step-only files that could be provided (a dangling symlink in the image is not).
    pub provided: Vec<&'static str>,
}

impl Drop for Stubs {
    fn drop(&mut self) {
        for (dir, name, is_dir) in self.created.iter().rev() {
            let flags = if *is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
            if let Err(e) = rustix::fs::unlinkat(dir, name.as_str(), flags) {
                tracing::warn!("removing the mount stub {name}: {e}");
            }
        }
        for (dir, times) in &self.touched {
            if let Err(e) = rustix::fs::futimens(dir, times) {
                tracing::warn!("restoring the times of a directory holding mount stubs: {e}");
            }
        }
    }
}

fn io_err(what: String) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Io { what, source: e.into() }
}

/// Opens `rootfs` itself.
fn open_root(rootfs: &Path) -> Result<OwnedFd, SandboxError> {
    rustix::fs::open(rootfs, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err(format!("opening the rootfs {}", rootfs.display())))
}

/// Opens `path` inside the rootfs, symlinks resolved inside it.
fn open_in_root(root: &OwnedFd, path: impl AsRef<Path>, flags: OFlags) -> Result<OwnedFd, Errno> {
    let path = path.as_ref();
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT)
}

/// Remembers `dir`'s times (once) before something is created in it.
fn remember_times(stubs: &mut Stubs, dir: &OwnedFd) -> Result<(), Errno> {
    let st = rustix::fs::fstat(dir)?;
    let times = Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec as _ },
        last_modification: rustix::fs::Timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec as _ },
    };
    stubs.touched.push((rustix::io::fcntl_dupfd_cloexec(dir, 0)?, times));
    Ok(())
}

/// Creates the mount points of [`STEP_ONLY_PATHS`] the image lacks.
pub(super) fn create_stubs(rootfs: &Path) -> Result<Stubs, SandboxError> {
    let root = open_root(rootfs)?;
    let mut stubs = Stubs { created: Vec::new(), touched: Vec::new(), provided: Vec::new() };
    for path in STEP_ONLY_PATHS {
        let what = || format!("preparing /{path} in {}", rootfs.display());
        match open_in_root(&root, path, OFlags::PATH) {
            Ok(_) => {
                stubs.provided.push(path);
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(what())(e)),
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = match open_in_root(&root, parent, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => {
                remember_times(&mut stubs, &root).map_err(io_err(what()))?;
                rustix::fs::mkdirat(&root, parent, Mode::from_raw_mode(0o755)).map_err(io_err(what()))?;
                let root_copy = root.try_clone().map_err(|source| SandboxError::Io { what: what(), source })?;
                stubs.created.push((root_copy, parent.to_owned(), true));
                open_in_root(&root, parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(io_err(what()))?
            }
            Err(e) => return Err(io_err(what())(e)),
        };
        if !stubs.touched.iter().any(|(d, _)| same_file(d, &dir)) {
            remember_times(&mut stubs, &dir).map_err(io_err(what()))?;
        }
        match rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(_) => {
                stubs.created.push((dir, name.to_owned(), false));
                stubs.provided.push(path);
            }
            // A dangling symlink: the file it names is the image's business; no mount.
            Err(Errno::EXIST) => tracing::warn!("/{path} in {} is a dangling symlink: not provided", rootfs.display()),
            Err(e) => return Err(io_err(what())(e)),
        }
    }
    Ok(stubs)
}

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (rustix::fs::fstat(a), rustix::fs::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Creates the working directory `cwd` (and its parents) inside the rootfs, owned by root,
/// mode 0755, as BuildKit does; existing components are kept as they are.
pub(super) fn create_cwd(rootfs: &Path, cwd: &str) -> Result<(), SandboxError> {
    let root = open_root(rootfs)?;
    let what = || format!("creating the working directory {cwd} in {}", rootfs.display());
    let mut prefix = PathBuf::new();
    for component in Path::new(cwd).components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::ParentDir => {
                prefix.pop();
                continue;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        let parent = prefix.clone();
        prefix.push(name);
        match open_in_root(&root, &prefix, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(what())(e)),
        }
        let dir = open_in_root(&root, &parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(io_err(what()))?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(what())(e)),
        }
    }
    Ok(())
}
