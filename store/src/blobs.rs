//! Content-addressed blobs at `blobs/sha256/<hex>`.
//!
//! A blob is streamed to a temp file in `blobs/tmp/` while it is hashed, fsynced, checked
//! against the digest the caller expects, and only then renamed into place (and the directory
//! fsynced), so a blob file that exists is always complete. A mismatch or a dropped writer
//! leaves nothing behind.
//!
//! Reads verify: [`BlobStore::open`] returns a [`VerifyingReader`] that fails at end of stream
//! if the bytes on disk no longer hash to the name, and [`BlobStore::read`] verifies small
//! blobs (manifests, configs) in full. Every consumer streams a blob to its end anyway
//! (unpacking, pushing, exporting), so verifying on every read costs one sha256 pass and
//! catches on-disk corruption wherever it happens, not only after a restart.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter, VerifyingReader};

/// Errors of the blob store. Each names the blob involved.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    /// Written or stored bytes do not hash to the expected digest.
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
    /// Written bytes do not have the expected size.
    #[error("blob {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    /// An I/O error on a blob file.
    #[error("blob store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_owned(), source }
}

/// The blob directory of a store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directories below `root`.
    pub fn create(root: &Path) -> Result<BlobStore, BlobError> {
        let dir = root.join("blobs/sha256");
        let tmp = root.join("blobs/tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(BlobStore { dir, tmp })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound(digest.clone())),
            Err(e) => Err(BlobError::Io { path, source: e }),
        }
    }

    /// Starts writing a new blob. Nothing is visible until [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let file = tempfile::Builder::new().prefix("ingest-").tempfile_in(&self.tmp).map_err(io_err(&self.tmp))?;
        Ok(BlobWriter { inner: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file)), store: self.clone() })
    }

    /// Stores a small in-memory blob (a manifest or config) and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, BlobError> {
        let mut w = self.writer()?;
        w.write_all(data).map_err(io_err(&self.tmp))?;
        w.commit(None)
    }

    /// Opens a blob for streaming; the reader fails at end of stream if the content does not
    /// hash to `digest`.
    pub fn open(&self, digest: &Digest) -> Result<VerifyingReader<BufReader<File>>, BlobError> {
        let path = self.path(digest);
        match File::open(&path) {
            Ok(f) => Ok(VerifyingReader::new(BufReader::with_capacity(1 << 20, f), digest.clone(), None)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound(digest.clone())),
            Err(e) => Err(BlobError::Io { path, source: e }),
        }
    }

    /// Reads a whole small blob (manifest, config, index) into memory, verified.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound(digest.clone())),
            Err(e) => return Err(BlobError::Io { path, source: e }),
        };
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(BlobError::Mismatch { expected: digest.clone(), actual });
        }
        Ok(data)
    }

    /// Deletes a blob; a missing blob is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io { path, source: e }),
        }
    }

    /// Every blob present. File names that are not digests (never written by kiln) are skipped.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        crate::digest::list_named_by_digest(&self.dir).map_err(io_err(&self.dir))
    }

    /// The temp directory of interrupted ingests (cleaned by GC).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }
}

/// A blob being written: hashes as it goes; [`commit`](BlobWriter::commit) makes it durable
/// and visible, dropping it without commit deletes the temp file.
pub struct BlobWriter {
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
    store: BlobStore,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Finishes the blob: checks it against `expected` (if given), fsyncs, renames it into
    /// place and returns its digest. On a mismatch the temp file is removed and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Digest, BlobError> {
        self.commit_sized(expected, None)
    }

    /// Like [`commit`](BlobWriter::commit), also checking the size.
    pub fn commit_sized(self, expected: Option<&Digest>, expected_size: Option<u64>) -> Result<Digest, BlobError> {
        let tmp_dir = self.store.tmp.clone();
        let (buf, digest, len) = self.inner.finish();
        if let Some(exp) = expected
            && exp != &digest
        {
            return Err(BlobError::Mismatch { expected: exp.clone(), actual: digest });
        }
        if let Some(size) = expected_size
            && size != len
        {
            return Err(BlobError::SizeMismatch { digest, expected: size, actual: len });
        }
        let file = buf.into_inner().map_err(|e| BlobError::Io { path: tmp_dir.clone(), source: e.into_error() })?;
        let dest = self.store.path(&digest);
        // Same digest, same bytes, and the stored copy was synced when it was committed: the
        // temp file is dropped without two fsyncs (empty layers and re-made configs are common).
        if dest.exists() {
            return Ok(digest);
        }
        file.as_file().sync_all().map_err(io_err(file.path()))?;
        file.persist(&dest).map_err(|e| BlobError::Io { path: dest.clone(), source: e.error })?;
        File::open(&self.store.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.store.dir))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_read() {
        let root = tempfile::tempdir().unwrap();
        let blobs = BlobStore::create(root.path()).unwrap();
        let d = blobs.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(blobs.read(&d).unwrap(), b"hello");
        assert_eq!(blobs.list().unwrap(), vec![d.clone()]);

        // A mismatch stores nothing, not even a temp file.
        let mut w = blobs.writer().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit(Some(&d)).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert_eq!(blobs.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(blobs.tmp_dir()).unwrap().count(), 0);

        // Corruption on disk is caught on read.
        fs::write(blobs.path(&d), b"hellx").unwrap();
        assert!(matches!(blobs.read(&d), Err(BlobError::Mismatch { .. })));
        let mut r = blobs.open(&d).unwrap();
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
    }
}
