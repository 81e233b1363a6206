//! Snapshots, tags and prune within one process: what `ensure` unpacks and refuses, what
//! `set_tag` refuses, and that prune removes exactly what no tag or live lease reaches.

mod store_common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_store::gc::{GcError, prune};
use kiln_store::image::media_type::{OCI_INDEX, OCI_MANIFEST};
use kiln_store::layer::{Compression, MediaTypeFamily};
use kiln_store::lock::LockMode;
use kiln_store::meta::LeaseResource;
use kiln_store::{Digest, Store, StoreError};
use store_common::*;

fn open_exclusive(root: &Path) -> Store {
    Store::open_with(root, LockMode::Exclusive, |_| {}).unwrap()
}

#[test]
fn ensure_unpacks_each_layer_once_bottom_first_with_overlay_whiteouts() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let base = put_layer(&store, &tar_of(&[("etc/os-release", b"kiln"), ("gone", b"x")]));
    let top = put_layer(&store, &tar_of(&[("etc/app", b"app"), (".wh.gone", b"")]));
    let image = put_image(&store, &[base, top], "two");
    let paths = store.snapshots().ensure(store.blobs(), &image.layers).unwrap();
    let chain = image.chain_ids();
    assert_eq!(paths, vec![store.snapshots().path(&chain[0]), store.snapshots().path(&chain[1])]);
    assert_eq!(fs::read(paths[0].join("etc/os-release")).unwrap(), b"kiln");
    assert_eq!(fs::read(paths[1].join("etc/app")).unwrap(), b"app");
    assert!(!paths[1].join("etc/os-release").exists(), "a snapshot holds its own layer only");
    let whiteout = fs::symlink_metadata(paths[1].join("gone")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "overlay whiteout");
    assert_eq!(fs::metadata(&paths[0]).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(store.snapshots().list().unwrap(), sorted(chain.clone()));

    // Already there: not unpacked again (a marker file in the snapshot survives).
    fs::write(paths[1].join("marker"), b"").unwrap();
    assert_eq!(store.snapshots().ensure(store.blobs(), &image.layers).unwrap(), paths);
    assert!(paths[1].join("marker").exists());
    assert!(entries(store.snapshots().tmp_dir()).is_empty());
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

#[test]
fn ensure_refuses_a_wrong_diff_id_or_a_corrupt_blob_and_publishes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut layer = put_layer(&store, &tar_of(&[("a", b"a")]));
    layer.diff_id = Digest::of(b"not this tar");
    let err = store.snapshots().ensure(store.blobs(), std::slice::from_ref(&layer)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unpacking layer {}: its tar hashes to {}, but the image config declares diff id {}",
            layer.digest,
            Digest::of(&tar_of(&[("a", b"a")])),
            layer.diff_id
        )
    );

    // An uncompressed layer whose bytes changed on disk but still form a valid tar: only the
    // blob digest can tell, once the whole blob is read.
    let tar = tar_of(&[("file", b"original content")]);
    let digest = store.blobs().put(&tar).unwrap();
    let corrupt: Vec<u8> = String::from_utf8_lossy(&tar).replace("original", "tampered").into_bytes();
    assert_eq!(corrupt.len(), tar.len());
    fs::write(store.blobs().path(&digest), &corrupt).unwrap();
    let layer = kiln_store::image::Layer {
        digest: digest.clone(),
        size: 0,
        media_type: Compression::Uncompressed.media_type(MediaTypeFamily::Oci).into(),
        diff_id: Digest::of(&tar),
    };
    let err = store.snapshots().ensure(store.blobs(), &[layer]).unwrap_err().to_string();
    assert!(err.starts_with(&format!("unpacking layer {digest}: ")), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");

    let missing = kiln_store::image::Layer {
        digest: Digest::of(b"nope"),
        size: 0,
        media_type: Compression::Uncompressed.media_type(MediaTypeFamily::Oci).into(),
        diff_id: Digest::of(b""),
    };
    let err = store.snapshots().ensure(store.blobs(), &[missing]).unwrap_err().to_string();
    assert!(err.contains(&format!("blob {} is not in the store", Digest::of(b"nope"))), "{err}");

    assert!(store.snapshots().list().unwrap().is_empty());
    assert!(entries(store.snapshots().tmp_dir()).is_empty(), "failed unpacks clean up");
}

#[test]
fn concurrent_ensure_of_one_chain_from_two_handles() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..200).map(|i| (format!("d/f{i}"), vec![i as u8; 4096])).collect();
    let tar = tar_of(&files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect::<Vec<_>>());
    let image = put_image(&store, &[put_layer(&store, &tar)], "c");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let own = Store::open(root.path()).unwrap();
                    own.snapshots().ensure(own.blobs(), &image.layers).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[1]);
    for (name, data) in &files {
        assert_eq!(&fs::read(results[0][0].join(name)).unwrap(), data);
    }
    assert!(entries(store.snapshots().tmp_dir()).is_empty());
}

#[test]
fn set_tag_refuses_incomplete_images() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let layer = put_layer(&store, &tar_of(&[("a", b"a")]));
    let image = put_image(&store, std::slice::from_ref(&layer), "x");
    store.blobs().remove(&layer.digest).unwrap();
    let err = store.set_tag("example.com/x:1", &image.manifest, OCI_MANIFEST).unwrap_err();
    assert!(matches!(err, StoreError::Incomplete { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("cannot tag example.com/x:1 as {}: blob {} is not in the store", image.manifest, layer.digest)
    );
    let err = store.set_tag("example.com/x:1", &Digest::of(b"none"), OCI_MANIFEST).unwrap_err();
    assert!(err.to_string().contains("is not in the store"), "{err}");
    assert_eq!(store.meta().tag("example.com/x:1").unwrap(), None);

    put_layer(&store, &tar_of(&[("a", b"a")]));
    let record = store.set_tag("example.com/x:1", &image.manifest, OCI_MANIFEST).unwrap();
    assert_eq!(record.size, store.blobs().size(&image.manifest).unwrap());
    assert_eq!(store.meta().tag("example.com/x:1").unwrap(), Some(record));
}

#[test]
fn prune_removes_exactly_what_no_tag_or_live_lease_reaches() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let base = put_layer(&store, &tar_of(&[("base", b"base layer")]));
    let app = put_layer(&store, &tar_of(&[("app", b"app layer")]));
    let old = put_layer(&store, &tar_of(&[("old", b"old layer, 23 bytes....")]));

    let kept = put_image(&store, &[base.clone(), app.clone()], "kept");
    store.set_tag("example.com/kept:1", &kept.manifest, OCI_MANIFEST).unwrap();
    let dropped = put_image(&store, &[base.clone(), old.clone()], "dropped");
    // An index tag keeps its present child and does not mind the absent one.
    let child = put_image(&store, std::slice::from_ref(&app), "in index");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": child.manifest.to_string(), "size": store.blobs().size(&child.manifest).unwrap(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": Digest::of(b"arm64 manifest, never pulled").to_string(), "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    });
    let index = store.blobs().put(&serde_json::to_vec(&index).unwrap()).unwrap();
    store.set_tag("example.com/multi:1", &index, OCI_INDEX).unwrap();

    let leased = store.blobs().put(b"leased by a live process").unwrap();
    let leased_snapshot = Digest::of(b"a snapshot under construction");
    // The guard outlives this store handle, as another process's lease would.
    let lease = store.meta().lease(vec![LeaseResource::Blob(leased.clone())]).unwrap();
    lease.add(LeaseResource::Snapshot(leased_snapshot.clone())).unwrap();
    fs::create_dir(store.snapshots().path(&leased_snapshot)).unwrap();
    let orphan = store.blobs().put(b"leased by a dead process").unwrap();
    let stale_id = lease_and_die(root.path(), &orphan);
    let junk = store.blobs().put(b"junk").unwrap();
    store.meta().add_blob_sources([&junk], "example.com/junk").unwrap();

    for image in [&kept, &dropped, &child] {
        store.snapshots().ensure(store.blobs(), &image.layers).unwrap();
    }
    fs::write(store.blobs().tmp_dir().join("ingest-killed"), b"12345").unwrap();
    fs::create_dir(store.snapshots().tmp_dir().join("killed-unpack")).unwrap();
    fs::write(store.snapshots().tmp_dir().join("killed-unpack/file"), b"123").unwrap();

    let blobs_before = store.blobs().list().unwrap();
    let sizes: std::collections::HashMap<Digest, u64> =
        blobs_before.iter().map(|d| (d.clone(), store.blobs().size(d).unwrap())).collect();
    drop(store);

    // Prune needs the exclusive lock.
    let shared = Store::open(root.path()).unwrap();
    assert!(matches!(prune(&shared), Err(GcError::NotExclusive { .. })));
    drop(shared);

    let store = open_exclusive(root.path());
    let report = prune(&store).unwrap();

    let mut expected_blobs =
        vec![dropped.manifest.clone(), dropped.config.clone(), old.digest.clone(), orphan, junk.clone()];
    expected_blobs.sort();
    assert_eq!(report.blobs, expected_blobs);
    assert_eq!(report.snapshots, vec![dropped.chain_ids()[1].clone()]);
    assert_eq!(report.leases, vec![stale_id]);
    let blob_bytes: u64 = [&dropped.manifest, &dropped.config, &old.digest].iter().map(|d| sizes[*d]).sum::<u64>()
        + b"leased by a dead process".len() as u64
        + 4;
    assert_eq!(report.bytes_freed, blob_bytes + 23 + 5 + 3, "blobs + the old snapshot's file + temp files");
    assert!(report.temp.contains(&store.blobs().tmp_dir().join("ingest-killed")));
    assert!(report.temp.contains(&store.snapshots().tmp_dir().join("killed-unpack")));

    let mut survivors: Vec<Digest> = blobs_before.into_iter().filter(|d| !expected_blobs.contains(d)).collect();
    survivors.sort();
    assert_eq!(store.blobs().list().unwrap(), survivors);
    for d in kept.blobs().iter().chain(&child.blobs()).chain([&index, &leased]) {
        assert!(survivors.contains(d), "{d} must survive");
    }
    let mut snapshots = kept.chain_ids();
    snapshots.extend(child.chain_ids());
    snapshots.push(leased_snapshot);
    assert_eq!(store.snapshots().list().unwrap(), sorted(snapshots));
    assert_tags_complete(&store);
    assert!(store.meta().blob_sources(&junk).unwrap().is_empty());
    assert_eq!(store.meta().leases().unwrap().iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), [lease.id()]);
    for dir in [store.blobs().tmp_dir(), store.snapshots().tmp_dir(), store.snapshots().locks_dir()] {
        assert!(entries(dir).is_empty(), "{dir:?}");
    }

    // Nothing left to remove; and once the lease goes, its content goes too.
    assert_eq!(prune(&store).unwrap(), Default::default());
    drop(lease);
    let report = prune(&store).unwrap();
    assert_eq!(report.blobs, vec![leased]);
    assert_eq!(report.snapshots.len(), 1);
    assert_tags_complete(&store);
}

/// Makes a lease from a process that exits without releasing it, and returns its id.
fn lease_and_die(root: &Path, blob: &Digest) -> String {
    let before: Vec<String> = Store::open(root).unwrap().meta().leases().unwrap().into_iter().map(|l| l.id).collect();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["lease_child", "--exact", "--nocapture"])
        .env(CHILD_ENV, "lease")
        .env(ROOT_ENV, root)
        .env("KILN_STORE_TEST_BLOB", blob.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let after = Store::open(root).unwrap().meta().leases().unwrap();
    let new: Vec<_> = after.into_iter().filter(|l| !before.contains(&l.id)).collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].is_stale(), "its owner exited");
    new[0].id.clone()
}

/// The child of [`lease_and_die`] (run by itself, it takes a lease and releases it).
#[test]
fn lease_child() {
    let own_root = tempfile::tempdir().unwrap();
    let (root, blob) = match child_role() {
        Some((_, root)) => (root, std::env::var("KILN_STORE_TEST_BLOB").unwrap().parse::<Digest>().unwrap()),
        None => (own_root.path().to_owned(), Digest::of(b"x")),
    };
    let store = Store::open(&root).unwrap();
    let lease = store.meta().lease(vec![LeaseResource::Blob(blob.clone())]).unwrap();
    assert_eq!(store.meta().leases().unwrap().last().unwrap().resources, vec![LeaseResource::Blob(blob)]);
    if child_role().is_some() {
        // Exit without the guard's drop: the lease outlives its owner.
        std::process::exit(0);
    }
    drop(lease);
    assert!(store.meta().leases().unwrap().is_empty());
}

#[test]
fn prune_stops_before_deleting_anything_when_a_tag_cannot_be_followed() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let layer = put_layer(&store, &tar_of(&[("a", b"a")]));
    let image = put_image(&store, std::slice::from_ref(&layer), "broken");
    store.set_tag("example.com/broken:1", &image.manifest, OCI_MANIFEST).unwrap();
    let junk = store.blobs().put(b"junk").unwrap();
    // Damage the store behind kiln's back: the config disappears.
    store.blobs().remove(&image.config).unwrap();
    drop(store);

    let store = open_exclusive(root.path());
    let err = prune(&store).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot follow tag example.com/broken:1 ({}): blob {} is not in the store; remove it with `kiln rmi example.com/broken:1`",
            image.manifest, image.config
        )
    );
    assert!(store.blobs().contains(&junk) && store.blobs().contains(&layer.digest), "nothing deleted");

    store.meta().remove_tag("example.com/broken:1").unwrap();
    let report = prune(&store).unwrap();
    assert_eq!(report.blobs, sorted(vec![image.manifest, layer.digest, junk]));
}
