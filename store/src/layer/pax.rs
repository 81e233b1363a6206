//! Reading a layer tar entry by entry, with its extended headers resolved here rather than by
//! tar-rs: PAX records (`x`), GNU long names and link names (`L`/`K`) and GNU sparse maps (`S`).
//! tar-rs still parses the fields of each 512-byte header.
//!
//! tar-rs 0.4 splits PAX data on `\n`, but a PAX record is length-prefixed (`"%d %s=%s\n"`, the
//! length counting the whole record) and its value may hold any byte: binary xattrs such as
//! `SCHILY.xattr.security.capability` often contain newlines, and Go's archive/tar (BuildKit,
//! containerd, kiln's own writer) writes them raw. Split on newlines, such a value is corrupted
//! or rejected, the `size`, `uid`, `path`... records after it are lost (Go sorts records by key,
//! and uppercase `SCHILY.*` comes first), and a record smuggled inside a value would be taken for
//! a real one. So every record here is read by its length, as Go and GNU tar read it, and the
//! archive is framed with the PAX `size` (how files over 8 GiB are written), which tar-rs's own
//! iterator would otherwise take from that same split parser.
//!
//! Precedence follows Go's archive/tar: a GNU long name or link name over a PAX `path` or
//! `linkpath`, over the header's fields; a PAX `size` over the header's.

use std::collections::VecDeque;
use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, GnuSparseHeader, Header};

/// Size of a tar block.
const BLOCK: u64 = 512;
/// Largest PAX header or GNU long name read into memory, as in Go's archive/tar
/// (`maxSpecialFileSize`): they are metadata, a bigger one is an attack or a corrupt stream.
const MAX_EXTENDED: u64 = 1 << 20;

/// One PAX record, `key=value`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Parses PAX extended header data: a sequence of records `"%d %s=%s\n"`, where the decimal
/// length counts the whole record (its own digits, the space, key, `=`, value and newline). The
/// value is taken by that length, so it may contain newlines and NUL bytes. A record whose
/// length is not a number, does not fit the data, does not end in a newline, or has no `=` or an
/// empty key or a key with a NUL byte is an error saying which record (by byte offset) and why.
pub(super) fn parse_records(data: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let bad = |why: &str| format!("malformed PAX record at byte {at}: {why}");
        let digits = rest.iter().position(|b| *b == b' ').ok_or_else(|| bad("no length"))?;
        let len = std::str::from_utf8(&rest[..digits])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("the length is not a decimal number"))?;
        if len <= digits + 1 || len > rest.len() {
            return Err(bad(&format!("length {len} does not fit the {} bytes left", rest.len())));
        }
        let record = &rest[digits + 1..len];
        let body = record.strip_suffix(b"\n").ok_or_else(|| bad("the length does not end at a newline"))?;
        let eq = body.iter().position(|b| *b == b'=').ok_or_else(|| bad("no '=' in the record"))?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(bad("empty key or a key with a NUL byte"));
        }
        records.push(Record { key: key.to_vec(), value: value.to_vec() });
        at += len;
    }
    Ok(records)
}

/// The last value of PAX record `key`, if any (a later record overrides an earlier one).
pub(super) fn last<'a>(records: &'a [Record], key: &[u8]) -> Option<&'a [u8]> {
    records.iter().rev().find(|r| r.key == key).map(|r| &r.value[..])
}

/// Parses a decimal PAX number (`size`, `uid`, `gid`).
pub(super) fn number(records: &[Record], key: &str) -> Result<Option<u64>, String> {
    let Some(value) = last(records, key.as_bytes()) else { return Ok(None) };
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("invalid PAX {key} {:?}", String::from_utf8_lossy(value)))
}

/// An entry with its extended headers applied.
pub(super) struct Entry {
    /// The entry's own header (its numeric fields are not overridden by PAX records).
    pub header: Header,
    /// Name: GNU long name, PAX `path` or the header's.
    pub path: Vec<u8>,
    /// Link target: GNU long link name, PAX `linkpath` or the header's.
    pub link: Vec<u8>,
    /// Length of the content [`TarReader`] yields: the PAX `size` or the header's, or a GNU sparse
    /// file's real size.
    pub size: u64,
    /// The PAX records of the `x` header before the entry, if any.
    pub records: Vec<Record>,
    /// Why the extended headers before the entry are invalid; the applier rejects the entry
    /// (once its name is known) and stops, since the stream can no longer be framed reliably.
    pub invalid: Option<String>,
}

/// Reads a tar stream's entries and their content.
pub(super) struct TarReader<R> {
    inner: R,
    /// Data segments `(offset, length)` of the current entry's content not yet read (one
    /// segment from 0 for a plain file); the holes between them read as zeros.
    segments: VecDeque<(u64, u64)>,
    /// Position in the current entry's content, and its length.
    pos: u64,
    end: u64,
    /// Archive bytes of the current entry not yet read: unread data and padding.
    unread: u64,
}

impl<R: Read> TarReader<R> {
    /// Reads the tar stream `inner` from its first header.
    pub fn new(inner: R) -> TarReader<R> {
        TarReader { inner, segments: VecDeque::new(), pos: 0, end: 0, unread: 0 }
    }

    /// The stream, after the end-of-archive block (or wherever reading stopped).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry (PAX global headers included), or `None` at the end-of-archive block or
    /// the end of the stream. Skips what is left of the previous entry's content.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.skip_rest()?;
        let (mut records, mut invalid) = (None, None);
        let (mut long_name, mut long_link) = (None, None);
        loop {
            let Some(header) = self.header()? else {
                return match records.is_some() || long_name.is_some() || long_link.is_some() {
                    true => Err(truncated("an extended header is not followed by an entry")),
                    false => Ok(None),
                };
            };
            let kind = header.entry_type();
            let pending = match kind {
                EntryType::XHeader => records.is_some(),
                EntryType::GNULongName => long_name.is_some(),
                EntryType::GNULongLink => long_link.is_some(),
                _ => return self.start(header, records.unwrap_or_default(), long_name, long_link, invalid).map(Some),
            };
            if pending {
                return Err(invalid_data(format!("two {kind:?} headers for one entry")));
            }
            let data = self.extended(&header)?;
            match kind {
                EntryType::XHeader => {
                    records = Some(parse_records(&data).unwrap_or_else(|e| {
                        invalid = Some(e);
                        Vec::new()
                    }))
                }
                EntryType::GNULongName => long_name = Some(gnu_name(data)),
                _ => long_link = Some(gnu_name(data)),
            }
        }
    }

    /// Reads one header block: `None` at the end of the stream or at an all-zero block.
    fn header(&mut self) -> io::Result<Option<Header>> {
        let mut block = [0u8; BLOCK as usize];
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(truncated("the stream ends inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let header = Header::from_byte_slice(&block).clone();
        let sum: u32 =
            block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
        if header.cksum()? != sum {
            return Err(invalid_data("archive header checksum mismatch".to_owned()));
        }
        Ok(Some(header))
    }

    /// Reads the data of an extended header (PAX or GNU long name), at most [`MAX_EXTENDED`].
    fn extended(&mut self, header: &Header) -> io::Result<Vec<u8>> {
        let size = header.entry_size()?;
        if size > MAX_EXTENDED {
            return Err(invalid_data(format!(
                "{:?} header of {size} bytes (at most {MAX_EXTENDED})",
                header.entry_type()
            )));
        }
        let mut data = Vec::new();
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if (data.len() as u64) < size {
            return Err(truncated("the stream ends inside an extended header"));
        }
        self.unread = padding(size);
        self.skip_rest()?;
        Ok(data)
    }

    /// Makes `header` the current entry, reading its sparse map if it has one.
    fn start(
        &mut self,
        header: Header,
        records: Vec<Record>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        mut invalid: Option<String>,
    ) -> io::Result<Entry> {
        let path = long_name
            .or_else(|| last(&records, b"path").map(<[u8]>::to_vec))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = long_link
            .or_else(|| last(&records, b"linkpath").map(<[u8]>::to_vec))
            .unwrap_or_else(|| header.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default());
        // With invalid records the size is unknown; the applier stops at this entry anyway.
        let stored = match number(&records, "size") {
            Ok(Some(size)) => size,
            Ok(None) => header.entry_size()?,
            Err(e) => {
                invalid.get_or_insert(e);
                0
            }
        };
        self.unread = stored.checked_add(padding(stored)).ok_or_else(|| invalid_data("size overflow".to_owned()))?;
        if header.entry_type().is_gnu_sparse() {
            self.end = self.sparse_map(&header, stored)?;
        } else {
            self.end = stored;
            self.segments.push_back((0, stored));
        }
        Ok(Entry { size: self.end, header, path, link, records, invalid })
    }

    /// Reads a GNU sparse file's map (in its header and the extension blocks after it) into
    /// `segments`, checking the segments are in order, inside the file and hold `stored` bytes;
    /// returns the file's real size.
    fn sparse_map(&mut self, header: &Header, stored: u64) -> io::Result<u64> {
        let gnu = header.as_gnu().ok_or_else(|| invalid_data("sparse entry without a GNU header".to_owned()))?;
        let real = gnu.real_size()?;
        let (mut end, mut total) = (0u64, 0u64);
        let mut add = |segments: &mut VecDeque<(u64, u64)>, s: &GnuSparseHeader| -> io::Result<()> {
            // Unused slots are blank.
            if s.is_empty() {
                return Ok(());
            }
            let (offset, len) = (s.offset()?, s.length()?);
            let seg_end = offset.checked_add(len).filter(|e| offset >= end && *e <= real);
            end = seg_end.ok_or_else(|| invalid_data("sparse map segments out of order or past the end".to_owned()))?;
            total = total.saturating_add(len);
            segments.push_back((offset, len));
            Ok(())
        };
        for s in &gnu.sparse {
            add(&mut self.segments, s)?;
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = GnuExtSparseHeader::new();
            self.inner.read_exact(ext.as_mut_bytes()).map_err(|_| truncated("the stream ends inside a sparse map"))?;
            for s in ext.sparse() {
                add(&mut self.segments, s)?;
            }
            extended = ext.is_extended();
        }
        if total != stored {
            return Err(invalid_data(format!("sparse map holds {total} bytes, the entry {stored}")));
        }
        Ok(real)
    }

    /// Skips the rest of the current entry: its unread data and padding.
    fn skip_rest(&mut self) -> io::Result<()> {
        let n = io::copy(&mut (&mut self.inner).take(self.unread), &mut io::sink())?;
        if n < self.unread {
            return Err(truncated("the stream ends inside an entry"));
        }
        (self.unread, self.segments, self.pos, self.end) = (0, VecDeque::new(), 0, 0);
        Ok(())
    }
}

/// The current entry's content; it ends early if the stream does.
impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.segments.front().is_some_and(|(offset, len)| self.pos >= offset + len) {
            self.segments.pop_front();
        }
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let buf_len = buf.len().min(left);
        let buf = &mut buf[..buf_len];
        let n = match self.segments.front().copied() {
            _ if buf.is_empty() => 0,
            Some((offset, len)) if self.pos >= offset => {
                let want = usize::try_from(offset + len - self.pos).unwrap_or(usize::MAX).min(buf.len());
                // 0 when the stream is truncated: the caller compares what it got with the size.
                let n = self.inner.read(&mut buf[..want])?;
                self.unread -= n as u64;
                n
            }
            // A hole before the next segment, or after the last one.
            next => {
                let hole = next.map_or(self.end, |(offset, _)| offset) - self.pos;
                let n = usize::try_from(hole).unwrap_or(usize::MAX).min(buf.len());
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// A GNU long name or link name: the data up to its terminating NULs.
fn gnu_name(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// Zero bytes after `size` bytes of data, to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated tar: {what}"))
}

fn invalid_data(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &[u8]) -> Record {
        Record { key: key.as_bytes().to_vec(), value: value.to_vec() }
    }

    #[test]
    fn records_are_read_by_their_length() {
        let data = b"30 mtime=1350244992.023960108\n12 a=b\nc=d\n\n6 k==\n";
        assert_eq!(
            parse_records(data).unwrap(),
            vec![rec("mtime", b"1350244992.023960108"), rec("a", b"b\nc=d\n"), rec("k", b"=")]
        );
        assert_eq!(parse_records(b"").unwrap(), vec![]);
        assert_eq!(parse_records(b"8 k=\0\n\0\n").unwrap(), vec![rec("k", b"\0\n\0")]);
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            &b"11 a=b\n"[..], // too long for the data
            b"5 a=b\n",       // ends before the newline
            b"7 ab\n\n\n",    // no '='
            b"6 =bc\n",       // empty key
            b"x a=b\n",       // not a number
            b"-6 a=b\n",
            b"2 ",
            b"6 a=b\n\0\0\0", // trailing garbage
            b"noSpace",
        ] {
            assert!(parse_records(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let err = parse_records(b"6 a=b\n7 c=d\n").unwrap_err();
        assert!(err.contains("at byte 6"), "{err}");
    }
}
