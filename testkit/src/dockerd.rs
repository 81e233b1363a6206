//! A private dockerd (Debian's `docker.io`: dockerd 20.10 with BuildKit), the reference kiln's
//! differential and interop tests compare with.
//!
//! It is started by `scripts/dockerd.sh` (the same script the benchmark uses) with its data-root,
//! exec-root, pidfile and socket in a temp dir of its own, and stopped when the [`Dockerd`] is
//! dropped, so no daemon or mount outlives a test, even a failing one. Commands go through the
//! package's own CLI, `/usr/bin/docker`: another docker CLI on PATH may lack BuildKit support.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The docker CLI of Debian's docker.io package (20.10, the daemon's own version).
pub const DOCKER_BIN: &str = "/usr/bin/docker";

/// A running private dockerd; stopped and its directory removed when dropped.
pub struct Dockerd {
    dir: TempDir,
    host: String,
}

impl Dockerd {
    /// Starts dockerd with `extra` daemon flags (e.g. `["--insecure-registry", "127.0.0.1:5000"]`)
    /// and waits until it answers. Panics naming the package when docker.io is missing.
    pub fn start(extra: &[&str]) -> Dockerd {
        for bin in ["/usr/sbin/dockerd", DOCKER_BIN] {
            assert!(Path::new(bin).is_file(), "{bin} not found: install docker.io (Debian package; scripts/deps.sh)");
        }
        // Short and under /tmp: the dir holds unix sockets (108-byte path limit) and overlay2 needs
        // a filesystem that can hold upperdirs.
        let dir = tempfile::Builder::new().prefix("kd-").tempdir_in("/tmp").expect("temp dir for dockerd");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("running scripts/dockerd.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let host = stdout.lines().find_map(|l| l.strip_prefix("DOCKER_HOST=")).map(str::to_owned);
        let dockerd = Dockerd { dir, host: host.clone().unwrap_or_default() };
        assert!(
            out.status.success() && host.is_some(),
            "starting dockerd failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dockerd
    }

    /// The `DOCKER_HOST` value (`unix://…/docker.sock`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The daemon's directory (data-root `data/`, exec-root `exec/`, `dockerd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `/usr/bin/docker ARGS…` talking to this daemon, with BuildKit on and a private client config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER_BIN);
        cmd.args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", self.dir.path().join("client"));
        cmd
    }

    /// Runs `docker ARGS…` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running /usr/bin/docker")
    }

    /// Runs `docker ARGS…`, asserts success (showing docker's output and the daemon log's tail
    /// otherwise), returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}\n--- dockerd.log (tail) ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads a docker-archive tar (`docker load -i`).
    pub fn load(&self, archive: &Path) {
        self.ok(&["load", "-i", archive.to_str().expect("UTF-8 archive path")]);
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // The script stops the daemon (and its containerd), and unmounts what a killed one left,
        // so the temp dir can be removed after it.
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).status();
    }
}

/// `scripts/dockerd.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dockerd.sh")
}
