//! Turning an uncompressed layer tar stream into a stored, compressed layer blob in one pass.
//!
//! [`LayerWriter`] is a `Write` sink: the bytes of the uncompressed tar go in, the diffID
//! (sha256 of those bytes) is computed as they pass, the compressor's output streams into a
//! [`BlobWriter`], which hashes it into the blob digest and commits it atomically. Nothing is
//! held in memory beyond the compressor's window.

use std::io::{self, Write};

use super::gzip::ParallelGzip;
use super::{Compression, MediaTypeFamily};
use crate::blobs::{BlobError, BlobStore, BlobWriter};
use crate::digest::{Digest, Hasher};

/// A layer blob as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedLayer {
    /// The blob's digest (of the compressed bytes).
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The uncompressed tar's size.
    pub uncompressed_size: u64,
    /// The OCI layer media type for the compression used.
    pub media_type: &'static str,
}

/// Errors encoding a layer.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The compressor failed to write or finish.
    #[error("compressing layer ({compression:?}): {source}")]
    Compress { compression: Compression, source: io::Error },
    /// Storing the blob failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Reading the layer being re-encoded failed (or its bytes do not match its digest).
    #[error("reading layer {digest}: {source}")]
    Read { digest: Digest, source: io::Error },
}

enum Encoder {
    Plain(BlobWriter),
    Gzip(ParallelGzip<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
}

/// Streams an uncompressed tar into a compressed layer blob; see the module docs.
pub struct LayerWriter {
    diff: Hasher,
    encoder: Encoder,
    compression: Compression,
}

/// gzip level: BuildKit and Docker use Go's default (6); the same keeps layers comparable.
const GZIP_LEVEL: u32 = 6;
/// zstd level: BuildKit's default for `compression=zstd` maps to zstd's level 3.
const ZSTD_LEVEL: i32 = 3;

impl LayerWriter {
    /// Starts a layer blob in `blobs` with the given compression.
    pub fn new(blobs: &BlobStore, compression: Compression) -> Result<LayerWriter, EncodeError> {
        let blob = blobs.writer()?;
        let compress_err = |source| EncodeError::Compress { compression, source };
        // Both compressors use every core: compression is most of a big layer's cost.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let encoder = match compression {
            Compression::Uncompressed => Encoder::Plain(blob),
            Compression::Gzip => Encoder::Gzip(ParallelGzip::new(blob, GZIP_LEVEL, threads).map_err(compress_err)?),
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(blob, ZSTD_LEVEL).map_err(compress_err)?;
                z.multithread(threads as u32).map_err(compress_err)?;
                Encoder::Zstd(z)
            }
        };
        Ok(LayerWriter { diff: Hasher::new(), encoder, compression })
    }

    /// Finishes compression and commits the blob.
    pub fn finish(self) -> Result<EncodedLayer, EncodeError> {
        let compression = self.compression;
        let compress_err = |source| EncodeError::Compress { compression, source };
        let blob = match self.encoder {
            Encoder::Plain(b) => b,
            Encoder::Gzip(g) => g.finish().map_err(compress_err)?,
            Encoder::Zstd(z) => z.finish().map_err(compress_err)?,
        };
        let size = blob.len();
        let uncompressed_size = self.diff.len();
        let diff_id = self.diff.finish();
        let digest = blob.commit(None)?;
        Ok(EncodedLayer {
            digest,
            size,
            diff_id,
            uncompressed_size,
            media_type: compression.media_type(MediaTypeFamily::Oci),
        })
    }
}

/// Stores the layer blob `digest` again with `compression`, in one streaming pass: the same
/// tar (so the same diffID), a new blob. How a cached layer made with another `--compression`
/// is given the one a build asks for.
pub fn recompress(blobs: &BlobStore, digest: &Digest, compression: Compression) -> Result<EncodedLayer, EncodeError> {
    let read_err = |source| EncodeError::Read { digest: digest.clone(), source };
    let blob = blobs.open(digest)?;
    let mut tar = super::decompress(io::BufReader::new(blob)).map_err(read_err)?;
    let mut out = LayerWriter::new(blobs, compression)?;
    io::copy(&mut tar, &mut out).map_err(read_err)?;
    // Reads the blob to its end, so its digest is checked before the copy is committed.
    tar.finish().map_err(read_err)?;
    out.finish()
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Plain(w) => w.write(buf)?,
            Encoder::Gzip(w) => w.write(buf)?,
            Encoder::Zstd(w) => w.write(buf)?,
        };
        self.diff.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn every_compression_round_trips_with_matching_digests() {
        let root = tempfile::tempdir().unwrap();
        let blobs = BlobStore::create(root.path()).unwrap();
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for compression in [Compression::Uncompressed, Compression::Gzip, Compression::Zstd] {
            let mut w = LayerWriter::new(&blobs, compression).unwrap();
            w.write_all(&data).unwrap();
            let layer = w.finish().unwrap();
            assert_eq!(layer.diff_id, Digest::of(&data));
            assert_eq!(layer.uncompressed_size, data.len() as u64);
            assert_eq!(layer.size, blobs.size(&layer.digest).unwrap());
            let mut back = Vec::new();
            let blob = std::io::BufReader::new(blobs.open(&layer.digest).unwrap());
            super::super::decompress(blob).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{compression:?}");
        }
    }

    #[test]
    fn recompress_keeps_the_tar_and_changes_the_blob() {
        let root = tempfile::tempdir().unwrap();
        let blobs = BlobStore::create(root.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        let mut w = LayerWriter::new(&blobs, Compression::Gzip).unwrap();
        w.write_all(&data).unwrap();
        let gzip = w.finish().unwrap();
        let zstd = recompress(&blobs, &gzip.digest, Compression::Zstd).unwrap();
        assert_eq!(zstd.diff_id, gzip.diff_id);
        assert_ne!(zstd.digest, gzip.digest);
        assert_eq!(zstd.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
        let mut head = [0u8; 4];
        std::fs::File::open(blobs.path(&zstd.digest)).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(Compression::detect(&head), Compression::Zstd);
        // A blob whose bytes no longer match its digest is not re-stored.
        std::fs::write(blobs.path(&gzip.digest), b"not the layer").unwrap();
        assert!(matches!(recompress(&blobs, &gzip.digest, Compression::Zstd), Err(EncodeError::Read { .. })));
    }
}
