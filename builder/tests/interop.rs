//! Interop: what kiln builds and pushes, other tools pull and run. The demo image goes to a real
//! registry (Debian's `docker-registry`), then podman and docker (a private dockerd 20.10) pull
//! it and run it, and it must print what it prints under `kiln run`. A docker-archive from
//! `kiln save` must load and run in docker too.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::dockerd::Dockerd;
use kiln_testkit::kiln::Kiln;
use kiln_testkit::registry::Registry;
use tempfile::TempDir;

/// What the demo image prints with its default command (see `tests/build.rs`).
const DEMO_OUTPUT: &str = "Hello, world! (running as app in /app)\nHELLO FROM A KILN BUILD\nnumbers: 1 2 3 4 5 \n";

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build/demo")
}

/// podman (Debian package) with a storage of its own, removed when dropped.
struct Podman {
    dir: TempDir,
}

impl Podman {
    fn new() -> Podman {
        let podman = Podman { dir: tempfile::Builder::new().prefix("kiln-podman-").tempdir().unwrap() };
        let out = podman.command(&["version"]).output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "cannot run podman ({out:?}): install podman (Debian package; scripts/deps.sh)"
        );
        podman
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            // No systemd here: cgroupfs, and events in a file rather than the journal.
            .args(["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` of `image` with `args`, the way it works on this machine: runc (Debian's
    /// podman has no crun unless installed), no network, and open-files/processes limits at
    /// or below the caller's, since rootful podman's defaults (2^20 files, 2^22 processes) are
    /// above this sandbox's hard limits and raising them is refused.
    fn run(&self, image: &str, args: &[&str]) -> String {
        let mut full = vec!["run", "--rm", "--runtime", "runc", "--network", "none"];
        full.extend_from_slice(&["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image]);
        full.extend_from_slice(args);
        self.ok(&full)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // A failed run may leave a container holding an overlay mount in the storage.
        let _ = self.command(&["rm", "--all", "--force"]).output();
        let _ = self.command(&["unmount", "--all"]).output();
    }
}

#[test]
fn an_image_kiln_pushed_is_pulled_and_run_by_podman_and_docker() {
    let k = Kiln::with_busybox(env!("CARGO_BIN_EXE_kiln"));
    let registry = Registry::plain();
    let name = format!("{}/interop/demo:1.0", registry.host());
    // zstd layers: podman reads them; dockerd 20.10 predates them, so docker gets gzip.
    let zstd_name = format!("{}/interop/demo:zstd", registry.host());
    let ctx = demo();
    let ctx = ctx.to_str().unwrap();
    k.ok(&["build", "--progress", "plain", "-t", &name, "--push", ctx]);
    k.ok(&["build", "--progress", "plain", "--compression", "zstd", "-t", &zstd_name, "--push", ctx]);
    // Every step of the second build is a cache hit: its layers are re-encoded, not reused.
    let zstd_layers = k.inspect(&zstd_name)["Manifest"]["layers"].as_array().unwrap().clone();
    assert!(zstd_layers[1..].iter().all(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd")), "{zstd_layers:#?}");

    let podman = Podman::new();
    for image in [&name, &zstd_name] {
        podman.ok(&["pull", "-q", "--tls-verify=false", image]);
        assert_eq!(podman.run(image, &[]), DEMO_OUTPUT, "podman run {image}");
    }
    assert!(podman.run(&name, &["podman"]).starts_with("Hello, podman! (running as app in /app)\n"));
    // What podman sees of the config: the entrypoint, the user, the working dir.
    let inspected: serde_json::Value = serde_json::from_str(&podman.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(inspected[0]["Config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/hello"]));
    assert_eq!(inspected[0]["Config"]["User"], "app");

    let dockerd = Dockerd::start(&["--insecure-registry", &registry.host()]);
    dockerd.ok(&["pull", "-q", &name]);
    assert_eq!(dockerd.ok(&["run", "--rm", "--network", "none", &name]), DEMO_OUTPUT, "docker run {name}");
    assert!(
        dockerd
            .ok(&["run", "--rm", "--network", "none", &name, "docker"])
            .starts_with("Hello, docker! (running as app in /app)\n")
    );
    // The repo digest docker pulled is the manifest kiln pushed.
    let digest = k.inspect(&name)["Digest"].as_str().unwrap().to_owned();
    let repo_digests = dockerd.ok(&["image", "inspect", "--format", "{{json .RepoDigests}}", &name]);
    assert!(repo_digests.contains(&digest), "docker has {repo_digests}, kiln pushed {digest}");

    // `kiln save --format docker` → `docker load` → `docker run`.
    let archive = k.path("demo-docker.tar");
    k.ok(&["build", "-q", "-t", "interop-saved:1", ctx]);
    k.ok(&["save", "--format", "docker", "-o", archive.to_str().unwrap(), "interop-saved:1"]);
    dockerd.load(&archive);
    assert_eq!(dockerd.ok(&["run", "--rm", "--network", "none", "interop-saved:1"]), DEMO_OUTPUT);
}
