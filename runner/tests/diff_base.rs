//! How the base decides what of an upperdir is written: BuildKit's overlay differ semantics on
//! hand-made upper and base trees.

mod diff_support;

use std::fs;

use kiln_runner::diff::{DiffOptions, diff_trees, diff_upperdir};
use kiln_store::Store;

use diff_support::*;

const T: i64 = 1_600_000_000;

#[test]
fn unchanged_copies_pointless_whiteouts_and_opaque_markers_are_left_out() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (base, upper) = (tmp.path().join("base"), tmp.path().join("upper"));
    for root in [&base, &upper] {
        // Copied up unchanged: same mode, owner, mtime, content.
        write(&root.join("same/file"), b"same");
        // A parent copied up because its child changed.
        write(&root.join("parent/child"), if root == &base { b"old" } else { b"new" });
        fs::create_dir_all(root.join("emptied")).unwrap();
    }
    write(&base.join("replaced/old"), b"o");
    write(&base.join("deleted"), b"d");
    write(&base.join("emptied/x"), b"x");
    fs::create_dir_all(upper.join("replaced")).unwrap();
    setxattr(&upper.join("replaced"), "trusted.overlay.opaque", b"y");
    fs::create_dir_all(upper.join("fresh")).unwrap();
    setxattr(&upper.join("fresh"), "trusted.overlay.opaque", b"y");
    whiteout(&upper.join("deleted"));
    whiteout(&upper.join("never-existed"));
    set_all_times(&base, T);
    set_all_times(&upper, T);
    // What overlayfs leaves when a file created during the step is deleted again: nothing,
    // but the directory's mtime changed.
    set_times(&upper.join("emptied"), T + 5, 0);

    let diff = diff_upperdir(store.blobs(), &upper, Some(&base), &DiffOptions::default()).unwrap();
    let (entries, _) = read_layer(store.blobs(), &diff.layer.digest);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [".wh.deleted", "emptied/", "fresh/", "parent/", "parent/child", "replaced/", "replaced/.wh..wh..opq"]
    );
    assert_eq!(entries[3].mtime, T as u64, "an unchanged parent is written as it is");

    // The copy backend's comparison of whole trees finds the same, with whiteouts for what
    // the replaced directory had.
    let changed = tmp.path().join("changed");
    fs::create_dir(&changed).unwrap();
    for dir in ["same", "parent", "emptied", "replaced", "fresh"] {
        fs::create_dir(changed.join(dir)).unwrap();
    }
    write(&changed.join("same/file"), b"same");
    write(&changed.join("parent/child"), b"new");
    set_all_times(&changed, T);
    set_times(&changed.join("emptied"), T + 5, 0);
    let diff = diff_trees(store.blobs(), &changed, &base, None, &DiffOptions::default()).unwrap();
    let (entries, _) = read_layer(store.blobs(), &diff.layer.digest);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            ".wh.deleted",
            "emptied/",
            "emptied/.wh.x",
            "fresh/",
            "parent/",
            "parent/child",
            "replaced/",
            "replaced/.wh.old"
        ]
    );
}
