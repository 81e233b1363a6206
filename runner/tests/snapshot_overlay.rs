//! Real overlay snapshots (root, overlayfs): what a step's changes become as a layer, the same
//! with the copy backend, 200 lowerdirs, and clean-up after success, failure, a panic and a
//! killed process.

mod diff_support;

use std::fs;
use std::io::Write;
use std::path::Path;

use kiln_runner::diff::DiffOptions;
use kiln_runner::snapshot::mount::MountApi;
use kiln_runner::snapshot::{Backend, Snapshot, Snapshotter};
use kiln_store::Store;
use kiln_store::image::Layer;
use kiln_store::layer::{Compression, WhiteoutMode, apply_layer};

use diff_support::*;

/// Base layers' time: whole seconds, as a tar gives. Older than EPOCH.
const BASE_TIME: i64 = 1_600_000_000;
const EPOCH: i64 = 1_700_000_000;

fn epoch_options() -> DiffOptions {
    DiffOptions { source_date_epoch: Some(EPOCH), ..DiffOptions::default() }
}

/// Two layers: a base, and one that changes a file and deletes another.
fn two_layers(store: &Store, dir: &Path) -> Vec<Layer> {
    let l1 = make_layer(
        store.blobs(),
        &dir.join("l1"),
        &[
            ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            ("etc/keep", b"to be deleted"),
            ("data/a", b"a"),
            ("data/b", b"b"),
            ("var/lib/dpkg/status", b"Package: base\n"),
            ("bin/tool", b"#!/bin/sh\n"),
        ],
        &[],
        BASE_TIME,
    );
    let l2 = make_layer(
        store.blobs(),
        &dir.join("l2"),
        &[("etc/passwd", b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")],
        &["data/b"],
        BASE_TIME,
    );
    vec![l1, l2]
}

/// What a RUN might do, through the mounted root. `replace_dir` also deletes and recreates a
/// directory (overlay: opaque; copy: whiteouts of its old entries).
fn change(root: &Path, replace_dir: bool) {
    write(&root.join("new.txt"), b"new");
    fs::remove_file(root.join("etc/keep")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(root.join("var/lib/dpkg/status"))
        .unwrap()
        .write_all(b"Package: new\n")
        .unwrap();
    // Opened for writing and left alone: copied up, but not a change.
    drop(fs::OpenOptions::new().write(true).open(root.join("bin/tool")).unwrap());
    chmod(&root.join("etc/passwd"), 0o600);
    std::os::unix::fs::symlink("/etc/passwd", root.join("lnk")).unwrap();
    write(&root.join("h1"), b"hardlinked");
    fs::hard_link(root.join("h1"), root.join("h2")).unwrap();
    if replace_dir {
        fs::remove_dir_all(root.join("data")).unwrap();
        fs::create_dir(root.join("data")).unwrap();
        write(&root.join("data/c"), b"c");
    }
}

fn names(store: &Store, layer: &kiln_runner::diff::LayerDiff) -> Vec<String> {
    read_layer(store.blobs(), &layer.layer.digest).0.into_iter().map(|e| e.path).collect()
}

fn store(tmp: &Path) -> Store {
    require_root();
    Store::open(&tmp.join("store")).unwrap()
}

#[test]
fn overlay_diff_has_whiteouts_opaque_dirs_and_parents_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    let snapshotter = Snapshotter::with_backend(&store, Backend::Overlay).unwrap();

    let mut digests = Vec::new();
    for _ in 0..2 {
        let mut snap = snapshotter.prepare(&layers).unwrap();
        let root = snap.rootfs().to_owned();
        let mount = mounts_under(&root);
        assert!(
            mount.len() == 1
                && mount[0].contains(" kiln-overlay ")
                && mount[0].contains(",lowerdir+=")
                && mount[0].contains("fsync=volatile"),
            "{mount:?}"
        );
        assert!(fs::read_to_string(root.join("etc/passwd")).unwrap().contains("user:x:1000"));
        assert!(!root.join("data/b").exists() && root.join("data/a").exists());
        change(&root, true);
        let diff = snap.diff(&epoch_options()).unwrap();
        assert_eq!(
            names(&store, &diff),
            [
                "data/",
                "data/.wh..wh..opq",
                "data/c",
                "etc/",
                "etc/.wh.keep",
                "etc/passwd",
                "h1",
                "h2",
                "lnk",
                "new.txt",
                "var/",
                "var/lib/",
                "var/lib/dpkg/",
                "var/lib/dpkg/status",
            ]
        );
        let (entries, _) = read_layer(store.blobs(), &diff.layer.digest);
        let get = |n: &str| entries.iter().find(|e| e.path == n).unwrap();
        // Parents copied up unchanged keep their time; new things get the epoch.
        assert_eq!(get("var/lib/").mtime, BASE_TIME as u64);
        assert_eq!(get("new.txt").mtime, EPOCH as u64);
        assert_eq!((get("etc/passwd").mode, get("etc/passwd").mtime), (0o600, BASE_TIME as u64));
        assert_eq!(get("h2").link.as_deref(), Some("h1"));
        assert_eq!(get("var/lib/dpkg/status").data, b"Package: base\nPackage: new\n");
        assert_eq!((get("etc/.wh.keep").kind, get("etc/.wh.keep").data.len()), (tar::EntryType::Regular, 0));
        assert!(mounts_under(snap.dir()).len() == 1, "the base view is unmounted after the diff");
        digests.push((diff.layer.digest.clone(), diff.layer.diff_id.clone()));
        let dir = snap.dir().to_owned();
        snap.cleanup().unwrap();
        assert!(mounts_under(&dir).is_empty() && !dir.exists());
    }
    assert_eq!(digests[0], digests[1], "same change, same layer");
}

/// Applies `layers` in delete mode into a fresh directory under `dir` and describes it.
fn flatten(store: &Store, dir: &Path, layers: &[&Layer]) -> std::collections::BTreeMap<String, Desc> {
    fs::create_dir(dir).unwrap();
    for layer in layers {
        let blob = std::io::BufReader::new(store.blobs().open(&layer.digest).unwrap());
        apply_layer(blob, dir, WhiteoutMode::Delete).unwrap();
    }
    describe(dir)
}

fn layer(d: &kiln_runner::diff::LayerDiff) -> Layer {
    Layer {
        digest: d.layer.digest.clone(),
        size: d.layer.size,
        media_type: d.layer.media_type.to_owned(),
        diff_id: d.layer.diff_id.clone(),
    }
}

#[test]
fn copy_backend_gives_the_same_layer_as_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    let mut results = Vec::new();
    for backend in [Backend::Overlay, Backend::Copy] {
        let snapshotter = Snapshotter::with_backend(&store, backend).unwrap();
        let mut per_backend = Vec::new();
        for replace_dir in [false, true] {
            let mut snap = snapshotter.prepare(&layers).unwrap();
            assert_eq!(snap.backend(), backend);
            assert_eq!(snap.upperdir().is_some(), backend == Backend::Overlay);
            change(snap.rootfs(), replace_dir);
            per_backend.push(snap.diff(&epoch_options()).unwrap());
        }
        results.push(per_backend);
    }
    let (overlay, copy) = (&results[0], &results[1]);
    assert_eq!(names(&store, &overlay[0]), names(&store, &copy[0]));
    assert_eq!(overlay[0].layer, copy[0].layer, "byte-identical without a replaced directory");
    // A replaced directory: opaque marker versus whiteouts, the same tree once applied.
    assert!(names(&store, &copy[1]).contains(&"data/.wh.a".to_owned()));
    let (o, c) = (layer(&overlay[1]), layer(&copy[1]));
    let a = flatten(&store, &tmp.path().join("flat-overlay"), &[&layers[0], &layers[1], &o]);
    let b = flatten(&store, &tmp.path().join("flat-copy"), &[&layers[0], &layers[1], &c]);
    assert_eq!(a, b);
    assert!(a.contains_key("data/c") && !a.contains_key("data/a") && !a.contains_key("etc/keep"));
}

#[test]
fn scratch_images_get_an_empty_lowerdir() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    for backend in [Backend::Overlay, Backend::Copy] {
        let mut snap = Snapshotter::with_backend(&store, backend).unwrap().prepare(&[]).unwrap();
        assert_eq!(fs::read_dir(snap.rootfs()).unwrap().count(), 0);
        write(&snap.rootfs().join("bin/sh"), b"sh");
        let diff = snap.diff(&DiffOptions { compression: Compression::Zstd, ..epoch_options() }).unwrap();
        assert_eq!(names(&store, &diff), ["bin/", "bin/sh"], "{backend:?}");
        let unchanged =
            Snapshotter::with_backend(&store, backend).unwrap().prepare(&[]).unwrap().diff(&epoch_options());
        assert_eq!(unchanged.unwrap().entries, 0, "{backend:?}: nothing changed, empty layer");
    }
}

#[test]
fn two_hundred_lowerdirs_mount_with_both_mount_apis() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers: Vec<Layer> = (0..200)
        .map(|i| {
            let name = format!("f{i:03}");
            let content = format!("layer {i}");
            make_layer(
                store.blobs(),
                &tmp.path().join(format!("l{i}")),
                &[(name.as_str(), content.as_bytes()), ("common", content.as_bytes())],
                &[],
                BASE_TIME,
            )
        })
        .collect();
    for api in [MountApi::Auto, MountApi::Legacy] {
        let snapshotter = Snapshotter::with_backend(&store, Backend::Overlay).unwrap().with_mount_api(api);
        let mut snap = snapshotter.prepare(&layers).unwrap();
        let root = snap.rootfs();
        assert_eq!(fs::read_to_string(root.join("common")).unwrap(), "layer 199", "{api:?}: top layer wins");
        for i in [0, 57, 199] {
            assert_eq!(fs::read_to_string(root.join(format!("f{i:03}"))).unwrap(), format!("layer {i}"));
        }
        assert_eq!(fs::read_dir(root).unwrap().count(), 201);
        // The legacy path needed its short links (the full paths exceed a page); the new API none.
        let links = fs::read_dir(snap.dir().join("links")).unwrap().count();
        assert_eq!(links, if api == MountApi::Legacy { 200 } else { 0 }, "{api:?}");
        fs::remove_file(root.join("f100")).unwrap();
        let diff = snap.diff(&epoch_options()).unwrap();
        assert_eq!(names(&store, &diff), [".wh.f100"], "{api:?}");
    }
}

#[test]
fn nothing_is_left_after_a_panic_or_a_failed_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    for backend in [Backend::Overlay, Backend::Copy] {
        let snapshotter = Snapshotter::with_backend(&store, backend).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut snap = snapshotter.prepare(&layers).unwrap();
            write(&snap.rootfs().join("half-done"), b"x");
            let _ = snap.diff(&DiffOptions::default());
            panic!("the step failed");
        }));
        assert!(panicked.is_err());
        assert!(mounts_under(snapshotter.work_dir()).is_empty(), "{backend:?}");
        assert_eq!(fs::read_dir(snapshotter.work_dir()).unwrap().count(), 0, "{backend:?}");

        let missing = Layer { digest: kiln_store::Digest::of(b"no such blob"), ..layers[0].clone() };
        let err = snapshotter.prepare(&[layers[0].clone(), missing]).unwrap_err();
        assert!(err.to_string().contains(kiln_store::Digest::of(b"no such blob").hex()), "{err}");
        assert!(mounts_under(snapshotter.work_dir()).is_empty());
        assert_eq!(fs::read_dir(snapshotter.work_dir()).unwrap().count(), 0, "{backend:?}");
    }
}

#[test]
fn the_probe_picks_overlay_on_this_host() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let snapshotter = Snapshotter::new(&store).unwrap();
    assert_eq!(snapshotter.fallback_reason(), None);
    assert_eq!(snapshotter.backend(), Backend::Overlay);
    assert_eq!(fs::read_dir(snapshotter.work_dir()).unwrap().count(), 0, "the probe cleans up");
}

/// Environment variable telling [`killed_process_child`] to leave a snapshot behind.
const STALE_ROOT: &str = "KILN_TEST_STALE_SNAPSHOT_ROOT";

/// Not a test on its own: the child process of [`stale_snapshots_of_a_killed_process_are_removed`],
/// which prepares a snapshot and dies without cleaning up.
#[test]
fn killed_process_child() {
    let Some(root) = std::env::var_os(STALE_ROOT) else { return };
    let store = Store::open(Path::new(&root)).unwrap();
    let snap: Snapshot = Snapshotter::with_backend(&store, Backend::Overlay).unwrap().prepare(&[]).unwrap();
    write(&snap.rootfs().join("file"), b"x");
    std::process::abort();
}

#[test]
fn stale_snapshots_of_a_killed_process_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_process_child", "--nocapture"])
        .env(STALE_ROOT, store.root())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let snapshotter = Snapshotter::with_backend(&store, Backend::Overlay).unwrap();
    assert_eq!(mounts_under(snapshotter.work_dir()).len(), 1, "the killed child's overlay is still mounted");
    // A live snapshot of this process is not stale.
    let live = snapshotter.prepare(&[]).unwrap();
    assert_eq!(snapshotter.remove_stale().unwrap(), 1);
    assert_eq!(mounts_under(snapshotter.work_dir()).len(), 1, "only the live one");
    assert!(live.rootfs().exists());
    live.cleanup().unwrap();
    assert!(mounts_under(snapshotter.work_dir()).is_empty());
    assert_eq!(fs::read_dir(snapshotter.work_dir()).unwrap().count(), 0);
}

#[test]
fn legacy_mount_with_few_layers_passes_the_paths_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    let snapshotter = Snapshotter::with_backend(&store, Backend::Overlay).unwrap().with_mount_api(MountApi::Legacy);
    let mut snap = snapshotter.prepare(&layers).unwrap();
    assert!(fs::read_to_string(snap.rootfs().join("etc/passwd")).unwrap().contains("user:x:1000"));
    assert_eq!(fs::read_dir(snap.dir().join("links")).unwrap().count(), 0, "no short links needed");
    let mount = mounts_under(snap.rootfs()).join("\n");
    let lowers = format!("lowerdir={}/", store.root().join("snapshots").display());
    assert!(mount.contains(" kiln-overlay ") && mount.contains(&lowers) && mount.contains("fsync=volatile"), "{mount}");
    fs::remove_file(snap.rootfs().join("data/a")).unwrap();
    assert_eq!(names(&store, &snap.diff(&epoch_options()).unwrap()), ["data/", "data/.wh.a"]);
}

#[test]
fn an_in_place_change_that_keeps_size_and_mtime_is_still_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    for backend in [Backend::Overlay, Backend::Copy] {
        let mut snap = Snapshotter::with_backend(&store, backend).unwrap().prepare(&layers).unwrap();
        let tool = snap.rootfs().join("bin/tool");
        fs::write(&tool, b"#!/bin/XX\n").unwrap();
        set_times(&tool, BASE_TIME, 0);
        let diff = snap.diff(&epoch_options()).unwrap();
        assert_eq!(names(&store, &diff), ["bin/", "bin/tool"], "{backend:?}");
    }
}

#[test]
fn a_kept_upperdir_serves_the_next_step_without_unpacking_its_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let layers = two_layers(&store, tmp.path());
    let snapshotter = Snapshotter::new(&store).unwrap();
    assert_eq!(snapshotter.backend(), Backend::Overlay);
    let mut snap = snapshotter.prepare(&layers).unwrap();
    change(snap.rootfs(), true);
    let top = layer(&snap.diff(&DiffOptions::default()).unwrap());
    let stack: Vec<Layer> = layers.iter().cloned().chain(std::iter::once(top.clone())).collect();
    let diff_ids: Vec<_> = stack.iter().map(|l| l.diff_id.clone()).collect();
    let chain = kiln_store::image::chain_ids(&diff_ids).pop().unwrap();
    snapshotter.keep(snap, &chain).unwrap();
    assert!(store.snapshots().contains(&chain));
    assert!(fs::read_dir(snapshotter.work_dir()).unwrap().next().is_none(), "the step's directory is gone");

    // The blob is not needed any more to mount the stack: the kept tree is the snapshot, and
    // it shows what unpacking the layer would have shown.
    let expected = flatten(&store, &tmp.path().join("flat"), &stack.iter().collect::<Vec<_>>());
    store.blobs().remove(&top.digest).unwrap();
    let next = snapshotter.prepare(&stack).unwrap();
    let mut seen = describe(next.rootfs());
    let mut want = expected;
    // Directory times differ between a live upperdir and an unpacked tar; content does not.
    for d in seen.values_mut().chain(want.values_mut()) {
        d.mtime = None;
    }
    assert_eq!(seen, want);
    next.cleanup().unwrap();
}
