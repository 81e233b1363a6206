//! A minimal, deterministic tar writer for layer diffs.
//!
//! tar-rs builds the 512-byte ustar headers; everything else is ours, because its `Builder`
//! reads metadata itself, drops hardlinks and xattrs and cannot write PAX records. What a field
//! of the ustar header cannot hold exactly goes into a PAX extended header (`x`) in front of the
//! entry, records sorted by key (as Go's archive/tar writes them):
//!
//! - `path` / `linkpath`: names longer than 100 bytes or not ASCII;
//! - `mtime`: sub-second or out-of-range times (`sec.nanos`, trailing zeros trimmed);
//! - `uid` / `gid` / `size`: values beyond the octal fields;
//! - `SCHILY.xattr.<name>`: every xattr, in name order.
//!
//! User and group names are left empty and atime/ctime are never written, as in BuildKit's
//! layers, so the bytes depend on the tree only.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid, mode).
const OCTAL8_MAX: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime).
const OCTAL12_MAX: u64 = 0o77777777777;
/// The name of PAX extended headers (their name is not used by readers).
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// What an entry is, with what its header needs beyond the common metadata.
pub(crate) enum Kind<'a> {
    Regular {
        size: u64,
    },
    Dir,
    Symlink {
        target: &'a [u8],
    },
    /// A hardlink to an earlier entry of the same archive.
    Link {
        target: &'a [u8],
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One entry's header fields.
pub(crate) struct Entry<'a> {
    /// The path relative to the layer root, without a trailing slash.
    pub name: &'a [u8],
    pub kind: Kind<'a>,
    /// Permission bits incl. setuid, setgid, sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// xattrs sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Failure copying an entry's content: from the file or into the archive.
pub(crate) enum ContentError {
    Read(io::Error),
    Write(io::Error),
}

/// Writes entries into `W`; [`TarWriter::finish`] adds the end-of-archive blocks.
pub(crate) struct TarWriter<W: Write> {
    out: io::BufWriter<W>,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out: io::BufWriter::with_capacity(1 << 17, out), buf: vec![0; 1 << 17] }
    }

    /// Writes an entry's header (and PAX header if needed). A regular file's content must
    /// follow through [`TarWriter::content`].
    pub fn header(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        let mut name = e.name.to_vec();
        if matches!(e.kind, Kind::Dir) {
            name.push(b'/');
        }
        if !fits_field(&name, 100) {
            pax.push((b"path".to_vec(), name.clone()));
        }
        set_field(&mut h.as_old_mut().name, &name);
        h.set_mode(e.mode & 0o7777);
        let old = h.as_old_mut();
        for (key, value, field) in [("uid", e.uid, &mut old.uid), ("gid", e.gid, &mut old.gid)] {
            if u64::from(value) <= OCTAL8_MAX {
                set_octal(field, u64::from(value));
            } else {
                pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
                set_octal(field, 0);
            }
        }
        let (secs, nanos) = e.mtime;
        match u64::try_from(secs) {
            Ok(s) if s <= OCTAL12_MAX => h.set_mtime(s),
            _ => h.set_mtime(0),
        }
        if nanos != 0 || u64::try_from(secs).map_or(true, |s| s > OCTAL12_MAX) {
            pax.push((b"mtime".to_vec(), pax_time(secs, nanos).into_bytes()));
        }
        let size = match e.kind {
            Kind::Regular { size } => size,
            _ => 0,
        };
        if size <= OCTAL12_MAX {
            h.set_size(size);
        } else {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
            h.set_size(0);
        }
        let (entry_type, link) = match e.kind {
            Kind::Regular { .. } => (EntryType::Regular, None),
            Kind::Dir => (EntryType::Directory, None),
            Kind::Symlink { target } => (EntryType::Symlink, Some(target)),
            Kind::Link { target } => (EntryType::Link, Some(target)),
            Kind::Char { .. } => (EntryType::Char, None),
            Kind::Block { .. } => (EntryType::Block, None),
            Kind::Fifo => (EntryType::Fifo, None),
        };
        h.set_entry_type(entry_type);
        if let Some(target) = link {
            if !fits_field(target, 100) {
                pax.push((b"linkpath".to_vec(), target.to_vec()));
            }
            set_field(&mut h.as_old_mut().linkname, target);
        }
        if let Kind::Char { major, minor } | Kind::Block { major, minor } = e.kind {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        for (key, value) in e.xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(key);
            pax.push((k, value.clone()));
        }
        if !pax.is_empty() {
            self.pax(pax)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    fn pax(&mut self, mut records: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<()> {
        records.sort();
        let mut body = Vec::new();
        for (key, value) in &records {
            // "<len> <key>=<value>\n", where <len> counts its own digits.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(key);
            body.push(b'=');
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        let mut h = Header::new_ustar();
        set_field(&mut h.as_old_mut().name, PAX_NAME);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(body.len() as u64);
        h.set_entry_type(EntryType::XHeader);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&body)?;
        self.pad(body.len() as u64)
    }

    /// Copies exactly `size` bytes of content from `src` and pads the block. A source that
    /// ends early is an error (`UnexpectedEof`): the header already promised `size` bytes.
    pub fn content(&mut self, src: &mut impl Read, size: u64) -> Result<(), ContentError> {
        let mut left = size;
        while left > 0 {
            let want = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match src.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(ContentError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while being archived: {} of {size} bytes read", size - left),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContentError::Read(e)),
            };
            self.out.write_all(&self.buf[..n]).map_err(ContentError::Write)?;
            left -= n as u64;
        }
        self.pad(size).map_err(ContentError::Write)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Whether `value` can be stored in a ustar field of `len` bytes as is: short enough, and ASCII
/// (PAX records are the portable way to carry UTF-8 or other bytes).
fn fits_field(value: &[u8], len: usize) -> bool {
    value.len() <= len && value.is_ascii()
}

/// Copies as much of `value` as fits into a NUL-padded field.
fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Writes `value` as zero-padded octal, NUL-terminated, as ustar numeric fields are.
fn set_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    field[width] = 0;
}

/// A PAX time: `sec[.frac]`, the fraction's trailing zeros trimmed; negative times count down
/// from zero (`-1.5` is 1.5 s before the epoch), as Go and GNU tar write them.
fn pax_time(secs: i64, nanos: u32) -> String {
    let (sign, whole, frac) = if secs < 0 && nanos > 0 {
        ("-", -(secs + 1), 1_000_000_000 - nanos)
    } else if secs < 0 {
        ("-", -secs, 0)
    } else {
        ("", secs, nanos)
    };
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_match_go() {
        assert_eq!(pax_time(1_700_000_000, 0), "1700000000");
        assert_eq!(pax_time(1_700_000_000, 500_000_000), "1700000000.5");
        assert_eq!(pax_time(1, 123_456_789), "1.123456789");
        assert_eq!(pax_time(-2, 500_000_000), "-1.5");
        assert_eq!(pax_time(-3, 0), "-3");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut w = TarWriter::new(Vec::new());
        // 9 bytes plus a 2-digit length make 11; 98 bytes plus 2 digits would be 100, which has 3.
        w.pax(vec![(b"ab".to_vec(), b"cdef".to_vec())]).unwrap();
        let out = w.out.into_inner().unwrap();
        assert_eq!(&out[BLOCK..BLOCK + 11], b"11 ab=cdef\n");
        let mut w = TarWriter::new(Vec::new());
        w.pax(vec![(b"k".to_vec(), vec![b'v'; 94])]).unwrap();
        let out = w.out.into_inner().unwrap();
        assert!(out[BLOCK..].starts_with(b"101 k="), "{:?}", String::from_utf8_lossy(&out[BLOCK..BLOCK + 8]));
    }
}
