//! Helpers shared by the diff and snapshot tests: building trees with every kind of entry,
//! describing trees exactly, making layers, reading layers back, and reading mountinfo.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_runner::diff::{DiffOptions, diff_upperdir};
use kiln_store::blobs::BlobStore;
use kiln_store::digest::Digest;
use kiln_store::image::Layer;
use kiln_store::layer::{Compression, decompress};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

/// Fails loudly when the tests cannot do what they need.
pub fn require_root() {
    assert!(rustix::process::geteuid().is_root(), "these tests need root (mknod, chown, trusted xattrs, mount)");
}

pub fn set_times(path: &Path, secs: i64, nanos: i64) {
    let t = Timespec { tv_sec: secs, tv_nsec: nanos as _ };
    rustix::fs::utimensat(CWD, path, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn setxattr(path: &Path, key: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, key, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {key} on {}: {e}", path.display()));
}

pub fn mknod(path: &Path, kind: FileType, perm: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(CWD, path, kind, Mode::from_raw_mode(perm), rustix::fs::makedev(major, minor))
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
    // mknod's mode is masked by the umask.
    if kind != FileType::Symlink {
        chmod(path, perm);
    }
}

/// An overlay whiteout, as the kernel makes it: a 0/0 character device with mode 0.
pub fn whiteout(path: &Path) {
    mknod(path, FileType::CharacterDevice, 0, 0, 0);
}

pub fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

/// Everything about one entry that a layer must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: (u32, u32),
    /// None for whiteout devices, whose times no applier sets.
    pub mtime: Option<(i64, i64)>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// File content or symlink target.
    pub data: Vec<u8>,
    /// Names sharing this inode (hardlinks), sorted; empty when nlink is 1.
    pub links: Vec<String>,
}

/// Every entry below `root` (not the root itself) by path.
pub fn describe(root: &Path) -> BTreeMap<String, Desc> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    for names in inodes.values().filter(|n| n.len() > 1) {
        for n in names {
            out.get_mut(n).unwrap().links = names.clone();
        }
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Desc>, inodes: &mut BTreeMap<u64, Vec<String>>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(&path).unwrap();
        let st = rustix::fs::lstat(&path).unwrap();
        let ft = FileType::from_raw_mode(st.st_mode);
        let is_whiteout = ft == FileType::CharacterDevice && st.st_rdev == 0;
        let kind = match ft {
            FileType::RegularFile => "file",
            FileType::Directory => "dir",
            FileType::Symlink => "symlink",
            FileType::CharacterDevice if is_whiteout => "whiteout",
            FileType::CharacterDevice => "char",
            FileType::BlockDevice => "block",
            FileType::Fifo => "fifo",
            _ => "other",
        };
        let data = match ft {
            FileType::RegularFile => fs::read(&path).unwrap(),
            FileType::Symlink => fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec(),
            _ => Vec::new(),
        };
        if ft != FileType::Directory && md.nlink() > 1 && !is_whiteout {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Desc {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                rdev: (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)),
                mtime: (!is_whiteout).then(|| (md.mtime(), md.mtime_nsec())),
                xattrs: xattrs(&path),
                data,
                links: Vec::new(),
            },
        );
        if ft == FileType::Directory {
            walk(root, &path, out, inodes);
        }
    }
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    let mut out = Vec::new();
    for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let ckey = CString::new(key).unwrap();
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(path, ckey.as_c_str(), &mut value[..]).unwrap();
        out.push((String::from_utf8_lossy(key).into_owned(), value[..len].to_vec()));
    }
    out.sort();
    out
}

/// A layer holding `dir` as it is (every entry written), stored in `blobs`.
pub fn layer_of(blobs: &BlobStore, dir: &Path) -> Layer {
    let diff = diff_upperdir(blobs, dir, None, &DiffOptions::default()).unwrap();
    Layer {
        digest: diff.layer.digest,
        size: diff.layer.size,
        media_type: diff.layer.media_type.to_owned(),
        diff_id: diff.layer.diff_id,
    }
}

/// One tar entry as read back with tar-rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
    pub pax: Vec<(String, Vec<u8>)>,
}

/// The entries of a stored layer blob, in order, and its uncompressed bytes.
pub fn read_layer(blobs: &BlobStore, digest: &Digest) -> (Vec<TarEntry>, Vec<u8>) {
    let mut raw = Vec::new();
    decompress(BufReader::new(blobs.open(digest).unwrap())).unwrap().read_to_end(&mut raw).unwrap();
    let mut archive = tar::Archive::new(&raw[..]);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let pax = entry
            .pax_extensions()
            .unwrap()
            .map(|records| {
                records
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key().unwrap().to_owned(), r.value_bytes().to_vec())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let h = entry.header();
        out.push(TarEntry {
            path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            mtime: h.mtime().unwrap(),
            link: entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()),
            data,
            pax,
        });
    }
    (out, raw)
}

/// The mountinfo lines whose mount point is `dir` or below it.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp == dir || mp.starts_with(&format!("{dir}/"))))
        .map(str::to_owned)
        .collect()
}

/// DiffOptions with a compression.
pub fn options(compression: Compression) -> DiffOptions {
    DiffOptions { compression, ..DiffOptions::default() }
}

/// Sets every entry below `root` (whiteouts aside) to `secs` whole seconds, as a tar-extracted
/// tree has; children first, since making them changed their parents' times.
pub fn set_all_times(root: &Path, secs: i64) {
    let mut all: Vec<(String, Desc)> = describe(root).into_iter().collect();
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.matches('/').count()));
    for (rel, desc) in all {
        if desc.kind != "whiteout" {
            set_times(&root.join(rel), secs, 0);
        }
    }
}

/// A layer made of the files `(path, content)` plus whiteouts, all at `secs`.
pub fn make_layer(blobs: &BlobStore, dir: &Path, files: &[(&str, &[u8])], whiteouts: &[&str], secs: i64) -> Layer {
    fs::create_dir_all(dir).unwrap();
    for (path, content) in files {
        write(&dir.join(path), content);
    }
    for path in whiteouts {
        fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        whiteout(&dir.join(path));
    }
    set_all_times(dir, secs);
    layer_of(blobs, dir)
}
