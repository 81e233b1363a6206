//! The image commands end to end, as a user runs them: the `kiln` binary against a real
//! registry process, with skopeo as the independent peer.

use kiln_testkit::kiln::{Kiln, blob_files};
use kiln_testkit::registry::Registry;
use kiln_testkit::skopeo::skopeo;

/// A kiln environment of the test's own.
fn env() -> Kiln {
    Kiln::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn import_push_prune_pull_gives_identical_digests() {
    let env = env();
    let registry = Registry::plain();
    let remote = format!("{}/kiln/busybox:1", registry.host());
    let rootfs = env.rootfs.to_str().unwrap();

    let id = env.ok(&["import", rootfs, "busybox:test"]);
    let local = env.inspect("busybox:test");
    assert_eq!(local["Id"].as_str().unwrap(), id.trim());
    assert_eq!(local["RepoTags"][0], "docker.io/library/busybox:test");

    let pushed = env.ok(&["push", "-q", "busybox:test", &remote]);
    assert_eq!(pushed.trim(), local["Digest"].as_str().unwrap());
    // The registry serves the very manifest we stored.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{remote}")]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&raw).unwrap(), local["Manifest"]);

    env.ok(&["rmi", "busybox:test"]);
    let pruned = env.ok(&["prune"]);
    assert!(pruned.contains("Deleted 3 blobs"), "{pruned}");
    assert_eq!(blob_files(&env.root()), 0);

    let pulled = env.ok(&["pull", "-q", &remote]);
    assert_eq!(pulled.trim(), local["Digest"].as_str().unwrap());
    let back = env.inspect(&remote);
    assert_eq!(back["Id"], local["Id"]);
    assert_eq!(back["Config"], local["Config"]);
    assert_eq!(blob_files(&env.root()), 3);

    let list: serde_json::Value = serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["Repository"], format!("{}/kiln/busybox", registry.host()));
    assert_eq!(list[0]["Tag"], "1");
}

#[test]
fn skopeo_reads_what_kiln_pushes_and_kiln_pulls_what_skopeo_pushes() {
    let env = env();
    let registry = Registry::plain();
    env.ok(&["import", "--compression", "zstd", env.rootfs.to_str().unwrap(), "busybox:zstd"]);
    let ours = format!("{}/kiln/ours:z", registry.host());
    env.ok(&["push", "busybox:zstd", &ours]);

    // skopeo copies our image out into an OCI layout, verifying every blob.
    let layout = env.dir.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{ours}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], env.inspect("busybox:zstd")["Digest"]);

    // The other way: a docker-archive saved by kiln, pushed by skopeo as Docker media types,
    // pulled by kiln.
    env.ok(&["import", env.rootfs.to_str().unwrap(), "busybox:gz"]);
    let archive = env.dir.path().join("saved.tar");
    env.ok(&["save", "--format", "docker", "-o", archive.to_str().unwrap(), "busybox:gz"]);
    let theirs = format!("{}/skopeo/theirs:v2s2", registry.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{theirs}"),
    ]);
    env.ok(&["pull", &theirs]);
    let pulled = env.inspect(&theirs);
    assert_eq!(pulled["MediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(pulled["Config"]["rootfs"], env.inspect("busybox:gz")["Config"]["rootfs"]);
}

#[test]
fn bad_input_gets_clear_errors() {
    let env = env();
    assert!(env.fails(&["inspect", "nosuch:image"]).contains("no such image: nosuch:image"));
    assert!(env.fails(&["tag", "busybox", "Not A Name"]).contains("no such image"));
    let bad = env.dir.path().join("bad.tar");
    std::fs::write(&bad, vec![7u8; 2048]).unwrap();
    let err = env.fails(&["import", bad.to_str().unwrap(), "x:1"]);
    assert!(err.contains("not a valid tar"), "{err}");
    let err = env.fails(&["import", env.rootfs.to_str().unwrap(), "UPPER/case"]);
    assert!(err.contains("invalid name"), "{err}");
    // A registry nobody listens on: the error names it.
    let err = env.fails(&["pull", "127.0.0.1:1/nothing/here:1"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
