//! import → save → load round trips, and interop with skopeo's `docker-archive:`,
//! `oci-archive:` and `oci:` transports, on a real busybox rootfs.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use kiln_store::blobs::BlobStore;
use kiln_store::export::archive::{ArchiveFormat, SaveEntry, save};
use kiln_store::export::import::{ImportOptions, import_rootfs};
use kiln_store::export::load::load;
use kiln_store::image::{Image, Platform};
use kiln_store::layer::Compression;
use kiln_testkit::skopeo::skopeo;

fn options(compression: Compression) -> ImportOptions {
    ImportOptions {
        compression,
        platform: Platform::host(),
        created: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        comment: "Imported from -".into(),
    }
}

fn imported(dir: &Path, blobs: &BlobStore, compression: Compression) -> Image {
    let tar = kiln_testkit::busybox::rootfs_tar(dir);
    import_rootfs(blobs, std::fs::File::open(tar).unwrap(), &options(compression)).unwrap()
}

#[test]
fn import_is_deterministic_and_records_the_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::create(&dir.path().join("store")).unwrap();
    let a = imported(dir.path(), &blobs, Compression::Gzip);
    let b = imported(dir.path(), &blobs, Compression::Gzip);
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.layers.len(), 1);
    // The diff id is the digest of the tarball itself: import keeps its bytes.
    let tar = std::fs::read(kiln_testkit::busybox::rootfs_tar(dir.path())).unwrap();
    assert_eq!(a.layers[0].diff_id, kiln_store::Digest::of(&tar));
    assert_eq!(a.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(a.config.architecture, "amd64");
    assert_eq!(a.config.history[0].comment.as_deref(), Some("Imported from -"));

    let z = imported(dir.path(), &blobs, Compression::Zstd);
    assert_eq!(z.layers[0].diff_id, a.layers[0].diff_id);
    assert_eq!(z.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn import_rejects_what_is_not_a_tar() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::create(dir.path()).unwrap();
    let garbage = vec![0x42u8; 4096];
    let err = import_rootfs(&blobs, &garbage[..], &options(Compression::Gzip)).unwrap_err();
    assert!(err.to_string().contains("not a valid tar"), "{err}");
}

#[test]
fn docker_archive_is_read_by_skopeo_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::create(&dir.path().join("store")).unwrap();
    let image = imported(dir.path(), &blobs, Compression::Gzip);
    let archive = dir.path().join("busybox-docker.tar");
    let entry = SaveEntry {
        image: &image,
        name: Some("docker.io/library/busybox:kiln".into()),
        familiar_name: Some("busybox:kiln".into()),
    };
    let file = save(&blobs, &[entry], ArchiveFormat::Docker, std::fs::File::create(&archive).unwrap()).unwrap();
    drop(file);

    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--config",
        &format!("docker-archive:{}", archive.display()),
    ]))
    .unwrap();
    assert_eq!(inspect["rootfs"]["diff_ids"][0], image.layers[0].diff_id.to_string());
    let tags: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("docker-archive:{}", archive.display())])).unwrap();
    assert_eq!(tags["Layers"].as_array().unwrap().len(), 1);

    // skopeo copies it out of our archive, and its own docker-archive loads back into kiln.
    let layout = dir.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:x", layout.display()),
    ]);
    let theirs = dir.path().join("skopeo-docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:x", layout.display()),
        &format!("docker-archive:{}:busybox:fromskopeo", theirs.display()),
    ]);
    let fresh = BlobStore::create(&dir.path().join("store2")).unwrap();
    let loaded = load(&fresh, std::fs::File::open(&theirs).unwrap(), &Platform::host()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].names, vec!["docker.io/library/busybox:fromskopeo".to_string()]);
    assert_eq!(loaded[0].image.config.rootfs.diff_ids, image.config.rootfs.diff_ids);
    // skopeo rewrites the config for docker-archive; kiln keeps the archive's bytes as they are.
    let their_config = skopeo(&["inspect", "--raw", "--config", &format!("docker-archive:{}", theirs.display())]);
    assert_eq!(loaded[0].image.config_raw, their_config.as_bytes());

    // Our own archive loads back to the very same manifest.
    let again = load(&fresh, std::fs::File::open(&archive).unwrap(), &Platform::host()).unwrap();
    assert_eq!(again[0].image.manifest_digest, image.manifest_digest);
    assert_eq!(again[0].names, vec!["docker.io/library/busybox:kiln".to_string()]);
}

#[test]
fn oci_archive_is_read_by_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::create(&dir.path().join("store")).unwrap();
    let image = imported(dir.path(), &blobs, Compression::Zstd);
    let archive = dir.path().join("busybox-oci.tar");
    let entry = SaveEntry { image: &image, name: Some("docker.io/library/busybox:oci".into()), familiar_name: None };
    drop(save(&blobs, &[entry], ArchiveFormat::Oci, std::fs::File::create(&archive).unwrap()).unwrap());
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", archive.display())]);
    assert_eq!(raw.as_bytes(), &image.manifest_raw[..], "skopeo sees our manifest byte for byte");
}

#[test]
fn a_corrupted_blob_fails_the_save_and_a_hostile_archive_stays_inside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::create(&dir.path().join("store")).unwrap();
    let image = imported(dir.path(), &blobs, Compression::Gzip);
    let layer = blobs.path(&image.layers[0].digest);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let entry = SaveEntry { image: &image, name: None, familiar_name: None };
    let err = save(&blobs, &[entry], ArchiveFormat::Oci, std::io::sink()).unwrap_err();
    assert!(err.to_string().contains(&image.layers[0].digest.to_string()), "{err}");

    // An archive whose entries climb out: the paths are keys only, nothing is written there.
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in [("../../escaped", &b"x"[..]), ("manifest.json", b"[]")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name like a hostile tool would.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    let hostile = builder.into_inner().unwrap();
    let loaded = load(&blobs, &hostile[..], &Platform::host()).unwrap();
    assert!(loaded.is_empty());
    assert!(!dir.path().join("escaped").exists() && !dir.path().parent().unwrap().join("escaped").exists());
}
