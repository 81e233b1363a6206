//! Helpers shared by the `store_*` tests: small images built by hand, and child processes
//! (the test binary re-executing one of its own tests) for crash and concurrency tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use kiln_store::image::{self, Layer};
use kiln_store::{Digest, Store};

/// The env var telling a re-executed test binary which child role to play.
pub const CHILD_ENV: &str = "KILN_STORE_TEST_CHILD";
/// The env var naming the store root a child works on.
pub const ROOT_ENV: &str = "KILN_STORE_TEST_ROOT";
/// Marks the lines a child prints for its parent (libtest prints its own lines too).
pub const SAY: &str = "CHILD:";

/// A layer tar with these files (path, content), deterministic (fixed mtimes and owners).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// gzip-compresses a tar.
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

/// Stores a layer tar (gzipped) and returns its [`Layer`].
pub fn put_layer(store: &Store, tar: &[u8]) -> Layer {
    let blob = gzip(tar);
    let digest = store.blobs().put(&blob).unwrap();
    Layer {
        digest,
        size: blob.len() as u64,
        media_type: kiln_store::layer::Compression::Gzip.media_type(kiln_store::layer::MediaTypeFamily::Oci).into(),
        diff_id: Digest::of(tar),
    }
}

/// An image stored by hand: config and manifest blobs over `layers` (already stored).
pub struct TestImage {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Layer>,
}

impl TestImage {
    /// Every blob of the image.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut all = vec![self.manifest.clone(), self.config.clone()];
        all.extend(self.layers.iter().map(|l| l.digest.clone()));
        all
    }

    /// The chain ids of its layers, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        image::chain_ids(&self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
    }
}

/// Stores the config and manifest of an image over `layers`; `comment` makes configs differ.
pub fn put_image(store: &Store, layers: &[Layer], comment: &str) -> TestImage {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "comment": comment,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
    });
    let config_raw = serde_json::to_vec(&config).unwrap();
    let config_digest = store.blobs().put(&config_raw).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::media_type::OCI_MANIFEST,
        "config": {"mediaType": image::media_type::OCI_CONFIG, "digest": config_digest.to_string(), "size": config_raw.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest_digest = store.blobs().put(&serde_json::to_vec(&manifest).unwrap()).unwrap();
    TestImage { manifest: manifest_digest, config: config_digest, layers: layers.to_vec() }
}

/// Checks the store's crash-safety promise: every tag points at a manifest whose config and
/// layers are all present and verify (for an index: each child manifest that is present).
pub fn assert_tags_complete(store: &Store) {
    for (reference, tag) in store.meta().tags().unwrap() {
        assert_complete(store, &reference, &tag.digest, &tag.media_type);
    }
}

fn assert_complete(store: &Store, reference: &str, digest: &Digest, media_type: &str) {
    let raw = store.blobs().read(digest).unwrap_or_else(|e| panic!("tag {reference}: {e}"));
    if let image::ManifestDocument::Index(index) =
        image::ManifestDocument::parse(&raw, digest, Some(media_type)).unwrap()
    {
        for child in index.manifests() {
            let child_digest = image::descriptor_digest(child, digest).unwrap();
            if store.blobs().contains(&child_digest) {
                assert_complete(store, reference, &child_digest, child.media_type().as_ref());
            }
        }
        return;
    }
    let image = image::Image::load(store.blobs(), digest)
        .unwrap_or_else(|e| panic!("tag {reference} points at an unreadable image: {e}"));
    for layer in &image.layers {
        let mut r = store.blobs().open(&layer.digest).unwrap_or_else(|e| panic!("tag {reference}: {e}"));
        std::io::copy(&mut r, &mut std::io::sink()).unwrap_or_else(|e| panic!("tag {reference}: {e}"));
    }
}

/// Entries of a directory (full paths), sorted.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// A child process: this test binary running the test `test` in role `role` on `root`.
pub struct ChildProc {
    pub child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl ChildProc {
    /// Starts the child with piped stdin (closing it is a signal the child may wait for).
    pub fn spawn(test: &str, role: &str, root: &Path) -> ChildProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env(ROOT_ENV, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ChildProc { child, lines }
    }

    /// Waits for the child to say a line starting with `prefix` and returns the rest of it.
    pub fn expect(&mut self, prefix: &str) -> String {
        for line in &mut self.lines {
            let line = line.unwrap();
            // libtest may have printed "test name ... " before our line on the same line.
            if let Some(at) = line.find(SAY)
                && let Some(rest) = line[at + SAY.len()..].strip_prefix(prefix)
            {
                return rest.to_owned();
            }
        }
        panic!("child exited without saying {prefix:?}: {:?}", self.child.wait());
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the child to exit; panics unless it succeeded.
    pub fn wait_ok(mut self) {
        drop(self.child.stdin.take());
        for line in &mut self.lines {
            println!("child: {}", line.unwrap());
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

/// In a child: says a line to the parent.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{SAY}{line}").unwrap();
    out.flush().unwrap();
}

/// In a child: the role and root the parent gave, if this process is a child.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(CHILD_ENV).ok()?;
    Some((role, PathBuf::from(std::env::var_os(ROOT_ENV).unwrap())))
}
