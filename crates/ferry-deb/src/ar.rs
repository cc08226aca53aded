//! The `ar` container a .deb is made of: a reader that walks members of any `Read`
//! sequentially (so a .deb can be streamed from a download), and a writer producing the
//! deterministic headers dpkg-deb itself writes (uid/gid 0, mode 100644, fixed mtime).

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// The 8-byte magic every ar archive starts with.
pub const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LENGTH: usize = 60;

/// One member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// The member's name, without padding or a GNU-style trailing `/`.
    pub name: String,
    /// The member's size in bytes.
    pub size: u64,
}

/// Reads the members of an ar archive one after the other.
pub struct ArReader<R> {
    reader: R,
    /// Bytes of the current member not consumed yet, plus its padding byte.
    remaining: u64,
    padding: bool,
}

impl<R: Read> ArReader<R> {
    /// Check the global magic and get ready to read the first member.
    pub fn new(mut reader: R) -> Result<Self> {
        let mut magic = [0u8; 8];
        let read = read_full(&mut reader, &mut magic).map_err(Error::io("reading the ar magic"))?;
        if read < magic.len() || &magic != MAGIC {
            return Err(Error::NotADeb(
                "the file does not start with the ar magic `!<arch>`".into(),
            ));
        }
        Ok(ArReader {
            reader,
            remaining: 0,
            padding: false,
        })
    }

    /// The next member's header, or `None` at the end of the archive. Whatever is left of
    /// the previous member is skipped.
    pub fn next_member(&mut self) -> Result<Option<MemberHeader>> {
        self.skip_rest()?;
        let mut header = [0u8; HEADER_LENGTH];
        let read =
            read_full(&mut self.reader, &mut header).map_err(Error::io("reading an ar header"))?;
        if read == 0 {
            return Ok(None);
        }
        if read < HEADER_LENGTH {
            return Err(Error::Malformed(format!(
                "truncated ar member header ({read} of {HEADER_LENGTH} bytes)"
            )));
        }
        if &header[58..60] != b"`\n" {
            return Err(Error::Malformed(
                "bad ar member header (missing the \"`\\n\" terminator)".into(),
            ));
        }
        let name_field = std::str::from_utf8(&header[0..16])
            .map_err(|_| Error::Malformed("ar member name is not ASCII".into()))?;
        let name = name_field.trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        if name.is_empty() {
            return Err(Error::Malformed("ar member with an empty name".into()));
        }
        let size_field = std::str::from_utf8(&header[48..58])
            .map_err(|_| Error::Malformed(format!("ar member {name}: size is not ASCII")))?;
        let size: u64 = size_field.trim_end_matches(' ').parse().map_err(|_| {
            Error::Malformed(format!(
                "ar member {name}: size {:?} is not a number",
                size_field.trim_end()
            ))
        })?;
        self.remaining = size;
        self.padding = size % 2 == 1;
        Ok(Some(MemberHeader { name, size }))
    }

    /// Read the whole current member into memory, refusing members larger than `limit`.
    pub fn read_member(&mut self, member: &MemberHeader, limit: u64) -> Result<Vec<u8>> {
        if member.size > limit {
            return Err(Error::Malformed(format!(
                "member {} is {} bytes, more than the {limit} bytes allowed for it",
                member.name, member.size
            )));
        }
        let mut data = Vec::with_capacity(member.size as usize);
        self.member_reader()
            .read_to_end(&mut data)
            .map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => {
                    Error::Malformed(format!("member {} is truncated", member.name))
                }
                _ => Error::Io {
                    action: format!("reading member {}", member.name),
                    source,
                },
            })?;
        Ok(data)
    }

    /// A reader over the rest of the current member (fails with `UnexpectedEof` when the
    /// archive ends early).
    pub fn member_reader(&mut self) -> MemberReader<&mut R> {
        let remaining = self.remaining;
        self.remaining = 0;
        MemberReader {
            inner: &mut self.reader,
            remaining,
        }
    }

    /// Give up the archive and keep a reader over the rest of the current member.
    pub fn into_member_reader(self) -> MemberReader<R> {
        MemberReader {
            inner: self.reader,
            remaining: self.remaining,
        }
    }

    fn skip_rest(&mut self) -> Result<()> {
        let skip = self.remaining + u64::from(self.padding);
        self.remaining = 0;
        self.padding = false;
        if skip == 0 {
            return Ok(());
        }
        let copied = io::copy(&mut (&mut self.reader).take(skip), &mut io::sink())
            .map_err(Error::io("skipping an ar member"))?;
        // The padding byte of the very last member may be missing in archives written by
        // lax tools; a shortfall inside the member itself is a truncation.
        if copied + 1 < skip || (copied < skip && skip % 2 == 0) {
            return Err(Error::Malformed("the ar archive is truncated".into()));
        }
        Ok(())
    }
}

/// Reads exactly one ar member's bytes; reports `UnexpectedEof` if the input ends first.
pub struct MemberReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for MemberReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buffer.is_empty() {
            return Ok(0);
        }
        let want = buffer
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the ar member ends {} bytes early (truncated .deb)",
                    self.remaining
                ),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

/// Read until `buffer` is full or the input ends; returns how much was read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Writes an ar archive with deterministic headers.
pub struct ArWriter<W> {
    writer: W,
    mtime: u64,
}

impl<W: Write> ArWriter<W> {
    /// Write the magic; every member gets `mtime` as its timestamp.
    pub fn new(mut writer: W, mtime: u64) -> io::Result<Self> {
        writer.write_all(MAGIC)?;
        Ok(ArWriter { writer, mtime })
    }

    /// Append a member of `size` bytes read from `data` (which must yield exactly that).
    pub fn append(&mut self, name: &str, size: u64, data: &mut impl Read) -> io::Result<()> {
        if name.len() > 16 || !name.is_ascii() {
            return Err(io::Error::other(format!(
                "ar member name {name:?} does not fit a header"
            )));
        }
        if size > 9_999_999_999 {
            return Err(io::Error::other(format!(
                "ar member {name} is too large ({size} bytes; the format allows 10 digits)"
            )));
        }
        let header = format!(
            "{name:<16}{mtime:<12}{uid:<6}{gid:<6}{mode:<8}{size:<10}`\n",
            mtime = self.mtime,
            uid = 0,
            gid = 0,
            mode = 100644,
        );
        if header.len() != HEADER_LENGTH {
            return Err(io::Error::other(format!(
                "ar header for {name} does not fit 60 bytes (mtime {} too large?)",
                self.mtime
            )));
        }
        self.writer.write_all(header.as_bytes())?;
        let copied = io::copy(&mut data.take(size), &mut self.writer)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("member {name}: expected {size} bytes, got {copied}"),
            ));
        }
        if size % 2 == 1 {
            self.writer.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Flush and hand back the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.writer.flush()?;
        Ok(self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_odd_sizes() {
        let mut archive = ArWriter::new(Vec::new(), 1_700_000_000).unwrap();
        archive
            .append("debian-binary", 4, &mut &b"2.0\n"[..])
            .unwrap();
        archive.append("odd", 3, &mut &b"abc"[..]).unwrap();
        archive.append("last", 2, &mut &b"xy"[..]).unwrap();
        let bytes = archive.finish().unwrap();
        assert_eq!(&bytes[8..24], b"debian-binary   ");

        let mut reader = ArReader::new(&bytes[..]).unwrap();
        let first = reader.next_member().unwrap().unwrap();
        assert_eq!(first.name, "debian-binary");
        assert_eq!(reader.read_member(&first, 100).unwrap(), b"2.0\n");
        let second = reader.next_member().unwrap().unwrap();
        assert_eq!((second.name.as_str(), second.size), ("odd", 3));
        // Skipping the unread member (and its padding) lands on the next header.
        let third = reader.next_member().unwrap().unwrap();
        assert_eq!(reader.read_member(&third, 100).unwrap(), b"xy");
        assert!(reader.next_member().unwrap().is_none());
    }

    #[test]
    fn truncated_member_is_an_error() {
        let mut archive = ArWriter::new(Vec::new(), 0).unwrap();
        archive.append("data", 10, &mut &b"0123456789"[..]).unwrap();
        let bytes = archive.finish().unwrap();
        let mut reader = ArReader::new(&bytes[..bytes.len() - 4]).unwrap();
        let member = reader.next_member().unwrap().unwrap();
        let error = reader.read_member(&member, 100).unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[test]
    fn not_an_archive() {
        let error = ArReader::new(&b"PK\x03\x04 zip file"[..]).err().unwrap();
        assert!(error.to_string().contains("!<arch>"), "{error}");
    }
}
