//! Preparing a step's rootfs: the working directory, and the mount points of what a step gets
//! only for its duration: `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, and the step's own
//! mounts ([`super::StepMount`]: `RUN --mount` binds, caches, secrets, ssh sockets, tmpfs).
//!
//! A mount needs something to mount over. Left to the OCI runtime, a missing mount point (and
//! its missing parents) would be created in the rootfs and end up in the step's layer. So they
//! are created here before the step, remembered, and removed after it, deepest first and only
//! while still empty, and the times of the pre-existing directories they were created in are
//! put back (BuildKit's `MountStubsCleaner` does the same): no trace reaches the upperdir beyond
//! a directory copied up with unchanged metadata, which the diff skips. Every path is resolved
//! with `RESOLVE_IN_ROOT`: a symlinked `/etc` in an image is followed inside the rootfs, as the
//! runtime will follow it, and never onto the host.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use super::{SandboxError, StepMount};

/// Files provided to a step by bind mounts and never part of its layer: the diff of a step must
/// skip them (they can only appear in an upperdir as a stub the runner failed to remove).
pub const STEP_ONLY_PATHS: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// Mount destinations below these are inside the runtime's own mounts (`/dev` is a tmpfs made
/// for the step): the runtime creates their mount points there, nothing reaches the rootfs.
const RUNTIME_MOUNTS: [&str; 1] = ["/dev"];

/// Whether `path` (relative to the rootfs, with or without a leading `/`) is one of
/// [`STEP_ONLY_PATHS`].
pub fn is_step_only_path(path: &Path) -> bool {
    let relative = path.strip_prefix("/").unwrap_or(path);
    STEP_ONLY_PATHS.iter().any(|p| relative == Path::new(p))
}

/// Something created in the rootfs for one step.
struct Stub {
    /// The directory it was created in.
    dir: OwnedFd,
    name: OsString,
    is_dir: bool,
    /// Its path relative to the rootfs (for messages, and to know our own directories).
    path: PathBuf,
    /// The index in [`Stubs::touched`] of its directory, unless that is a stub too.
    parent: Option<usize>,
}

/// A directory of the image something was created in, with its times before that.
struct Touched {
    dir: OwnedFd,
    path: PathBuf,
    times: Timestamps,
    /// Every stub created in it was removed again, so its times must be put back.
    intact: bool,
}

/// Mount points created for one step; removed (and the parents' times restored) on drop, also
/// when the step fails or kiln unwinds from a panic.
pub(super) struct Stubs {
    /// In creation order: parents before what is created in them.
    created: Vec<Stub>,
    touched: Vec<Touched>,
    /// The step-only files that could be provided (a dangling symlink in the image is not).
    pub provided: Vec<&'static str>,
}

impl Stub {
    /// Removes the stub if it is still what was created: an empty directory or an empty file.
    fn remove(&self) -> Result<(), Errno> {
        if self.is_dir {
            return rustix::fs::unlinkat(&self.dir, self.name.as_os_str(), AtFlags::REMOVEDIR);
        }
        let st = rustix::fs::statat(&self.dir, self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size != 0 {
            return Err(Errno::NOTEMPTY);
        }
        rustix::fs::unlinkat(&self.dir, self.name.as_os_str(), AtFlags::empty())
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        for stub in self.created.iter().rev() {
            if let Err(e) = stub.remove() {
                tracing::warn!("keeping the mount point /{} created for a step: {e}", stub.path.display());
                // Its directory really changed: its times stay as they are now.
                if let Some(i) = stub.parent {
                    self.touched[i].intact = false;
                }
            }
        }
        // Oldest last: when two paths reach one directory, the times from before any stub win.
        for touched in self.touched.iter().rev().filter(|t| t.intact) {
            if let Err(e) = rustix::fs::futimens(&touched.dir, &touched.times) {
                tracing::warn!("restoring the times of /{}: {e}", touched.path.display());
            }
        }
    }
}

impl Stubs {
    /// Before something is created in the directory `dir` at `path`: its index in `touched`
    /// (its times remembered the first time), or `None` when it is a stub itself.
    fn creating_in(&mut self, path: &Path, dir: &OwnedFd) -> Result<Option<usize>, Errno> {
        if self.created.iter().any(|s| s.path == path) {
            return Ok(None);
        }
        if let Some(i) = self.touched.iter().position(|t| t.path == path) {
            return Ok(Some(i));
        }
        let st = rustix::fs::fstat(dir)?;
        let times = Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec as _ },
            last_modification: rustix::fs::Timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec as _ },
        };
        let dir = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
        self.touched.push(Touched { dir, path: path.to_owned(), times, intact: true });
        Ok(Some(self.touched.len() - 1))
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

/// `path` made relative to the root and cleaned lexically, as Go's `filepath.Clean("/" + path)`:
/// `.` dropped, `..` removes the previous component and stops at the root.
fn clean(path: &Path) -> PathBuf {
    let mut cleaned = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => cleaned.push(name),
            Component::ParentDir => {
                cleaned.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    cleaned
}

/// The mount point of a step mount's destination `dest` as the spec and the rootfs use it: an
/// absolute, clean path that is not `/` itself.
pub(super) fn mount_point(dest: &str) -> Result<String, SandboxError> {
    let cleaned = clean(Path::new(dest));
    let invalid = |why: &str| SandboxError::Io {
        what: format!("the mount destination {dest:?} {why}"),
        source: std::io::ErrorKind::InvalidInput.into(),
    };
    if !dest.starts_with('/') {
        return Err(invalid("is not an absolute path"));
    }
    match cleaned.to_str() {
        Some("") => Err(invalid("would cover the whole rootfs")),
        Some(relative) => Ok(format!("/{relative}")),
        None => Err(invalid("is not UTF-8")),
    }
}

/// What the last component of a path to make must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Dir,
    /// Anything but a directory; created as an empty regular file.
    File,
}

/// Creates what is missing of `path` (relative to the root, clean) inside the rootfs: the
/// directories (root-owned, 0755, as BuildKit and runc make them) and the leaf as `leaf` says.
/// With `stubs`, what is created is recorded for removal. `false` when the leaf is a dangling
/// symlink (nothing is created there). An existing component of the wrong type is an error
/// naming it.
fn make_path(
    root: &OwnedFd,
    path: &Path,
    leaf: Leaf,
    mut stubs: Option<&mut Stubs>,
    what: &dyn Fn() -> String,
) -> Result<bool, SandboxError> {
    let names: Vec<_> = path.iter().collect();
    let mut prefix = PathBuf::new();
    for (i, name) in names.iter().enumerate() {
        let parent = prefix.clone();
        prefix.push(name);
        let is_leaf = i + 1 == names.len();
        let want_dir = !is_leaf || leaf == Leaf::Dir;
        let at = || format!("{}: /{}", what(), prefix.display());
        match open_in_root(root, &prefix, OFlags::PATH) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(io_err(at()))?;
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                match (want_dir, is_dir) {
                    (true, false) => return Err(io_err(at())(Errno::NOTDIR)),
                    (false, true) => return Err(io_err(at())(Errno::ISDIR)),
                    _ => continue,
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(at())(e)),
        }
        let dir = open_in_root(root, &parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(io_err(at()))?;
        let touched = match stubs.as_deref_mut() {
            Some(stubs) => stubs.creating_in(&parent, &dir).map_err(io_err(at()))?,
            None => None,
        };
        let made = if want_dir {
            rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755))
        } else {
            let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
            rustix::fs::openat(&dir, *name, flags, Mode::from_raw_mode(0o644)).map(drop)
        };
        match made {
            Ok(()) => {}
            // The name exists but did not resolve: a symlink to nowhere.
            Err(Errno::EXIST) if is_leaf => return Ok(false),
            Err(Errno::EXIST) => {
                return Err(SandboxError::Io {
                    what: format!("{} is a dangling symlink", at()),
                    source: Errno::NOENT.into(),
                });
            }
            Err(e) => return Err(io_err(at())(e)),
        }
        if let Some(stubs) = stubs.as_deref_mut() {
            let name = name.to_os_string();
            stubs.created.push(Stub { dir, name, is_dir: want_dir, path: prefix.clone(), parent: touched });
        }
    }
    Ok(true)
}

/// Creates the mount points the image lacks: of [`STEP_ONLY_PATHS`], and of `mounts` (a
/// directory, or an empty file for a bind of anything but a directory). Mounts under `/dev` or
/// under an earlier mount of the step get theirs from the runtime, on what is mounted there.
pub(super) fn create_stubs(rootfs: &Path, mounts: &[StepMount]) -> Result<Stubs, SandboxError> {
    let root = open_root(rootfs)?;
    let mut stubs = Stubs { created: Vec::new(), touched: Vec::new(), provided: Vec::new() };
    for path in STEP_ONLY_PATHS {
        let what = || format!("preparing /{path} in {}", rootfs.display());
        if make_path(&root, Path::new(path), Leaf::File, Some(&mut stubs), &what)? {
            stubs.provided.push(path);
        } else {
            // The file a dangling symlink names is the image's business: no mount.
            tracing::warn!("/{path} in {} is a dangling symlink: not provided", rootfs.display());
        }
    }
    let mut covered: Vec<String> = RUNTIME_MOUNTS.iter().map(|p| p.to_string()).collect();
    for mount in mounts {
        let (dest, leaf) = match mount {
            StepMount::Bind { source, dest, .. } => {
                let meta = std::fs::metadata(source).map_err(|source_err| SandboxError::Io {
                    what: format!("the source {} of the bind mount at {dest}", source.display()),
                    source: source_err,
                })?;
                (dest, if meta.is_dir() { Leaf::Dir } else { Leaf::File })
            }
            StepMount::Tmpfs { dest, .. } => (dest, Leaf::Dir),
        };
        let dest = mount_point(dest)?;
        if covered.iter().any(|c| Path::new(&dest).starts_with(c)) {
            continue;
        }
        let what = || format!("preparing the mount point {dest} in {}", rootfs.display());
        if !make_path(&root, &clean(Path::new(&dest)), leaf, Some(&mut stubs), &what)? {
            return Err(SandboxError::Io {
                what: format!("{}: it is a dangling symlink", what()),
                source: Errno::NOENT.into(),
            });
        }
        covered.push(dest);
    }
    Ok(stubs)
}

/// Creates the working directory `cwd` (and its parents) inside the rootfs, owned by root,
/// mode 0755, as BuildKit does; existing components are kept as they are.
pub(super) fn create_cwd(rootfs: &Path, cwd: &str) -> Result<(), SandboxError> {
    let root = open_root(rootfs)?;
    let what = || format!("creating the working directory {cwd} in {}", rootfs.display());
    // A dangling symlink as the working directory is left for the runtime to report.
    make_path(&root, &clean(Path::new(cwd)), Leaf::Dir, None, &what).map(drop)
}
