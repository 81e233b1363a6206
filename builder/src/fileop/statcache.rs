//! The persistent stat cache: content hashes of files keyed by (dev, inode, size, mtime ns,
//! ctime ns), so an unchanged 20k-file context is hashed without reading it.
//!
//! File format (little endian): the magic `KILNSTAT1\n`, a u64 count, then per entry the five
//! key fields as u64 and the 32-byte sha256 of the content. 72 bytes an entry: 20k entries load
//! in a few milliseconds. Saved atomically (temp file + rename) and only when changed. One entry
//! per (dev, inode): a changed file's new hash replaces the old one, so the cache does not grow
//! with edits (entries of deleted files stay until the cache file is removed).
//!
//! Racy entries: a file changed within the timestamp granularity of the moment it was hashed
//! could keep its key while its content changes (git's "racy clean" problem). A hash is not
//! remembered when the file's ctime is less than [`RACY_NS`] before the moment it was read.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::FileOpError;

const MAGIC: &[u8] = b"KILNSTAT1\n";
/// How recent (ns) a file's ctime may be for its hash to be remembered.
const RACY_NS: i128 = 1_000_000_000;

/// (dev, inode).
type Inode = (u64, u64);
/// (size, mtime ns, ctime ns) and the content sha256 last seen for an inode.
type Seen = ([u64; 3], [u8; 32]);

/// Persistent cache of file content hashes keyed by (dev, inode, size, mtime ns, ctime ns)
/// so an unchanged 20k-file context is not re-read. Thread-safe (used from rayon).
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<HashMap<Inode, Seen>>,
    dirty: AtomicBool,
    reads: AtomicU64,
}

impl StatCache {
    /// Loads the cache at `path`; a missing file is an empty cache, a corrupt one too (logged).
    pub fn load(path: PathBuf) -> StatCache {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "stat cache is corrupt; starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read stat cache; starting empty");
                HashMap::new()
            }
        };
        StatCache { path, entries: Mutex::new(entries), dirty: AtomicBool::new(false), reads: AtomicU64::new(0) }
    }

    /// Writes the cache atomically (temp file + rename) if it changed since it was loaded.
    pub fn save(&self) -> Result<(), FileOpError> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut bytes = Vec::from(MAGIC);
        {
            let entries = self.lock();
            bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
            for ((dev, ino), (rest, hash)) in entries.iter() {
                for field in [dev, ino].into_iter().chain(rest) {
                    bytes.extend_from_slice(&field.to_le_bytes());
                }
                bytes.extend_from_slice(hash);
            }
        }
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(FileOpError::io("create directory", dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(FileOpError::io("create temp file in", dir))?;
        tmp.write_all(&bytes).map_err(FileOpError::io("write", tmp.path()))?;
        tmp.persist(&self.path).map_err(|e| FileOpError::io("rename into", &self.path)(e.error))?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// How many files' contents were read through this cache (misses), since it was loaded.
    pub fn files_read(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many hashes the cache holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds no hash.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Inode, Seen>> {
        // A panic while holding the lock leaves a consistent map (inserts are atomic).
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sha256 of a regular file's content: from the cache when `meta` matches, otherwise
    /// by reading the file `open` returns (and remembering it unless racy).
    pub(crate) fn content_hash(
        &self,
        meta: &Metadata,
        open: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<[u8; 32]> {
        let ns = |s: i64, n: i64| (s as i128 * 1_000_000_000 + n as i128) as u64;
        let inode = (meta.dev(), meta.ino());
        let stat = [meta.size(), ns(meta.mtime(), meta.mtime_nsec()), ns(meta.ctime(), meta.ctime_nsec())];
        if let Some((seen, hash)) = self.lock().get(&inode)
            && *seen == stat
        {
            return Ok(*hash);
        }
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        let mut file = open()?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 16];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let hash: [u8; 32] = hasher.finalize().into();
        let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
        if started - ctime >= RACY_NS {
            self.lock().insert(inode, (stat, hash));
            self.dirty.store(true, Ordering::Release);
        }
        Ok(hash)
    }
}

fn parse(bytes: &[u8]) -> Option<HashMap<Inode, Seen>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (count, rest) = rest.split_at_checked(8)?;
    let count = u64::from_le_bytes(count.try_into().ok()?) as usize;
    if rest.len() != count.checked_mul(72)? {
        return None;
    }
    let mut map = HashMap::with_capacity(count);
    for record in rest.chunks_exact(72) {
        let mut key = [0u64; 5];
        for (i, field) in key.iter_mut().enumerate() {
            *field = u64::from_le_bytes(record[i * 8..i * 8 + 8].try_into().ok()?);
        }
        map.insert((key[0], key[1]), ([key[2], key[3], key[4]], record[40..72].try_into().ok()?));
    }
    Some(map)
}
