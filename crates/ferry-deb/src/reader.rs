//! Reading a .deb from any `Read`, front to back without seeking: `debian-binary`, then
//! control.tar (parsed into memory: it is small), then data.tar handed out as a
//! decompressing stream or a `tar::Archive`, so a package can be installed while it is
//! still arriving. Real Debian archive packages (gzip, xz, lzma, zstd and uncompressed
//! members; `./control` style names; old and new tar flavours) are read as well as ferry's.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Serialize;

use crate::ar::{ArReader, MemberHeader, MemberReader};
use crate::compression::{Compression, Decompressor};
use crate::control::Control;
use crate::error::{Error, Result};

/// The largest control.tar member accepted, compressed or not: real ones are kilobytes.
const CONTROL_LIMIT: u64 = 64 << 20;

/// A file of control.tar: `control`, `md5sums`, `conffiles`, a maintainer script, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    /// The name inside control.tar without a leading `./`.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// The contents.
    pub contents: Vec<u8>,
}

/// One ar member of the package, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its name (`debian-binary`, `control.tar.zst`, `data.tar.xz`, …).
    pub name: String,
    /// Its size in the archive in bytes (compressed).
    pub size: u64,
    /// The compression of a tar member; `None` for `debian-binary` and other members.
    pub compression: Option<Compression>,
}

/// The maintainer scripts dpkg runs, in the order of a package's life.
pub const MAINTAINER_SCRIPTS: [&str; 4] = ["preinst", "postinst", "prerm", "postrm"];

/// An opened .deb positioned at its data.tar member.
pub struct DebReader<R: Read> {
    archive: ArReader<R>,
    format: String,
    control: Control,
    control_files: Vec<ControlFile>,
    members: Vec<Member>,
    data_compression: Compression,
}

impl DebReader<BufReader<File>> {
    /// Open a .deb file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?;
        DebReader::new(BufReader::with_capacity(256 << 10, file))
    }
}

impl<R: Read> DebReader<R> {
    /// Read the package's header members and control.tar from `reader`, stopping at the
    /// start of data.tar.
    pub fn new(reader: R) -> Result<Self> {
        let mut archive = ArReader::new(reader)?;
        let mut members = Vec::new();

        let first = archive.next_member()?.ok_or_else(|| {
            Error::NotADeb("the ar archive is empty (no debian-binary member)".into())
        })?;
        if first.name != "debian-binary" {
            return Err(Error::NotADeb(format!(
                "the first member is {:?}, not debian-binary",
                first.name
            )));
        }
        let format_bytes = archive.read_member(&first, 1024)?;
        let format = String::from_utf8_lossy(&format_bytes).trim().to_string();
        if !format.starts_with("2.") {
            return Err(Error::NotADeb(format!(
                "unsupported package format version {format:?} (expected 2.x)"
            )));
        }
        members.push(Member {
            name: first.name,
            size: first.size,
            compression: None,
        });

        let control_member = next_tar_member(&mut archive, &mut members, "control.tar")?;
        let control_compression =
            Compression::from_member_name(&control_member.name, "control.tar")?;
        let compressed = archive.read_member(&control_member, CONTROL_LIMIT)?;
        members.push(Member {
            name: control_member.name.clone(),
            size: control_member.size,
            compression: Some(control_compression),
        });
        let control_files =
            read_control_tar(&compressed, control_compression, &control_member.name)?;
        let control_text = control_files
            .iter()
            .find(|file| file.name == "control")
            .ok_or_else(|| {
                Error::Malformed(format!("{} has no control file", control_member.name))
            })?;
        let control = Control::parse(&String::from_utf8_lossy(&control_text.contents))?;

        let data_member = next_tar_member(&mut archive, &mut members, "data.tar")?;
        let data_compression = Compression::from_member_name(&data_member.name, "data.tar")?;
        members.push(Member {
            name: data_member.name,
            size: data_member.size,
            compression: Some(data_compression),
        });

        Ok(DebReader {
            archive,
            format,
            control,
            control_files,
            members,
            data_compression,
        })
    }

    /// The package format version from `debian-binary` (`2.0`).
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The parsed `control` file.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Every file of control.tar, in archive order.
    pub fn control_files(&self) -> &[ControlFile] {
        &self.control_files
    }

    /// One file of control.tar by name (`postinst`, `md5sums`, …).
    pub fn control_file(&self, name: &str) -> Option<&ControlFile> {
        self.control_files.iter().find(|file| file.name == name)
    }

    /// The paths listed in `conffiles` (empty when there is none).
    pub fn conffiles(&self) -> Vec<String> {
        self.control_file("conffiles")
            .map(|file| {
                String::from_utf8_lossy(&file.contents)
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        // dpkg ≥ 1.20 may flag entries as `remove-on-upgrade /path`.
                        line.rsplit(' ').next().unwrap_or(line).to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ar members read so far: debian-binary, control.tar.*, anything skipped, and
    /// data.tar.*.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// How data.tar is compressed.
    pub fn data_compression(&self) -> Compression {
        self.data_compression
    }

    /// The decompressed data.tar as a byte stream.
    pub fn into_data(self) -> Result<Decompressor<MemberReader<R>>> {
        Decompressor::new(self.archive.into_member_reader(), self.data_compression)
    }

    /// The decompressed data.tar as a `tar::Archive` (iterate `entries()` or `unpack`).
    ///
    /// tar stops reading at its end-of-archive marker: to be sure the package was complete
    /// (compressor checksums, truncation), read `into_inner()` to the end afterwards, as
    /// [`crate::inspect::list_data`] does.
    pub fn into_data_archive(self) -> Result<tar::Archive<Decompressor<MemberReader<R>>>> {
        Ok(tar::Archive::new(self.into_data()?))
    }
}

/// Skip `_`-prefixed members (allowed between the standard ones) and return the next
/// member, which must start with `base`.
fn next_tar_member<R: Read>(
    archive: &mut ArReader<R>,
    members: &mut Vec<Member>,
    base: &str,
) -> Result<MemberHeader> {
    // A bounded walk: a hostile file cannot make this loop longer than its own size, and
    // the count cap keeps even that small.
    for _ in 0..64 {
        let Some(member) = archive.next_member()? else {
            return Err(Error::Malformed(format!(
                "the package ends before its {base} member (truncated?)"
            )));
        };
        if member.name.starts_with('_') {
            members.push(Member {
                name: member.name,
                size: member.size,
                compression: None,
            });
            continue;
        }
        if !member.name.starts_with(base) {
            return Err(Error::Malformed(format!(
                "expected a {base} member, found {:?}",
                member.name
            )));
        }
        return Ok(member);
    }
    Err(Error::Malformed(format!(
        "too many extra members before {base}"
    )))
}

fn read_control_tar(
    compressed: &[u8],
    compression: Compression,
    member: &str,
) -> Result<Vec<ControlFile>> {
    let decompressor = Decompressor::new(compressed, compression)?;
    // Cap the decompressed size too, so a tiny bomb cannot fill memory.
    let mut archive = tar::Archive::new(decompressor.take(CONTROL_LIMIT));
    let mut files = Vec::new();
    for entry in archive.entries().map_err(Error::tar(member))? {
        let mut entry = entry.map_err(Error::tar(member))?;
        let path_bytes = entry.path_bytes().into_owned();
        let name = normalize_path(&String::from_utf8_lossy(&path_bytes));
        if entry.header().entry_type().is_dir() || name.is_empty() {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mode = entry.header().mode().map_err(Error::tar(member))?;
        let mut contents = Vec::new();
        entry
            .read_to_end(&mut contents)
            .map_err(Error::tar(member))?;
        files.push(ControlFile {
            name,
            mode,
            contents,
        });
    }
    Ok(files)
}

/// `./usr/bin/x`, `/usr/bin/x`, `usr/bin/x/` → `usr/bin/x`.
pub(crate) fn normalize_path(path: &str) -> String {
    let mut rest = path;
    loop {
        if let Some(stripped) = rest.strip_prefix("./") {
            rest = stripped;
        } else if let Some(stripped) = rest.strip_prefix('/') {
            rest = stripped;
        } else {
            break;
        }
    }
    if rest == "." {
        rest = "";
    }
    rest.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        assert_eq!(normalize_path("./usr/bin/"), "usr/bin");
        assert_eq!(normalize_path("./"), "");
        assert_eq!(normalize_path("."), "");
        assert_eq!(normalize_path("/etc/x"), "etc/x");
        assert_eq!(normalize_path("control"), "control");
    }
}
