//! buildah (Debian package), the differential tests' second opinion next to docker + BuildKit.
//!
//! Every command runs against a storage of its own (`--root`, `--runroot` in a temp dir, overlay
//! driver), so tests never see each other's images nor the machine's `/var/lib/containers`. Builds
//! use `--isolation oci --runtime runc --format docker --network none`: runc is what docker uses
//! too, and the docker format keeps HEALTHCHECK, SHELL, ONBUILD and STOPSIGNAL in the config.

use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

/// A private buildah storage; removed when dropped.
pub struct Buildah {
    dir: TempDir,
}

impl Default for Buildah {
    fn default() -> Self {
        Buildah::new()
    }
}

impl Buildah {
    /// A fresh storage. Panics naming the package when buildah is missing.
    pub fn new() -> Buildah {
        let dir = tempfile::Builder::new().prefix("kiln-buildah-").tempdir().expect("temp dir for buildah");
        let buildah = Buildah { dir };
        let out = buildah.command(&["version"]).output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "cannot run buildah ({out:?}): install buildah (Debian package; scripts/deps.sh)"
        );
        buildah
    }

    /// `buildah ARGS…` against this storage.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "overlay"])
            .args(args);
        cmd
    }

    /// Runs `buildah ARGS…`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out: Output = self.command(args).output().expect("running buildah");
        assert!(
            out.status.success(),
            "buildah {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports a docker-archive tar; its `RepoTags` name the image (`busybox:latest` resolves as
    /// `FROM busybox`).
    pub fn load(&self, archive: &Path) {
        self.ok(&["pull", "-q", &format!("docker-archive:{}", archive.display())]);
    }

    /// Builds `context` (with the Dockerfile `dockerfile`, `extra` flags) as `tag`.
    pub fn build(&self, tag: &str, dockerfile: &Path, context: &Path, extra: &[&str]) {
        let mut args =
            vec!["bud", "--isolation", "oci", "--runtime", "runc", "--format", "docker", "--network", "none"];
        args.extend_from_slice(&["--pull=never", "-q", "-t", tag, "-f", dockerfile.to_str().expect("UTF-8 path")]);
        args.extend_from_slice(extra);
        args.push(context.to_str().expect("UTF-8 context path"));
        self.ok(&args);
    }

    /// Writes `image` as a docker-archive tar at `dest`.
    pub fn save(&self, image: &str, dest: &Path) {
        self.ok(&["push", "-q", image, &format!("docker-archive:{}:{image}", dest.display())]);
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // Working containers of a failed build hold overlay mounts in the storage.
        let _ = self.command(&["rm", "--all"]).output();
        let _ = self.command(&["umount", "--all"]).output();
    }
}
