//! `RUN --mount=…`: the flag parsed with BuildKit's keys and defaults
//! (`frontend/dockerfile/instructions/commands_runmount.go`), and each mount made ready on
//! the host for one step: a filtered copy of the context or a snapshot of a stage for `bind`,
//! a persistent directory of the store for `cache` (with its `sharing` lock), a tmpfs, a
//! secret written to a private tmpfs file, a proxy of an ssh agent's socket ([`super::ssh_proxy`]).
//!
//! A cache directory is keyed as BuildKit keys its cache ref (`getRefCacheDir`: the id and
//! the ref the cache starts from): by the id alone, or with what it starts as, the content of
//! the `from=` stage (chain id and path) or the owner and mode `uid`/`gid`/`mode` ask for. So a
//! rebuilt seed stage or another uid gets a fresh cache. As in BuildKit, `uid`/`gid`/`mode` do
//! nothing when `source` is given; `source` without `from` mounts that subdirectory of the
//! cache, which must exist (BuildKit's subpath mount fails with ENOENT, it creates nothing).
//! Two mounts of one key in one step share its directory and lock. Deliberately unlike
//! BuildKit, `from=` with `source` starts the cache as that directory alone (BuildKit copies
//! the whole stage and mounts the subpath), so the source is part of the key.
//!
//! Nothing a mount provides reaches the step's layer (the runner removes the mount points it
//! had to create), and a secret's bytes reach neither the cache key (only the flag text does,
//! which names the id), nor the progress output, nor the image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use kiln_frontend::dockerignore::clean;
use kiln_frontend::graph::{Copy, Digest as VertexDigest, FileAction};
use kiln_frontend::stages::mount_fields;
use kiln_runner::sandbox::StepMount;
use kiln_runner::snapshot::Snapshot;
use kiln_store::Digest;
use kiln_store::image::{Layer, chain_ids};
use rustix::fs::{FlockOperation, Mode, OFlags, ResolveFlags, flock};

use super::Solver;
use super::ssh_proxy::SshProxy;
use crate::fileop::{self, SourceTree};

/// Where a `--secret` comes from (`kiln build --secret id=ID,src=FILE|env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of kiln's.
    Env(String),
}

/// How concurrent steps share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Everyone uses the same directory at once.
    Shared,
    /// Each concurrent user gets a directory of its own.
    Private,
    /// Users take turns.
    Locked,
}

/// The owner and mode a cache mount's directory is made with (`uid`, `gid`, `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOwner {
    /// Owner (default 0).
    pub uid: u32,
    /// Group (default 0).
    pub gid: u32,
    /// Permission bits (default 0755).
    pub mode: u32,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// `type=bind`: files of the context (no `from`), a stage or an image.
    Bind {
        /// Mount point.
        target: String,
        /// `source` inside the tree, absolute.
        source: String,
        /// The stage or image named by `from=` (`None`: the build context).
        from: Option<String>,
        /// Writes allowed (and discarded after the step).
        rw: bool,
    },
    /// `type=cache`: a directory kept in the store across builds, one per id and start
    /// (see the module docs).
    Cache {
        /// Which cache (default: the target as written, path-cleaned, as BuildKit's).
        id: String,
        /// Mount point.
        target: String,
        /// Concurrency mode.
        sharing: Sharing,
        /// The stage or image named by `from=`, whose `source` a new cache starts as.
        from: Option<String>,
        /// Absolute: with `from`, what of it the cache starts as; without, the subdirectory
        /// of the cache that is mounted.
        source: String,
        /// What a new cache directory is made with, when `uid`, `gid` or `mode` is given;
        /// `None` too when `source` is, as BuildKit ignores them then.
        owner: Option<CacheOwner>,
        /// Mounted read-only.
        ro: bool,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// Mount point.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// `type=secret`.
    Secret {
        /// The secret's id.
        id: String,
        /// Where the file goes (`None` when only `env` is asked for).
        target: Option<String>,
        /// An environment variable to expose it as.
        env: Option<String>,
        /// A missing secret is an error.
        required: bool,
        /// File mode.
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
    },
    /// `type=ssh`: an ssh agent socket.
    Ssh {
        /// Which `--ssh` (default `default`).
        id: String,
        /// Where the socket goes.
        target: String,
        /// A missing agent is an error.
        required: bool,
        /// Socket owner.
        uid: u32,
        /// Socket group.
        gid: u32,
        /// Socket mode.
        mode: u32,
    },
}

impl RunMount {
    /// Parses the value of one `--mount` flag (after variable expansion). `ssh_index` counts
    /// the step's earlier ssh mounts, for their default socket path; a relative `target` is
    /// taken from the step's working directory `cwd`, as BuildKit does.
    pub fn parse(spec: &str, ssh_index: usize, cwd: &str) -> Result<RunMount, String> {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        let mut flags: Vec<&str> = Vec::new();
        for field in mount_fields(spec) {
            match field.value {
                Some(v) => {
                    let key = match field.key.as_str() {
                        "src" | "source" => "source",
                        "dst" | "destination" | "target" => "target",
                        "readonly" | "ro" => "ro",
                        "readwrite" | "rw" => "rw",
                        "type" => "type",
                        "from" => "from",
                        "id" => "id",
                        "sharing" => "sharing",
                        "mode" => "mode",
                        "uid" => "uid",
                        "gid" => "gid",
                        "required" => "required",
                        "size" => "size",
                        "env" => "env",
                        _ => return Err(format!("unexpected key '{}' in '{}'", field.key, field.text)),
                    };
                    fields.insert(key, v);
                }
                None => match field.key.as_str() {
                    "readonly" | "ro" => flags.push("ro"),
                    "readwrite" | "rw" => flags.push("rw"),
                    "required" => flags.push("required"),
                    _ => return Err(format!("invalid field '{}' must be a key=value pair", field.text)),
                },
            }
        }
        let flag = |name: &str| -> Result<bool, String> {
            match fields.get(name) {
                Some(v) => parse_bool(v).ok_or_else(|| format!("invalid value for {name}: {v}")),
                None => Ok(flags.contains(&name)),
            }
        };
        let number = |name: &str, default: u32, radix: u32| -> Result<u32, String> {
            fields.get(name).map_or(Ok(default), |v| {
                u32::from_str_radix(v, radix).map_err(|_| format!("invalid value for {name}: {v}"))
            })
        };
        let target = fields.get("target").map(|t| match t.starts_with('/') {
            true => clean(t),
            false => clean(&format!("{cwd}/{t}")),
        });
        let kind = fields.get("type").copied().unwrap_or("bind").to_ascii_lowercase();
        // BuildKit refuses `/` for the mounts that take the place of a directory.
        let need_target = || match &target {
            None => Err(format!("mount type={kind} requires a target")),
            Some(t) if t == "/" => Err(format!("invalid mount target {t:?}")),
            Some(t) => Ok(t.clone()),
        };
        let from = fields.get("from").filter(|f| !f.is_empty()).map(|f| f.to_string());
        let allowed: &[&str] = match kind.as_str() {
            "bind" => &["type", "target", "source", "from", "ro", "rw"],
            "cache" => &["type", "target", "source", "from", "ro", "rw", "id", "sharing", "mode", "uid", "gid"],
            "tmpfs" => &["type", "target", "size"],
            "secret" => &["type", "target", "source", "id", "env", "required", "mode", "uid", "gid"],
            "ssh" => &["type", "target", "id", "required", "mode", "uid", "gid"],
            other => return Err(format!("unsupported mount type {other:?} (bind, cache, tmpfs, secret, ssh)")),
        };
        if let Some(key) = fields.keys().chain(flags.iter()).find(|k| !allowed.contains(k)) {
            return Err(format!("option {key:?} is not valid for mount type={kind}"));
        }
        let source = clean(&format!("/{}", fields.get("source").copied().unwrap_or("/")));
        Ok(match kind.as_str() {
            "bind" => RunMount::Bind { target: need_target()?, source, from, rw: flag("rw")? && !flag("ro")? },
            "cache" => {
                let target = need_target()?;
                let owner = CacheOwner {
                    uid: number("uid", 0, 10)?,
                    gid: number("gid", 0, 10)?,
                    mode: number("mode", 0o755, 8)?,
                };
                // BuildKit: `if src != "/" { SourcePath(src) } else if uid/gid/mode { Mkdir }`.
                let owned = source == "/" && ["uid", "gid", "mode"].iter().any(|k| fields.contains_key(k));
                RunMount::Cache {
                    // BuildKit's default id is `path.Clean` of the target as written (not
                    // joined to the working directory).
                    id: match fields.get("id").filter(|id| !id.is_empty()) {
                        Some(id) => id.to_string(),
                        None => clean(fields.get("target").copied().unwrap_or_default()),
                    },
                    sharing: fields.get("sharing").map_or(Ok(Sharing::Shared), |v| parse_sharing(v))?,
                    target,
                    from,
                    source,
                    owner: owned.then_some(owner),
                    ro: flag("ro")?,
                }
            }
            "tmpfs" => {
                RunMount::Tmpfs { target: need_target()?, size: fields.get("size").map(|s| parse_size(s)).transpose()? }
            }
            "secret" => {
                // BuildKit (`convert_secrets.go`): `source` names the secret as `id` does, and
                // the target's base name does when neither is given.
                let id = match (fields.get("id"), fields.get("source"), &target) {
                    (Some(_), Some(_), _) => return Err("both source and id can't be set".to_owned()),
                    (Some(id), None, _) | (None, Some(id), _) => id.to_string(),
                    (None, None, Some(t)) => base_name(t).to_owned(),
                    (None, None, None) => return Err("secret mount requires an id, a source or a target".to_owned()),
                };
                let env = fields.get("env").map(|e| e.to_string());
                let target = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
                };
                RunMount::Secret {
                    id,
                    target,
                    env,
                    required: flag("required")?,
                    mode: number("mode", 0o400, 8)?,
                    uid: number("uid", 0, 10)?,
                    gid: number("gid", 0, 10)?,
                }
            }
            _ => RunMount::Ssh {
                id: fields.get("id").map_or_else(|| "default".to_owned(), |s| s.to_string()),
                target: target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}")),
                required: flag("required")?,
                // BuildKit's defaults (`convert_ssh.go`): root's, 0600.
                uid: number("uid", 0, 10)?,
                gid: number("gid", 0, 10)?,
                mode: number("mode", 0o600, 8)?,
            },
        })
    }

    /// For a `bind` of the build context: the COPY that selects the same files, so the
    /// step's cache key covers exactly them and the mount is filled the same way.
    pub fn context_selection(&self) -> Option<Copy> {
        let RunMount::Bind { source, from: None, .. } = self else { return None };
        Some(copy_of(source, "/mount"))
    }
}

/// A COPY of `source` (a file, or a directory's contents) to `dest`, for filling mounts.
/// Its `from` is a placeholder: [`fileop`] reads the tree it is handed.
fn copy_of(source: &str, dest: &str) -> Copy {
    Copy {
        from: VertexDigest::of_bytes(b"mount source"),
        src: source.to_owned(),
        dest: dest.to_owned(),
        chown: None,
        chmod: None,
        link: false,
        include_patterns: Vec::new(),
        exclude: Vec::new(),
        allow_wildcard: false,
        dir_contents_only: true,
        follow_symlinks: true,
        attempt_unpack: false,
    }
}

/// A `sharing=` value (case-insensitive, as BuildKit's).
fn parse_sharing(v: &str) -> Result<Sharing, String> {
    match v.to_ascii_lowercase().as_str() {
        "shared" => Ok(Sharing::Shared),
        "private" => Ok(Sharing::Private),
        "locked" => Ok(Sharing::Locked),
        _ => Err(format!("unsupported sharing value {v:?} (shared, private, locked)")),
    }
}

/// The last element of `path`, as Go's `path.Base` gives it (BuildKit names secrets with it):
/// trailing slashes ignored, `/` for only slashes, `.` for nothing.
fn base_name(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit_once('/').map_or(trimmed, |(_, last)| last)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

/// `64m`, `1g`, `512k`, `4096` (binary multiples, like docker's `RAMInBytes`): tmpfs sizes
/// here, and `--memory` of `kiln build` and `kiln run`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        _ => (lower, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Where the `RUN --mount=type=cache` directories of the store at `root` live.
fn cache_mounts_dir(root: &Path) -> PathBuf {
    root.join("cache-mounts")
}

/// One `RUN --mount=type=cache` id of a store, as `kiln prune` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountUsage {
    /// The mount's id.
    pub id: String,
    /// Bytes of file content in all its directories (every start and private instance).
    pub bytes: u64,
}

/// The cache mounts of the store at `root`, sorted by id: each id once, however many
/// directories it has (one per start and per private instance, each named by its `.id` file).
pub fn list_cache_mounts(root: &Path) -> std::io::Result<Vec<CacheMountUsage>> {
    let entries = match fs::read_dir(cache_mounts_dir(root)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "id") {
            let id = fs::read_to_string(&path)?;
            *bytes.entry(id).or_default() += kiln_store::gc::tree_size(&path.with_extension(""));
        }
    }
    Ok(bytes.into_iter().map(|(id, bytes)| CacheMountUsage { id, bytes }).collect())
}

/// Removes every cache mount directory of the store at `root` (the caller holds the store
/// exclusively, so no step uses one); returns what they were, as [`list_cache_mounts`] does.
pub fn remove_cache_mounts(root: &Path) -> std::io::Result<Vec<CacheMountUsage>> {
    let removed = list_cache_mounts(root)?;
    match fs::remove_dir_all(cache_mounts_dir(root)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(removed),
    }
}

/// What one step's mounts hold on the host until the step is over: snapshots, temp dirs,
/// open fds, cache locks and ssh agent proxies. Dropping it releases them.
#[derive(Default)]
pub(super) struct Prepared {
    /// The runner's view.
    pub mounts: Vec<StepMount>,
    /// `KEY=value` of secrets exposed as environment variables.
    pub secret_env: Vec<String>,
    /// Extra environment (`SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    pub(super) snapshots: Vec<Snapshot>,
    temp_dirs: Vec<tempfile::TempDir>,
    ssh_proxies: Vec<SshProxy>,
    fds: Vec<OwnedFd>,
    locks: Vec<File>,
}

impl Prepared {
    /// Removes the snapshots it mounted (temp dirs, fds, locks and proxies go on drop).
    pub(super) fn cleanup(&mut self) {
        for snapshot in self.snapshots.drain(..) {
            if let Err(e) = snapshot.cleanup() {
                tracing::warn!("removing a mount's snapshot: {e}");
            }
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// An `O_PATH` fd of what `rel` names inside `root`, resolved there (symlinks cannot lead
/// out of `root`); `None` when it does not exist.
fn resolve_in(root: &Path, rel: &str) -> Result<Option<OwnedFd>, String> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening {}: {e}", root.display()))?;
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    match rustix::fs::openat2(&dir, rel, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(format!("{rel}: {e}")),
    }
}

/// A path of the host naming what `rel` names inside `root`, resolved there (symlinks
/// cannot lead out of `root`), valid while the returned fd is open.
fn confined(root: &Path, rel: &str) -> Result<(OwnedFd, PathBuf), String> {
    let fd = resolve_in(root, rel)?.ok_or_else(|| format!("{rel}: {}", rustix::io::Errno::NOENT))?;
    let path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()));
    Ok((fd, path))
}

/// The layers of the vertex a mount's `from=` names. The frontend resolves every `from`, so
/// a name without a vertex is an inconsistent graph: an error, never the build context.
fn from_layers<'a>(name: Option<&str>, layers: Option<&'a [Layer]>) -> Result<Option<&'a [Layer]>, String> {
    match (name, layers) {
        (Some(name), None) => Err(format!("from={name} names no stage or image of the build graph")),
        (_, layers) => Ok(layers),
    }
}

/// What a new cache mount directory starts as. BuildKit keys a cache by its id and the ref
/// it starts from (`getRefCacheDir`: `id`, or `id:ref`), so each start is a cache of its own.
#[derive(Debug, Clone, Copy)]
enum Seed<'a> {
    /// An empty directory, 0:0 mode 0755: the cache of the id alone.
    Empty,
    /// An empty directory with this owner and mode (BuildKit mounts a Mkdir of scratch).
    Owned(CacheOwner),
    /// A copy of the directory `path` of `layers` (with its owner and mode). With `mkdir`,
    /// `path` is BuildKit's `/cache`, made with that owner when the stage lacks it.
    Copy { layers: &'a [Layer], path: &'a str, mkdir: Option<CacheOwner> },
}

impl<'a> Seed<'a> {
    /// The start of cache mount `from`+`source`+`owner` (as parsed), and the subdirectory of
    /// the cache that is mounted. A `from` without layers (`FROM scratch`) is no start at
    /// all, as BuildKit's scratch ref is nil.
    fn of(layers: Option<&'a [Layer]>, source: &'a str, owner: Option<CacheOwner>) -> (Seed<'a>, &'a str) {
        match (layers.filter(|l| !l.is_empty()), owner) {
            (Some(layers), _) if source != "/" => (Seed::Copy { layers, path: source, mkdir: None }, "/"),
            (Some(layers), mkdir) => {
                (Seed::Copy { layers, path: if mkdir.is_some() { "/cache" } else { "/" }, mkdir }, "/")
            }
            (None, Some(owner)) => (Seed::Owned(owner), "/"),
            (None, None) => (Seed::Empty, source),
        }
    }

    /// What names the start next to the id; `None` for the id alone, whose directory is
    /// named as before starts were told apart.
    fn identity(&self) -> Option<String> {
        let owner = |o: &CacheOwner| format!("{}:{}:{:o}", o.uid, o.gid, o.mode);
        match self {
            Seed::Empty => None,
            Seed::Owned(o) => Some(owner(o)),
            Seed::Copy { layers, path, mkdir } => {
                let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
                let chain = chain_ids(&diff_ids).pop().map(|c| c.to_string()).unwrap_or_default();
                Some(match mkdir {
                    Some(o) => format!("{chain}:{path}:{}", owner(o)),
                    None => format!("{chain}:{path}"),
                })
            }
        }
    }
}

impl Solver {
    /// The store directory of cache mount `id` starting as `seed` (instance 0 of private
    /// sharing): sha256 of the id, or of `id:identity`.
    fn cache_mount_dir(&self, id: &str, seed: &Seed<'_>) -> PathBuf {
        let key = match seed.identity() {
            Some(identity) => format!("{id}:{identity}"),
            None => id.to_owned(),
        };
        cache_mounts_dir(self.store.root()).join(Digest::of(key.as_bytes()).hex())
    }

    /// Makes every `--mount` of a step ready. `flags` are the flags with the vertex their
    /// `from=` names, solved.
    pub(super) fn prepare_mounts(&self, flags: &[(RunMount, Option<Vec<Layer>>)]) -> Result<Prepared, String> {
        let mut out = Prepared::default();
        // The directory each cache key got in this step: BuildKit hands one exec the same
        // ref for every mount of a key, so a second mount must not wait for the first's lock.
        let mut caches: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for (mount, layers) in flags {
            match mount {
                RunMount::Bind { target, source, from, rw } => {
                    let dir = match from_layers(from.as_deref(), layers.as_deref())? {
                        Some(layers) => {
                            let snapshot = self.prepare(layers)?;
                            let (fd, path) = confined(snapshot.rootfs(), source)?;
                            out.snapshots.push(snapshot);
                            out.fds.push(fd);
                            path
                        }
                        None => {
                            // A filtered copy: .dockerignore'd files must stay invisible.
                            let tmp = self.temp_dir("bind-")?;
                            let copy = copy_of(source, "/mount");
                            fileop::apply(tmp.path(), &FileAction::Copy(copy), Some(&self.context_tree()))
                                .map_err(|e| e.to_string())?;
                            let path = tmp.path().join("mount");
                            out.temp_dirs.push(tmp);
                            path
                        }
                    };
                    out.mounts.push(StepMount::Bind { source: dir, dest: target.clone(), readonly: !rw });
                }
                RunMount::Cache { id, target, sharing, from, source, owner, ro } => {
                    let (seed, mounted) = Seed::of(from_layers(from.as_deref(), layers.as_deref())?, source, *owner);
                    let base = self.cache_mount_dir(id, &seed);
                    let dir = match caches.get(&base) {
                        Some(dir) => dir.clone(),
                        None => {
                            let (dir, lock) = self.cache_mount(id, &base, *sharing, seed)?;
                            out.locks.extend(lock);
                            caches.insert(base, dir.clone());
                            dir
                        }
                    };
                    let dir = if mounted == "/" {
                        dir
                    } else {
                        // Like BuildKit's mount of a subpath, a missing one is an error, not created.
                        let (fd, path) = confined(&dir, mounted).map_err(|e| format!("cache mount {id}: {e}"))?;
                        out.fds.push(fd);
                        path
                    };
                    out.mounts.push(StepMount::Bind { source: dir, dest: target.clone(), readonly: *ro });
                }
                RunMount::Tmpfs { target, size } => {
                    out.mounts.push(StepMount::Tmpfs { dest: target.clone(), size: *size });
                }
                RunMount::Secret { id, target, env, required, mode, uid, gid } => {
                    let Some(value) = self.secret(id)? else {
                        if *required {
                            return Err(format!("secret {id} not found: pass it with --secret id={id},src=FILE"));
                        }
                        continue;
                    };
                    if let Some(name) = env {
                        let text = String::from_utf8(value.clone()).map_err(|_| {
                            format!("secret {id} is not UTF-8 text and cannot be an environment variable")
                        })?;
                        out.secret_env.push(format!("{name}={text}"));
                    }
                    if let Some(target) = target {
                        let dir = self.secret_dir()?;
                        let path = dir.path().join("secret");
                        fs::write(&path, &value).map_err(|e| format!("writing secret {id}: {e}"))?;
                        chown(&path, Some(*uid), Some(*gid)).map_err(|e| format!("secret {id}: {e}"))?;
                        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                            .map_err(|e| format!("secret {id}: {e}"))?;
                        out.temp_dirs.push(dir);
                        out.mounts.push(StepMount::Bind { source: path, dest: target.clone(), readonly: true });
                    }
                }
                RunMount::Ssh { id, target, required, uid, gid, mode } => {
                    let Some(agent) = self.options.ssh.get(id) else {
                        if *required {
                            return Err(format!("no ssh agent {id:?}: pass it with --ssh {id}=SOCKET"));
                        }
                        continue;
                    };
                    // A socket of the step's own: its owner and mode are the mount's, and
                    // nothing the step does to it reaches the host's agent socket.
                    let proxy = SshProxy::start(self.temp_dir("ssh-")?, agent, *uid, *gid, *mode)
                        .map_err(|e| format!("ssh agent {id:?}: {e}"))?;
                    let socket = proxy.socket().to_owned();
                    out.ssh_proxies.push(proxy);
                    out.mounts.push(StepMount::Bind { source: socket, dest: target.clone(), readonly: false });
                    if !out.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        out.env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// A temp dir in the store (removed by `kiln prune` if kiln dies before it does).
    fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, String> {
        let tmp = self.store.blobs().tmp_dir();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .map_err(|e| format!("creating a temp dir in {}: {e}", tmp.display()))
    }

    /// A private directory for one secret file, on a tmpfs when `/dev/shm` is one, so the
    /// secret never touches a disk.
    fn secret_dir(&self) -> Result<tempfile::TempDir, String> {
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::Builder::new().prefix("kiln-secret-").tempdir_in(base)
        } else {
            tempfile::Builder::new().prefix("kiln-secret-").tempdir()
        }
        .map_err(|e| format!("creating a secret directory: {e}"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("creating a secret directory: {e}"))?;
        Ok(dir)
    }

    /// The bytes of secret `id`, if the build was given it.
    fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        match self.options.secrets.get(id) {
            Some(SecretSource::File(path)) => {
                fs::read(path).map(Some).map_err(|e| format!("reading secret {id} from {}: {e}", path.display()))
            }
            Some(SecretSource::Env(var)) => Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes())),
            None => Ok(None),
        }
    }

    /// The directory of cache mount `id` whose instance 0 is `base`, made from `seed` on
    /// first use, and the lock that makes `sharing` hold while the step runs.
    fn cache_mount(
        &self,
        id: &str,
        base: &Path,
        sharing: Sharing,
        seed: Seed<'_>,
    ) -> Result<(PathBuf, Option<File>), String> {
        let (dir, lock) = match sharing {
            Sharing::Shared => (base.to_owned(), self.lock_cache(id, base, false, true)?),
            Sharing::Locked => (base.to_owned(), self.lock_cache(id, base, true, true)?),
            Sharing::Private => {
                // The first instance nobody holds, or a new one.
                let mut n = 0;
                loop {
                    let mut dir = base.as_os_str().to_owned();
                    if n > 0 {
                        dir.push(format!("-{n}"));
                    }
                    let dir = PathBuf::from(dir);
                    if let Some(lock) = self.lock_cache(id, &dir, true, false)? {
                        break (dir, Some(lock));
                    }
                    n += 1;
                }
            }
        };
        if !dir.exists() {
            self.new_cache_dir(id, &dir, seed)?;
        }
        Ok((dir, lock))
    }

    /// Locks the cache directory `dir` (shared or `exclusive`). When another build holds it,
    /// `None` unless `wait`; waiting polls, as BuildKit's locked sharing does, so that a
    /// cancelled build stops waiting, and says once what it waits for.
    fn lock_cache(&self, id: &str, dir: &Path, exclusive: bool, wait: bool) -> Result<Option<File>, String> {
        let path = dir.with_extension("lock");
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let op =
            if exclusive { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::NonBlockingLockShared };
        let mut told = false;
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(Some(file)),
                Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(None),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if self.cancel.is_cancelled() {
                        return Err(format!("waiting for cache mount {id}: cancelled"));
                    }
                    if !told {
                        tracing::warn!("waiting for cache mount {id:?}: another build is using it");
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("locking {}: {e}", path.display())),
            }
        }
    }

    /// Makes the directory `dir` of cache mount `id`, as `seed` says, whole or not at all.
    fn new_cache_dir(&self, id: &str, dir: &Path, seed: Seed<'_>) -> Result<(), String> {
        let parent = dir.parent().ok_or("cache mount directory has no parent")?;
        let new = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(parent)
            .map_err(|e| format!("creating cache mount {id}: {e}"))?;
        let owner = match seed {
            Seed::Empty => CacheOwner { uid: 0, gid: 0, mode: 0o755 },
            Seed::Owned(owner) => owner,
            Seed::Copy { layers, path, mkdir } => {
                let snapshot = self.prepare(layers)?;
                let copied = copy_seed(snapshot.rootfs(), path, mkdir, new.path());
                if let Err(e) = snapshot.cleanup() {
                    tracing::warn!("removing a cache seed snapshot: {e}");
                }
                copied.map_err(|e| format!("seeding cache mount {id} from {path}: {e}"))?
            }
        };
        chown(new.path(), Some(owner.uid), Some(owner.gid)).map_err(|e| format!("cache mount {id}: {e}"))?;
        fs::set_permissions(new.path(), fs::Permissions::from_mode(owner.mode))
            .map_err(|e| format!("cache mount {id}: {e}"))?;
        // Named for `kiln prune`'s report.
        fs::write(dir.with_extension("id"), id).map_err(|e| format!("cache mount {id}: {e}"))?;
        let new = new.keep();
        if let Err(e) = fs::rename(&new, dir) {
            // Another build created it first: use theirs.
            let _ = fs::remove_dir_all(&new);
            if !dir.exists() {
                return Err(format!("creating cache mount {id}: {e}"));
            }
        }
        Ok(())
    }
}

/// Copies the directory `path` of `rootfs` into `dest`; returns its owner and mode, which
/// the cache directory takes. A missing `path` is an error, unless `mkdir` says to make it
/// (BuildKit's Mkdir `/cache` for uid/gid/mode on a stage, a no-op when it exists).
fn copy_seed(rootfs: &Path, path: &str, mkdir: Option<CacheOwner>, dest: &Path) -> Result<CacheOwner, String> {
    let fd = match (resolve_in(rootfs, path)?, mkdir) {
        (Some(fd), _) => fd,
        (None, Some(owner)) => return Ok(owner),
        (None, None) => return Err(format!("{}", rustix::io::Errno::NOENT)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
    if !rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir() {
        return Err("not a directory".to_owned());
    }
    let tree = SourceTree { root: rootfs, ignore: None, reset_owner: false };
    fileop::apply(dest, &FileAction::Copy(copy_of(path, "/")), Some(&tree)).map_err(|e| e.to_string())?;
    Ok(CacheOwner { uid: stat.st_uid, gid: stat.st_gid, mode: stat.st_mode & 0o7777 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_buildkit() {
        assert_eq!(
            RunMount::parse("type=cache,target=/root/.cache", 0, "/").unwrap(),
            RunMount::Cache {
                id: "/root/.cache".into(),
                target: "/root/.cache".into(),
                sharing: Sharing::Shared,
                from: None,
                source: "/".into(),
                owner: None,
                ro: false
            }
        );
        assert_eq!(
            RunMount::parse("target=src,source=app,rw", 0, "/work").unwrap(),
            RunMount::Bind { target: "/work/src".into(), source: "/app".into(), from: None, rw: true }
        );
        assert!(matches!(
            RunMount::parse("type=cache,target=/root/.cache", 0, "/work").unwrap(),
            RunMount::Cache { target, .. } if target == "/root/.cache"
        ));
        assert_eq!(
            RunMount::parse("type=secret,id=tok", 0, "/").unwrap(),
            RunMount::Secret {
                id: "tok".into(),
                target: Some("/run/secrets/tok".into()),
                env: None,
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            }
        );
        assert!(matches!(
            RunMount::parse("type=secret,id=tok,env=TOKEN,required", 0, "/").unwrap(),
            RunMount::Secret { target: None, required: true, .. }
        ));
        assert_eq!(
            RunMount::parse("type=tmpfs,target=/t,size=64m", 0, "/").unwrap(),
            RunMount::Tmpfs { target: "/t".into(), size: Some(64 << 20) }
        );
        // Keys and the sharing value in any case; `From=` names the stage.
        assert_eq!(
            RunMount::parse("Type=Cache,TARGET=/c,From=seed,Source=sub,Sharing=LOCKED,uid=7", 0, "/").unwrap(),
            RunMount::Cache {
                id: "/c".into(),
                target: "/c".into(),
                sharing: Sharing::Locked,
                from: Some("seed".into()),
                source: "/sub".into(),
                // uid/gid/mode do not apply to a source, as in BuildKit.
                owner: None,
                ro: false
            }
        );
        let cache = |spec: &str| match RunMount::parse(spec, 0, "/work").unwrap() {
            RunMount::Cache { id, owner, .. } => (id, owner),
            other => panic!("{spec}: {other:?}"),
        };
        // The default id is the cleaned target as written, so `/x/` and `/x` share a cache.
        assert_eq!(cache("type=cache,target=/x/").0, "/x");
        assert_eq!(cache("type=cache,target=./rel/").0, "rel");
        assert_eq!(cache("type=cache,target=/x,id=").0, "/x");
        // Any of uid/gid/mode makes an owner, with the others' defaults, even when equal to them.
        assert_eq!(cache("type=cache,target=/x,gid=5").1, Some(CacheOwner { uid: 0, gid: 5, mode: 0o755 }));
        assert_eq!(cache("type=cache,target=/x,uid=0").1, Some(CacheOwner { uid: 0, gid: 0, mode: 0o755 }));
        assert_eq!(cache("type=cache,target=/x,source=/,mode=700").1, Some(CacheOwner { uid: 0, gid: 0, mode: 0o700 }));
        for (bad, why) in [
            ("type=volume,target=/x", "unsupported mount type"),
            ("type=cache,target=/x,bogus=1", "unexpected key 'bogus'"),
            ("type=tmpfs,target=/x,id=a", "not valid for mount type=tmpfs"),
            ("type=cache", "requires a target"),
            ("type=cache,target=/x,sharing=sometimes", "unsupported sharing value \"sometimes\""),
            ("type=cache,target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
            ("type=cache,target=/", "invalid mount target \"/\""),
            ("type=bind,target=.", "invalid mount target \"/\""),
            ("type=tmpfs,target=/x/..", "invalid mount target \"/\""),
            ("type=cache,target=/x,mode=999", "invalid value for mode"),
        ] {
            let err = RunMount::parse(bad, 0, "/").unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_secrets_and_ssh_like_buildkit() {
        let secret = |spec: &str| match RunMount::parse(spec, 0, "/work").unwrap() {
            RunMount::Secret { id, target, .. } => (id, target),
            other => panic!("{spec}: {other:?}"),
        };
        // `source` is the id when no id is given (convert_secrets.go).
        assert_eq!(secret("type=secret,src=tok"), ("tok".into(), Some("/run/secrets/tok".into())));
        assert_eq!(secret("type=secret,source=tok,target=/t"), ("tok".into(), Some("/t".into())));
        // The default target is /run/secrets/ + path.Base(id); no id: the target's base.
        assert_eq!(secret("type=secret,id=team/aws"), ("team/aws".into(), Some("/run/secrets/aws".into())));
        assert_eq!(secret("type=secret,target=conf/key.pem"), ("key.pem".into(), Some("/work/conf/key.pem".into())));
        assert_eq!(secret("type=secret,id=tok,env=TOKEN"), ("tok".into(), None));
        for (bad, why) in [
            ("type=secret,id=a,source=b", "both source and id can't be set"),
            ("type=secret", "requires an id, a source or a target"),
            ("type=ssh,source=/x", "not valid for mount type=ssh"),
        ] {
            let err = RunMount::parse(bad, 0, "/").unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // ssh: BuildKit's defaults, root's socket with mode 0600; uid/gid/mode as given.
        assert_eq!(
            RunMount::parse("type=ssh", 1, "/").unwrap(),
            RunMount::Ssh {
                id: "default".into(),
                target: "/run/buildkit/ssh_agent.1".into(),
                required: false,
                uid: 0,
                gid: 0,
                mode: 0o600
            }
        );
        assert_eq!(
            RunMount::parse("type=ssh,id=git,target=/a.sock,uid=1000,gid=1001,mode=0660,required", 0, "/").unwrap(),
            RunMount::Ssh {
                id: "git".into(),
                target: "/a.sock".into(),
                required: true,
                uid: 1000,
                gid: 1001,
                mode: 0o660
            }
        );
        assert_eq!((base_name(""), base_name("///"), base_name("a/b//"), base_name("c")), (".", "/", "b", "c"));
    }
}
