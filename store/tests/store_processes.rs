//! The store shared by real processes: killed writers (SIGKILL mid-blob, mid-unpack), several
//! processes on one root at once, and prune waiting for a running command.
//!
//! Each test re-executes this test binary as its child (`store_common::ChildProc`); the child
//! runs the same test function, which sees `KILN_STORE_TEST_CHILD` and plays its role.

mod store_common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_store::gc::prune;
use kiln_store::image::media_type::OCI_MANIFEST;
use kiln_store::lock::LockMode;
use kiln_store::{Digest, Store};
use store_common::*;

/// Deterministic pseudo-random bytes (xorshift), so big blobs do not compress or repeat.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn open_exclusive(root: &Path) -> Store {
    Store::open_with(root, LockMode::Exclusive, |_| {}).unwrap()
}

#[test]
fn sigkill_mid_blob_leaves_no_broken_tag_and_gc_cleans_up() {
    if let Some((_, root)) = child_role() {
        // The writer: tags complete images one after the other, then dies writing a big layer.
        let store = Store::open(&root).unwrap();
        for i in 0..3u64 {
            let layer = put_layer(&store, &tar_of(&[("data", &noise(i, 1 << 20))]));
            let image = put_image(&store, &[layer], &format!("image {i}"));
            store.set_tag(&format!("example.com/app:{i}"), &image.manifest, OCI_MANIFEST).unwrap();
        }
        let mut w = store.blobs().writer().unwrap();
        for chunk in 0.. {
            w.write_all(&noise(100 + chunk, 1 << 16)).unwrap();
            w.flush().unwrap();
            if chunk == 16 {
                say("mid-blob");
            }
            if chunk > 16 {
                // Slow down so the parent's SIGKILL lands mid-write, not after a commit.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!();
    }
    let root = tempfile::tempdir().unwrap();
    let child = {
        let mut c = ChildProc::spawn("sigkill_mid_blob_leaves_no_broken_tag_and_gc_cleans_up", "writer", root.path());
        c.expect("mid-blob");
        c
    };
    child.kill();

    let store = open_exclusive(root.path());
    let leftovers = entries(store.blobs().tmp_dir());
    assert_eq!(leftovers.len(), 1, "the killed ingest's temp file: {leftovers:?}");
    assert!(fs::metadata(&leftovers[0]).unwrap().len() >= 16 << 16);
    let tags = store.meta().tags().unwrap();
    assert_eq!(
        tags.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        ["example.com/app:0", "example.com/app:1", "example.com/app:2"]
    );
    assert_tags_complete(&store);
    let blobs_before = store.blobs().list().unwrap();

    let report = prune(&store).unwrap();
    assert_eq!(report.temp, leftovers);
    assert!(report.blobs.is_empty(), "everything stored is tagged: {:?}", report.blobs);
    assert!(entries(store.blobs().tmp_dir()).is_empty());
    assert_eq!(store.blobs().list().unwrap(), blobs_before);
    assert_tags_complete(&store);

    // The store keeps working after the crash.
    let layer = put_layer(&store, &tar_of(&[("after", b"crash")]));
    let image = put_image(&store, &[layer], "after");
    store.set_tag("example.com/app:after", &image.manifest, OCI_MANIFEST).unwrap();
    assert_tags_complete(&store);
}

#[test]
fn sigkill_mid_unpack_leaves_only_a_temp_dir() {
    let files: Vec<(String, Vec<u8>)> = (0..100).map(|i| (format!("f{i:04}"), noise(i, 64 << 10))).collect();
    let tar = tar_of(&files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect::<Vec<_>>());
    let layer = kiln_store::image::Layer {
        digest: Digest::of(&tar),
        size: tar.len() as u64,
        media_type: kiln_store::layer::Compression::Uncompressed
            .media_type(kiln_store::layer::MediaTypeFamily::Oci)
            .into(),
        diff_id: Digest::of(&tar),
    };
    if let Some((_, root)) = child_role() {
        let store = Store::open(&root).unwrap();
        say("unpacking");
        store.snapshots().ensure(store.blobs(), &[layer]).unwrap();
        unreachable!("the parent never sends the whole layer");
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // The blob is a FIFO the parent feeds: the child's unpack progresses only as far as the
    // parent lets it, so the kill lands mid-unpack deterministically.
    let blob_path = store.blobs().path(&layer.digest);
    rustix::fs::mknodat(rustix::fs::CWD, &blob_path, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    let mut child = ChildProc::spawn("sigkill_mid_unpack_leaves_only_a_temp_dir", "unpack", root.path());
    child.expect("unpacking");
    let mut fifo = fs::OpenOptions::new().write(true).open(&blob_path).unwrap();
    fifo.write_all(&tar[..tar.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let tmp = store.snapshots().tmp_dir().to_owned();
    while !entries(&tmp).iter().any(|d| d.join("f0040").exists()) {
        assert!(Instant::now() < deadline, "the child never unpacked f0040 (hang guard)");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill();
    drop(fifo);

    assert!(store.snapshots().list().unwrap().is_empty(), "a killed unpack publishes nothing");
    assert_eq!(entries(&tmp).len(), 1, "the killed unpack's temp dir");

    // Restart: the real blob arrives, an image names it, GC removes the temp dir, and the
    // unpack works despite the dead child's lock file.
    fs::remove_file(&blob_path).unwrap();
    assert_eq!(store.blobs().put(&tar).unwrap(), layer.digest);
    let image = put_image(&store, std::slice::from_ref(&layer), "big");
    store.set_tag("example.com/big:1", &image.manifest, OCI_MANIFEST).unwrap();
    drop(store);
    let store = open_exclusive(root.path());
    let report = prune(&store).unwrap();
    assert!(report.blobs.is_empty(), "{:?}", report.blobs);
    assert!(report.temp.iter().any(|p| p.starts_with(&tmp)), "{:?}", report.temp);
    assert!(entries(&tmp).is_empty());
    let paths = store.snapshots().ensure(store.blobs(), std::slice::from_ref(&layer)).unwrap();
    assert_eq!(paths, vec![store.snapshots().path(&layer.diff_id)]);
    for (name, data) in &files {
        assert_eq!(&fs::read(paths[0].join(name)).unwrap(), data, "{name}");
    }
}

#[test]
fn two_processes_write_tag_and_unpack_on_one_root() {
    const ROUNDS: usize = 60;
    let shared_tar = tar_of(&[("shared", b"both processes unpack this")]);
    if let Some((role, root)) = child_role() {
        let store = Store::open(&root).unwrap();
        let shared = put_layer(&store, &shared_tar);
        let started = Instant::now();
        for i in 0..ROUNDS {
            let own = put_layer(&store, &tar_of(&[("own", format!("{role} {i}").as_bytes())]));
            let image = put_image(&store, &[shared.clone(), own.clone()], &format!("{role} {i}"));
            let reference = format!("example.com/{role}:{i}");
            store.set_tag(&reference, &image.manifest, OCI_MANIFEST).unwrap();
            store.meta().add_blob_sources([&own.digest], &format!("example.com/{role}")).unwrap();
            let tags = store.meta().tags().unwrap();
            assert!(tags.iter().any(|(r, t)| r == &reference && t.digest == image.manifest));
            let paths = store.snapshots().ensure(store.blobs(), &image.layers).unwrap();
            assert_eq!(fs::read(paths[0].join("shared")).unwrap(), b"both processes unpack this");
        }
        say(&format!("{ROUNDS} rounds in {:?}", started.elapsed()));
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let test = "two_processes_write_tag_and_unpack_on_one_root";
    let a = ChildProc::spawn(test, "a", root.path());
    let b = ChildProc::spawn(test, "b", root.path());
    a.wait_ok();
    b.wait_ok();

    let store = Store::open(root.path()).unwrap();
    let tags = store.meta().tags().unwrap();
    assert_eq!(tags.len(), 2 * ROUNDS);
    assert_tags_complete(&store);
    let own = put_layer(&store, &tar_of(&[("own", b"a 7")]));
    assert_eq!(store.meta().blob_sources(&own.digest).unwrap(), ["example.com/a"]);
    // One shared snapshot plus one per round and process; no temp dirs left behind.
    assert_eq!(store.snapshots().list().unwrap().len(), 1 + 2 * ROUNDS);
    assert!(entries(store.snapshots().tmp_dir()).is_empty());
}

#[test]
fn prune_waits_for_a_running_command_and_names_it() {
    if let Some((_, root)) = child_role() {
        let _store = Store::open(&root).unwrap();
        say("holding");
        // Hold the shared lock until the parent closes our stdin.
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut child = ChildProc::spawn("prune_waits_for_a_running_command_and_names_it", "hold", root.path());
    child.expect("holding");
    let pid = child.child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = root.path().to_owned();
    let pruner = std::thread::spawn(move || {
        let store = Store::open_with(&path, LockMode::Exclusive, |holders| {
            tx.send(kiln_store::lock::describe(holders)).unwrap()
        })
        .unwrap();
        prune(&store).unwrap()
    });
    let message = rx.recv().unwrap();
    assert!(message.contains(&format!("(pid {pid})")), "{message}");
    assert!(message.contains("prune_waits_for_a_running_command_and_names_it"), "{message}");
    child.wait_ok();
    assert_eq!(pruner.join().unwrap().blobs, Vec::<Digest>::new());
}

#[test]
fn sigkill_during_metadata_writes_loses_no_committed_tag() {
    use kiln_store::meta::{Meta, TagRecord};
    let record = |i: u64| TagRecord {
        digest: Digest::of(&i.to_le_bytes()),
        media_type: OCI_MANIFEST.into(),
        size: i,
        tagged: 0,
    };
    if let Some((_, root)) = child_role() {
        let meta = Meta::open(&root).unwrap();
        for i in 0.. {
            meta.set_tag(&format!("example.com/m:{i}"), &record(i)).unwrap();
            say(&format!("tagged {i}"));
        }
        unreachable!();
    }
    let root = tempfile::tempdir().unwrap();
    let mut child = ChildProc::spawn("sigkill_during_metadata_writes_loses_no_committed_tag", "tagger", root.path());
    // Killed while it keeps writing: most likely inside a transaction or the open around it.
    child.expect("tagged 30");
    child.kill();

    let meta = Meta::open(root.path()).unwrap();
    let tags = meta.tags().unwrap();
    for i in 0..=30 {
        let reference = format!("example.com/m:{i}");
        assert!(tags.iter().any(|(r, _)| r == &reference), "{reference} was reported committed, then lost");
    }
    for (reference, tag) in &tags {
        let i: u64 = reference.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(tag, &record(i), "{reference}");
    }
    meta.set_tag("example.com/m:after", &record(1000)).unwrap();
    assert_eq!(meta.tag("example.com/m:after").unwrap(), Some(record(1000)));
}
