//! A busybox root filesystem tarball, the base image of kiln's tests.
//!
//! No image can be pulled on the machines kiln is tested on, so tests make their base: the
//! static busybox of Debian's `busybox-static` package, its applets as symlinks in `/bin`,
//! `/etc/passwd` and `/etc/group` with `root`, `app` (1000) and `nobody`. The tarball is made by
//! `testdata/busybox/mkrootfs.sh`, the same script the README's demo uses, and is deterministic.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The script that makes the tarball.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/busybox/mkrootfs.sh")
}

/// Writes the busybox rootfs tarball into `dir` and returns its path.
///
/// Panics with the reason (e.g. "install the Debian package busybox-static") if it cannot.
pub fn rootfs_tar(dir: &Path) -> PathBuf {
    let out = dir.join("busybox-rootfs.tar");
    let result = Command::new("bash").arg(script()).arg(&out).output();
    match result {
        Ok(o) if o.status.success() => out,
        Ok(o) => panic!("making the busybox rootfs failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run {}: {e}", script().display()),
    }
}
