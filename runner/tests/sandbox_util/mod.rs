//! Shared set-up of the sandbox tests: a busybox rootfs, a sandbox whose helper is this test
//! binary itself (the `sandbox_helper_entry` test of each file), and a capturing runner.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_runner::sandbox::{CancelToken, Exec, HelperCommand, Outcome, OutputEvent, Runtime, Sandbox, Stdio, Stream};

/// The name of the test function every sandbox test file defines as the helper's entry point.
pub const HELPER_TEST: &str = "sandbox_helper_entry";

/// The busybox rootfs tarball, made once per test binary.
fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        kiln_testkit::busybox::rootfs_tar(&dir)
    })
}

/// The busybox image imported into `store` (its tarball made in `dir`): its layers.
pub fn import_busybox(store: &kiln_store::Store, dir: &Path) -> Vec<kiln_store::image::Layer> {
    use kiln_store::export::import::{ImportOptions, import_rootfs};
    let tar = kiln_testkit::busybox::rootfs_tar(dir);
    let options = ImportOptions {
        compression: kiln_store::layer::Compression::Gzip,
        platform: kiln_store::image::Platform::host(),
        created: std::time::SystemTime::UNIX_EPOCH,
        comment: "busybox".into(),
    };
    import_rootfs(store.blobs(), std::fs::File::open(&tar).unwrap(), &options).unwrap().layers
}

/// A fresh busybox rootfs in a temporary directory.
pub fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar").arg("-xf").arg(busybox_tar()).arg("-C").arg(dir.path()).status();
    assert!(status.expect("tar is needed to unpack the busybox rootfs").success(), "tar -xf failed");
    dir
}

/// Fails loudly unless we are root: namespaces, cgroups and mounts need it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the sandbox tests need root (namespaces, cgroups, mounts)");
}

/// This test binary as the helper, with `extra` arguments (e.g. `--skip <marker>`, harmless to
/// the test harness, to tell a test's helpers from those of tests running alongside).
pub fn helper_command(extra: &[&str]) -> HelperCommand {
    let args = ["--exact", HELPER_TEST, "--nocapture", "--test-threads=1", "-q"].iter().chain(extra);
    HelperCommand { program: std::env::current_exe().unwrap(), args: args.map(Into::into).collect() }
}

/// A sandbox with its state in `state` and this test binary as the helper.
pub fn sandbox(runtime: Runtime, state: &Path) -> Sandbox {
    require_root();
    Sandbox::new(runtime, helper_command(&[])).with_state_dir(state)
}

/// What a captured run produced.
pub struct Captured {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<OutputEvent>,
}

/// Runs `exec` capturing its output.
pub fn run(sandbox: &Sandbox, exec: &Exec) -> Result<Captured, kiln_runner::sandbox::SandboxError> {
    let mut events = Vec::new();
    let mut sink = |e: OutputEvent| events.push(e);
    let outcome = sandbox.run(exec, Stdio::Capture(&mut sink), &CancelToken::new())?;
    let text = |s: Stream| {
        events.iter().filter(|e| e.stream == s).map(|e| String::from_utf8_lossy(&e.line)).collect::<String>()
    };
    Ok(Captured { outcome, stdout: text(Stream::Stdout), stderr: text(Stream::Stderr), events })
}

/// `sh -c script` in `rootfs`.
pub fn sh(rootfs: &Path, script: &str) -> Exec {
    Exec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()])
}
