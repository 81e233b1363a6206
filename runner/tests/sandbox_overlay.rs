//! A step on a real overlay snapshot of an imported image: its writes become the layer, and
//! what the sandbox itself provided (mount stubs for /etc/hosts, resolv.conf, hostname, the
//! working directory aside) leaves no trace in it.

mod sandbox_util;

use kiln_runner::diff::DiffOptions;
use kiln_runner::sandbox::{Outcome, Runtime};
use kiln_runner::snapshot::{Backend, Snapshotter};
use kiln_store::Store;
use kiln_store::export::import::{ImportOptions, import_rootfs};
use kiln_store::image::Platform;
use kiln_store::layer::Compression;
use sandbox_util::{run, sandbox, sh};

/// Entry point of the helper process when this binary is re-executed as the sandbox helper.
#[test]
fn sandbox_helper_entry() {
    kiln_runner::sandbox::helper_main_if_requested();
}

#[test]
fn only_the_steps_own_writes_reach_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let tar = kiln_testkit::busybox::rootfs_tar(dir.path());
    let options = ImportOptions {
        compression: Compression::Gzip,
        platform: Platform::host(),
        created: std::time::SystemTime::UNIX_EPOCH,
        comment: "busybox".into(),
    };
    let image = import_rootfs(store.blobs(), std::fs::File::open(&tar).unwrap(), &options).unwrap();
    let snapshotter = Snapshotter::new(&store).unwrap();
    assert_eq!(snapshotter.backend(), Backend::Overlay, "{:?}", snapshotter.fallback_reason());
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());

    // A step that changes nothing gives an empty layer, even without the diff's skip list.
    let mut snapshot = snapshotter.prepare(&image.layers).unwrap();
    let out = run(&sb, &sh(snapshot.rootfs(), "cat /etc/hosts >/dev/null && test -s /etc/hostname")).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    let diff = snapshot.diff(&DiffOptions::default()).unwrap();
    assert_eq!(diff.entries, 0, "the sandbox left traces in the upperdir");

    // A write lands in the layer, and only it.
    let mut snapshot = snapshotter.prepare(&image.layers).unwrap();
    let out = run(&sb, &sh(snapshot.rootfs(), "echo hi > /root/new.txt")).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    let diff = snapshot.diff(&DiffOptions::default()).unwrap();
    assert_eq!(diff.entries, 2, "expected root/ and root/new.txt");
}
