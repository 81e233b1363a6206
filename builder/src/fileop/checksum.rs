//! The content checksum of what a COPY selects, for its cache key.
//!
//! sha256 over a canonical listing: per match its name in the destination and whether it is a
//! directory, then per entry (parents before children, by name) its relative name, type,
//! permission bits (incl. setuid/setgid/sticky), uid/gid (0 for the build context), size and
//! content sha256 (regular files), link target, device number, and the xattrs that are copied.
//! Never times, and never a directory's size (it depends on the filesystem).

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use kiln_frontend::graph::Copy;
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::select::{self, Entry, Match};
use super::{FileOpError, SourceTree, StatCache};

/// The content checksum (`sha256:<hex>`) of exactly the files `copy` selects from `tree`:
/// relative names, type, mode, uid/gid (after reset_owner), size, link target, xattrs, file
/// data; never mtime/ctime. Used in the COPY's cache key. Errors like BuildKit's when a
/// non-wildcard source does not exist (`failed to compute cache key: "/nope": not found`).
pub fn checksum(tree: &SourceTree<'_>, copy: &Copy, stats: &StatCache) -> Result<String, FileOpError> {
    compute(tree, copy, stats).map_err(|e| FileOpError::CacheKey(Box::new(e)))
}

fn compute(tree: &SourceTree<'_>, copy: &Copy, stats: &StatCache) -> Result<String, FileOpError> {
    let (root, matches) = select::select(tree, copy)?;
    let files: Vec<(&Match, &Entry)> =
        matches.iter().flat_map(|m| m.entries.iter().map(move |e| (m, e))).filter(|(_, e)| e.meta.is_file()).collect();
    let hashes: Vec<[u8; 32]> = files
        .par_iter()
        .map(|(m, e)| {
            let path = m.tree_path(e);
            stats
                .content_hash(&e.meta, || root.open_file(&path))
                .map_err(FileOpError::io("read", root.host.join(&path)))
        })
        .collect::<Result<_, _>>()?;
    let mut hashes = hashes.into_iter();
    let mut hasher = Sha256::new();
    for m in &matches {
        hasher.update(format!("match\0{}\0{}\n", m.base_name(), m.entries[0].meta.is_dir()).as_bytes());
        for e in &m.entries {
            let meta = &e.meta;
            let ft = meta.file_type();
            let kind = match () {
                _ if ft.is_dir() => 'd',
                _ if ft.is_file() => 'f',
                _ if ft.is_symlink() => 'l',
                _ if ft.is_char_device() => 'c',
                _ if ft.is_block_device() => 'b',
                _ if ft.is_fifo() => 'p',
                _ => 's',
            };
            let (uid, gid) = if tree.reset_owner { (0, 0) } else { (meta.uid(), meta.gid()) };
            hasher.update(e.rel.as_os_str().as_bytes());
            let mut line = format!("\0{kind}\0{:o}\0{uid}\0{gid}\0", meta.mode() & 0o7777);
            let host = root.host.join(m.tree_path(e));
            if ft.is_file() {
                let hash = hashes.next().unwrap_or_default();
                let _ = write!(line, "{}\0{}", meta.size(), hex::encode(hash));
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host).map_err(FileOpError::io("read link", &host))?;
                hasher.update(line.as_bytes());
                hasher.update(target.as_os_str().as_bytes());
                line = String::new();
            } else if ft.is_char_device() || ft.is_block_device() {
                let _ = write!(line, "{}", meta.rdev());
            }
            hasher.update(line.as_bytes());
            for (name, value) in select::copied_xattrs(&host)? {
                hasher.update(b"\0x:");
                hasher.update(name.as_bytes());
                hasher.update(b"=");
                hasher.update(hex::encode(value).as_bytes());
            }
            hasher.update(b"\n");
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
