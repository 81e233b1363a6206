//! `ADD <git URL>` end to end: the `kiln` binary builds Dockerfiles that add a local bare
//! repository served over HTTP (git's "dumb" protocol: plain files, so kiln's fallback from a
//! shallow fetch to a full one is exercised too), and the tests look at the built root
//! filesystem, the progress output's cached flags and the error a user sees.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::kiln::Kiln;

fn kiln() -> Kiln {
    Kiln::with_busybox(env!("CARGO_BIN_EXE_kiln"))
}

/// The commit time of every commit the tests make.
const COMMIT_TIME: i64 = 1_700_000_000;

/// Runs git in `dir` with a fixed identity and date, without the machine's config.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "kiln")
        .env("GIT_AUTHOR_EMAIL", "kiln@example.com")
        .env("GIT_COMMITTER_NAME", "kiln")
        .env("GIT_COMMITTER_EMAIL", "kiln@example.com")
        .env("GIT_AUTHOR_DATE", format!("{COMMIT_TIME} +0000"))
        .env("GIT_COMMITTER_DATE", format!("{COMMIT_TIME} +0000"))
        .output()
        .expect("running git: the tests need the git package (scripts/deps.sh)");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository `repo.git` under `dir`, pushed from a work tree `work` that the tests
/// commit more to with [`Repo::commit`].
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    /// Two commits on `main`: the first tagged `v1` (annotated), the second adding `sub/`.
    fn new(dir: &Path) -> Repo {
        let work = dir.join("work");
        let bare = dir.join("srv/repo.git");
        fs::create_dir_all(&work).unwrap();
        git(dir, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let repo = Repo { work, bare };
        fs::write(repo.work.join("run.sh"), "#!/bin/sh\necho one\n").unwrap();
        fs::set_permissions(repo.work.join("run.sh"), fs::Permissions::from_mode(0o775)).unwrap();
        repo.commit("one");
        git(&repo.work, &["tag", "-a", "-m", "first", "v1"]);
        fs::create_dir_all(repo.work.join("sub/deep")).unwrap();
        fs::write(repo.work.join("sub/deep/inner.txt"), "inner\n").unwrap();
        repo.commit("two");
        repo
    }

    /// Commits everything in the work tree and publishes it (refs, tags, dumb-HTTP index).
    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "--follow-tags", "origin", "main"]);
        git(&self.bare, &["update-server-info"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// Serves the files under `root` over HTTP on a loopback port, reading them at each request
/// (so new commits show); returns `http://127.0.0.1:PORT`.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(&stream).lines();
                let request = lines.next().and_then(Result::ok).unwrap_or_default();
                for line in lines.by_ref() {
                    if line.map_or(true, |l| l.is_empty()) {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or_default().trim_start_matches('/');
                let body = (!path.split('/').any(|c| c == "..")).then(|| fs::read(root.join(path)).ok()).flatten();
                let mut stream = &stream;
                let _ = match body {
                    Some(body) => stream
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => {
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    }
                };
            });
        }
    });
    url
}

/// Builds `context` to a local directory; returns the root filesystem and whether the step
/// whose name contains `step` came from the cache, by the `--progress rawjson` stream.
fn build(k: &Kiln, context: &Path, step: &str, extra: &[&str]) -> (PathBuf, bool) {
    let dest = k.path(&format!("rootfs-{}", k.dir.path().read_dir().unwrap().count()));
    let output = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--progress", "rawjson", "-o", &output];
    args.extend_from_slice(extra);
    args.push(context.to_str().unwrap());
    let out = k.kiln(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln build failed: {stderr}");
    let vertexes: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .flat_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["vertexes"].as_array().cloned())
        .flatten()
        .collect();
    let named: Vec<&serde_json::Value> = vertexes
        .iter()
        .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with('[') && n.contains(step)))
        .collect();
    assert!(!named.is_empty(), "no step named {step:?} in {stderr}");
    let cached = named
        .iter()
        .any(|v| vertexes.iter().any(|w| w["digest"] == v["digest"] && w["cached"].as_bool() == Some(true)));
    (dest, cached)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn add_a_tag_a_subdir_and_a_kept_git_dir() {
    let k = kiln();
    let repo = Repo::new(&k.path("git"));
    let url = format!("{}/repo.git", serve(k.path("git/srv")));
    let main = git(&repo.work, &["rev-parse", "main"]).trim().to_owned();
    let first = git(&repo.work, &["rev-parse", "v1^{commit}"]).trim().to_owned();
    let dir = k.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nADD {url}#v1 /tag\nADD {url}#main:sub /sub/\nADD --keep-git-dir {url} /kept\n\
             ADD {url}#{first} /sha\n\
             ADD {url}##ref=main,commit={main},subdir=sub/deep /csv\n\
             RUN test -x /tag/run.sh && cat /sub/deep/inner.txt > /ran\n"
        ),
    )
    .unwrap();
    let (root, _) = build(&k, &dir, "ADD", &[]);

    // The tag is the first commit: no sub/, no .git; git's modes; the commit's time.
    assert_eq!(names(&root.join("tag")), ["run.sh"]);
    let script = fs::metadata(root.join("tag/run.sh")).unwrap();
    assert_eq!(script.mode() & 0o7777, 0o755, "an executable in git is 0755");
    assert_eq!(script.mtime(), COMMIT_TIME, "mtimes are the commit's time");
    assert_eq!((script.uid(), script.gid()), (0, 0));
    assert_eq!(read(&root.join("tag/run.sh")), "#!/bin/sh\necho one\n");

    // A commit by its sha (a dumb HTTP server cannot hand one out: kiln fetches everything).
    assert_eq!(names(&root.join("sha")), ["run.sh"]);
    // BuildKit's key=value fragment, the commit pinned.
    assert_eq!(names(&root.join("csv")), ["inner.txt"]);

    // `#main:sub`: the subdir's contents only.
    assert_eq!(names(&root.join("sub")), ["deep"]);
    assert_eq!(read(&root.join("sub/deep/inner.txt")), "inner\n");
    assert_eq!(fs::metadata(root.join("sub/deep/inner.txt")).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(fs::metadata(root.join("sub/deep")).unwrap().mode() & 0o7777, 0o755);

    // No fragment: the default branch, with a `.git` detached at its commit.
    assert_eq!(names(&root.join("kept")), [".git", "run.sh", "sub"]);
    assert_eq!(read(&root.join("kept/.git/HEAD")), format!("{main}\n"));
    assert_eq!(git(&root.join("kept"), &["log", "--format=%s"]), "two\none\n");
    assert_eq!(git(&root.join("kept"), &["status", "--porcelain"]), "", "the checkout is clean");
    assert_eq!(read(&root.join("ran")), "inner\n");
}

#[test]
fn an_unchanged_remote_is_cached_and_a_new_commit_runs_again() {
    let k = kiln();
    let repo = Repo::new(&k.path("git"));
    let url = format!("{}/repo.git", serve(k.path("git/srv")));
    let dir = k.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD {url}#main /src\n")).unwrap();

    let (first, cached) = build(&k, &dir, "ADD", &[]);
    assert!(!cached, "the first build runs the ADD");
    assert_eq!(names(&first.join("src")), ["run.sh", "sub"]);
    let (_, cached) = build(&k, &dir, "ADD", &[]);
    assert!(cached, "the same commit: the ADD comes from the cache");
    // Run again, the same commit gives the same layer: a hit is what a run would have made.
    let context = dir.to_str().unwrap();
    k.ok(&["build", "-q", "-t", "first", context]);
    k.ok(&["build", "-q", "--no-cache", "-t", "again", context]);
    let layers = |tag: &str| k.inspect(tag)["Manifest"]["layers"].clone();
    assert_eq!(layers("first"), layers("again"), "a checkout is reproducible");

    fs::write(repo.work.join("new.txt"), "new\n").unwrap();
    repo.commit("three");
    let (third, cached) = build(&k, &dir, "ADD", &[]);
    assert!(!cached, "a new commit on the branch runs the ADD again");
    assert_eq!(read(&third.join("src/new.txt")), "new\n");
}

#[test]
fn a_missing_ref_or_subdir_fails_at_the_add() {
    let k = kiln();
    Repo::new(&k.path("git"));
    let url = format!("{}/repo.git", serve(k.path("git/srv")));
    let dir = k.path("ctx");
    fs::create_dir_all(&dir).unwrap();

    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nRUN true\nADD {url}#nope /src\n")).unwrap();
    let err = k.fails(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert!(
        err.contains(&format!("Dockerfile:3:1: ADD {url}#nope: resolving {url}#nope: ref nope not found")),
        "{err}"
    );

    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD {url}#v1:sub /src\n")).unwrap();
    let err = k.fails(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert!(err.contains(&format!("Dockerfile:2:1: ADD {url}#v1:sub: {url}#v1: subdir sub: not found")), "{err}");

    let gone = url.replace("repo.git", "gone.git");
    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD {gone} /src\n")).unwrap();
    let err = k.fails(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert!(err.contains(&format!("Dockerfile:2:1: ADD {gone}: resolving {gone}: git ls-remote: fatal:")), "{err}");
}

#[test]
fn submodules_are_checked_out_without_their_git_files() {
    let k = kiln();
    let srv = k.path("git/srv");
    let url = serve(srv.clone());
    // A second repository, published beside the first, used as its submodule over HTTP.
    let lib = Repo { work: k.path("lib"), bare: srv.join("lib.git") };
    fs::create_dir_all(&lib.work).unwrap();
    git(&lib.work, &["init", "-q", "--bare", "-b", "main", lib.bare.to_str().unwrap()]);
    git(&lib.work, &["init", "-q", "-b", "main"]);
    git(&lib.work, &["remote", "add", "origin", lib.bare.to_str().unwrap()]);
    fs::write(lib.work.join("lib.txt"), "lib\n").unwrap();
    lib.commit("lib");
    let repo = Repo::new(&k.path("git"));
    git(&repo.work, &["submodule", "add", "-q", &format!("{url}/lib.git"), "vendor/lib"]);
    repo.commit("submodule");

    let dir = k.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD {url}/repo.git /src\n")).unwrap();
    let (root, _) = build(&k, &dir, "ADD", &[]);
    assert_eq!(read(&root.join("src/vendor/lib/lib.txt")), "lib\n");
    assert_eq!(names(&root.join("src/vendor/lib")), ["lib.txt"], "no dangling .git file");
    assert!(root.join("src/.gitmodules").exists());
    assert!(!root.join("src/.git").exists());
}
