//! File actions (COPY/ADD/WORKDIR/inline files) and content checksums on real directories:
//! what a user sees in the image for each BuildKit rule, and which changes move a cache key.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_builder::fileop::{self, FileOpError, SourceTree, StatCache};
use kiln_frontend::dockerignore::DockerIgnore;
use kiln_frontend::graph::{Copy, Digest, FileAction};

/// A COPY as the frontend lowers `COPY <src> <dest>` from the context.
fn copy(src: &str, dest: &str) -> Copy {
    Copy {
        from: Digest::of_bytes(b"context"),
        src: src.to_owned(),
        dest: dest.to_owned(),
        chown: None,
        chmod: None,
        link: false,
        include_patterns: Vec::new(),
        exclude: Vec::new(),
        allow_wildcard: true,
        dir_contents_only: true,
        follow_symlinks: true,
        attempt_unpack: false,
    }
}

fn context(root: &Path) -> SourceTree<'_> {
    SourceTree { root, ignore: None, reset_owner: true }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn apply(rootfs: &Path, tree: &SourceTree<'_>, c: Copy) -> Result<(), FileOpError> {
    fileop::apply(rootfs, &FileAction::Copy(c), Some(tree))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn stat_cache(dir: &Path) -> StatCache {
    StatCache::load(dir.join("statcache"))
}

/// Runs a tool the test needs; fails loudly naming its Debian package.
fn run(cmd: &mut Command, package: &str) {
    let status =
        cmd.status().unwrap_or_else(|e| panic!("{cmd:?} failed to start ({e}): install the Debian package {package}"));
    assert!(status.success(), "{cmd:?} failed");
}

/// The BuildKit `testCopyWildcards` layout.
fn wildcard_context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    write(&ctx.path().join("foo.go"), "foo-contents");
    write(&ctx.path().join("bar.go"), "bar-contents");
    write(&ctx.path().join("sub/dir1/dir2/foo"), "foo-contents");
    ctx
}

#[test]
fn wildcards_directory_contents_and_trailing_slash_rules() {
    let ctx = wildcard_context();
    let rootfs = tempfile::tempdir().unwrap();
    let (tree, r) = (context(ctx.path()), rootfs.path());
    for (src, dest) in [
        ("/*.go", "/gofiles/"),
        ("/f*.go", "/foo2.go"),
        ("/sub/*", "/subdest/"),
        ("/sub/*/dir2/foo", "/subdest2/"),
        ("/sub/*/dir2/foo", "/subdest3/bar"),
        ("/", "/all/"),
        ("/sub/dir1", "/subdest6"),
        ("/foo.go", "/a/b/c/file"),
    ] {
        apply(r, &tree, copy(src, dest)).unwrap_or_else(|e| panic!("COPY {src} {dest}: {e}"));
    }
    assert_eq!(read(&r.join("gofiles/foo.go")), "foo-contents");
    assert_eq!(read(&r.join("gofiles/bar.go")), "bar-contents");
    assert_eq!(read(&r.join("foo2.go")), "foo-contents");
    assert_eq!(read(&r.join("subdest/dir2/foo")), "foo-contents");
    assert_eq!(read(&r.join("subdest2/foo")), "foo-contents");
    assert_eq!(read(&r.join("subdest3/bar")), "foo-contents");
    assert_eq!(read(&r.join("all/foo.go")), "foo-contents");
    assert_eq!(read(&r.join("all/sub/dir1/dir2/foo")), "foo-contents");
    assert_eq!(read(&r.join("subdest6/dir2/foo")), "foo-contents");
    assert!(!r.join("subdest6/dir1").exists(), "a directory source copies its contents");
    assert_eq!(read(&r.join("a/b/c/file")), "foo-contents");
    for created in ["a", "a/b", "a/b/c", "subdest6", "gofiles"] {
        assert_eq!(mode(&r.join(created)), 0o755, "{created}");
        assert_eq!(owner(&r.join(created)), (0, 0), "{created}");
    }

    // A file to an existing directory without a trailing slash goes into it.
    apply(r, &tree, copy("/bar.go", "/gofiles")).unwrap();
    assert!(r.join("gofiles/bar.go").is_file());
    // A wildcard matching nothing copies nothing and creates nothing (AllowEmptyWildcard).
    apply(r, &tree, copy("/nomatch*", "/empty/")).unwrap();
    assert!(!r.join("empty").exists());
    // A file over a directory, or a directory over a file, fails naming the path.
    let err = apply(r, &tree, copy("/sub/dir1/dir2", "/foo2.go/")).unwrap_err().to_string();
    assert!(err.contains("foo2.go"), "{err}");
    fs::create_dir(r.join("isdir")).unwrap();
    fs::create_dir(r.join("isdir/foo.go")).unwrap();
    let err = apply(r, &tree, copy("/foo.go", "/isdir/")).unwrap_err().to_string();
    assert_eq!(err, "cannot replace to directory /isdir/foo.go with file");
}

#[test]
fn missing_source_errors_like_buildkit() {
    let ctx = wildcard_context();
    let rootfs = tempfile::tempdir().unwrap();
    let tree = context(ctx.path());
    let err = fileop::checksum(&tree, &copy("/nope", "/"), &stat_cache(rootfs.path())).unwrap_err();
    assert_eq!(err.to_string(), r#"failed to compute cache key: "/nope": not found"#);
    let err = apply(rootfs.path(), &tree, copy("/nope", "/")).unwrap_err();
    assert_eq!(err.to_string(), r#""/nope": not found"#);
    // A wildcard that matches nothing has a checksum (of nothing) and is not an error.
    fileop::checksum(&tree, &copy("/nomatch*", "/"), &stat_cache(rootfs.path())).unwrap();
}

#[test]
fn symlinks_out_of_the_context_are_resolved_inside_it() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret"), "host secret");
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("real/file"), "in context");
    symlink(outside.path().join("secret"), c.join("abs")).unwrap();
    symlink(
        "../../../../../../../../..".to_owned() + &outside.path().join("secret").display().to_string(),
        c.join("rel"),
    )
    .unwrap();
    symlink("real", c.join("dirlink")).unwrap();
    symlink(outside.path(), c.join("real/out")).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    let tree = context(c);
    for src in ["/abs", "/rel"] {
        let err = apply(r, &tree, copy(src, "/got")).unwrap_err().to_string();
        assert_eq!(err, format!("{src:?}: not found"), "the link's target is looked up inside the context");
        assert!(!r.join("got").exists());
    }
    // A symlink named as the source is followed (inside the context)...
    apply(r, &tree, copy("/dirlink", "/d/")).unwrap();
    assert_eq!(read(&r.join("d/file")), "in context");
    // ...while symlinks inside a copied directory are copied as symlinks, never read.
    assert_eq!(fs::read_link(r.join("d/out")).unwrap(), outside.path());
    assert!(fs::symlink_metadata(r.join("d/out")).unwrap().file_type().is_symlink());
}

#[test]
fn writes_through_rootfs_symlinks_stay_in_the_rootfs() {
    let ctx = wildcard_context();
    let outside = tempfile::tempdir().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    fs::create_dir_all(r.join("run")).unwrap();
    fs::create_dir_all(r.join("var")).unwrap();
    symlink("/run", r.join("var/run")).unwrap();
    symlink(outside.path(), r.join("evil")).unwrap();
    symlink("../../../../../../..", r.join("up")).unwrap();
    let tree = context(ctx.path());
    apply(r, &tree, copy("/foo.go", "/var/run/foo.go")).unwrap();
    assert_eq!(read(&r.join("run/foo.go")), "foo-contents");
    apply(r, &tree, copy("/foo.go", "/evil/x/")).unwrap();
    apply(r, &tree, copy("/sub", "/up/escaped/")).unwrap();
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside the rootfs");
    let inside = r.join(outside.path().strip_prefix("/").unwrap()).join("x/foo.go");
    assert_eq!(read(&inside), "foo-contents", "the absolute link resolves inside the rootfs");
    assert_eq!(read(&r.join("escaped/dir1/dir2/foo")), "foo-contents");
    // WORKDIR and inline files are confined the same way.
    let mkdir = FileAction::Mkdir { path: "/evil/wd".into(), mode: 0o755, make_parents: true, user: String::new() };
    fileop::apply(r, &mkdir, None).unwrap();
    let mkfile = FileAction::Mkfile { path: "/evil/f".into(), mode: 0o600, content: "x".into() };
    fileop::apply(r, &mkfile, None).unwrap();
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(r.join(outside.path().strip_prefix("/").unwrap()).join("wd").is_dir());
}

#[test]
fn dockerignore_hides_files_and_their_changes_do_not_move_the_checksum() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("app/main.go"), "package main");
    write(&c.join("app/debug.log"), "noise");
    write(&c.join("secret.txt"), "s3cret");
    write(&c.join("keep/.gitkeep"), "");
    let ignore = DockerIgnore::parse("secret.txt\n**/*.log\n", ".dockerignore").unwrap();
    let tree = SourceTree { root: c, ignore: Some(&ignore), reset_owner: true };
    let cache = tempfile::tempdir().unwrap();
    let stats = stat_cache(cache.path());
    let all = copy("/", "/app/");
    let before = fileop::checksum(&tree, &all, &stats).unwrap();
    assert!(before.starts_with("sha256:") && before.len() == 71, "{before}");

    write(&c.join("app/debug.log"), "other noise");
    write(&c.join("secret.txt"), "changed");
    assert_eq!(fileop::checksum(&tree, &all, &stats).unwrap(), before, "ignored files do not count");
    // mtime only: same key.
    let later = fs::FileTimes::new()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1e9 as u64));
    fs::File::options().write(true).open(c.join("app/main.go")).unwrap().set_times(later).unwrap();
    assert_eq!(fileop::checksum(&tree, &all, &stats).unwrap(), before, "mtime is not content");
    // content: another key; mode: another key.
    write(&c.join("app/main.go"), "package main // changed");
    let changed = fileop::checksum(&tree, &all, &stats).unwrap();
    assert_ne!(changed, before);
    fs::set_permissions(c.join("app/main.go"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(fileop::checksum(&tree, &all, &stats).unwrap(), changed);
    // Only what the COPY selects counts.
    let one = copy("/keep", "/k");
    let k = fileop::checksum(&tree, &one, &stats).unwrap();
    write(&c.join("app/main.go"), "package main // again");
    assert_eq!(fileop::checksum(&tree, &one, &stats).unwrap(), k);

    let rootfs = tempfile::tempdir().unwrap();
    apply(rootfs.path(), &tree, all).unwrap();
    let r = rootfs.path();
    assert!(r.join("app/app/main.go").is_file());
    assert!(!r.join("app/secret.txt").exists());
    assert!(!r.join("app/app/debug.log").exists());
    let err = apply(r, &tree, copy("/secret.txt", "/s")).unwrap_err().to_string();
    assert_eq!(err, r#""/secret.txt": not found"#);
}

#[test]
fn stat_cache_hits_skip_reading_and_survive_save_and_load() {
    let ctx = wildcard_context();
    // The cache does not remember files changed within the last second (racy entries).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let tree = context(ctx.path());
    let cache = tempfile::tempdir().unwrap();
    let all = copy("/", "/");
    let stats = stat_cache(cache.path());
    let sum = fileop::checksum(&tree, &all, &stats).unwrap();
    assert_eq!(stats.files_read(), 3);
    assert_eq!(fileop::checksum(&tree, &all, &stats).unwrap(), sum);
    assert_eq!(stats.files_read(), 3, "second checksum read nothing");
    stats.save().unwrap();

    let reloaded = stat_cache(cache.path());
    assert_eq!(reloaded.len(), 3);
    assert_eq!(fileop::checksum(&tree, &all, &reloaded).unwrap(), sum);
    assert_eq!(reloaded.files_read(), 0, "a loaded cache avoids every read");
    // A changed file is read again (its ctime moved), and only it.
    write(&ctx.path().join("bar.go"), "new");
    assert_ne!(fileop::checksum(&tree, &all, &reloaded).unwrap(), sum);
    assert_eq!(reloaded.files_read(), 1);
    // Once the change is old enough to be remembered, it replaces the file's entry.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let changed = fileop::checksum(&tree, &all, &reloaded).unwrap();
    reloaded.save().unwrap();
    let again = stat_cache(cache.path());
    assert_eq!(again.len(), 3, "one entry per file, however often it changed");
    assert_eq!(fileop::checksum(&tree, &all, &again).unwrap(), changed);
    assert_eq!(again.files_read(), 0);

    fs::write(cache.path().join("statcache"), b"garbage").unwrap();
    let corrupt = stat_cache(cache.path());
    assert!(corrupt.is_empty());
    fileop::checksum(&tree, &all, &corrupt).unwrap();
    assert_eq!(corrupt.files_read(), 3);
}

/// A rootfs with the users `--chown` names resolve against.
fn rootfs_with_users() -> tempfile::TempDir {
    let rootfs = tempfile::tempdir().unwrap();
    write(&rootfs.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n");
    write(&rootfs.path().join("etc/group"), "root:x:0:\napp:x:1001:\nwheel:x:10:app\n");
    rootfs
}

#[test]
fn chown_by_name_and_number_resolved_in_the_destination() {
    let ctx = wildcard_context();
    let tree = context(ctx.path());
    let rootfs = rootfs_with_users();
    let r = rootfs.path();
    let with = |chown: &str, src: &str, dest: &str| Copy { chown: Some(chown.into()), ..copy(src, dest) };
    apply(r, &tree, with("app", "/foo.go", "/byname")).unwrap();
    assert_eq!(owner(&r.join("byname")), (1000, 1001), "a bare name takes its passwd group");
    apply(r, &tree, with("4242", "/foo.go", "/bynumber")).unwrap();
    assert_eq!(owner(&r.join("bynumber")), (4242, 4242), "a bare number is uid and gid (BuildKit)");
    apply(r, &tree, with("app:wheel", "/sub", "/new/tree/")).unwrap();
    for p in ["new", "new/tree", "new/tree/dir1", "new/tree/dir1/dir2/foo"] {
        assert_eq!(owner(&r.join(p)), (1000, 10), "{p}: created parents and copied entries");
    }
    apply(r, &tree, with("7:8", "/foo.go", "/ids")).unwrap();
    assert_eq!(owner(&r.join("ids")), (7, 8));
    let err = apply(r, &tree, with("ghost", "/foo.go", "/x")).unwrap_err().to_string();
    assert!(err.contains("unable to find user ghost"), "{err}");

    // Without --chown: the context is root-owned, another stage's files keep their owners.
    let stage = tempfile::tempdir().unwrap();
    write(&stage.path().join("owned"), "o");
    std::os::unix::fs::lchown(stage.path().join("owned"), Some(33), Some(44)).unwrap();
    let stage_tree = SourceTree { root: stage.path(), ignore: None, reset_owner: false };
    apply(r, &stage_tree, copy("/owned", "/from-stage")).unwrap();
    assert_eq!(owner(&r.join("from-stage")), (33, 44));
    apply(r, &context(stage.path()), copy("/owned", "/from-context")).unwrap();
    assert_eq!(owner(&r.join("from-context")), (0, 0));
}

#[test]
fn chmod_octal_and_symbolic_on_files_and_directories() {
    let ctx = wildcard_context();
    fs::set_permissions(ctx.path().join("foo.go"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(ctx.path().join("sub/dir1"), fs::Permissions::from_mode(0o700)).unwrap();
    let tree = context(ctx.path());
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    let with = |chmod: &str, src: &str, dest: &str| Copy { chmod: Some(chmod.into()), ..copy(src, dest) };
    apply(r, &tree, with("0751", "/foo.go", "/octal")).unwrap();
    assert_eq!(mode(&r.join("octal")), 0o751);
    apply(r, &tree, with("u+x,go+r", "/foo.go", "/symbolic")).unwrap();
    assert_eq!(mode(&r.join("symbolic")), 0o744);
    apply(r, &tree, with("a=rX", "/sub", "/tree/")).unwrap();
    assert_eq!(mode(&r.join("tree/dir1")), 0o555, "directories get --chmod (X adds x)");
    assert_eq!(mode(&r.join("tree/dir1/dir2/foo")), 0o444);
    assert_eq!(mode(&r.join("tree")), 0o755, "the created destination keeps 0755");
    let err = apply(r, &tree, with("99", "/foo.go", "/bad")).unwrap_err().to_string();
    assert!(err.starts_with("invalid chmod parameter: '99'"), "{err}");
    // Without --chmod, modes are kept.
    apply(r, &tree, copy("/sub", "/kept/")).unwrap();
    assert_eq!(mode(&r.join("kept/dir1")), 0o700);
}

#[test]
fn mtimes_hardlinks_and_xattrs_are_kept() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("d/a"), "linked");
    fs::hard_link(c.join("d/a"), c.join("d/b")).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::options().write(true).open(c.join("d/a")).unwrap().set_modified(old).unwrap();
    rustix::fs::setxattr(c.join("d/a").as_path(), c"user.kiln", b"v", rustix::fs::XattrFlags::empty())
        .expect("the test directory's filesystem must support user xattrs");
    let dir_time = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_400_000_000);
    fs::File::open(c.join("d")).unwrap().set_modified(dir_time).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    apply(r, &context(c), copy("/", "/out/")).unwrap();
    let (a, b) = (fs::metadata(r.join("out/d/a")).unwrap(), fs::metadata(r.join("out/d/b")).unwrap());
    assert_eq!(a.ino(), b.ino(), "hardlinks within one copy are kept");
    assert_eq!(a.mtime(), 1_500_000_000);
    assert_eq!(fs::metadata(r.join("out/d")).unwrap().mtime(), 1_400_000_000, "directory mtime set after its content");
    let mut value = [0u8; 8];
    let n = rustix::fs::getxattr(r.join("out/d/a").as_path(), c"user.kiln", &mut value).unwrap();
    assert_eq!(&value[..n], b"v");
}

/// Builds `name` in `dir` from the files of `src` with `tar` and a compressor flag.
fn make_tar(src: &Path, dir: &Path, name: &str, flag: &str, package: &str) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(src).arg(format!("-c{flag}f")).arg(&out).arg(".");
    run(&mut cmd, package);
    out
}

#[test]
fn add_extracts_local_tars_by_content_and_copies_other_files() {
    let payload = tempfile::tempdir().unwrap();
    write(&payload.path().join("top.txt"), "top");
    write(&payload.path().join("nested/inner.txt"), "inner");
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // Names that do not say what they are: detection is by content.
    make_tar(payload.path(), c, "gz.bin", "z", "gzip");
    make_tar(payload.path(), c, "bz.bin", "j", "bzip2");
    make_tar(payload.path(), c, "xz.bin", "J", "xz-utils");
    make_tar(payload.path(), c, "plain.bin", "", "tar");
    let mut zst = Command::new("tar");
    zst.arg("-C").arg(payload.path()).arg("--zstd").arg("-cf").arg(c.join("zst.bin")).arg(".");
    run(&mut zst, "zstd");
    write(&c.join("notes.tar.gz"), "not an archive at all");
    let tree = context(c);
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    let add = |src: &str, dest: &str| Copy { attempt_unpack: true, ..copy(src, dest) };
    for kind in ["gz", "bz", "xz", "plain", "zst"] {
        apply(r, &tree, add(&format!("/{kind}.bin"), &format!("/x/{kind}"))).unwrap();
        assert_eq!(read(&r.join(format!("x/{kind}/top.txt"))), "top", "{kind}");
        assert_eq!(read(&r.join(format!("x/{kind}/nested/inner.txt"))), "inner", "{kind}");
    }
    apply(r, &tree, add("/notes.tar.gz", "/docs/")).unwrap();
    assert_eq!(read(&r.join("docs/notes.tar.gz")), "not an archive at all");
    // COPY never extracts.
    apply(r, &tree, copy("/gz.bin", "/copied")).unwrap();
    assert!(r.join("copied").is_file());
    // A hard-link entry's own header owner and mode end on the shared inode (BuildKit).
    let mut builder = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_path("owned.txt").unwrap();
    file.set_size(1);
    file.set_mode(0o640);
    file.set_uid(1234);
    file.set_gid(5678);
    file.set_cksum();
    builder.append(&file, &b"o"[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_path("hard").unwrap();
    link.set_link_name("owned.txt").unwrap();
    link.set_size(0);
    link.set_mode(0o644);
    link.set_cksum();
    builder.append(&link, &[][..]).unwrap();
    fs::write(c.join("links.tar"), builder.into_inner().unwrap()).unwrap();
    apply(r, &tree, add("/links.tar", "/links")).unwrap();
    assert_eq!((mode(&r.join("links/owned.txt")), owner(&r.join("links/owned.txt"))), (0o644, (0, 0)));
    assert_eq!(
        fs::metadata(r.join("links/hard")).unwrap().ino(),
        fs::metadata(r.join("links/owned.txt")).unwrap().ino()
    );
    // --chown overrides the archive's owners.
    let owned = Copy { chown: Some("5:6".into()), ..add("/gz.bin", "/owned") };
    apply(r, &tree, owned).unwrap();
    assert_eq!(owner(&r.join("owned/nested/inner.txt")), (5, 6));
}

#[test]
fn hostile_tar_entries_never_leave_the_extraction_directory() {
    let ctx = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let entry = |name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]| {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        (h, data.to_vec())
    };
    // A symlink to `/` inside the archive, then a file through it: lands in the extraction dir.
    for (h, data) in [
        entry(b"root", tar::EntryType::Symlink, b"/", b""),
        entry(b"root/via-link", tar::EntryType::Regular, b"", b"ok"),
    ] {
        builder.append(&h, &data[..]).unwrap();
    }
    fs::write(ctx.path().join("links.tar"), builder.into_inner().unwrap()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let (h, data) = entry(b"../../escape", tar::EntryType::Regular, b"", b"pwned");
    builder.append(&h, &data[..]).unwrap();
    fs::write(ctx.path().join("dotdot.tar"), builder.into_inner().unwrap()).unwrap();

    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path().join("root");
    fs::create_dir(&r).unwrap();
    let tree = context(ctx.path());
    let add = |src: &str, dest: &str| Copy { attempt_unpack: true, ..copy(src, dest) };
    apply(&r, &tree, add("/links.tar", "/dest/")).unwrap();
    assert_eq!(read(&r.join("dest/via-link")), "ok", "`/` is the extraction directory");
    let err = apply(&r, &tree, add("/dotdot.tar", "/dest/")).unwrap_err().to_string();
    assert!(err.contains("outside the extraction root") && err.contains("../../escape"), "{err}");
    assert!(!rootfs.path().join("escape").exists() && !r.join("escape").exists());
}

#[test]
fn workdir_and_inline_files() {
    let rootfs = rootfs_with_users();
    let r = rootfs.path();
    let mkdir = |path: &str, user: &str| FileAction::Mkdir {
        path: path.into(),
        mode: 0o755,
        make_parents: true,
        user: user.into(),
    };
    fileop::apply(r, &mkdir("/srv/app/data", "app"), None).unwrap();
    for p in ["srv", "srv/app", "srv/app/data"] {
        assert_eq!(owner(&r.join(p)), (1000, 1001), "{p}");
        assert_eq!(mode(&r.join(p)), 0o755);
    }
    // A USER the image does not list owns as root (BuildKit's readUser), not an error.
    fileop::apply(r, &mkdir("/ghost/home", "ghost"), None).unwrap();
    assert_eq!(owner(&r.join("ghost/home")), (0, 0));
    // Existing directories are left as they are.
    fileop::apply(r, &mkdir("/srv/app/data/more", ""), None).unwrap();
    assert_eq!(owner(&r.join("srv/app/data/more")), (0, 0));
    assert_eq!(owner(&r.join("srv")), (1000, 1001));
    write(&r.join("file"), "x");
    let err = fileop::apply(r, &mkdir("/file/sub", ""), None).unwrap_err().to_string();
    assert!(err.contains("/file") && err.contains("ot a directory"), "{err}");

    let mkfile =
        FileAction::Mkfile { path: "/srv/script.sh".into(), mode: 0o755, content: "#!/bin/sh\necho hi\n".into() };
    fileop::apply(r, &mkfile, None).unwrap();
    assert_eq!(read(&r.join("srv/script.sh")), "#!/bin/sh\necho hi\n");
    assert_eq!((mode(&r.join("srv/script.sh")), owner(&r.join("srv/script.sh"))), (0o755, (0, 0)));
    // A symlink at the path is replaced, not written through.
    symlink("/etc/passwd", r.join("srv/link")).unwrap();
    let over = FileAction::Mkfile { path: "/srv/link".into(), mode: 0o644, content: "new".into() };
    fileop::apply(r, &over, None).unwrap();
    assert!(fs::symlink_metadata(r.join("srv/link")).unwrap().is_file());
    assert!(read(&r.join("etc/passwd")).starts_with("root:"));
}

#[test]
fn parents_keeps_the_matched_paths_and_the_directories_leading_to_them() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("x/a/file.txt"), "a");
    write(&c.join("x/b/file.txt"), "b");
    write(&c.join("x/b/other.md"), "no");
    write(&c.join("x/c/nothing.md"), "no");
    write(&c.join("y/keep/deep/f"), "deep");
    fs::set_permissions(c.join("x/a"), fs::Permissions::from_mode(0o700)).unwrap();
    let tree = context(c);
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    // `COPY --parents x/*/file.txt y/keep /dest/` as the frontend lowers it.
    let parents = |src: &str, pattern: &str| Copy { include_patterns: vec![pattern.into()], ..copy(src, "/dest/") };
    apply(r, &tree, parents("/", "x/*/file.txt")).unwrap();
    apply(r, &tree, parents("/", "y/keep")).unwrap();
    assert_eq!(read(&r.join("dest/x/a/file.txt")), "a");
    assert_eq!(read(&r.join("dest/x/b/file.txt")), "b");
    assert_eq!(read(&r.join("dest/y/keep/deep/f")), "deep", "a matched directory brings everything below it");
    assert!(!r.join("dest/x/b/other.md").exists() && !r.join("dest/x/c").exists());
    assert_eq!(mode(&r.join("dest/x/a")), 0o700, "parents are copies of the source directories");
    // A pivot: `COPY --parents x/./a/file.txt /dest2/`.
    apply(r, &tree, Copy { dest: "/dest2/".into(), ..parents("/x", "a/file.txt") }).unwrap();
    assert_eq!(read(&r.join("dest2/a/file.txt")), "a");
    // A path without wildcards must exist.
    let err = apply(r, &tree, parents("/", "x/missing.txt")).unwrap_err().to_string();
    assert_eq!(err, r#""/x/missing.txt": not found"#);
    // The checksum covers only what is selected.
    let stats = stat_cache(r);
    let sel = parents("/", "x/*/file.txt");
    let before = fileop::checksum(&tree, &sel, &stats).unwrap();
    write(&c.join("x/b/other.md"), "changed");
    assert_eq!(fileop::checksum(&tree, &sel, &stats).unwrap(), before);
    write(&c.join("x/a/file.txt"), "changed");
    assert_ne!(fileop::checksum(&tree, &sel, &stats).unwrap(), before);
}

#[test]
fn exclude_patterns_apply_below_each_match() {
    // BuildKit's testExcludedFilesOnCopy layout and cases.
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    for (name, data) in [
        ("dir1/file-101.png", "2"),
        ("dir1/file-102.txt", "3"),
        ("dir1/file-103.jpeg", "4"),
        ("dir2/file-201.pdf", "6"),
        ("dir2/file-202.jpeg", "7"),
        ("dir2/file-203.png", "8"),
        ("dir3/file-301.mp3", "9"),
        ("dir3/file-302.mpeg", "10"),
    ] {
        write(&c.join(name), data);
    }
    let tree = context(c);
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    let excluding = |patterns: &[&str], src: &str, dest: &str| Copy {
        exclude: patterns.iter().map(|p| p.to_string()).collect(),
        ..copy(src, dest)
    };
    let stats = stat_cache(r);
    let images = excluding(&["*/*.png", "*/*.jpeg"], "/", "/1");
    let before = fileop::checksum(&tree, &images, &stats).unwrap();
    apply(r, &tree, images.clone()).unwrap();
    for (path, present) in
        [("1/dir1/file-101.png", false), ("1/dir1/file-102.txt", true), ("1/dir2/file-202.jpeg", false)]
    {
        assert_eq!(r.join(path).exists(), present, "{path}");
    }
    write(&c.join("dir1/file-101.png"), "changed but excluded");
    assert_eq!(fileop::checksum(&tree, &images, &stats).unwrap(), before);

    let only_mpeg = excluding(&["*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"], "/dir*", "/4/");
    apply(r, &tree, only_mpeg).unwrap();
    let names: Vec<_> = fs::read_dir(r.join("4")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["file-302.mpeg"]);
    apply(r, &tree, excluding(&["*"], "/dir*", "/6")).unwrap();
    assert_eq!(fs::read_dir(r.join("6")).unwrap().count(), 0, "everything excluded: an empty directory");
}

#[test]
fn wildcard_matches_that_are_symlinks_are_followed() {
    // BuildKit's testCopySymlinks.
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("bar"), "bar-contents");
    symlink("bar", c.join("foo")).unwrap();
    write(&c.join("sub/lfile"), "lfile-contents");
    symlink("subfile", c.join("sub/l0")).unwrap();
    write(&c.join("sub/subfile"), "subfile-contents");
    symlink("second", c.join("sub/l1")).unwrap();
    symlink("baz", c.join("sub/second")).unwrap();
    write(&c.join("sub/baz"), "baz-contents");
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    let tree = context(c);
    apply(r, &tree, copy("/foo", "/")).unwrap();
    apply(r, &tree, copy("/sub/l*", "/alllinks/")).unwrap();
    assert_eq!(read(&r.join("foo")), "bar-contents");
    assert!(fs::symlink_metadata(r.join("foo")).unwrap().is_file());
    assert_eq!(read(&r.join("alllinks/l0")), "subfile-contents");
    assert_eq!(read(&r.join("alllinks/lfile")), "lfile-contents");
    assert_eq!(read(&r.join("alllinks/l1")), "baz-contents");
}

#[test]
fn dockerignore_exceptions_inside_an_ignored_directory() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(&c.join("docs/keep.md"), "kept");
    write(&c.join("docs/drop.md"), "dropped");
    write(&c.join("docs/sub/drop.txt"), "dropped");
    write(&c.join("build/out"), "dropped");
    let ignore = DockerIgnore::parse("docs\n!docs/keep.md\nbuild\n", ".dockerignore").unwrap();
    let tree = SourceTree { root: c, ignore: Some(&ignore), reset_owner: true };
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    apply(r, &tree, copy("/", "/ctx/")).unwrap();
    assert_eq!(read(&r.join("ctx/docs/keep.md")), "kept");
    assert!(!r.join("ctx/docs/drop.md").exists() && !r.join("ctx/docs/sub").exists());
    assert!(!r.join("ctx/build").exists());
    apply(r, &tree, copy("/docs", "/d/")).unwrap();
    assert_eq!(fs::read_dir(r.join("d")).unwrap().count(), 1);
    let err = apply(r, &tree, copy("/build", "/b/")).unwrap_err().to_string();
    assert_eq!(err, r#""/build": not found"#);
}
