//! File actions of the build graph (COPY, ADD, WORKDIR, inline files) and the content
//! checksums that put exactly the files a COPY selects into its cache key.
//!
//! What a [`Copy`](kiln_frontend::graph::Copy) selects is decided once, by `select::select`,
//! for both [`checksum`] (the cache key) and [`apply`] (the copy): the same wildcard expansion,
//! symlink resolution, `.dockerignore`, `--exclude` and `--parents` filtering, so a cache key
//! always covers exactly the files a copy would write.
//!
//! # Confinement (DESIGN.md invariant 3)
//!
//! Reads: the path named by a COPY is resolved with `openat2(RESOLVE_IN_ROOT)` against the
//! source tree, so a symlink pointing out of the context resolves inside it (and usually to
//! nothing); file contents are opened the same way with `O_NOFOLLOW`. Symlinks inside a copied
//! directory are copied as symlinks, never followed. Directory listings and `lstat`s use host
//! paths below an already resolved directory, so they follow no symlink either (a directory
//! swapped for a symlink *while* a build reads the tree is not defended against: the context
//! is the user's own, and other stages' trees are not running anything).
//! Writes: every destination directory is opened with `RESOLVE_IN_ROOT` against the rootfs
//! (an image's `/var/run -> /run`, or a hostile `x -> /`, resolve inside the rootfs), and
//! entries are created relative to that fd by their last component only (`mkdirat`,
//! `openat(O_EXCL|O_NOFOLLOW)`, `symlinkat`, `linkat`, `mknodat`). ADD extraction does the same
//! with the extraction directory as root.
//!
//! # BuildKit semantics followed (moby/buildkit `solver/llbsolver/file/backend.go`,
//! tonistiigi/fsutil `copy/copy.go`; deliberate differences are marked)
//!
//! - Wildcards (`allow_wildcard`): the source is split at its first component with a wildcard;
//!   the part before is resolved following symlinks, the rest is matched per component with Go
//!   `filepath.Match` rules without descending into symlinks (`resolveWildcards`); matches in
//!   lexical order. A wildcard matching nothing copies nothing (the Dockerfile frontend sets
//!   `AllowEmptyWildcard`). A missing literal source fails with `"/nope": not found`.
//! - Each match is copied on its own onto the same destination (`copy.Copy` per match): a
//!   wildcard matching several files with a destination without `/` leaves the last one there,
//!   as BuildKit does (the classic builder refused).
//! - Every match is resolved following symlinks inside the tree (`rootPath(.., FollowLinks)`),
//!   so `COPY link /` copies the target's content under the link's name.
//! - A destination ending in `/` is created (with parents); otherwise its parent is. A
//!   directory source copies its contents into the destination; a file source goes into an
//!   existing directory under its own name, else becomes the destination (`prepareTargetDir`).
//!   Created directories are 0755 and owned by the `--chown` owner (root without it).
//!   *Difference:* BuildKit ≥ 0.21 (fsutil#228) gives created parents the `--chmod` mode, which
//!   makes `COPY --chmod=644 f /new/f` create an untraversable `/new` (buildkit#5943); kiln keeps
//!   0755 like BuildKit before it and Docker 20.10, the differential tests' reference.
//! - Copied entries keep mode, mtime/atime, xattrs (`user.*`, `security.capability`) and the
//!   hardlinks among them; owners are 0:0 from the build context (`reset_owner`) and kept from
//!   other trees, unless `--chown`. `--chmod` applies to every copied file and directory, not
//!   to symlinks. An existing destination directory keeps its own metadata; existing
//!   directories below it take the source's (fsutil's `overwriteTargetMetadata`). A directory
//!   over an existing non-directory, or a file over a directory, is an error as in fsutil.
//!   Sockets become empty regular files (BuildKit's context transfer does the same).
//! - `--chown=user[:group]`: see [`kiln_runner::user::resolve_owner`] (BuildKit's `readUser`:
//!   a bare numeric user gets gid = uid, a bare name its passwd group). *Difference:* an unknown
//!   name is an error instead of BuildKit's silent 0.
//! - ADD of a local file that decompresses (gzip, bzip2, xz, zstd, or none) to something with a
//!   valid first tar header extracts it into the destination (created as a directory), as
//!   BuildKit's `unpack`/`applyRootArchive`: header owners unless `--chown`, header modes and
//!   mtimes, no `--chmod`, no xattrs, `.wh.` files extracted as plain files, entries escaping
//!   the extraction root refused, device entries refused. (Docker 20.10's BuildKit kept header
//!   owners under `--chown` and created devices.)
//! - WORKDIR (`Mkdir`): `MkdirAll` with the mode; created directories owned by the stage's
//!   USER (as `llb.Mkdir(.., WithUser)`; a USER name the image does not list owns as root, as
//!   in BuildKit). `Mkfile`: written to a temp file and renamed into place, root-owned, the
//!   parent must exist.
//! - `COPY --parents` (`include_patterns`, relative to the source before the `/./` pivot): only
//!   entries matching a pattern (or below a matching directory) are copied, with the source
//!   directories leading to them; a pattern without wildcards must match (BuildKit's
//!   `RequiredPaths`). `--exclude` patterns apply to paths below each match, as fsutil's.
//!
//! `COPY --link` is applied like any copy, onto the empty filesystem the solver gives it (see
//! `solver::file::is_linked`): its layer does not depend on the root it lands on.

mod archive;
mod checksum;
mod chmod;
mod copy;
mod dest;
mod glob;
mod select;
mod statcache;

use std::io;
use std::path::{Path, PathBuf};

use kiln_frontend::dockerignore::{DockerIgnore, IgnoreError};
use kiln_frontend::graph::FileAction;

pub use checksum::checksum;
pub use statcache::StatCache;

/// A tree a COPY reads from: the build context (with its .dockerignore; files get owner 0:0
/// like BuildKit's context transfer) or another stage's / image's mounted root filesystem
/// (owners kept).
pub struct SourceTree<'a> {
    /// The directory the COPY's absolute source paths are relative to.
    pub root: &'a Path,
    /// Paths (relative to `root`) this hides, as if they were not there.
    pub ignore: Option<&'a DockerIgnore>,
    /// Copy every entry as owned by 0:0 (the build context).
    pub reset_owner: bool,
}

/// Why a file action or a checksum failed. Every variant names the path(s) involved.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// A literal COPY/ADD source does not exist in the tree (or is hidden by `.dockerignore`).
    #[error("{path:?}: not found")]
    NotFound {
        /// The source path as the COPY names it.
        path: String,
    },
    /// A checksum could not be computed; BuildKit's wording around the cause.
    #[error("failed to compute cache key: {0}")]
    CacheKey(Box<FileOpError>),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `create file`, `read directory`, …).
        op: String,
        /// The path, in the source tree or the rootfs (shown as inside it when possible).
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A source directory would be copied over an existing non-directory.
    #[error("cannot copy to non-directory: {0}")]
    NotADirectory(String),
    /// A source file would be copied over an existing directory.
    #[error("cannot replace to directory {0} with file")]
    ReplaceDirectory(String),
    /// `--chmod` is neither octal within 07777 nor a symbolic mode.
    #[error(
        "invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777, or a symbolic mode like u+x"
    )]
    InvalidChmod(String),
    /// `--chown` or the WORKDIR owner could not be resolved in the destination rootfs.
    #[error("resolving owner {spec:?} in {rootfs}: {source}")]
    Owner {
        /// The owner as written.
        spec: String,
        /// The destination rootfs whose /etc/passwd and /etc/group were read.
        rootfs: PathBuf,
        /// What went wrong.
        source: kiln_runner::user::UserError,
    },
    /// A `--exclude` pattern is malformed.
    #[error("--exclude: {0}")]
    Pattern(#[from] IgnoreError),
    /// A tar entry of an ADD archive was refused or could not be extracted.
    #[error("ADD {archive}: tar entry {entry:?}: {reason}")]
    Archive {
        /// The archive in the source tree.
        archive: String,
        /// The entry name as in the archive.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A COPY action was applied without a source tree.
    #[error("COPY of {0:?} needs a source tree")]
    NoSource(String),
    /// A path in an action is not absolute or names the root where a file is needed.
    #[error("invalid path {0:?}")]
    InvalidPath(String),
}

impl FileOpError {
    /// An I/O error with its operation and path.
    pub(crate) fn io(op: impl Into<String>, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> FileOpError {
        let (op, path) = (op.into(), path.into());
        move |source| FileOpError::Io { op, path, source }
    }
}

/// Applies one action onto `rootfs` (a mounted overlay snapshot the caller diffs afterwards).
/// `source` is the tree for [`FileAction::Copy`] (None for Mkdir/Mkfile).
pub fn apply(rootfs: &Path, action: &FileAction, source: Option<&SourceTree<'_>>) -> Result<(), FileOpError> {
    match action {
        FileAction::Copy(c) => {
            let tree = source.ok_or_else(|| FileOpError::NoSource(c.src.clone()))?;
            copy::copy(rootfs, tree, c)
        }
        FileAction::Mkdir { path, mode, make_parents, user } => dest::mkdir(rootfs, path, *mode, *make_parents, user),
        FileAction::Mkfile { path, mode, content } => dest::mkfile(rootfs, path, *mode, content.as_bytes()),
    }
}
