//! Content digests (`sha256:<64 hex>`) and the hashing adapters that compute them while data
//! streams through.
//!
//! kiln only produces sha256 digests; a digest of another algorithm coming from a registry or an
//! archive is rejected with [`DigestError::Unsupported`] rather than trusted unverified.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest. Always valid: 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a usable digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    Malformed(String),
    /// A well-formed digest of an algorithm kiln does not verify.
    #[error("unsupported digest algorithm in {0:?}: kiln verifies sha256 only")]
    Unsupported(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The 64 hex characters, without the `sha256:` prefix (the file name in `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Builds a digest from a bare hex string, validating it.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_owned() })
        } else {
            Err(DigestError::Malformed(format!("sha256:{hex}")))
        }
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        Digest { hex: hex::encode(hasher.finalize()) }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        match s.split_once(':') {
            Some(("sha256", hex)) => Digest::from_hex(hex).map_err(|_| DigestError::Malformed(s.to_owned())),
            Some((alg, enc)) if !alg.is_empty() && !enc.is_empty() => Err(DigestError::Unsupported(s.to_owned())),
            _ => Err(DigestError::Malformed(s.to_owned())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digests named by the entries of `dir` (`blobs/sha256/`, `snapshots/`), sorted. Entries
/// whose names are not 64 hex digits (temp and lock directories) are skipped.
pub fn list_named_by_digest(dir: &std::path::Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(d) = entry?.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

/// An incremental sha256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.sha)
    }
}

/// A writer that hashes everything written through it to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Hasher::new() }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The inner writer, mutably (bytes written to it directly are not hashed).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer and the digest (and length) of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it and, when it reaches end of file, checks
/// the result against an expected digest: a mismatch turns EOF into an `InvalidData` error, so
/// nobody consuming the stream can mistake corrupted content for complete content.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, expecting its content to hash to `expected` (and, if given, to be exactly
    /// `expected_size` bytes long).
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader { inner, hasher: Hasher::new(), expected, expected_size, verified: false }
    }

    /// Whether the whole stream was read and matched.
    pub fn is_verified(&self) -> bool {
        self.verified
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(size) = self.expected_size
            && self.hasher.len() > size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content of {} is longer than its declared size {size}", self.expected),
            ));
        }
        if n == 0 && !buf.is_empty() && !self.verified {
            let actual = self.hasher.clone().finish();
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("digest mismatch: expected {}, content hashes to {actual}", self.expected),
                ));
            }
            if let Some(size) = self.expected_size
                && self.hasher.len() != size
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("content of {} is {} bytes, declared size {size}", self.expected, self.hasher.len()),
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert!(matches!("sha512:abcd".parse::<Digest>(), Err(DigestError::Unsupported(_))));
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!("nocolon".parse::<Digest>().is_err());
    }

    #[test]
    fn verifying_reader_rejects_corruption() {
        let mut ok = VerifyingReader::new(&b"hello"[..], Digest::of(b"hello"), Some(5));
        io::copy(&mut ok, &mut io::sink()).unwrap();
        assert!(ok.is_verified());

        let mut bad = VerifyingReader::new(&b"hellx"[..], Digest::of(b"hello"), None);
        let err = io::copy(&mut bad, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");

        let mut long = VerifyingReader::new(&b"hello!"[..], Digest::of(b"hello"), Some(5));
        assert!(io::copy(&mut long, &mut io::sink()).is_err());
    }
}
