//! What a [`Copy`] selects from a [`SourceTree`]: the one place that expands wildcards,
//! resolves symlinks and applies `.dockerignore` and `--exclude`, used by both the checksum
//! and the copy.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_frontend::dockerignore::DockerIgnore;
use kiln_frontend::graph::Copy;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{FileOpError, SourceTree, glob};

/// Resolution inside a tree or rootfs, as if it were `/`.
pub(crate) const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// How often `openat2` is retried when the kernel reports a concurrent rename (`EAGAIN`).
const RESOLVE_RETRIES: usize = 16;

/// `openat2(dir, rel, flags, RESOLVE_IN_ROOT)` with the `EAGAIN` retry.
pub(crate) fn open_in_root(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            Err(Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
            result => return result,
        }
    }
}

/// The host path an fd refers to (its `/proc/self/fd` link).
pub(crate) fn fd_path(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A directory opened as a root for `RESOLVE_IN_ROOT`, with its canonical host path.
pub(crate) struct Root {
    pub(crate) fd: OwnedFd,
    pub(crate) host: PathBuf,
}

impl Root {
    /// Opens `path` as a root.
    pub(crate) fn open(path: &Path) -> Result<Root, FileOpError> {
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| FileOpError::io("open directory", path)(e.into()))?;
        let host = fd_path(&fd).map_err(FileOpError::io("resolve", path))?;
        Ok(Root { fd, host })
    }

    /// Where `rel` really is (every symlink resolved inside the root), relative to the root;
    /// `None` if it does not exist.
    pub(crate) fn resolve(&self, rel: &Path) -> Result<Option<PathBuf>, FileOpError> {
        match open_in_root(&self.fd, rel, OFlags::PATH) {
            Ok(fd) => self.relative(&fd).map(Some),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(FileOpError::io("resolve", self.host.join(rel))(e.into())),
        }
    }

    /// `rel` with every symlink resolved inside the root (continuity's `fs.RootPath`): absolute
    /// targets start again at the root, `..` stops at it, and the components after the first
    /// missing one are kept as they are. Unlike [`Root::resolve`] this also goes through
    /// dangling symlinks, so a copy can create the directories they point to, as BuildKit does.
    pub(crate) fn root_path(&self, rel: &Path) -> Result<PathBuf, FileOpError> {
        let mut pending: Vec<OsString> = rel.iter().rev().map(OsString::from).collect();
        let mut out = PathBuf::new();
        let mut links = 0;
        let mut missing = false;
        while let Some(part) = pending.pop() {
            match part.as_bytes() {
                b"" | b"." | b"/" => continue,
                b".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = out.join(&part);
            if missing {
                out = candidate;
                continue;
            }
            let host = self.host.join(&candidate);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > 255 {
                        return Err(FileOpError::io("resolve", Path::new("/").join(rel))(Errno::LOOP.into()));
                    }
                    let target = std::fs::read_link(&host).map_err(FileOpError::io("read link", &host))?;
                    if target.is_absolute() {
                        out = PathBuf::new();
                    }
                    pending.extend(target.iter().rev().map(OsString::from));
                }
                Ok(_) => out = candidate,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing = true;
                    out = candidate;
                }
                Err(e) => return Err(FileOpError::io("stat", host)(e)),
            }
        }
        Ok(out)
    }

    /// Opens the regular file at `rel` (resolved in the root, a final symlink not followed).
    pub(crate) fn open_file(&self, rel: &Path) -> std::io::Result<std::fs::File> {
        Ok(open_in_root(&self.fd, rel, OFlags::RDONLY | OFlags::NOFOLLOW).map(std::fs::File::from)?)
    }

    /// The path of `fd` (inside the root) relative to the root.
    pub(crate) fn relative(&self, fd: &OwnedFd) -> Result<PathBuf, FileOpError> {
        let path = fd_path(fd).map_err(FileOpError::io("resolve", &self.host))?;
        path.strip_prefix(&self.host).map(Path::to_path_buf).map_err(|_| {
            FileOpError::io("resolve", &path)(std::io::Error::other("resolved outside its root (moved while in use?)"))
        })
    }
}

/// One entry selected under a match.
pub(crate) struct Entry {
    /// Path relative to the match; empty for the match itself.
    pub(crate) rel: PathBuf,
    /// `lstat` of the entry (for the match: of what its path resolves to).
    pub(crate) meta: Metadata,
}

/// One source a COPY copies (a literal path, or one wildcard match).
pub(crate) struct Match {
    /// The source path as matched, absolute in the tree, before resolving symlinks: its last
    /// component names the copy in a destination directory.
    pub(crate) src: String,
    /// Where it really is, relative to the tree root (empty for the root).
    pub(crate) real: PathBuf,
    /// The match itself, then everything visible below it, parents before children, by name.
    pub(crate) entries: Vec<Entry>,
}

impl Match {
    /// The name the copy takes inside a destination directory (empty for the tree root).
    pub(crate) fn base_name(&self) -> &str {
        self.src.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }

    /// The entry's path relative to the tree root.
    pub(crate) fn tree_path(&self, entry: &Entry) -> PathBuf {
        if entry.rel.as_os_str().is_empty() { self.real.clone() } else { self.real.join(&entry.rel) }
    }
}

/// What `copy` selects from `tree`: the matches in copy order, each with its entries.
pub(crate) fn select(tree: &SourceTree<'_>, copy: &Copy) -> Result<(Root, Vec<Match>), FileOpError> {
    let root = Root::open(tree.root)?;
    let compile = |patterns: &[String], flag: &str| {
        if patterns.is_empty() { Ok(None) } else { DockerIgnore::from_patterns(patterns, flag).map(Some) }
    };
    let exclude = compile(&copy.exclude, "--exclude")?;
    let include = compile(&copy.include_patterns, "--parents")?;
    let filter = Filter { ignore: tree.ignore, exclude: exclude.as_ref(), include: include.as_ref() };
    let src = format!("/{}", copy.src.trim_start_matches('/'));
    let wildcard = copy.allow_wildcard && src.split('/').any(glob::has_wildcards);
    let sources = if wildcard { expand(&root, &filter, &src)? } else { vec![src] };
    let mut matches = Vec::new();
    for src in sources {
        let not_found = || FileOpError::NotFound { path: src.clone() };
        let rel = Path::new(src.trim_start_matches('/'));
        let real = if copy.follow_symlinks || rel.as_os_str().is_empty() {
            root.resolve(rel)?
        } else {
            let parent = rel.parent().unwrap_or(Path::new(""));
            root.resolve(parent)?.map(|p| p.join(rel.file_name().unwrap_or_default()))
        };
        let Some(real) = real else { return Err(not_found()) };
        let meta = match std::fs::symlink_metadata(root.host.join(&real)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(FileOpError::io("stat", root.host.join(&real))(e)),
        };
        let (hidden, skippable) = filter.check(&real, None);
        let mut entries = vec![Entry { rel: PathBuf::new(), meta }];
        let is_dir = entries[0].meta.is_dir();
        if hidden && (skippable || !is_dir) {
            if wildcard {
                continue;
            }
            return Err(not_found());
        }
        if is_dir {
            let any = walk(&root, &filter, &real, Path::new(""), &mut entries)?;
            if hidden && !any {
                if wildcard {
                    continue;
                }
                return Err(not_found());
            }
        }
        // BuildKit's RequiredPaths: a `--parents` path without wildcards must exist.
        if entries.len() == 1 && is_dir {
            if let Some(pattern) = copy.include_patterns.iter().find(|p| !p.split('/').any(glob::has_wildcards)) {
                return Err(FileOpError::NotFound { path: format!("{}/{pattern}", src.trim_end_matches('/')) });
            }
        }
        matches.push(Match { src, real, entries });
    }
    Ok((root, matches))
}

/// `.dockerignore` (on paths in the tree), `--exclude` and `--parents` include patterns (on
/// paths below a match). A pattern matching a directory covers everything below it, the same
/// rule for all three (patternmatcher's `MatchesOrParentMatches`).
struct Filter<'a> {
    ignore: Option<&'a DockerIgnore>,
    exclude: Option<&'a DockerIgnore>,
    include: Option<&'a DockerIgnore>,
}

impl Filter<'_> {
    /// (hidden, hidden with everything below it).
    fn check(&self, real: &Path, rel: Option<&Path>) -> (bool, bool) {
        let test = |ignore: Option<&DockerIgnore>, path: Option<&Path>| -> (bool, bool) {
            match (ignore, path) {
                (Some(i), Some(p)) => {
                    let p = p.to_string_lossy();
                    let hidden = i.is_excluded(&p);
                    (hidden, hidden && i.can_skip_dir(&p))
                }
                _ => (false, false),
            }
        };
        let (a, a_all) = test(self.ignore, Some(real));
        let (b, b_all) = test(self.exclude, rel);
        // Not (yet) included: hidden, but what is below may be, so it is walked; a directory
        // is kept only for what it leads to (fsutil creates such parents lazily).
        let outside = match (self.include, rel) {
            (Some(i), Some(p)) => !i.is_excluded(&p.to_string_lossy()),
            _ => false,
        };
        (a || b || outside, a_all || b_all)
    }
}

/// Sorted names in a directory of the tree (Go's `ReadDir` order: by bytes).
fn read_names(root: &Root, real_dir: &Path) -> Result<Vec<OsString>, FileOpError> {
    let host = root.host.join(real_dir);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&host).map_err(FileOpError::io("read directory", &host))? {
        names.push(entry.map_err(FileOpError::io("read directory", &host))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Adds the visible entries below `real_dir` (a real directory of the tree) to `out`; returns
/// whether it added any.
fn walk(
    root: &Root,
    filter: &Filter<'_>,
    real_dir: &Path,
    rel_dir: &Path,
    out: &mut Vec<Entry>,
) -> Result<bool, FileOpError> {
    let mut added = false;
    for name in read_names(root, real_dir)? {
        let real = real_dir.join(&name);
        let rel = rel_dir.join(&name);
        let meta = match std::fs::symlink_metadata(root.host.join(&real)) {
            Ok(meta) => meta,
            // Removed while we read the directory: as if it had not been there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileOpError::io("stat", root.host.join(&real))(e)),
        };
        let (hidden, skippable) = filter.check(&real, Some(&rel));
        if meta.is_dir() {
            if hidden && skippable {
                continue;
            }
            let at = out.len();
            out.push(Entry { rel: rel.clone(), meta });
            let any = walk(root, filter, &real, &rel, out)?;
            if hidden && !any {
                out.truncate(at);
            } else {
                added = true;
            }
        } else if !hidden {
            out.push(Entry { rel, meta });
            added = true;
        }
    }
    Ok(added)
}

/// Expands a wildcard source like fsutil's `ResolveWildcards`: the components before the first
/// wildcard are resolved (following symlinks), the rest matched one component at a time without
/// descending into symlinks. Returns the matched paths, unresolved, in lexical walk order.
fn expand(root: &Root, filter: &Filter<'_>, src: &str) -> Result<Vec<String>, FileOpError> {
    let comps: Vec<&str> = src.split('/').filter(|c| !c.is_empty()).collect();
    let first = comps.iter().position(|c| glob::has_wildcards(c)).unwrap_or(comps.len());
    let base = comps[..first].join("/");
    let mut out = Vec::new();
    let Some(real_base) = root.resolve(Path::new(&base))? else { return Ok(out) };
    if !root.host.join(&real_base).is_dir() {
        return Ok(out);
    }
    glob_dir(root, filter, &real_base, &format!("/{base}"), &comps[first..], &mut out)?;
    Ok(out)
}

fn glob_dir(
    root: &Root,
    filter: &Filter<'_>,
    real_dir: &Path,
    shown_dir: &str,
    patterns: &[&str],
    out: &mut Vec<String>,
) -> Result<(), FileOpError> {
    let Some((pattern, rest)) = patterns.split_first() else { return Ok(()) };
    for name in read_names(root, real_dir)? {
        let Some(text) = name.to_str() else { continue };
        if !glob::matches(pattern, text) {
            continue;
        }
        let real = real_dir.join(&name);
        let shown = format!("{}/{text}", shown_dir.trim_end_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(root.host.join(&real)) else { continue };
        let (hidden, skippable) = filter.check(&real, None);
        if hidden && (skippable || !meta.is_dir()) {
            continue;
        }
        if rest.is_empty() {
            out.push(shown);
        } else if meta.is_dir() {
            glob_dir(root, filter, &real, &shown, rest, out)?;
        }
    }
    Ok(())
}

/// Whether an xattr is copied (and hashed): user data and file capabilities. Others are the
/// host's (SELinux labels), overlayfs's, or ACLs kiln does not carry.
fn copied_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// The copied xattrs of `path` (not following a final symlink), sorted by name.
pub(crate) fn copied_xattrs(path: &Path) -> Result<Vec<(std::ffi::CString, Vec<u8>)>, FileOpError> {
    let fail = |e: Errno| FileOpError::io("read xattrs of", path)(e.into());
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let need = rustix::fs::llistxattr(path, &mut [0u8; 0][..]).map_err(fail)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(Errno::NOTSUP | Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(fail(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty() && copied_xattr(n)) {
        let Ok(cname) = std::ffi::CString::new(name) else { continue };
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value[..]) {
                Ok(n) => break n,
                Err(Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut [0u8; 0][..]).map_err(fail)?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                Err(Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(fail(e)),
            }
        };
        if n != usize::MAX {
            value.truncate(n);
            out.push((cname, value));
        }
    }
    out.sort();
    Ok(out)
}
