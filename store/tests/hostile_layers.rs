//! Hostile layer tars (DESIGN.md invariant 3): names, link targets and whiteouts that try to
//! write or delete outside the destination. Each case either fails with an error naming the
//! entry, or is applied safely by design (cleaned into the destination, as containerd does);
//! either way a sentinel directory next to the destination, a canary directory in /tmp and the
//! host paths the archive names are unchanged.
//!
//! Tars are written byte by byte (tar-rs's builder refuses `..` and absolute names). Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_store::layer::{ApplyError, ApplyStats, WhiteoutMode, apply, apply_layer};
use tar::{EntryType, Header};

/// A tar written entry by entry with arbitrary names: short names go in the ustar header as
/// raw bytes, longer ones (or ones with NUL bytes) in PAX `path`/`linkpath` records.
struct Raw(tar::Builder<Vec<u8>>);

impl Raw {
    fn new() -> Raw {
        Raw(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        let mut pax: Vec<(&str, &[u8])> = Vec::new();
        let fits = |s: &[u8]| s.len() <= 100 && !s.contains(&0);
        if fits(name) {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
        } else {
            pax.push(("path", name));
        }
        if fits(link) {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        } else {
            pax.push(("linkpath", link));
        }
        self.0.append_pax_extensions(pax).unwrap();
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Self {
        self.entry(name.as_ref(), EntryType::Regular, b"", data)
    }

    fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.entry(name.as_ref(), EntryType::Directory, b"", b"")
    }

    fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.entry(name.as_ref(), EntryType::Symlink, target.as_ref(), b"")
    }

    fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.entry(name.as_ref(), EntryType::Link, target.as_ref(), b"")
    }

    fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, name, &b""[..]).unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
}

/// A destination with a sentinel directory next to it and a canary directory in /tmp, and
/// their state before the archive was applied.
struct Fixture {
    work: tempfile::TempDir,
    dest: PathBuf,
    sentinel: PathBuf,
    canary: tempfile::TempDir,
    before: BTreeMap<PathBuf, String>,
}

impl Fixture {
    fn new() -> Fixture {
        assert!(
            rustix::process::geteuid().is_root(),
            "the hostile layer tests need root (mknod, chown, trusted.* xattrs); run them as root"
        );
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("dest");
        let sentinel = work.path().join("sentinel");
        fs::create_dir(&dest).unwrap();
        fs::create_dir_all(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("keep"), b"sentinel").unwrap();
        fs::write(sentinel.join("sub/file"), b"sentinel sub").unwrap();
        let canary = tempfile::Builder::new().prefix("kiln-canary-").tempdir_in("/tmp").unwrap();
        fs::write(canary.path().join("file"), b"canary").unwrap();
        fs::write(canary.path().join("victim"), b"canary victim").unwrap();
        let mut fx = Fixture { work, dest, sentinel, canary, before: BTreeMap::new() };
        fx.before = fx.outside();
        fx
    }

    /// Everything next to the destination, in the canary dir and the host files archives name.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut state = BTreeMap::new();
        for entry in fs::read_dir(self.work.path()).unwrap() {
            let path = entry.unwrap().path();
            if path != self.dest {
                describe_tree(&path, &mut state);
            }
        }
        describe_tree(self.canary.path(), &mut state);
        for host in ["/etc/passwd", "/etc", "/dev", "/tmp"] {
            describe(Path::new(host), &mut state);
        }
        for absent in ["/etc/kiln-pwned", "/dev/kiln-null", "/dev/sdz9", "/tmp/kiln-pwned"] {
            state.insert(absent.into(), format!("exists: {}", fs::symlink_metadata(absent).is_ok()));
        }
        state
    }

    fn assert_outside_untouched(&self) {
        let after = self.outside();
        for (path, was) in &self.before {
            assert_eq!(after.get(path), Some(was), "{} changed", path.display());
        }
        assert_eq!(after.len(), self.before.len(), "something appeared outside the destination: {after:#?}");
    }

    fn canary_path(&self) -> String {
        self.canary.path().to_str().unwrap().to_owned()
    }

    /// Applies `tar`, expecting an error that names `entry`.
    fn rejects(&self, tar: &[u8], mode: WhiteoutMode, entry: &str) -> ApplyError {
        let err = apply(tar, &self.dest, mode).expect_err("a hostile archive must fail");
        let named = err.entry().unwrap_or_else(|| panic!("error names no entry: {err}"));
        assert!(named.contains(entry), "error should name {entry:?}: {err}");
        assert!(err.to_string().contains(entry), "message should name {entry:?}: {err}");
        self.assert_outside_untouched();
        err
    }

    /// Applies `tar`, expecting it to be contained by design.
    fn contains(&self, tar: &[u8], mode: WhiteoutMode) -> ApplyStats {
        let stats = apply(tar, &self.dest, mode).unwrap_or_else(|e| panic!("expected a contained apply: {e}"));
        self.assert_outside_untouched();
        stats
    }
}

fn describe(path: &Path, state: &mut BTreeMap<PathBuf, String>) {
    let m = fs::symlink_metadata(path).unwrap();
    let content = if m.is_file() {
        format!("{:?}", fs::read(path).unwrap())
    } else if m.file_type().is_symlink() {
        format!("-> {:?}", fs::read_link(path).unwrap())
    } else {
        String::new()
    };
    // Directories (/tmp included) change size, links and times as other processes work in
    // them; their entries are described one by one instead.
    let changing = if m.is_dir() {
        String::new()
    } else {
        format!("links {} len {} times {:?}", m.nlink(), m.len(), (m.mtime(), m.mtime_nsec()))
    };
    state.insert(
        path.to_owned(),
        format!("{:?} mode {:o} {}:{} ino {} {changing} {content}", m.file_type(), m.mode(), m.uid(), m.gid(), m.ino()),
    );
}

fn describe_tree(path: &Path, state: &mut BTreeMap<PathBuf, String>) {
    describe(path, state);
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            describe_tree(&entry.unwrap().path(), state);
        }
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// 1. `..` climbing out: cleaned inside the root, as containerd does.
#[test]
fn dotdot_names_are_cleaned_into_the_root() {
    let fx = Fixture::new();
    let canary_name = fx.canary.path().file_name().unwrap().to_str().unwrap().to_owned();
    let tar = Raw::new()
        .file("../escape", b"x")
        .file(format!("../../../../../../tmp/{canary_name}/pwned"), b"x")
        .file("a/../../sentinel/keep", b"overwritten?")
        .dir("../../..")
        .bytes();
    let stats = fx.contains(&tar, WhiteoutMode::Overlay);
    assert_eq!(stats.skipped_entries, 1, "`../../..` is the root directory entry");
    assert!(exists(&fx.dest.join("escape")));
    assert!(exists(&fx.dest.join(format!("tmp/{canary_name}/pwned"))));
    assert_eq!(fs::read(fx.dest.join("sentinel/keep")).unwrap(), b"overwritten?");
}

/// 2. Absolute names, into host directories and the canary.
#[test]
fn absolute_names_land_inside_the_root() {
    let fx = Fixture::new();
    let canary = fx.canary_path();
    let tar = Raw::new()
        .file("/etc/kiln-pwned", b"x")
        .file(format!("{canary}/file"), b"overwritten?")
        .file("//tmp/kiln-pwned", b"x")
        .bytes();
    fx.contains(&tar, WhiteoutMode::Delete);
    assert!(exists(&fx.dest.join("etc/kiln-pwned")));
    assert_eq!(fs::read(fx.dest.join(format!(".{canary}/file"))).unwrap(), b"overwritten?");
    assert!(exists(&fx.dest.join("tmp/kiln-pwned")));
}

/// 3. A symlinked parent pointing at `/` or above the root resolves inside the root.
#[test]
fn symlink_parents_resolve_inside_the_root() {
    let fx = Fixture::new();
    let tar = Raw::new()
        .symlink("a", "/")
        .file("a/x", b"x")
        .symlink("b", "../../..")
        .file("b/y", b"y")
        .symlink("c", "/../sentinel")
        .dir("sentinel")
        .file("c/keep", b"overwritten?")
        .bytes();
    fx.contains(&tar, WhiteoutMode::Overlay);
    assert_eq!(fs::read(fx.dest.join("x")).unwrap(), b"x");
    assert_eq!(fs::read(fx.dest.join("y")).unwrap(), b"y");
    assert_eq!(fs::read(fx.dest.join("sentinel/keep")).unwrap(), b"overwritten?");
}

/// 4. A symlinked parent pointing at an absolute host directory does not reach it.
#[test]
fn symlink_parent_to_a_host_directory_fails() {
    let fx = Fixture::new();
    let tar = Raw::new().symlink("s", fx.sentinel.to_str().unwrap()).file("s/keep", b"overwritten?").bytes();
    let err = fx.rejects(&tar, WhiteoutMode::Overlay, "s/keep");
    assert!(err.to_string().contains("symlink to a directory that does not exist"), "{err}");
}

/// 5. A symlink, then a hardlink through it to a host file.
#[test]
fn hardlink_through_a_symlink_to_a_host_file_fails() {
    let fx = Fixture::new();
    let canary = fx.canary_path();
    let tar = Raw::new().symlink("s", &canary).hardlink("h", "s/file").bytes();
    fx.rejects(&tar, WhiteoutMode::Delete, "\"h\"");
    let tar = Raw::new().symlink("etc", "/etc").hardlink("p", "etc/passwd").bytes();
    fx.rejects(&tar, WhiteoutMode::Overlay, "\"p\"");
}

/// 6. A hardlink to a file outside, by `..`.
#[test]
fn hardlink_to_outside_by_dotdot_fails() {
    let fx = Fixture::new();
    let tar = Raw::new().hardlink("h", "../sentinel/keep").bytes();
    fx.rejects(&tar, WhiteoutMode::Overlay, "\"h\"");
    let tar = Raw::new().hardlink("h2", "../../../../..").bytes();
    let err = fx.rejects(&tar, WhiteoutMode::Overlay, "\"h2\"");
    assert!(err.to_string().contains("destination directory itself"), "{err}");
}

/// 7. A hardlink to `/etc/passwd`: an error, or the layer's own copy if it has one.
#[test]
fn hardlink_to_etc_passwd_links_only_inside() {
    let fx = Fixture::new();
    let tar = Raw::new().hardlink("passwd-link", "/etc/passwd").bytes();
    fx.rejects(&tar, WhiteoutMode::Overlay, "passwd-link");

    let tar =
        Raw::new().file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").hardlink("passwd-link", "/etc/passwd").bytes();
    fx.contains(&tar, WhiteoutMode::Overlay);
    let (ours, link) =
        (fs::metadata(fx.dest.join("etc/passwd")).unwrap(), fs::metadata(fx.dest.join("passwd-link")).unwrap());
    assert_eq!(ours.ino(), link.ino());
    assert_ne!(link.ino(), fs::metadata("/etc/passwd").unwrap().ino());
}

/// 8. Whiteouts of `..`, `.` and nothing.
#[test]
fn whiteouts_of_dot_and_dotdot_are_rejected() {
    let fx = Fixture::new();
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::Delete] {
        for name in [".wh...", "sub/.wh..", ".wh.", "../.wh..."] {
            let tar = Raw::new().file(name, b"").bytes();
            let err = fx.rejects(&tar, mode, name);
            assert!(matches!(err, ApplyError::Rejected { .. }), "{err}");
        }
    }
    // `../.wh.sentinel` is cleaned to the root's own `sentinel`, which does not exist.
    fx.contains(&Raw::new().file("../.wh.sentinel", b"").bytes(), WhiteoutMode::Delete);
    assert!(fx.sentinel.join("keep").exists());
}

/// 9. Whiteouts and opaque markers through a symlinked directory.
#[test]
fn whiteouts_through_symlinked_dirs_stay_inside() {
    let fx = Fixture::new();
    let sentinel = fx.sentinel.to_str().unwrap();
    // Delete mode: the symlink resolves inside the root, where there is nothing to delete.
    fx.contains(&Raw::new().symlink("l", sentinel).file("l/.wh.keep", b"").bytes(), WhiteoutMode::Delete);
    // Overlay mode would have to create the whiteout's parent through the dangling symlink.
    fx.rejects(&Raw::new().symlink("l", sentinel).file("l/.wh.keep", b"").bytes(), WhiteoutMode::Overlay, "l/.wh.keep");
    fx.rejects(
        &Raw::new().symlink("o", sentinel).file("o/.wh..wh..opq", b"").bytes(),
        WhiteoutMode::Delete,
        "o/.wh..wh..opq",
    );

    // `r -> /` then `r/.wh.victim` deletes the root's own victim, never the canary's.
    let dest = fx.dest.clone();
    fx.contains(&Raw::new().file("victim", b"ours").dir("sub").file("sub/x", b"").bytes(), WhiteoutMode::Delete);
    let canary = fx.canary_path();
    let tar = Raw::new()
        .symlink("r", "/")
        .file("r/.wh.victim", b"")
        .symlink("c", &canary)
        .file(".wh.c", b"")
        .symlink("up", "../..")
        .file("up/sub/.wh..wh..opq", b"")
        .bytes();
    fx.contains(&tar, WhiteoutMode::Delete);
    assert!(!exists(&dest.join("victim")));
    assert!(!exists(&dest.join("c")));
    assert!(exists(&dest.join("sub")) && !exists(&dest.join("sub/x")));
}

/// 10. Device nodes are allowed (as root), but only inside.
#[test]
fn device_nodes_are_created_only_inside() {
    let fx = Fixture::new();
    let tar = Raw::new()
        .device("dev/kmsg2", EntryType::Char, 1, 11)
        .entry(b"../../dev/sdz9", EntryType::Block, b"", b"")
        .entry(b"/dev/kiln-null", EntryType::Char, b"", b"")
        .entry(b"fifo", EntryType::Fifo, b"", b"")
        .bytes();
    fx.contains(&tar, WhiteoutMode::Overlay);
    let kmsg = fs::symlink_metadata(fx.dest.join("dev/kmsg2")).unwrap();
    assert!(kmsg.file_type().is_char_device());
    assert_eq!(kmsg.rdev(), rustix::fs::makedev(1, 11));
    assert!(fs::symlink_metadata(fx.dest.join("dev/sdz9")).unwrap().file_type().is_block_device());
    assert!(fs::symlink_metadata(fx.dest.join("dev/kiln-null")).unwrap().file_type().is_char_device());
    assert!(fs::symlink_metadata(fx.dest.join("fifo")).unwrap().file_type().is_fifo());
}

/// 11. Names longer than PATH_MAX or NAME_MAX, and huge link targets.
#[test]
fn huge_names_fail_naming_the_entry() {
    let fx = Fixture::new();
    let deep = vec!["d".repeat(100); 50].join("/");
    let err = fx.rejects(&Raw::new().file(&deep, b"x").bytes(), WhiteoutMode::Overlay, "dddd");
    assert!(err.to_string().contains(&format!("({} bytes)", deep.len())), "shortened in the message: {err}");
    assert!(err.to_string().len() < 1000, "{err}");

    let wide = "w".repeat(300);
    fx.rejects(&Raw::new().file(&wide, b"x").bytes(), WhiteoutMode::Overlay, "www");
    fx.rejects(&Raw::new().symlink("l", "t".repeat(5000)).bytes(), WhiteoutMode::Overlay, "\"l\"");
    fx.rejects(&Raw::new().hardlink("h", &deep).bytes(), WhiteoutMode::Overlay, "\"h\"");
}

/// 12. Names with NUL bytes, and empty names.
#[test]
fn nul_and_empty_names_are_rejected() {
    let fx = Fixture::new();
    let err = fx.rejects(&Raw::new().file(b"a\0/../../x", b"x").bytes(), WhiteoutMode::Overlay, "a\\0");
    assert!(err.to_string().contains("NUL"), "{err}");
    let err = fx.rejects(&Raw::new().file(b"", b"x").bytes(), WhiteoutMode::Overlay, "\"\"");
    assert!(err.to_string().contains("empty name"), "{err}");
    fx.rejects(&Raw::new().symlink("l", b"/etc\0passwd").bytes(), WhiteoutMode::Overlay, "\"l\"");
    fx.rejects(&Raw::new().hardlink("h", b"").bytes(), WhiteoutMode::Overlay, "\"h\"");
}

/// 13. Entries that would replace the destination itself or its parent.
#[test]
fn entries_replacing_the_destination_are_rejected() {
    let fx = Fixture::new();
    // (`/` as a regular entry is a directory by the legacy trailing-slash rule, so skipped.)
    for name in ["..", ".", "a/../..", "./.."] {
        let err = fx.rejects(&Raw::new().file(name, b"x").bytes(), WhiteoutMode::Delete, name);
        assert!(err.to_string().contains("destination directory itself"), "{err}");
    }
    fx.rejects(&Raw::new().symlink("..", "/").bytes(), WhiteoutMode::Overlay, "..");
    fx.rejects(&Raw::new().hardlink(".", "x").bytes(), WhiteoutMode::Overlay, ".");
    // A directory entry for the root (or its parent) is skipped, as containerd does.
    let stats = fx.contains(&Raw::new().dir("../").dir("./").bytes(), WhiteoutMode::Delete);
    assert_eq!(stats.skipped_entries, 2);
    assert!(fx.dest.is_dir());
}

/// 14. Symlink loops in a parent path.
#[test]
fn symlink_loops_fail_naming_the_entry() {
    let fx = Fixture::new();
    let tar = Raw::new().symlink("a", "b").symlink("b", "a").file("a/x", b"x").bytes();
    let err = fx.rejects(&tar, WhiteoutMode::Overlay, "a/x");
    assert!(matches!(err, ApplyError::Io { .. }), "{err}");
    let tar = Raw::new().symlink("self", "self/..").hardlink("h", "self/x").bytes();
    fx.rejects(&tar, WhiteoutMode::Overlay, "\"h\"");
}

/// 15. Truncated tars: in a file's content, and in a header.
#[test]
fn truncated_tars_fail() {
    let fx = Fixture::new();
    let tar = Raw::new().file("small", b"ok").file("big", &[1u8; 10_000]).bytes();
    // Cut in the middle of `big`'s content (its header starts at 1024).
    let err = fx.rejects(&tar[..1024 + 512 + 5000], WhiteoutMode::Overlay, "big");
    assert!(err.to_string().contains("truncated"), "{err}");
    // Cut in the middle of `big`'s header.
    let err = apply(&tar[..1024 + 100], &fx.dest, WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { .. }), "{err}");
    assert_eq!(err.entry(), Some("\"small\""), "names the last entry read: {err}");
    fx.assert_outside_untouched();
}

/// 16. Garbage compressed streams.
#[test]
fn garbage_compressed_streams_fail() {
    let fx = Fixture::new();
    let mut garbage = vec![0x1f, 0x8b, 0x08, 0x00];
    garbage.extend_from_slice(&[0xab; 600]);
    let err = apply_layer(&garbage[..], &fx.dest, WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { .. }), "{err}");

    let mut zstd_garbage = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd_garbage.extend_from_slice(&[0xcd; 600]);
    let err = apply_layer(&zstd_garbage[..], &fx.dest, WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { .. }), "{err}");

    // A good gzip layer followed by junk is not a good layer.
    let tar = Raw::new().file("f", b"x").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut gz = gz.finish().unwrap();
    gz.extend_from_slice(b"trailing junk");
    let err = apply_layer(&gz[..], &fx.dest, WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { .. }), "{err}");

    // Not a tar at all.
    let err = apply(&[0x42u8; 1024][..], &fx.dest, WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { entry: None, .. }), "{err}");
    fx.assert_outside_untouched();
}

/// 17. An entry replacing a symlink to outside replaces the symlink, not its target.
#[test]
fn entries_over_symlinks_never_write_through_them() {
    let fx = Fixture::new();
    let canary = fx.canary_path();
    let tar = Raw::new()
        .symlink("f", format!("{canary}/file"))
        .file("f", b"replaced")
        .symlink("d", &canary)
        .dir("d")
        .file("d/file", b"inside")
        .symlink("x", format!("{canary}/file"))
        .hardlink("y", "x")
        .bytes();
    fx.contains(&tar, WhiteoutMode::Overlay);
    assert_eq!(fs::read(fx.dest.join("f")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(fx.dest.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(fx.dest.join("d/file")).unwrap(), b"inside");
    // A hardlink to a symlink is a second name for the symlink, not for its target.
    assert!(fs::symlink_metadata(fx.dest.join("y")).unwrap().file_type().is_symlink());
}

/// 18. A hardlink to a directory.
#[test]
fn hardlink_to_a_directory_fails() {
    let fx = Fixture::new();
    let tar = Raw::new().dir("dir").hardlink("h", "dir").bytes();
    fx.rejects(&tar, WhiteoutMode::Overlay, "\"h\"");
}

/// 19. `trusted.overlay.*` xattrs from an archive are never set (forged whiteouts or redirects).
#[test]
fn overlay_xattrs_from_the_archive_are_ignored() {
    let fx = Fixture::new();
    let mut raw = Raw::new();
    raw.0
        .append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ])
        .unwrap();
    let tar = raw.dir("d").bytes();
    let stats = fx.contains(&tar, WhiteoutMode::Overlay);
    assert_eq!(stats.skipped_xattrs, 2);
    let mut buf = [0u8; 16];
    assert!(rustix::fs::lgetxattr(fx.dest.join("d"), "trusted.overlay.opaque", &mut buf[..]).is_err());
}

/// 20. GNU PAX sparse files (content is a sparse map, not the file) are refused, not corrupted.
#[test]
fn pax_sparse_files_are_rejected() {
    let fx = Fixture::new();
    let mut raw = Raw::new();
    raw.0.append_pax_extensions([("GNU.sparse.major", &b"1"[..]), ("GNU.sparse.minor", &b"0"[..])]).unwrap();
    let tar = raw.file("GNUSparseFile.0/disk.img", b"1\n0\n512\n").bytes();
    let err = fx.rejects(&tar, WhiteoutMode::Overlay, "disk.img");
    assert!(err.to_string().contains("sparse"), "{err}");
}

/// 21. Removing a tree deeper than the applier recurses fails cleanly, naming the whiteout.
#[test]
fn too_deep_trees_fail_to_be_removed_cleanly() {
    let fx = Fixture::new();
    let deep = format!("{}f", "a/".repeat(600));
    fx.contains(&Raw::new().file(&deep, b"x").bytes(), WhiteoutMode::Delete);
    let err = fx.rejects(&Raw::new().file(".wh.a", b"").bytes(), WhiteoutMode::Delete, ".wh.a");
    assert!(err.to_string().contains("deeper than"), "{err}");
    // Replacing it fails the same way.
    let err = fx.rejects(&Raw::new().file("a", b"file").bytes(), WhiteoutMode::Delete, "\"a\"");
    assert!(err.to_string().contains("deeper than"), "{err}");
}
