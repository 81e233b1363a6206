//! Running skopeo, the independent peer kiln's interop tests check against.

use std::process::Command;

/// Runs `skopeo ARGS…` and returns its standard output; panics with skopeo's message if it
/// fails, or naming the Debian package if it is not installed.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): install the Debian package skopeo"));
    assert!(out.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
