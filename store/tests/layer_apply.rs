//! Applying real layer tars (built with tar-rs and GNU tar) and checking the files they leave:
//! types, content, modes, owners, xattrs, link targets, nanosecond mtimes, whiteouts in both
//! modes (and through a real overlayfs mount), replacements, compression detection and diffIDs.
//!
//! Needs root (mknod, chown, trusted.* and security.* xattrs, mount) and GNU `tar`.

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_store::Digest;
use kiln_store::digest::VerifyingReader;
use kiln_store::layer::{ApplyError, ApplyOptions, Compression, WhiteoutMode, apply, apply_layer};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the layer tests need root (mknod, chown, trusted.* xattrs, mount); run them as root"
    );
}

/// A layer tar under construction.
struct Layer(tar::Builder<Vec<u8>>);

/// One entry's header fields.
struct Spec<'a> {
    kind: EntryType,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    link: Option<&'a str>,
    device: (u32, u32),
}

impl<'a> Spec<'a> {
    fn new(kind: EntryType, mode: u32) -> Spec<'a> {
        Spec { kind, mode, owner: (0, 0), mtime: MTIME, link: None, device: (0, 0) }
    }
    fn owner(self, uid: u64, gid: u64) -> Self {
        Spec { owner: (uid, gid), ..self }
    }
    fn mtime(self, mtime: u64) -> Self {
        Spec { mtime, ..self }
    }
    fn link(self, target: &'a str) -> Self {
        Spec { link: Some(target), ..self }
    }
    fn device(self, major: u32, minor: u32) -> Self {
        Spec { device: (major, minor), ..self }
    }
}

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn add(&mut self, path: &str, spec: Spec<'_>, data: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(spec.kind);
        h.set_mode(spec.mode);
        h.set_uid(spec.owner.0);
        h.set_gid(spec.owner.1);
        h.set_mtime(spec.mtime);
        h.set_size(data.len() as u64);
        h.set_device_major(spec.device.0).unwrap();
        h.set_device_minor(spec.device.1).unwrap();
        match spec.link {
            Some(target) => self.0.append_link(&mut h, path, target).unwrap(),
            None => self.0.append_data(&mut h, path, data).unwrap(),
        }
        self
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.add(path, Spec::new(EntryType::Regular, 0o644), data)
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.add(path, Spec::new(EntryType::Directory, 0o755), b"")
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.add(path, Spec::new(EntryType::Symlink, 0o777).link(target), b"")
    }

    /// PAX records for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.0.append_pax_extensions(records.iter().copied()).unwrap();
        self
    }

    fn tar(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
}

fn apply_to(tar: &[u8], dest: &Path, mode: WhiteoutMode) -> kiln_store::layer::ApplyStats {
    apply(tar, dest, mode).unwrap_or_else(|e| panic!("applying onto {}: {e}", dest.display()))
}

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("getxattr {name} on {}: {e}", path.display()),
    }
}

fn mtime(path: &Path) -> (i64, i64) {
    let m = meta(path);
    (m.mtime(), m.mtime_nsec())
}

fn is_whiteout_device(path: &Path) -> bool {
    let m = meta(path);
    m.file_type().is_char_device() && m.rdev() == 0
}

#[test]
fn every_entry_type_round_trips_with_metadata() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let mut layer = Layer::new();
    layer
        .add("etc", Spec::new(EntryType::Directory, 0o750).owner(0, 4).mtime(1_500_000_000), b"")
        .add("etc/conf", Spec::new(EntryType::Regular, 0o640).owner(1000, 1001).mtime(1_400_000_000), b"hello\n")
        .add("bin/su", Spec::new(EntryType::Regular, 0o4755).owner(0, 0), b"#!/bin/sh\n")
        .add("bin/wall", Spec::new(EntryType::Regular, 0o2755).owner(0, 5), b"x")
        .add("tmp", Spec::new(EntryType::Directory, 0o1777), b"")
        .add("shared", Spec::new(EntryType::Directory, 0o2775).owner(0, 50), b"")
        .add("etc/link", Spec::new(EntryType::Symlink, 0o777).link("../bin/su").owner(7, 8).mtime(1_300_000_000), b"")
        .add("etc/abs", Spec::new(EntryType::Symlink, 0o777).link("/does/not/exist"), b"")
        .add("etc/hard", Spec::new(EntryType::Link, 0o640).link("etc/conf"), b"")
        .add("dev/null", Spec::new(EntryType::Char, 0o666).device(1, 3).owner(0, 0), b"")
        .add("dev/loop9", Spec::new(EntryType::Block, 0o660).device(7, 9).owner(0, 6), b"")
        .add("run/fifo", Spec::new(EntryType::Fifo, 0o620).owner(3, 4), b"");
    let tar = layer.tar();
    let stats = apply_to(&tar, dest.path(), WhiteoutMode::Overlay);
    let d = dest.path();

    assert_eq!(stats.entries, 12);
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);
    assert_eq!(stats.compression, Compression::Uncompressed);

    let conf = meta(&d.join("etc/conf"));
    assert!(conf.is_file());
    assert_eq!(fs::read(d.join("etc/conf")).unwrap(), b"hello\n");
    assert_eq!((conf.mode() & 0o7777, conf.uid(), conf.gid()), (0o640, 1000, 1001));
    assert_eq!(mtime(&d.join("etc/conf")), (1_400_000_000, 0));

    // setuid/setgid survive the chown that precedes them.
    assert_eq!(meta(&d.join("bin/su")).mode() & 0o7777, 0o4755);
    assert_eq!((meta(&d.join("bin/wall")).mode() & 0o7777, meta(&d.join("bin/wall")).gid()), (0o2755, 5));
    assert_eq!(meta(&d.join("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(meta(&d.join("shared")).mode() & 0o7777, 0o2775);

    // Directory times are set after their content was created.
    let etc = meta(&d.join("etc"));
    assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 0, 4));
    assert_eq!(mtime(&d.join("etc")), (1_500_000_000, 0));
    // An implied parent (no entry) is a plain 0755 root directory.
    let bin = meta(&d.join("bin"));
    assert!(bin.is_dir());
    assert_eq!((bin.mode() & 0o7777, bin.uid(), bin.gid()), (0o755, 0, 0));

    let link = meta(&d.join("etc/link"));
    assert!(link.file_type().is_symlink());
    assert_eq!(fs::read_link(d.join("etc/link")).unwrap(), Path::new("../bin/su"));
    assert_eq!((link.uid(), link.gid()), (7, 8));
    assert_eq!(mtime(&d.join("etc/link")), (1_300_000_000, 0));
    assert_eq!(fs::read_link(d.join("etc/abs")).unwrap(), Path::new("/does/not/exist"));

    let hard = meta(&d.join("etc/hard"));
    assert_eq!(hard.ino(), conf.ino());
    assert_eq!(hard.nlink(), 2);

    let null = meta(&d.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!((null.rdev(), null.mode() & 0o7777), (rustix::fs::makedev(1, 3), 0o666));
    let lo = meta(&d.join("dev/loop9"));
    assert!(lo.file_type().is_block_device());
    assert_eq!((lo.rdev(), lo.gid()), (rustix::fs::makedev(7, 9), 6));
    let fifo = meta(&d.join("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.mode() & 0o7777, fifo.uid(), fifo.gid()), (0o620, 3, 4));
}

#[test]
fn pax_records_long_names_xattrs_nanoseconds_and_big_ids() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    let long_target = format!("../{}", "t".repeat(180));
    // security.capability v2: cap_net_bind_service (bit 10) permitted and effective.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut layer = Layer::new();
    layer
        .pax(&[("path", long_file.as_bytes()), ("mtime", b"1700000000.123456789"), ("uid", b"3000000")])
        .file("placeholder-overridden-by-pax", b"long")
        .pax(&[("SCHILY.xattr.security.capability", &cap), ("SCHILY.xattr.user.comment", b"hi\0there")])
        .file("ping", b"ping")
        .pax(&[("SCHILY.xattr.trusted.kiln", b"t"), ("mtime", b"1600000000.5"), ("atime", b"1600000001.25")])
        .add("xdir", Spec::new(EntryType::Directory, 0o700), b"")
        .pax(&[("linkpath", long_target.as_bytes()), ("mtime", b"1234.000000001")])
        .symlink("longlink", "ignored")
        // Before the epoch: containerd's bound, the epoch.
        .pax(&[("mtime", b"-100.5")])
        .file("old", b"")
        // GNU long names (././@LongLink), as tar-rs writes them for GNU headers.
        .file(&format!("{long_dir}/gnu-{}", "g".repeat(150)), b"gnu")
        .symlink("gnulink", &"l".repeat(150));
    let tar = layer.tar();
    apply_to(&tar, d, WhiteoutMode::Overlay);

    let f = d.join(&long_file);
    assert_eq!(fs::read(&f).unwrap(), b"long");
    assert_eq!(mtime(&f), (1_700_000_000, 123_456_789));
    assert_eq!(meta(&f).uid(), 3_000_000);
    assert!(!d.join("placeholder-overridden-by-pax").exists());

    assert_eq!(xattr(&d.join("ping"), "security.capability").as_deref(), Some(&cap[..]));
    assert_eq!(xattr(&d.join("ping"), "user.comment").as_deref(), Some(&b"hi\0there"[..]));

    let xdir = d.join("xdir");
    assert_eq!(xattr(&xdir, "trusted.kiln").as_deref(), Some(&b"t"[..]));
    assert_eq!(mtime(&xdir), (1_600_000_000, 500_000_000));
    assert_eq!((meta(&xdir).atime(), meta(&xdir).atime_nsec()), (1_600_000_001, 250_000_000));

    assert_eq!(fs::read_link(d.join("longlink")).unwrap(), Path::new(&long_target));
    assert_eq!(mtime(&d.join("longlink")), (1234, 1));
    assert_eq!(mtime(&d.join("old")), (0, 0));
    assert_eq!(fs::read(d.join(format!("{long_dir}/gnu-{}", "g".repeat(150)))).unwrap(), b"gnu");
    assert_eq!(fs::read_link(d.join("gnulink")).unwrap(), Path::new(&"l".repeat(150)));
}

/// A tree made on disk, archived by GNU tar in PAX format with xattrs, comes back identical.
#[test]
fn gnu_tar_archive_round_trips() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("usr/lib/deep/er")).unwrap();
    fs::write(src.join("usr/lib/deep/er/data"), vec![7u8; 300_000]).unwrap();
    fs::write(src.join("usr/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::hard_link(src.join("usr/tool"), src.join("usr/tool2")).unwrap();
    std::os::unix::fs::symlink("usr/lib", src.join("lib")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        0o600.into(),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::setxattr(src.join("usr/tool"), "user.origin", b"gnu", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::chown(src.join("usr/tool"), Some(rustix::fs::Uid::from_raw(123)), Some(rustix::fs::Gid::from_raw(456)))
        .unwrap();
    fs::set_permissions(src.join("usr/tool"), std::os::unix::fs::PermissionsExt::from_mode(0o4711)).unwrap();
    let archive = work.path().join("layer.tar");
    let out = Command::new("tar")
        .args(["--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .output()
        .expect("GNU tar is needed (Debian package `tar`)");
    assert!(out.status.success(), "tar failed: {}", String::from_utf8_lossy(&out.stderr));

    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let file = fs::File::open(&archive).unwrap();
    let stats = apply_layer(BufReader::new(file), &dest, WhiteoutMode::Overlay).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&fs::read(&archive).unwrap()));
    assert_eq!(stats.skipped_entries, 1, "the `./` entry is the root itself");

    for rel in ["usr/lib/deep/er/data", "usr/tool", "usr/tool2", "lib", "null", "usr", "usr/lib/deep"] {
        let (a, b) = (meta(&src.join(rel)), meta(&dest.join(rel)));
        assert_eq!(
            (a.mode(), a.uid(), a.gid(), a.len(), a.rdev(), a.mtime(), a.mtime_nsec()),
            (b.mode(), b.uid(), b.gid(), b.len(), b.rdev(), b.mtime(), b.mtime_nsec()),
            "{rel}"
        );
    }
    assert_eq!(fs::read(dest.join("usr/lib/deep/er/data")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(meta(&dest.join("usr/tool")).ino(), meta(&dest.join("usr/tool2")).ino());
    assert_eq!(fs::read_link(dest.join("lib")).unwrap(), Path::new("usr/lib"));
    assert_eq!(xattr(&dest.join("usr/tool"), "user.origin").as_deref(), Some(&b"gnu"[..]));
}

/// Everything observable about the tree below `root`, by relative path.
fn describe_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = meta(&path);
            let mut names = vec![0u8; 65536];
            let n = rustix::fs::llistxattr(&path, &mut names[..]).unwrap();
            let mut xattrs: Vec<_> = names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()).collect();
            xattrs.sort();
            let xattrs: Vec<_> = xattrs
                .iter()
                .map(|k| {
                    let k = std::str::from_utf8(k).unwrap();
                    (k.to_owned(), xattr(&path, k))
                })
                .collect();
            let content = if m.is_file() {
                Digest::of(&fs::read(&path).unwrap()).to_string()
            } else if m.file_type().is_symlink() {
                format!("{:?}", fs::read_link(&path).unwrap())
            } else {
                String::new()
            };
            let described = format!(
                "{:?} {:o} {}:{} links {} rdev {} mtime {}.{} {content} {xattrs:?}",
                m.file_type(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.rdev(),
                m.mtime(),
                m.mtime_nsec()
            );
            out.insert(path.strip_prefix(root).unwrap().to_owned(), described);
            if m.is_dir() {
                todo.push(path);
            }
        }
    }
    out
}

/// Differential: a real system tree archived by GNU tar come out of kiln exactly as out of
/// GNU tar itself (types, modes, owners, links, hardlink counts, nanosecond mtimes, xattrs).
#[test]
fn a_system_tree_applies_exactly_as_gnu_tar_extracts_it() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).output().expect("GNU tar is needed (Debian package `tar`)");
        assert!(out.status.success(), "tar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // /etc: hundreds of symlinks, varied modes and owners, and cheap to copy twice.
    let archive = work.path().join("etc.tar");
    let archive = archive.to_str().unwrap();
    tar(&["--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", "/etc", "-cf", archive, "."]);
    let (ours, theirs) = (work.path().join("kiln"), work.path().join("gnu"));
    fs::create_dir(&ours).unwrap();
    fs::create_dir(&theirs).unwrap();
    apply_layer(BufReader::new(fs::File::open(archive).unwrap()), &ours, WhiteoutMode::Delete).unwrap();
    let extract = ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "--same-owner", "-xf", archive, "-C"];
    tar(&[&extract[..], &[theirs.to_str().unwrap()]].concat());
    let (ours, theirs) = (describe_tree(&ours), describe_tree(&theirs));
    assert!(ours.len() > 100, "/etc is a real tree");
    for (path, gnu) in &theirs {
        assert_eq!(ours.get(path), Some(gnu), "/etc/{}", path.display());
    }
    assert_eq!(ours.len(), theirs.len());
}

#[test]
fn overlay_mode_writes_whiteout_devices_and_opaque_xattrs() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let mut layer = Layer::new();
    layer
        .dir("etc")
        .add("etc/.wh.motd", Spec::new(EntryType::Regular, 0o644).owner(5, 6), b"")
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        // No entry for `gone/`: the whiteout's parent is created.
        .file("gone/deeper/.wh.x", b"")
        .file(".wh..wh.plnk/123.456", b"aufs hardlink storage");
    let stats = apply_to(&layer.tar(), d, WhiteoutMode::Overlay);

    assert_eq!(stats.whiteouts, 3);
    assert_eq!(stats.skipped_entries, 1);
    assert!(is_whiteout_device(&d.join("etc/motd")));
    assert_eq!((meta(&d.join("etc/motd")).uid(), meta(&d.join("etc/motd")).gid()), (5, 6));
    assert!(is_whiteout_device(&d.join("gone/deeper/x")));
    assert!(!d.join("etc/.wh.motd").exists());
    assert_eq!(xattr(&d.join("var/cache"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!d.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(d.join("var/cache/new")).unwrap(), b"n");
    assert!(!d.join(".wh..wh.plnk").exists());
}

/// A directory a layer implies without listing it copies the nearest lower layer's, unless a
/// layer in between whited it out.
#[test]
fn implied_directories_take_their_attributes_from_parent_layers() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let [l1, l2, l3] = ["l1", "l2", "l3"].map(|l| work.path().join(l));
    for dir in [&l1, &l2, &l3] {
        fs::create_dir(dir).unwrap();
    }
    let mut base = Layer::new();
    base.add("usr", Spec::new(EntryType::Directory, 0o750).owner(5, 6).mtime(1_111_111_111), b"")
        .add("usr/share", Spec::new(EntryType::Directory, 0o700).mtime(1_222_222_222), b"")
        .add("opt", Spec::new(EntryType::Directory, 0o711).owner(9, 9), b"");
    apply_to(&base.tar(), &l1, WhiteoutMode::Overlay);
    let mut middle = Layer::new();
    middle.file(".wh.opt", b"");
    apply_to(&middle.tar(), &l2, WhiteoutMode::Overlay);

    let mut top = Layer::new();
    top.file("usr/share/doc/x", b"x").file("usr/new/y", b"y").file("opt/z", b"z");
    let options = ApplyOptions { mode: WhiteoutMode::Overlay, parents: vec![l2.clone(), l1.clone()] };
    apply(&top.tar()[..], &l3, options).unwrap();

    let usr = meta(&l3.join("usr"));
    assert_eq!((usr.mode() & 0o7777, usr.uid(), usr.gid()), (0o750, 5, 6));
    assert_eq!(mtime(&l3.join("usr")), (1_111_111_111, 0), "restored after the content below was made");
    assert_eq!(
        (meta(&l3.join("usr/share")).mode() & 0o7777, mtime(&l3.join("usr/share"))),
        (0o700, (1_222_222_222, 0))
    );
    for fresh in ["usr/new", "usr/share/doc", "opt"] {
        let m = meta(&l3.join(fresh));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0), "{fresh}");
    }
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Overlay-mode layers used as real overlayfs lowerdirs hide what they whited out.
#[test]
fn overlay_lowerdirs_mount_with_whiteouts_in_effect() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let (l1, l2, merged) = (work.path().join("l1"), work.path().join("l2"), work.path().join("merged"));
    for dir in [&l1, &l2, &merged] {
        fs::create_dir(dir).unwrap();
    }
    let mut base = Layer::new();
    base.dir("etc").file("etc/motd", b"welcome").file("etc/keep", b"k").dir("cache").file("cache/old", b"o");
    apply_to(&base.tar(), &l1, WhiteoutMode::Overlay);
    let mut top = Layer::new();
    top.dir("etc").file("etc/.wh.motd", b"").dir("cache").file("cache/.wh..wh..opq", b"").file("cache/new", b"n");
    apply_to(&top.tar(), &l2, WhiteoutMode::Overlay);

    let options = format!("lowerdir={}:{}", l2.display(), l1.display());
    let out = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&merged).output().unwrap();
    assert!(out.status.success(), "mount overlay: {}", String::from_utf8_lossy(&out.stderr));
    let _mount = Mount(merged.clone());

    assert!(!merged.join("etc/motd").exists(), "whiteout must hide etc/motd");
    assert_eq!(fs::read(merged.join("etc/keep")).unwrap(), b"k");
    let cache: Vec<_> = fs::read_dir(merged.join("cache")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(cache, ["new"], "the opaque cache/ hides cache/old");
}

#[test]
fn delete_mode_removes_whited_out_paths_and_empties_opaque_dirs() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let mut lower = Layer::new();
    lower
        .dir("etc")
        .file("etc/motd", b"welcome")
        .file("etc/keep", b"k")
        .dir("app")
        .file("app/old", b"o")
        .dir("app/sub")
        .file("app/sub/old", b"o")
        .dir("app/empty")
        .dir("data")
        .file("data/old", b"o")
        .dir("data/nested")
        .file("data/nested/old", b"o")
        .dir("tree")
        .file("tree/a", b"a")
        .symlink("outside", "/etc");
    apply_to(&lower.tar(), d, WhiteoutMode::Delete);

    let mut upper = Layer::new();
    upper
        .file("etc/.wh.motd", b"")
        .file(".wh.tree", b"")
        .file(".wh.outside", b"")
        .file(".wh.never-existed", b"")
        .file("missing/parent/.wh.x", b"")
        // Marker first, then what this layer adds.
        .dir("app")
        .file("app/.wh..wh..opq", b"")
        .file("app/new", b"n")
        .file("app/sub/new", b"n")
        // This layer's content first, marker last: what it added is kept.
        .file("data/nested/new", b"n")
        .file("data/new", b"n")
        .file("data/.wh..wh..opq", b"");
    let stats = apply_to(&upper.tar(), d, WhiteoutMode::Delete);
    assert_eq!(stats.whiteouts, 7);

    assert!(!d.join("etc/motd").exists());
    assert_eq!(fs::read(d.join("etc/keep")).unwrap(), b"k");
    assert!(!d.join("tree").exists());
    assert!(fs::symlink_metadata(d.join("outside")).is_err(), "the symlink itself is removed");
    assert!(Path::new("/etc").is_dir(), "never its target");
    assert!(!d.join("missing").exists(), "a whiteout does not create parents in Delete mode");

    let names = |dir: &str| {
        let mut v: Vec<String> =
            fs::read_dir(d.join(dir)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names("app"), ["new", "sub"]);
    assert_eq!(names("app/sub"), ["new"]);
    assert_eq!(names("data"), ["nested", "new"]);
    assert_eq!(names("data/nested"), ["new"]);
}

#[test]
fn entries_replace_other_types_and_directories_merge() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let canary = work.path().join("canary");
    fs::write(&canary, b"untouched").unwrap();
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut lower = Layer::new();
    lower
        .dir("was-dir")
        .file("was-dir/child", b"c")
        .file("was-file", b"f")
        .symlink("was-link", canary.to_str().unwrap())
        .file("was-file2", b"f")
        .add("merge", Spec::new(EntryType::Directory, 0o700).owner(1, 1), b"")
        .file("merge/old", b"o")
        .dir("dir-to-link")
        .file("dir-to-link/x", b"x");
    apply_to(&lower.tar(), &dest, WhiteoutMode::Delete);

    let mut upper = Layer::new();
    upper
        .file("was-dir", b"now a file")
        .dir("was-file")
        .file("was-link", b"replaces the symlink, not its target")
        .symlink("was-file2", "elsewhere")
        .add("merge", Spec::new(EntryType::Directory, 0o751).owner(2, 3).mtime(1_234_567_890), b"")
        .file("merge/new", b"n")
        .symlink("dir-to-link", "merge");
    apply_to(&upper.tar(), &dest, WhiteoutMode::Delete);

    assert_eq!(fs::read(dest.join("was-dir")).unwrap(), b"now a file");
    assert!(meta(&dest.join("was-file")).is_dir());
    assert!(meta(&dest.join("was-link")).is_file());
    assert_eq!(fs::read(dest.join("was-link")).unwrap(), b"replaces the symlink, not its target");
    assert_eq!(fs::read(&canary).unwrap(), b"untouched");
    assert_eq!(fs::read_link(dest.join("was-file2")).unwrap(), Path::new("elsewhere"));
    let merge = meta(&dest.join("merge"));
    assert_eq!((merge.mode() & 0o7777, merge.uid(), merge.gid()), (0o751, 2, 3));
    assert_eq!(mtime(&dest.join("merge")), (1_234_567_890, 0));
    assert_eq!(fs::read(dest.join("merge/old")).unwrap(), b"o");
    assert_eq!(fs::read(dest.join("merge/new")).unwrap(), b"n");
    assert_eq!(fs::read_link(dest.join("dir-to-link")).unwrap(), Path::new("merge"));

    // A later entry for the same path in one layer wins, too.
    let mut twice = Layer::new();
    twice.file("dup", b"first").file("dup", b"second");
    apply_to(&twice.tar(), &dest, WhiteoutMode::Overlay);
    assert_eq!(fs::read(dest.join("dup")).unwrap(), b"second");
}

/// The same tar, plain, gzip and zstd, applies to the same tree with the same diffID; the
/// media type plays no part (the bytes decide).
#[test]
fn compression_is_detected_from_the_bytes() {
    require_root();
    let mut layer = Layer::new();
    layer.dir("a").file("a/b", &vec![42u8; 100_000]).symlink("c", "a/b");
    let tar = layer.tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();

    for (blob, compression) in [(&tar, Compression::Uncompressed), (&gz, Compression::Gzip), (&zst, Compression::Zstd)]
    {
        let dest = tempfile::tempdir().unwrap();
        let digest = Digest::of(blob);
        let mut verifying = VerifyingReader::new(&blob[..], digest, Some(blob.len() as u64));
        let stats = apply_layer(BufReader::new(&mut verifying), dest.path(), WhiteoutMode::Overlay).unwrap();
        assert!(verifying.is_verified(), "{compression}: the blob must be read to its end and verified");
        assert_eq!(stats.compression, compression);
        assert_eq!(stats.diff_id, Digest::of(&tar), "{compression}");
        assert_eq!(fs::read(dest.path().join("a/b")).unwrap(), vec![42u8; 100_000]);
        assert_eq!(fs::read_link(dest.path().join("c")).unwrap(), Path::new("a/b"));
    }

    // A blob that does not match its digest fails, even though its tar is fine.
    let dest = tempfile::tempdir().unwrap();
    let wrong = VerifyingReader::new(&gz[..], Digest::of(b"other"), None);
    let err = apply_layer(BufReader::new(wrong), dest.path(), WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(err, ApplyError::Read { .. }) && err.to_string().contains("digest mismatch"), "{err}");
}

/// The diffID covers the whole stream, including padding after the end-of-archive blocks.
#[test]
fn diff_id_covers_the_stream_to_its_end() {
    require_root();
    let mut layer = Layer::new();
    layer.file("f", b"x");
    let mut tar = layer.tar();
    tar.extend_from_slice(&[0u8; 10240]);
    let dest = tempfile::tempdir().unwrap();
    let stats = apply_to(&tar, dest.path(), WhiteoutMode::Overlay);
    assert_eq!((stats.diff_id, stats.tar_size), (Digest::of(&tar), tar.len() as u64));

    let missing = apply(&tar[..], &dest.path().join("nope"), WhiteoutMode::Overlay).unwrap_err();
    assert!(matches!(missing, ApplyError::Destination { .. }), "{missing}");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

/// A PAX record `"%d %s=%s\n"`, written raw: the length counts the whole record, its own digits
/// included, and the value is not escaped.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A tar written block by block: ustar headers with raw names and sizes, data padded to 512.
struct HandTar(Vec<u8>);

impl HandTar {
    /// A header of type `kind` named `name` declaring `size` bytes, then `data` (which may be
    /// shorter or longer than `size`: the test decides) padded to a block.
    fn entry(&mut self, kind: EntryType, name: &[u8], size: u64, data: &[u8]) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(size);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.data(data)
    }

    fn data(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    /// A PAX extended header (`x`) holding exactly `records`.
    fn pax(&mut self, records: &[u8]) -> &mut Self {
        self.entry(EntryType::XHeader, b"PaxHeaders.0/next", records.len() as u64, records)
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(EntryType::Regular, name.as_bytes(), data.len() as u64, data)
    }

    fn finish(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        std::mem::take(&mut self.0)
    }
}

/// PAX records are read by their length, not split on newlines: binary xattr values (with
/// newlines and NULs, ending in a newline) come back byte for byte, a record look-alike inside a
/// value stays part of the value, and the records after such a value still apply, `size` (Go
/// writes a header size of 0 for files over 8 GiB) and `uid` included. Records are in Go's
/// order (sorted by key, `SCHILY.*` first).
#[test]
fn pax_values_with_newlines_are_read_by_their_length() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let binary = b"\n\0bin\n12 uid=1234\n\0\n";
    // security.capability v2 with CAP_DAC_OVERRIDE and CAP_FOWNER (0x0a) permitted, effective.
    let cap: Vec<u8> = [0x0200_0001u32, 0x0a, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(cap.contains(&b'\n'));
    let records = [
        pax_record("SCHILY.xattr.security.capability", &cap),
        pax_record("SCHILY.xattr.user.bin", binary),
        pax_record("mtime", b"1700000000.5"),
        pax_record("path", b"dir/new\nline"),
        pax_record("size", b"7"),
        pax_record("uid", b"4321"),
    ]
    .concat();
    let tar = HandTar(Vec::new())
        .pax(&records)
        .entry(EntryType::Regular, b"placeholder", 0, b"content")
        .pax(&pax_record("SCHILY.xattr.user.tail", b"\n"))
        .file("after", b"next entry")
        .finish();
    apply_to(&tar, d, WhiteoutMode::Overlay);

    let f = d.join("dir/new\nline");
    assert_eq!(fs::read(&f).unwrap(), b"content");
    assert_eq!(xattr(&f, "user.bin").as_deref(), Some(&binary[..]));
    assert_eq!(xattr(&f, "security.capability").as_deref(), Some(&cap[..]));
    assert_eq!(meta(&f).uid(), 4321);
    assert_eq!(mtime(&f), (1_700_000_000, 500_000_000));
    assert_eq!(fs::read_dir(d.join("dir")).unwrap().count(), 1, "only the PAX path is created");
    assert!(!d.join("placeholder").exists());
    assert_eq!(xattr(&d.join("after"), "user.tail").as_deref(), Some(&b"\n"[..]));
    assert_eq!(fs::read(d.join("after")).unwrap(), b"next entry");
}

/// A PAX record whose length prefix is wrong (too long, too short, not a number) is an error
/// naming the entry it describes, and nothing of it is created.
#[test]
fn malformed_pax_records_fail_naming_the_entry() {
    require_root();
    let good = pax_record("mtime", b"1700000000");
    for bad in [&b"30 mtime=1700000000\n"[..], b"9 mtime=1700000000\n", b"x mtime=1\n", b"6 novalue\n"] {
        let dest = tempfile::tempdir().unwrap();
        let tar = HandTar(Vec::new()).pax(&[&good[..], bad].concat()).file("victim", b"data").finish();
        let err = apply(&tar[..], dest.path(), WhiteoutMode::Overlay).unwrap_err();
        let shown = String::from_utf8_lossy(bad);
        assert!(matches!(err, ApplyError::Rejected { .. }), "{shown:?}: {err}");
        assert_eq!(err.entry(), Some("\"victim\""), "{shown:?}: {err}");
        assert!(err.to_string().contains("malformed PAX record at byte 20"), "{shown:?}: {err}");
        assert!(!dest.path().join("victim").exists());
    }
    // A well-formed record with a value that is not a number: the stream cannot be framed.
    let dest = tempfile::tempdir().unwrap();
    let tar = HandTar(Vec::new()).pax(&pax_record("size", b"12k")).file("victim", b"data").finish();
    let err = apply(&tar[..], dest.path(), WhiteoutMode::Overlay).unwrap_err();
    assert_eq!(err.entry(), Some("\"victim\""), "{err}");
    assert!(err.to_string().contains("invalid PAX size \"12k\""), "{err}");
}

/// GNU sparse files (type `S`, the old GNU format with extension blocks of the sparse map) come
/// back with their holes as zeros, from a hand-written entry and from GNU tar `--sparse`.
#[test]
fn gnu_sparse_files_apply_with_their_holes() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(5);
    h.as_old_mut().name[..6].copy_from_slice(b"sparse");
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(4096);
    gnu.sparse[0].set_offset(512);
    gnu.sparse[0].set_length(3);
    gnu.sparse[1].set_offset(2048);
    gnu.sparse[1].set_length(2);
    h.set_cksum();
    let mut hand = HandTar(h.as_bytes().to_vec());
    let tar = hand.data(b"abcde").file("after", b"x").finish();
    apply_to(&tar, dest.path(), WhiteoutMode::Overlay);
    let mut expected = vec![0u8; 4096];
    expected[512..515].copy_from_slice(b"abc");
    expected[2048..2050].copy_from_slice(b"de");
    assert_eq!(fs::read(dest.path().join("sparse")).unwrap(), expected);
    assert_eq!(fs::read(dest.path().join("after")).unwrap(), b"x");

    // Ten data segments: more than the header's four slots, so GNU tar writes extension blocks.
    let src = tempfile::tempdir().unwrap();
    let mut content = vec![0u8; 10 << 16];
    for i in 0..10 {
        content[(i << 16) + 4096..(i << 16) + 8192].fill(i as u8 + 1);
    }
    let file = fs::File::create(src.path().join("holes")).unwrap();
    for i in 0..10 {
        use std::os::unix::fs::FileExt;
        let at = (i << 16) + 4096;
        file.write_all_at(&content[at..at + 4096], at as u64).unwrap();
    }
    file.set_len(content.len() as u64).unwrap();
    let archive = src.path().join("sparse.tar");
    let out = Command::new("tar")
        .args(["--format=gnu", "--sparse", "-C"])
        .arg(src.path())
        .arg("-cf")
        .arg(&archive)
        .arg("holes")
        .output()
        .expect("GNU tar is needed (Debian package `tar`)");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    let tar = fs::read(&archive).unwrap();
    assert!(tar[156] == b'S' && tar[482] == 1, "GNU tar wrote a sparse entry with extension blocks");
    let dest = tempfile::tempdir().unwrap();
    apply_to(&tar, dest.path(), WhiteoutMode::Overlay);
    assert!(fs::read(dest.path().join("holes")).unwrap() == content, "sparse content differs");
}
