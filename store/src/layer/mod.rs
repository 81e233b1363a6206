//! Layer tars: compression detection and media types (here), applying a layer onto a directory
//! ([`mod@apply`]), and encoding a directory diff into a compressed layer blob ([`encode`],
//! gzip on every core by `gzip`).
//!
//! Compression is detected from the stream's magic bytes, never from the media type alone:
//! Docker layers are often labelled `tar.gzip` while being plain tars (and the reverse), and the
//! bytes are what the diffID is computed over. The media type mapping lives here so that the
//! decoding and encoding sides name layers identically.

pub mod apply;
pub mod encode;
mod gzip;
mod pax;

use std::fmt;
use std::io::{self, BufRead, Chain, Cursor, Read};

pub use apply::{ApplyError, ApplyOptions, ApplyStats, WhiteoutMode, apply, apply_layer};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    Uncompressed,
    /// gzip (RFC 1952), possibly several concatenated members.
    Gzip,
    /// zstd (RFC 8878), possibly several frames.
    Zstd,
}

/// Which family of media types a manifest uses for its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaTypeFamily {
    /// `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]`.
    Oci,
    /// `application/vnd.docker.image.rootfs.diff.tar[.gzip|.zstd]` (Docker v2 schema 2).
    Docker,
}

/// OCI layer media types, by compression.
const OCI_LAYER: [(&str, Compression); 6] = [
    ("application/vnd.oci.image.layer.v1.tar", Compression::Uncompressed),
    ("application/vnd.oci.image.layer.v1.tar+gzip", Compression::Gzip),
    ("application/vnd.oci.image.layer.v1.tar+zstd", Compression::Zstd),
    // Deprecated non-distributable ("foreign") layers: still pulled, never produced.
    ("application/vnd.oci.image.layer.nondistributable.v1.tar", Compression::Uncompressed),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Compression::Gzip),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Compression::Zstd),
];

/// Docker layer media types, by compression. `.tar.zstd` is containerd's/BuildKit's name for
/// zstd layers in Docker manifests; `foreign` layers are Windows base layers.
const DOCKER_LAYER: [(&str, Compression); 5] = [
    ("application/vnd.docker.image.rootfs.diff.tar", Compression::Uncompressed),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression::Gzip),
    ("application/vnd.docker.image.rootfs.diff.tar.zstd", Compression::Zstd),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar", Compression::Uncompressed),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression::Gzip),
];

impl Compression {
    /// The compression a layer media type announces, or `None` if `media_type` is not a layer
    /// media type kiln knows. What the bytes really are is [`Compression::detect`]'s answer.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        OCI_LAYER.iter().chain(&DOCKER_LAYER).find(|(mt, _)| *mt == media_type).map(|(_, c)| *c)
    }

    /// The media type kiln writes for a layer of this compression in a manifest of `family`.
    pub fn media_type(self, family: MediaTypeFamily) -> &'static str {
        let table: &[(&'static str, Compression)] = match family {
            MediaTypeFamily::Oci => &OCI_LAYER,
            MediaTypeFamily::Docker => &DOCKER_LAYER,
        };
        // The first row of each table for a compression is the distributable type.
        table.iter().find(|(_, c)| *c == self).map(|(mt, _)| *mt).unwrap_or(table[0].0)
    }

    /// Detects the compression from the first bytes of a blob (4 are enough). Anything that
    /// is neither gzip nor zstd is taken to be a plain tar; the tar parser rejects it if not.
    pub fn detect(prefix: &[u8]) -> Compression {
        match prefix {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            // A zstd stream may start with a skippable frame (magic 0x184D2A5?).
            [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Compression::Zstd,
            _ => Compression::Uncompressed,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// The raw input with the magic bytes that were read for detection put back in front.
type Peeked<R> = Chain<Cursor<Vec<u8>>, R>;

/// A streaming decompressor over a layer blob whose compression was detected from its bytes.
pub struct Decompressor<R: BufRead> {
    compression: Compression,
    inner: Decoder<R>,
}

enum Decoder<R: BufRead> {
    Plain(Peeked<R>),
    // Boxed: the inflate state is large and the other variants are small.
    Gzip(Box<flate2::bufread::MultiGzDecoder<Peeked<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, Peeked<R>>),
}

/// Detects the compression of `blob` and returns a reader of its decompressed bytes.
pub fn decompress<R: BufRead>(mut blob: R) -> io::Result<Decompressor<R>> {
    let mut magic = Vec::with_capacity(4);
    blob.by_ref().take(4).read_to_end(&mut magic)?;
    let compression = Compression::detect(&magic);
    let peeked = Cursor::new(magic).chain(blob);
    let inner = match compression {
        Compression::Uncompressed => Decoder::Plain(peeked),
        Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(peeked))),
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(peeked)?),
    };
    Ok(Decompressor { compression, inner })
}

impl<R: BufRead> Decompressor<R> {
    /// The detected compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Reads the compressed input to its end, so a verifying reader underneath sees EOF and
    /// checks the blob digest. Call after the decompressed stream returned EOF; bytes left
    /// after the last gzip member or zstd frame are an error (`InvalidData`).
    pub fn finish(self) -> io::Result<()> {
        let mut raw = match self.inner {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        };
        let trailing = io::copy(&mut raw, &mut io::sink())?;
        if trailing > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{trailing} bytes of garbage after the end of the {} stream", self.compression),
            ));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types_round_trip() {
        for c in [Compression::Uncompressed, Compression::Gzip, Compression::Zstd] {
            for family in [MediaTypeFamily::Oci, MediaTypeFamily::Docker] {
                assert_eq!(Compression::from_media_type(c.media_type(family)), Some(c), "{c} {family:?}");
            }
        }
        assert_eq!(Compression::Zstd.media_type(MediaTypeFamily::Oci), "application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(
            Compression::Gzip.media_type(MediaTypeFamily::Docker),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("application/vnd.oci.image.config.v1+json"), None);
    }

    #[test]
    fn detects_by_magic_and_decompresses() {
        let data = b"not really a tar, but bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (blob, expected) in
            [(data.clone(), Compression::Uncompressed), (gz, Compression::Gzip), (zst, Compression::Zstd)]
        {
            // One byte at a time: detection must not rely on a full first read.
            let mut d = decompress(io::BufReader::with_capacity(1, &blob[..])).unwrap();
            assert_eq!(d.compression(), expected);
            let mut out = Vec::new();
            d.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
            d.finish().unwrap();
        }
        // Shorter than the magic: a (bad) plain tar, not a panic.
        let mut d = decompress(&b"\x1f"[..]).unwrap();
        assert_eq!(d.compression(), Compression::Uncompressed);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\x1f");
    }
}
