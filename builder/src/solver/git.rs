//! `ADD <git URL>`: a repository checked out with the `git` CLI, as BuildKit's git source does.
//!
//! The fragment is `ref:subdir` (or BuildKit's `#ref=…,commit=…,subdir=…`, where `commit`
//! pins what the ref must be); an empty ref is the remote's default branch. A ref that is a
//! full commit sha is used as is; any other is resolved with `git ls-remote` by git's own
//! precedence (`refs/<ref>`, `refs/tags/<ref>`, `refs/heads/<ref>`, …). The commit is fetched
//! shallowly into a fresh repository in a temp dir (falling back to a full fetch when the
//! server cannot do shallow fetches or hand out an unadvertised commit), checked out detached,
//! its submodules initialised recursively, then `subdir` taken and `.git` dropped unless
//! `--keep-git-dir` (kept only for the whole repository, as in BuildKit).
//!
//! The result's cache key is the vertex digest (remote, fragment, keep-git-dir) plus the
//! commit sha, so an unchanged remote hits the cache for the steps that copy it and a new
//! commit misses. File modes are git's (0644/0755 under umask 022, symlinks); every mtime is
//! the commit's time (BuildKit's `git.mtime=commit`), so the same commit always gives the
//! same layer.
//!
//! git runs without the system and global config (no credential helpers, no hooks, no
//! surprising `url.insteadOf`), never prompts, and may not use `file://` for submodules; every
//! path it writes is inside the build's temp dirs.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kiln_frontend::graph::Digest as VertexDigest;
use kiln_runner::sandbox::CancelToken;
use kiln_store::Digest;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use super::{Output, Solved, Solver};

/// Environment variables passed through to git: how the user reaches the network.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

impl Solver {
    /// Solves `ADD <remote>#<fragment>`: the checkout in a temp dir of the store, keyed by the
    /// commit it is.
    pub(super) fn git_checkout(
        &self,
        digest: &VertexDigest,
        remote: &str,
        fragment: &str,
        keep_git_dir: bool,
    ) -> Result<Solved, String> {
        let git = Git { cancel: &self.cancel };
        let checkout = checkout(&git, remote, fragment, keep_git_dir, self.store.blobs().tmp_dir())?;
        let key = Digest::of(format!("{digest}\ngit {}", checkout.commit).as_bytes()).to_string();
        Ok(Solved { key, output: Output::Download(Arc::new(checkout.dir)), cached: false, created: 0 })
    }
}

/// A checked-out tree.
struct Checkout {
    /// The tree (the repository or its subdir), removed when dropped.
    dir: tempfile::TempDir,
    /// The commit it is.
    commit: String,
}

/// Checks out `remote#fragment` into a new temp dir under `tmp`.
fn checkout(git: &Git<'_>, remote: &str, fragment: &str, keep_git_dir: bool, tmp: &Path) -> Result<Checkout, String> {
    let Fragment { reference, commit: expected, subdir } = parse_fragment(fragment)?;
    let reference = reference.as_str();
    let shown = redact(remote);
    let at = if reference.is_empty() { shown.clone() } else { format!("{shown}#{reference}") };
    if remote.starts_with('-') || reference.starts_with('-') {
        return Err(format!("invalid git source {at}"));
    }
    let target = resolve(git, remote, reference).map_err(|e| format!("resolving {at}: {e}"))?;

    let temp = |prefix: &str| {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .map_err(|e| format!("creating a git checkout directory in {}: {e}", tmp.display()))
    };
    let out = temp("git-")?;
    // With a subdir, the whole repository is checked out beside the result and the subdir's
    // entries moved into it.
    let scratch = subdir.as_ref().map(|_| temp("git-scratch-")).transpose()?;
    let work = match &scratch {
        Some(s) => s.path().to_owned(),
        None => out.path().to_owned(),
    };
    let commit = fetch_and_check_out(git, remote, &target, &work, keep_git_dir && subdir.is_none())
        .map_err(|e| format!("fetching {at}: {e}"))?;
    if let Some(expected) = expected
        && expected != commit
    {
        return Err(format!("{at} is commit {commit}, not the expected {expected}"));
    }
    let time = git.run(&work, &["show", "-s", "--format=%ct", &commit]).map_err(|e| format!("reading {at}: {e}"))?;
    let time: i64 = time.trim().parse().map_err(|_| format!("reading {at}: invalid commit time {time:?}"))?;

    if !keep_git_dir || subdir.is_some() {
        remove_git_dirs(&work).map_err(|e| format!("removing .git from the checkout of {at}: {e}"))?;
    }
    if let Some(subdir) = &subdir {
        let from = confined_dir(&work, subdir).map_err(|e| format!("{at}: subdir {}: {e}", subdir.display()))?;
        for entry in std::fs::read_dir(&from).map_err(|e| format!("reading {}: {e}", from.display()))? {
            let entry = entry.map_err(|e| format!("reading {}: {e}", from.display()))?;
            let to = out.path().join(entry.file_name());
            std::fs::rename(entry.path(), &to)
                .map_err(|e| format!("moving {} to {}: {e}", entry.path().display(), to.display()))?;
        }
    }
    // The root is the directory the ADD copies: a temp dir is 0700, a checkout 0755.
    set_mode(out.path(), 0o755)?;
    set_mtimes(out.path(), time)?;
    Ok(Checkout { dir: out, commit })
}

/// What a URL fragment selects.
#[derive(Debug, PartialEq, Eq)]
struct Fragment {
    /// The ref (branch, tag, full commit sha); empty for the default branch.
    reference: String,
    /// The commit the ref must be (`##…,commit=SHA`).
    commit: Option<String>,
    /// The directory to take: relative, clean; `None` for the whole repository.
    subdir: Option<PathBuf>,
}

/// Parses a fragment as BuildKit does: `ref:subdir`, or with a second `#` the key=value form
/// `#ref=REF,commit=SHA,subdir=DIR`.
fn parse_fragment(fragment: &str) -> Result<Fragment, String> {
    let (mut reference, mut commit, subdir) = match fragment.strip_prefix('#') {
        None => {
            let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
            (reference.to_owned(), None, subdir)
        }
        Some(fields) => {
            let (mut reference, mut commit, mut subdir) = (String::new(), None, "");
            for field in fields.split(',').filter(|f| !f.is_empty()) {
                match field.split_once('=').map(|(k, v)| (k.to_ascii_lowercase(), v)) {
                    Some((k, v)) if k == "ref" => reference = v.to_owned(),
                    Some((k, v)) if k == "commit" => commit = Some(v.to_owned()),
                    Some((k, v)) if k == "subdir" => subdir = v,
                    _ => {
                        return Err(format!(
                            "invalid git URL fragment field {field:?} (expected ref=, commit= or subdir=)"
                        ));
                    }
                }
            }
            (reference, commit, subdir)
        }
    };
    if let Some(c) = &commit {
        if !is_commit_sha(c) {
            return Err(format!("invalid commit {c:?} in the git URL fragment: expected a full sha"));
        }
        if reference.is_empty() {
            reference = c.clone();
        }
        if reference == *c {
            commit = None;
        }
    }
    let mut clean = PathBuf::new();
    for component in Path::new(subdir).components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("invalid git subdir {subdir:?}: it must stay inside the repository"));
            }
        }
    }
    Ok(Fragment { reference, commit, subdir: (!clean.as_os_str().is_empty()).then_some(clean) })
}

/// What to fetch for a ref: a full ref name, or a commit sha.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A ref the remote advertises, by its full name.
    Ref(String),
    /// A commit given by its sha.
    Commit(String),
}

/// Whether `s` is a full commit sha (SHA-1 or SHA-256), as BuildKit recognises one.
fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Resolves `reference` (empty: the default branch) on `remote` with `git ls-remote`.
fn resolve(git: &Git<'_>, remote: &str, reference: &str) -> Result<Target, String> {
    if is_commit_sha(reference) {
        return Ok(Target::Commit(reference.to_owned()));
    }
    let cwd = Path::new("/");
    if reference.is_empty() {
        let listing = git.run(cwd, &["ls-remote", "--symref", remote, "HEAD"])?;
        return pick_default_branch(&listing).ok_or_else(|| "the remote has no default branch (HEAD)".to_owned());
    }
    let listing = git.run(cwd, &["ls-remote", remote, reference])?;
    pick_ref(&listing, reference).ok_or_else(|| format!("ref {reference} not found in the remote"))
}

/// The default branch from `ls-remote --symref <remote> HEAD` output.
fn pick_default_branch(listing: &str) -> Option<Target> {
    let mut name = None;
    let mut advertised = false;
    for line in listing.lines() {
        if let Some(symref) = line.strip_prefix("ref: ") {
            if let Some((target, "HEAD")) = symref.split_once('\t') {
                name = Some(target.to_owned());
            }
        } else if let Some((_, "HEAD")) = line.split_once('\t') {
            advertised = true;
        }
    }
    // A server that does not say where HEAD points (dumb HTTP) is fetched by `HEAD` itself.
    advertised.then(|| Target::Ref(name.unwrap_or_else(|| "HEAD".to_owned())))
}

/// The ref `reference` names in `ls-remote` output, by git's precedence of ref names (a tag
/// before a branch of the same name).
fn pick_ref(listing: &str, reference: &str) -> Option<Target> {
    let refs: Vec<&str> = listing.lines().filter_map(|l| l.split_once('\t')).map(|(_, name)| name).collect();
    let candidates = [
        reference.to_owned(),
        format!("refs/{reference}"),
        format!("refs/tags/{reference}"),
        format!("refs/heads/{reference}"),
        format!("refs/remotes/{reference}"),
        format!("refs/remotes/{reference}/HEAD"),
    ];
    candidates.into_iter().find(|c| refs.contains(&c.as_str())).map(Target::Ref)
}

/// Fetches `target` into a new repository at `work` and checks it out detached; returns the
/// commit. `keep` leaves `origin` pointing at the remote, for a `.git` that is kept.
fn fetch_and_check_out(
    git: &Git<'_>,
    remote: &str,
    target: &Target,
    work: &Path,
    keep: bool,
) -> Result<String, String> {
    git.run(work, &["init", "-q", "--template=", "."])?;
    let (refspec, commit) = match target {
        Target::Ref(name) if name == "HEAD" => ("HEAD".to_owned(), "FETCH_HEAD".to_owned()),
        Target::Ref(name) => (format!("+{name}:{name}"), name.clone()),
        Target::Commit(sha) => (sha.clone(), sha.clone()),
    };
    let fetched =
        git.run_shallow(work, &["fetch", "-q", "--no-tags", "--update-head-ok", "--depth=1", remote, &refspec]);
    if let Err(e) = fetched {
        // A server may refuse a commit it does not advertise: fetch everything and look again.
        let Target::Commit(sha) = target else { return Err(e) };
        git.run(
            work,
            &["fetch", "-q", "--update-head-ok", remote, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        )?;
        if git.run(work, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).is_err() {
            return Err(format!("commit {sha} not found in the remote"));
        }
    }
    let commit = git.run(work, &["rev-parse", "--verify", "-q", &format!("{commit}^{{commit}}")])?.trim().to_owned();
    git.run(work, &["checkout", "-q", "--detach", &commit])?;
    if work.join(".gitmodules").exists() {
        git.run_shallow(work, &["submodule", "update", "-q", "--init", "--recursive", "--depth=1"])?;
    }
    if keep {
        git.run(work, &["remote", "add", "origin", &redact(remote)])?;
        git.run(work, &["reflog", "expire", "--all", "--expire=now"])?;
        let fetch_head = work.join(".git/FETCH_HEAD");
        if fetch_head.exists() {
            std::fs::remove_file(&fetch_head).map_err(|e| format!("removing {}: {e}", fetch_head.display()))?;
        }
    }
    Ok(commit)
}

/// `subdir` of `root`, refusing a path whose components are not all real directories (a
/// symlink in the repository must not lead the move outside the checkout).
fn confined_dir(root: &Path, subdir: &Path) -> Result<PathBuf, String> {
    let mut path = root.to_owned();
    for component in subdir.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err("not a directory in the repository".to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("not found in the repository".to_owned()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(path)
}

/// Removes `.git` (the repository) and the `.git` files submodules leave in their
/// directories; git never checks out an entry named `.git`, so each one is git's own.
fn remove_git_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if entry.file_name() == ".git" {
            if file_type.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        } else if file_type.is_dir() {
            remove_git_dirs(&entry.path())?;
        }
    }
    Ok(())
}

/// Sets the mode of `path`.
fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", path.display()))
}

/// Sets the mtime (and atime) of everything under `path`, and of `path`, to `secs`, not
/// following symlinks.
fn set_mtimes(path: &Path, secs: i64) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| format!("reading {}: {e}", path.display()))? {
            let entry = entry.map_err(|e| format!("reading {}: {e}", path.display()))?;
            set_mtimes(&entry.path(), secs)?;
        }
    }
    let at = Timespec { tv_sec: secs, tv_nsec: 0 };
    let times = Timestamps { last_access: at, last_modification: at };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| format!("setting the mtime of {}: {e}", path.display()))
}

/// `remote` with any password in it replaced, for messages and a kept `.git/config`.
fn redact(remote: &str) -> String {
    let Some((scheme, rest)) = remote.split_once("://") else { return remote.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { format!("{user}:xxxxx") } else { "xxxxx".to_owned() };
            format!("{scheme}://{hidden}@{host}{}", &rest[authority_end..])
        }
        None => remote.to_owned(),
    }
}

/// Runs git in a clean environment, killed when the build is cancelled.
struct Git<'a> {
    cancel: &'a CancelToken,
}

impl Git<'_> {
    /// Runs `git args` in `dir`; returns its stdout, or its stderr (trimmed) on failure.
    fn run(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -F /dev/null -o BatchMode=yes")
            .env("LC_ALL", "C")
            .args([
                "-c",
                "protocol.file.allow=user",
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "init.defaultBranch=master",
            ])
            .args(["-c", "advice.detachedHead=false", "-c", "credential.helper="])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: umask is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        let command = format!("git {}", args.first().copied().unwrap_or_default());
        let mut child = cmd.spawn().map_err(|e| format!("running {command}: {e} (is git installed?)"))?;
        let pid = child.id();
        let readers = [child.stdout.take().map(drain), child.stderr.take().map(drain)];
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if self.cancel.is_cancelled() => {
                    // git's helpers (remote-https, ssh) are in its process group.
                    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                    }
                    let _ = child.wait();
                    break Err("cancelled".to_owned());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(format!("waiting for {command}: {e}")),
            }
        };
        let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
        let status = status?;
        if status.success() {
            return Ok(String::from_utf8_lossy(&stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&stderr);
        let message = stderr.trim();
        Err(if message.is_empty() { format!("{command} failed ({status})") } else { format!("{command}: {message}") })
    }

    /// [`Git::run`] with `--depth=1`, again without it when the server cannot do shallow
    /// fetches (a dumb HTTP server, some old daemons), as BuildKit does.
    fn run_shallow(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        match self.run(dir, args) {
            Err(e) if e.contains("shallow") || e.contains("--depth") => {
                let deep: Vec<&str> = args.iter().copied().filter(|a| *a != "--depth=1").collect();
                self.run(dir, &deep)
            }
            other => other,
        }
    }
}

/// Reads a pipe to its end on a thread, so a chatty git never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// Runs the test's own git (with the user's config kept out of it too).
    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .output()
            .expect("running git (install the git package)");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A repository with a tracked script, a symlink, a subdir and an annotated tag `v1`;
    /// returns its `file://` URL and its commit.
    fn repo(dir: &Path) -> (String, String) {
        let work = dir.join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        sh(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(work.join("run.sh"), std::fs::Permissions::from_mode(0o775)).unwrap();
        std::fs::write(work.join("sub/inner.txt"), "inner\n").unwrap();
        std::os::unix::fs::symlink("sub/inner.txt", work.join("link")).unwrap();
        sh(&work, &["add", "."]);
        sh(&work, &["commit", "-q", "-m", "one"]);
        sh(&work, &["tag", "-a", "-m", "v1", "v1"]);
        let commit = sh(&work, &["rev-parse", "HEAD"]).trim().to_owned();
        (format!("file://{}", work.display()), commit)
    }

    #[test]
    fn checks_out_a_tag_with_git_modes_and_the_commit_time() {
        let dir = tempfile::tempdir().unwrap();
        let (url, commit) = repo(dir.path());
        let cancel = CancelToken::new();
        let got = checkout(&Git { cancel: &cancel }, &url, "v1", false, dir.path()).unwrap();
        assert_eq!(got.commit, commit);
        let root = got.dir.path();
        let mode = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("sub/inner.txt"), 0o644);
        assert_eq!(mode(""), 0o755);
        assert_eq!(std::fs::read_link(root.join("link")).unwrap(), Path::new("sub/inner.txt"));
        assert!(!root.join(".git").exists());
        for p in ["", "run.sh", "sub", "link"] {
            assert_eq!(std::fs::symlink_metadata(root.join(p)).unwrap().mtime(), 1_700_000_000, "{p}");
        }
    }

    #[test]
    fn a_subdir_a_kept_git_dir_and_a_missing_ref() {
        let dir = tempfile::tempdir().unwrap();
        let (url, commit) = repo(dir.path());
        let cancel = CancelToken::new();
        let git = Git { cancel: &cancel };
        let sub = checkout(&git, &url, "main:sub", false, dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(sub.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["inner.txt"]);

        let kept = checkout(&git, &url, &commit, true, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(kept.dir.path().join(".git/HEAD")).unwrap(), format!("{commit}\n"));
        assert_eq!(sh(kept.dir.path(), &["log", "--format=%s"]), "one\n");
        assert_eq!(sh(kept.dir.path(), &["status", "--porcelain"]), "");

        let err = checkout(&git, &url, "nope", false, dir.path()).err().unwrap();
        assert_eq!(err, format!("resolving {url}#nope: ref nope not found in the remote"));
        let err = checkout(&git, &url, "main:missing", false, dir.path()).err().unwrap();
        assert_eq!(err, format!("{url}#main: subdir missing: not found in the repository"));
        let err = checkout(&git, &url, "main:link", false, dir.path()).err().unwrap();
        assert_eq!(err, format!("{url}#main: subdir link: not a directory in the repository"));
        assert!(parse_fragment("main:../x").is_err());

        let pinned = checkout(&git, &url, &format!("#ref=v1,commit={commit},subdir=/sub"), false, dir.path()).unwrap();
        assert_eq!(pinned.commit, commit);
        let other = "0".repeat(40);
        let err = checkout(&git, &url, &format!("#ref=main,commit={other}"), false, dir.path()).err().unwrap();
        assert_eq!(err, format!("{url}#main is commit {commit}, not the expected {other}"));
    }

    #[test]
    fn fragments_parse_as_buildkit_does() {
        let f = |reference: &str, commit: Option<&str>, subdir: Option<&str>| Fragment {
            reference: reference.into(),
            commit: commit.map(Into::into),
            subdir: subdir.map(PathBuf::from),
        };
        let sha = "a".repeat(40);
        assert_eq!(parse_fragment("").unwrap(), f("", None, None));
        assert_eq!(parse_fragment("v1:/a/./b/").unwrap(), f("v1", None, Some("a/b")));
        assert_eq!(parse_fragment(":a").unwrap(), f("", None, Some("a")));
        assert_eq!(parse_fragment("#ref=v1,subdir=a").unwrap(), f("v1", None, Some("a")));
        assert_eq!(parse_fragment(&format!("#commit={sha}")).unwrap(), f(&sha, None, None));
        assert_eq!(parse_fragment(&format!("#ref=v1,commit={sha}")).unwrap(), f("v1", Some(&sha), None));
        assert!(parse_fragment("#ref=v1,tag=x").unwrap_err().contains("\"tag=x\""));
        assert!(parse_fragment("#commit=abc").is_err());
    }

    #[test]
    fn refs_resolve_by_git_precedence() {
        let listing = "1111\trefs/heads/v1\n2222\trefs/tags/v1\n3333\trefs/tags/v1^{}\n4444\trefs/heads/x/main\n";
        assert_eq!(pick_ref(listing, "v1"), Some(Target::Ref("refs/tags/v1".into())));
        assert_eq!(pick_ref(listing, "heads/v1"), Some(Target::Ref("refs/heads/v1".into())));
        assert_eq!(pick_ref(listing, "main"), None);
        let head = "ref: refs/heads/trunk\tHEAD\n5555\tHEAD\n";
        assert_eq!(pick_default_branch(head), Some(Target::Ref("refs/heads/trunk".into())));
        assert_eq!(pick_default_branch("5555\tHEAD\n"), Some(Target::Ref("HEAD".into())));
        assert_eq!(pick_default_branch(""), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("https://u:tok@host/r.git"), "https://u:xxxxx@host/r.git");
        assert_eq!(redact("https://tok@host/r.git"), "https://xxxxx@host/r.git");
        assert_eq!(redact("https://host/a@b.git"), "https://host/a@b.git");
        assert_eq!(redact("git@host:r.git"), "git@host:r.git");
    }
}
