//! Running the `kiln` binary the way a user does, against a store of the test's own, with
//! the busybox base image at hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp directory holding a store root (`store/`), a docker config dir (`docker/`) and the
/// busybox rootfs tarball, and the kiln binary to run against them.
pub struct Kiln {
    /// The temp directory; tests put their own files here too.
    pub dir: tempfile::TempDir,
    /// The busybox rootfs tar (see [`crate::busybox`]).
    pub rootfs: PathBuf,
    bin: PathBuf,
}

impl Kiln {
    /// A fresh environment for `bin` (pass `env!("CARGO_BIN_EXE_kiln")`).
    pub fn new(bin: &str) -> Kiln {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let rootfs = crate::busybox::rootfs_tar(dir.path());
        Kiln { dir, rootfs, bin: PathBuf::from(bin) }
    }

    /// [`Kiln::new`] with the busybox rootfs imported as `busybox:latest`, the base image the
    /// build tests' Dockerfiles use.
    pub fn with_busybox(bin: &str) -> Kiln {
        let kiln = Kiln::new(bin);
        let rootfs = kiln.rootfs.to_str().expect("UTF-8 temp path").to_owned();
        kiln.ok(&["import", &rootfs, "busybox:latest"]);
        kiln
    }

    /// The store root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A path inside the temp directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs kiln with `args`.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kiln")
    }

    /// The command that runs kiln with `args` in this environment, to adjust before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("KILN_ROOT", self.root()).env("DOCKER_CONFIG", self.dir.path().join("docker"));
        cmd
    }

    /// Runs kiln, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs kiln, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("UTF-8 output")
    }

    /// `kiln inspect image` as JSON.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", image])).expect("inspect prints JSON")
    }

    /// The number of blobs in the store.
    pub fn blob_count(&self) -> usize {
        blob_files(&self.root())
    }
}

/// The number of blobs in the store at `root`.
pub fn blob_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}
