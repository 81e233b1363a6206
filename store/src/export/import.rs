//! `kiln import`: a root filesystem tarball becomes a one-layer image, as `docker import` does.

use std::io::{self, BufReader, Read};
use std::time::SystemTime;

use super::ExportError;
use crate::blobs::BlobStore;
use crate::image::{self, History, Image, ImageConfig, Layer, Platform, RootFs};
use crate::layer::encode::LayerWriter;
use crate::layer::{Compression, decompress};

/// How to make the imported image.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Compression of the layer blob.
    pub compression: Compression,
    /// The platform recorded in the config.
    pub platform: Platform,
    /// The config's `created` time.
    pub created: SystemTime,
    /// The history comment; docker writes `Imported from -` (or the file's URL).
    pub comment: String,
}

/// Imports a root filesystem tarball (plain, gzip or zstd) as a one-layer image and returns it
/// (stored, untagged). The input is checked to be a tar while it streams into the layer blob.
pub fn import_rootfs<R: Read>(blobs: &BlobStore, rootfs: R, opts: &ImportOptions) -> Result<Image, ExportError> {
    let mut input = decompress(BufReader::new(rootfs)).map_err(ExportError::Read)?;
    let mut layer = LayerWriter::new(blobs, opts.compression)?;
    {
        // Parse headers while the bytes flow into the layer, so a non-tar fails here, not at
        // the first unpack. The tail after the last entry (end blocks, padding) is kept too.
        let mut archive = tar::Archive::new(TeeReader { inner: &mut input, copy: &mut layer });
        for entry in archive.entries().map_err(ExportError::NotATar)? {
            entry.map_err(ExportError::NotATar)?;
        }
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ExportError::Read)?;
    }
    input.finish().map_err(ExportError::Read)?;
    let encoded = layer.finish()?;
    let created = humantime::format_rfc3339_seconds(opts.created).to_string();
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: opts.platform.architecture.clone(),
        os: opts.platform.os.clone(),
        variant: opts.platform.variant.clone(),
        rootfs: RootFs { diff_ids: vec![encoded.diff_id.clone()], ..RootFs::default() },
        history: vec![History { created: Some(created), comment: Some(opts.comment.clone()), ..History::default() }],
        ..ImageConfig::default()
    };
    let layer = Layer {
        digest: encoded.digest,
        size: encoded.size,
        media_type: encoded.media_type.to_owned(),
        diff_id: encoded.diff_id,
    };
    Ok(image::commit_image(blobs, &config, &[layer])?)
}

/// Copies everything read through it into `copy`.
struct TeeReader<'a, R, W> {
    inner: &'a mut R,
    copy: &'a mut W,
}

impl<R: Read, W: io::Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}
