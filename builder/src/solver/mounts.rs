//! `RUN --mount=…`: the flag parsed with BuildKit's keys and defaults
//! (`frontend/dockerfile/instructions/commands_runmount.go`), and each mount made ready on
//! the host for one step: a filtered copy of the context or a snapshot of a stage for `bind`,
//! a persistent directory of the store for `cache` (with its `sharing` lock), a tmpfs, a
//! secret written to a private tmpfs file, an ssh agent socket.
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
use kiln_runner::sandbox::StepMount;
use kiln_runner::snapshot::Snapshot;
use kiln_store::Digest;
use rustix::fs::{FlockOperation, Mode, OFlags, ResolveFlags, flock};

use super::Solver;
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

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// `type=bind`: files of the context (no `from`), a stage or an image.
    Bind {
        /// Mount point.
        target: String,
        /// `source` inside the tree, absolute.
        source: String,
        /// Writes allowed (and discarded after the step).
        rw: bool,
    },
    /// `type=cache`: a directory kept in the store across builds.
    Cache {
        /// Which cache (default: the target).
        id: String,
        /// Mount point.
        target: String,
        /// Concurrency mode.
        sharing: Sharing,
        /// What seeds a new cache when `from` is given, absolute.
        source: String,
        /// Owner and mode of a new cache directory.
        uid: u32,
        /// Group of a new cache directory.
        gid: u32,
        /// Mode of a new cache directory.
        mode: u32,
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
    },
}

impl RunMount {
    /// Parses the value of one `--mount` flag (after variable expansion). `ssh_index` counts
    /// the step's earlier ssh mounts, for their default socket path; a relative `target` is
    /// taken from the step's working directory `cwd`, as BuildKit does.
    pub fn parse(spec: &str, ssh_index: usize, cwd: &str) -> Result<RunMount, String> {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        let mut flags: Vec<&str> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k, v)) => {
                    let key = match k.to_ascii_lowercase().as_str() {
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
                        _ => return Err(format!("unexpected key '{k}' in '{part}'")),
                    };
                    fields.insert(key, v);
                }
                None => match part.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => flags.push("ro"),
                    "readwrite" | "rw" => flags.push("rw"),
                    "required" => flags.push("required"),
                    _ => return Err(format!("unexpected key '{part}' in '{spec}'")),
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
        let need_target = || target.clone().ok_or_else(|| format!("mount type={kind} requires a target"));
        let allowed: &[&str] = match kind.as_str() {
            "bind" => &["type", "target", "source", "from", "ro", "rw"],
            "cache" => &["type", "target", "source", "from", "ro", "rw", "id", "sharing", "mode", "uid", "gid"],
            "tmpfs" => &["type", "target", "size"],
            "secret" => &["type", "target", "id", "env", "required", "mode", "uid", "gid"],
            // BuildKit's uid/gid/mode for ssh need a proxy socket kiln does not make yet.
            "ssh" => &["type", "target", "id", "required"],
            other => return Err(format!("unsupported mount type {other:?} (bind, cache, tmpfs, secret, ssh)")),
        };
        if let Some(key) = fields.keys().chain(flags.iter()).find(|k| !allowed.contains(k)) {
            return Err(format!("option {key:?} is not valid for mount type={kind}"));
        }
        let source = clean(&format!("/{}", fields.get("source").copied().unwrap_or("/")));
        Ok(match kind.as_str() {
            "bind" => RunMount::Bind { target: need_target()?, source, rw: flag("rw")? && !flag("ro")? },
            "cache" => {
                let target = need_target()?;
                if fields.contains_key("source") && !fields.contains_key("from") {
                    return Err("source= on a cache mount needs from= (a subdirectory of the cache itself is not supported yet)".to_owned());
                }
                RunMount::Cache {
                    // BuildKit's default id is the target as written.
                    id: fields.get("id").or(fields.get("target")).map_or_else(|| target.clone(), |s| s.to_string()),
                    sharing: match fields.get("sharing").copied().unwrap_or("shared") {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        other => return Err(format!("unrecognized sharing {other:?} (shared, private, locked)")),
                    },
                    target,
                    source,
                    uid: number("uid", 0, 10)?,
                    gid: number("gid", 0, 10)?,
                    mode: number("mode", 0o755, 8)?,
                    ro: flag("ro")?,
                }
            }
            "tmpfs" => {
                RunMount::Tmpfs { target: need_target()?, size: fields.get("size").map(|s| parse_size(s)).transpose()? }
            }
            "secret" => {
                let id = match (fields.get("id"), &target) {
                    (Some(id), _) => id.to_string(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_owned(),
                    (None, None) => return Err("secret mount requires an id or a target".to_owned()),
                };
                let env = fields.get("env").map(|e| e.to_string());
                let target = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
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
            },
        })
    }

    /// For a `bind` of the build context: the COPY that selects the same files, so the
    /// step's cache key covers exactly them and the mount is filled the same way.
    pub fn context_selection(&self) -> Option<Copy> {
        let RunMount::Bind { source, .. } = self else { return None };
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

/// Removes every cache mount directory of the store at `root` (the caller holds the store
/// exclusively, so no step uses one); returns their ids, sorted.
pub fn remove_cache_mounts(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = cache_mounts_dir(root);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "id") {
            ids.push(fs::read_to_string(&path).unwrap_or_default());
        }
    }
    fs::remove_dir_all(&dir)?;
    ids.sort();
    Ok(ids)
}

/// What one step's mounts hold on the host until the step is over: snapshots, temp dirs,
/// open fds and cache locks. Dropping it releases them.
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
    fds: Vec<OwnedFd>,
    locks: Vec<File>,
}

impl Prepared {
    /// Removes the snapshots it mounted (temp dirs, fds and locks go on drop).
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

/// A path of the host naming what `rel` names inside `root`, resolved there (symlinks
/// cannot lead out of `root`), valid while the returned fd is open.
fn confined(root: &Path, rel: &str) -> Result<(OwnedFd, PathBuf), String> {
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening {}: {e}", root.display()))?;
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = rustix::fs::openat2(&dir, rel, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT)
        .map_err(|e| format!("{rel}: {e}"))?;
    let path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()));
    Ok((fd, path))
}

impl Solver {
    /// The store directory of cache mount `id` (instance `n` for private sharing).
    fn cache_mount_dir(&self, id: &str, n: usize) -> PathBuf {
        let name = Digest::of(id.as_bytes()).hex().to_owned();
        let name = if n == 0 { name } else { format!("{name}-{n}") };
        cache_mounts_dir(self.store.root()).join(name)
    }

    /// Makes every `--mount` of a step ready. `flags` are the flags with the vertex their
    /// `from=` names, solved.
    pub(super) fn prepare_mounts(
        &self,
        flags: &[(RunMount, Option<Vec<kiln_store::image::Layer>>)],
    ) -> Result<Prepared, String> {
        let mut out = Prepared::default();
        for (mount, from) in flags {
            match mount {
                RunMount::Bind { target, source, rw } => {
                    let dir = match from {
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
                RunMount::Cache { id, target, sharing, source, uid, gid, mode, ro } => {
                    let (dir, lock) = self.cache_mount(id, *sharing, from.as_deref(), source, (*uid, *gid, *mode))?;
                    out.locks.extend(lock);
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
                RunMount::Ssh { id, target, required } => {
                    let Some(socket) = self.options.ssh.get(id) else {
                        if *required {
                            return Err(format!("no ssh agent {id:?}: pass it with --ssh {id}=SOCKET"));
                        }
                        continue;
                    };
                    out.mounts.push(StepMount::Bind { source: socket.clone(), dest: target.clone(), readonly: false });
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

    /// The directory of cache mount `id`, created (seeded from `from`'s `source`) on first use,
    /// and the lock that makes `sharing` hold while the step runs.
    fn cache_mount(
        &self,
        id: &str,
        sharing: Sharing,
        from: Option<&[kiln_store::image::Layer]>,
        source: &str,
        (uid, gid, mode): (u32, u32, u32),
    ) -> Result<(PathBuf, Option<File>), String> {
        let lock_of = |dir: &Path, op: FlockOperation| -> Result<Option<File>, String> {
            let path = dir.with_extension("lock");
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            match flock(&file, op) {
                Ok(()) => Ok(Some(file)),
                Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
                Err(e) => Err(format!("locking {}: {e}", path.display())),
            }
        };
        let (dir, lock) = match sharing {
            Sharing::Shared => {
                let dir = self.cache_mount_dir(id, 0);
                (dir.clone(), lock_of(&dir, FlockOperation::LockShared)?)
            }
            Sharing::Locked => {
                let dir = self.cache_mount_dir(id, 0);
                (dir.clone(), lock_of(&dir, FlockOperation::LockExclusive)?)
            }
            Sharing::Private => {
                // The first instance nobody holds, or a new one.
                let mut n = 0;
                loop {
                    let dir = self.cache_mount_dir(id, n);
                    if let Some(lock) = lock_of(&dir, FlockOperation::NonBlockingLockExclusive)? {
                        break (dir, Some(lock));
                    }
                    n += 1;
                }
            }
        };
        if !dir.exists() {
            let parent = dir.parent().ok_or("cache mount directory has no parent")?;
            let new = tempfile::Builder::new()
                .prefix(".new-")
                .tempdir_in(parent)
                .map_err(|e| format!("creating cache mount {id}: {e}"))?;
            if let Some(layers) = from {
                let snapshot = self.prepare(layers)?;
                let tree = SourceTree { root: snapshot.rootfs(), ignore: None, reset_owner: false };
                let applied = fileop::apply(new.path(), &FileAction::Copy(copy_of(source, "/")), Some(&tree));
                if let Err(e) = snapshot.cleanup() {
                    tracing::warn!("removing a cache seed snapshot: {e}");
                }
                applied.map_err(|e| format!("seeding cache mount {id}: {e}"))?;
            }
            chown(new.path(), Some(uid), Some(gid)).map_err(|e| format!("cache mount {id}: {e}"))?;
            fs::set_permissions(new.path(), fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cache mount {id}: {e}"))?;
            // Named for `kiln prune`'s report.
            fs::write(dir.with_extension("id"), id).map_err(|e| format!("cache mount {id}: {e}"))?;
            let new = new.keep();
            if let Err(e) = fs::rename(&new, &dir) {
                // Another build created it first: use theirs.
                let _ = fs::remove_dir_all(&new);
                if !dir.exists() {
                    return Err(format!("creating cache mount {id}: {e}"));
                }
            }
        }
        Ok((dir, lock))
    }
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
                source: "/".into(),
                uid: 0,
                gid: 0,
                mode: 0o755,
                ro: false
            }
        );
        assert_eq!(
            RunMount::parse("target=src,source=app,rw", 0, "/work").unwrap(),
            RunMount::Bind { target: "/work/src".into(), source: "/app".into(), rw: true }
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
            RunMount::parse("type=ssh", 1, "/").unwrap(),
            RunMount::Ssh { id: "default".into(), target: "/run/buildkit/ssh_agent.1".into(), required: false }
        );
        assert_eq!(
            RunMount::parse("type=tmpfs,target=/t,size=64m", 0, "/").unwrap(),
            RunMount::Tmpfs { target: "/t".into(), size: Some(64 << 20) }
        );
        for (bad, why) in [
            ("type=volume,target=/x", "unsupported mount type"),
            ("type=cache,target=/x,bogus=1", "unexpected key 'bogus'"),
            ("type=tmpfs,target=/x,id=a", "not valid for mount type=tmpfs"),
            ("type=cache", "requires a target"),
            ("type=cache,target=/x,sharing=sometimes", "unrecognized sharing"),
            ("type=cache,target=/x,mode=999", "invalid value for mode"),
            ("type=ssh,uid=1000", "not valid for mount type=ssh"),
            ("type=cache,target=/x,source=/sub", "needs from="),
        ] {
            let err = RunMount::parse(bad, 0, "/").unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
