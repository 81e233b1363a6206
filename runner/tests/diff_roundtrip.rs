//! An upperdir with every kind of entry, written as a layer and applied back with the store's
//! applier, gives back exactly the same tree: types, modes, owners, xattrs, link targets,
//! content, hardlinks and mtimes to the nanosecond.

mod diff_support;

use std::fs;
use std::path::Path;

use kiln_runner::diff::{DiffOptions, diff_upperdir};
use kiln_store::Store;
use kiln_store::layer::{Compression, WhiteoutMode, apply_layer};
use rustix::fs::FileType;

use diff_support::*;

/// A `security.capability` v2 value granting cap_net_bind_service (permitted, effective).
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

const LONG: &str =
    "ℓ-this-name-is-long-on-purpose-to-need-pax-records-and-more-than-one-hundred-bytes-in-a-ustar-name-field";

/// Builds the upperdir-like tree, times set last (children change their parent's mtime).
fn build(upper: &Path) {
    let p = |rel: &str| upper.join(rel);
    fs::create_dir_all(p("sticky")).unwrap();
    chmod(&p("sticky"), 0o1777);
    chown(&p("sticky"), 1000, 1001);
    setxattr(&p("sticky"), "user.comment", b"a directory xattr");
    write(&p("sticky/setuid"), b"#!/bin/sh\necho root\n");
    chmod(&p("sticky/setuid"), 0o4755);
    write(&p("setgid"), b"g");
    chmod(&p("setgid"), 0o2711);
    write(&p("cap"), &vec![0x7f; 5000]);
    setxattr(&p("cap"), "security.capability", &CAP_NET_BIND);
    // Binary, with '=' and NUL. (Not '\n': tar-rs, under the store's applier, splits PAX data
    // on newlines; Go and we write such values raw, as PAX allows.)
    setxattr(&p("cap"), "user.binary", &[0, 1, 2, 255, b'=', 0]);
    write(&p("empty"), b"");
    write(&p("hard1"), b"linked content");
    fs::hard_link(p("hard1"), p("sticky/hard2")).unwrap();
    fs::hard_link(p("hard1"), p("hard3")).unwrap();
    std::os::unix::fs::symlink("../target/ü", p("link")).unwrap();
    std::os::unix::fs::symlink("t".repeat(300), p("longlink")).unwrap();
    mknod(&p("fifo"), FileType::Fifo, 0o640, 0, 0);
    mknod(&p("null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(&p("loop0"), FileType::BlockDevice, 0o660, 7, 0);
    chown(&p("loop0"), 0, 6);
    whiteout(&p("gone"));
    whiteout(&p("sticky/gone2"));
    fs::create_dir(p("opaque")).unwrap();
    setxattr(&p("opaque"), "trusted.overlay.opaque", b"y");
    write(&p("opaque/kept"), b"kept");
    write(&p("ünïcødé-文件"), "ünïcødé".as_bytes());
    let long200 = "a".repeat(200);
    write(&p(&long200), b"200");
    fs::create_dir_all(p(&format!("{LONG}/{LONG}"))).unwrap();
    write(&p(&format!("{LONG}/{LONG}/{long200}")), b"deep");
    write(&p("bigid"), b"id");
    chown(&p("bigid"), 3_000_000, 4_000_000);
    write(&p("old"), b"before 1970");

    // Times: nanoseconds everywhere, children before parents.
    let mut all: Vec<_> = describe(upper).into_iter().filter(|(_, d)| d.kind != "whiteout").collect();
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.matches('/').count()));
    for (i, (rel, _)) in all.iter().enumerate() {
        set_times(&p(rel), 1_600_000_000 + i as i64, 123_456_789 + i as i64);
    }
    set_times(&p("old"), -5, 250_000_000);
}

/// A temp dir with a store and the full upperdir-like tree in `upper`.
fn fixture() -> (tempfile::TempDir, Store, std::path::PathBuf) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    build(&upper);
    (tmp, store, upper)
}

#[test]
fn every_entry_kind_round_trips_through_overlay_mode() {
    let (tmp, store, upper) = fixture();
    let mut expected = describe(&upper);
    // The layer carries -4.75 s, but the applier bounds pre-epoch times to 0, as containerd
    // does (checked on the tar itself below).
    expected.get_mut("old").unwrap().mtime = Some((0, 0));
    assert!(expected["hard1"].links.len() == 3 && expected["gone"].kind == "whiteout", "{expected:#?}");

    for compression in [Compression::Gzip, Compression::Zstd, Compression::Uncompressed] {
        let diff = diff_upperdir(store.blobs(), &upper, None, &options(compression)).unwrap();
        assert_eq!(diff.layer.media_type, compression.media_type(kiln_store::layer::MediaTypeFamily::Oci));
        let out = tmp.path().join(format!("applied-{compression}"));
        fs::create_dir(&out).unwrap();
        let blob = std::io::BufReader::new(store.blobs().open(&diff.layer.digest).unwrap());
        let stats = apply_layer(blob, &out, WhiteoutMode::Overlay).unwrap();
        assert_eq!(stats.diff_id, diff.layer.diff_id);
        assert_eq!(stats.skipped_xattrs, 0, "nothing may be dropped");
        let got = describe(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (path, want) in &expected {
            assert_eq!(&got[path], want, "{path} ({compression})");
        }
    }
}

#[test]
fn the_layer_is_byte_stable_and_ordered_like_buildkit() {
    let (_tmp, store, upper) = fixture();
    let first = diff_upperdir(store.blobs(), &upper, None, &options(Compression::Gzip)).unwrap();
    let again = diff_upperdir(store.blobs(), &upper, None, &options(Compression::Gzip)).unwrap();
    assert_eq!(first, again);

    let (entries, raw) = read_layer(store.blobs(), &first.layer.digest);
    assert_eq!(first.entries as usize, entries.len());
    assert_eq!(raw.len() % 512, 0);
    assert!(raw.ends_with(&[0; 1024]));
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    // Per-directory byte order, a directory before its content; the opaque marker right after
    // its directory; the whiteout in place of the deleted name.
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing from {names:?}"));
    assert!(pos("opaque/") + 1 == pos("opaque/.wh..wh..opq") && pos("opaque/.wh..wh..opq") < pos("opaque/kept"));
    assert!(pos("sticky/") < pos("sticky/.wh.gone2") && pos("sticky/.wh.gone2") < pos("sticky/hard2"));
    assert!(pos(".wh.gone") < pos("hard1"));
    for w in names.windows(2) {
        let (a, b) = (w[0].trim_end_matches('/'), w[1].trim_end_matches('/'));
        let common = a.split('/').zip(b.split('/')).take_while(|(x, y)| x == y).count();
        let (ca, cb) = (a.split('/').nth(common), b.split('/').nth(common));
        if let (Some(ca), Some(cb)) = (ca, cb) {
            let (ca, cb) = (ca.strip_prefix(".wh.").unwrap_or(ca), cb.strip_prefix(".wh.").unwrap_or(cb));
            assert!(ca < cb || ca == ".wh..opq", "{a} before {b}");
        }
    }
    let by = |n: &str| &entries[pos(n)];
    // Hardlinks: the first name in walk order carries the content, the others link to it.
    assert_eq!(by("hard1").kind, tar::EntryType::Regular);
    assert_eq!(by("hard1").data, b"linked content");
    assert_eq!((by("hard3").kind, by("hard3").link.as_deref()), (tar::EntryType::Link, Some("hard1")));
    assert_eq!((by("sticky/hard2").kind, by("sticky/hard2").link.as_deref()), (tar::EntryType::Link, Some("hard1")));
    // Fixed, empty user and group names; PAX for nanoseconds, xattrs, big ids, long names.
    let cap = by("cap");
    assert!(cap.pax.contains(&("SCHILY.xattr.security.capability".to_owned(), CAP_NET_BIND.to_vec())), "{:?}", cap.pax);
    assert!(cap.pax.iter().any(|(k, v)| k == "mtime" && v.contains(&b'.')));
    assert!(by("old").pax.contains(&("mtime".to_owned(), b"-4.75".to_vec())), "{:?}", by("old").pax);
    let big = by("bigid");
    assert_eq!(big.uid, 3_000_000);
    assert!(big.pax.iter().any(|(k, v)| k == "uid" && v == b"3000000"));
    assert!(by("longlink").pax.iter().any(|(k, v)| k == "linkpath" && v.len() == 300));
    assert_eq!(by("sticky/setuid").mode, 0o4755);
    assert_eq!(by("sticky/").mode, 0o1777);
    let header_names = raw.chunks(512).filter(|b| b[257..263] == *b"ustar\0").map(|b| (&b[265..297], &b[297..329]));
    for (uname, gname) in header_names {
        assert!(uname.iter().all(|b| *b == 0) && gname.iter().all(|b| *b == 0));
    }
}

#[test]
fn source_date_epoch_clamps_newer_mtimes_only() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let upper = tmp.path().join("upper");
    write(&upper.join("new"), b"n");
    write(&upper.join("old"), b"o");
    set_times(&upper.join("new"), 1_900_000_000, 5);
    set_times(&upper.join("old"), 1_000_000_000, 7);
    whiteout(&upper.join("deleted"));
    let options = DiffOptions { source_date_epoch: Some(1_700_000_000), ..DiffOptions::default() };
    let diff = diff_upperdir(store.blobs(), &upper, None, &options).unwrap();
    let (entries, _) = read_layer(store.blobs(), &diff.layer.digest);
    let get = |n: &str| entries.iter().find(|e| e.path == n).unwrap();
    assert_eq!(get("new").mtime, 1_700_000_000);
    assert!(!get("new").pax.iter().any(|(k, _)| k == "mtime"), "a clamped time has no fraction");
    assert_eq!(get("old").mtime, 1_000_000_000);
    assert!(get("old").pax.contains(&("mtime".to_owned(), b"1000000000.000000007".to_vec())));
    assert_eq!(get(".wh.deleted").mtime, 1_700_000_000);
}

#[test]
fn skipped_paths_and_sockets_stay_out_of_the_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let upper = tmp.path().join("upper");
    write(&upper.join("etc/hosts"), b"");
    write(&upper.join("etc/resolv.conf"), b"");
    write(&upper.join("etc/real"), b"kept");
    let _socket = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();
    let options = DiffOptions { skip: vec!["/etc/hosts".into(), "etc/resolv.conf".into()], ..DiffOptions::default() };
    let diff = diff_upperdir(store.blobs(), &upper, None, &options).unwrap();
    let (entries, _) = read_layer(store.blobs(), &diff.layer.digest);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["etc/", "etc/real"]);
    assert_eq!(diff.entries, 2);
}

#[test]
fn applying_in_delete_mode_over_a_base_gives_the_changed_tree() {
    let (tmp, store, upper) = fixture();
    let diff = diff_upperdir(store.blobs(), &upper, None, &options(Compression::Gzip)).unwrap();

    // A base with what the whiteouts and the opaque directory hide, and an unrelated file.
    let base = tmp.path().join("base");
    write(&base.join("gone"), b"deleted by the layer");
    write(&base.join("sticky/gone2"), b"deleted too");
    write(&base.join("opaque/old/deep"), b"hidden by the opaque dir");
    write(&base.join("untouched"), b"stays");
    set_times(&base.join("untouched"), 1_500_000_000, 42);
    let blob = std::io::BufReader::new(store.blobs().open(&diff.layer.digest).unwrap());
    apply_layer(blob, &base, WhiteoutMode::Delete).unwrap();

    let mut expected = describe(&upper);
    expected.get_mut("old").unwrap().mtime = Some((0, 0));
    expected.retain(|_, d| d.kind != "whiteout");
    expected.get_mut("opaque").unwrap().xattrs.retain(|(k, _)| k != "trusted.overlay.opaque");
    expected.insert("untouched".into(), describe(&base)["untouched"].clone());
    let got = describe(&base);
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (path, want) in &expected {
        assert_eq!(&got[path], want, "{path}");
    }
}
