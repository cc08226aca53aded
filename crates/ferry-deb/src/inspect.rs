//! A full description of a package — members, control fields, control files, conffiles
//! and every data.tar entry with type, mode, owner, size and sha256 — for `ferry inspect`
//! and for tests that compare what ferry wrote against what dpkg reads.

use std::io::Read;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::control::Control;
use crate::error::{Error, Result};
use crate::reader::{DebReader, Member, normalize_path};

/// What a package contains.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The format version from `debian-binary`.
    pub format: String,
    /// The ar members.
    pub members: Vec<Member>,
    /// The control fields in order.
    pub control: Control,
    /// control.tar files other than `control` (md5sums, conffiles, scripts, …).
    pub control_files: Vec<ControlFileSummary>,
    /// The conffiles.
    pub conffiles: Vec<String>,
    /// Every entry of data.tar in archive order.
    pub files: Vec<FileEntry>,
}

/// A file of control.tar.
#[derive(Debug, Clone, Serialize)]
pub struct ControlFileSummary {
    /// The name (`postinst`, `md5sums`).
    pub name: String,
    /// Permission bits in octal (`0755`).
    pub mode: String,
    /// The size in bytes.
    pub size: u64,
    /// The text, when it is UTF-8.
    pub text: Option<String>,
}

/// The type of a data.tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// Anything else.
    Other,
}

impl EntryKind {
    /// The `ls -l` style type character.
    pub fn type_char(self) -> char {
        match self {
            EntryKind::File | EntryKind::Other => '-',
            EntryKind::Directory => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::Hardlink => 'h',
            EntryKind::Char => 'c',
            EntryKind::Block => 'b',
            EntryKind::Fifo => 'p',
        }
    }
}

/// One entry of data.tar.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// The installed path, absolute; directories end with `/` (`/usr/bin/`).
    pub path: String,
    /// Its type.
    pub kind: EntryKind,
    /// Permission bits in octal (`0755`, `4755`).
    pub mode: String,
    /// Owner as `user/group` names, falling back to numeric ids (like `dpkg-deb -c`).
    pub owner: String,
    /// Numeric uid.
    pub uid: u64,
    /// Numeric gid.
    pub gid: u64,
    /// Size in bytes (0 for everything but regular files).
    pub size: u64,
    /// The modification time (seconds since the epoch).
    pub mtime: u64,
    /// sha256 of a regular file's contents.
    pub sha256: Option<String>,
    /// The target of a symlink or hard link.
    pub link_target: Option<String>,
}

impl FileEntry {
    /// The permission bits as a number.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0)
    }

    /// `-rwxr-xr-x` like `ls -l` and `dpkg-deb -c`.
    pub fn mode_string(&self) -> String {
        mode_string(self.kind.type_char(), self.mode_bits())
    }
}

/// Render permission bits the way `ls -l` does, with setuid/setgid/sticky letters.
pub fn mode_string(type_char: char, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(type_char);
    let triplets = [
        (0o400, 0o200, 0o100, 0o4000, 's'),
        (0o40, 0o20, 0o10, 0o2000, 's'),
        (0o4, 0o2, 0o1, 0o1000, 't'),
    ];
    for (read, write, execute, special, letter) in triplets {
        text.push(if mode & read != 0 { 'r' } else { '-' });
        text.push(if mode & write != 0 { 'w' } else { '-' });
        text.push(match (mode & execute != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// Read a whole package and describe it. Hashes every file, so it reads all of data.tar.
pub fn inspect<R: Read>(reader: R) -> Result<Inspection> {
    let deb = DebReader::new(reader)?;
    let format = deb.format().to_string();
    let members = deb.members().to_vec();
    let control = deb.control().clone();
    let conffiles = deb.conffiles();
    let control_files = deb
        .control_files()
        .iter()
        .filter(|file| file.name != "control")
        .map(|file| ControlFileSummary {
            name: file.name.clone(),
            mode: format!("{:04o}", file.mode & 0o7777),
            size: file.contents.len() as u64,
            text: String::from_utf8(file.contents.clone()).ok(),
        })
        .collect();
    let data_member = members
        .last()
        .map(|member| member.name.clone())
        .unwrap_or_else(|| "data.tar".into());
    let files = list_data(deb.into_data()?, &data_member)?;
    Ok(Inspection {
        format,
        members,
        control,
        control_files,
        conffiles,
        files,
    })
}

/// Read a whole package the way an installer would — the control archive, then every entry
/// of data.tar and the rest of its compressed stream — keeping nothing. A package cut short or
/// corrupt anywhere fails here, before it is uploaded or installed.
pub fn check_complete<R: Read>(reader: R) -> Result<()> {
    let deb = DebReader::new(reader)?;
    let member = deb
        .members()
        .last()
        .map(|member| member.name.clone())
        .unwrap_or_else(|| "data.tar".into());
    let mut archive = tar::Archive::new(deb.into_data()?);
    for entry in archive.entries().map_err(Error::tar(&member))? {
        let mut entry = entry.map_err(Error::tar(&member))?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(Error::tar(&member))?;
    }
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(Error::tar(&member))?;
    Ok(())
}

/// List (and hash) every entry of a decompressed data.tar stream.
pub fn list_data(data: impl Read, member: &str) -> Result<Vec<FileEntry>> {
    let mut archive = tar::Archive::new(data);
    let mut files = Vec::new();
    let mut buffer = vec![0u8; 256 << 10];
    for entry in archive.entries().map_err(Error::tar(member))? {
        let mut entry = entry.map_err(Error::tar(member))?;
        let header = entry.header().clone();
        let entry_type = header.entry_type();
        let kind = if entry_type.is_file() {
            EntryKind::File
        } else if entry_type.is_dir() {
            EntryKind::Directory
        } else if entry_type.is_symlink() {
            EntryKind::Symlink
        } else if entry_type.is_hard_link() {
            EntryKind::Hardlink
        } else if entry_type.is_character_special() {
            EntryKind::Char
        } else if entry_type.is_block_special() {
            EntryKind::Block
        } else if entry_type.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Other
        };
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut path = format!("/{}", normalize_path(&raw_path));
        if kind == EntryKind::Directory && path != "/" {
            path.push('/');
        }
        let mode = header.mode().map_err(Error::tar(member))? & 0o7777;
        let uid = header.uid().map_err(Error::tar(member))?;
        let gid = header.gid().map_err(Error::tar(member))?;
        let user = header
            .username()
            .ok()
            .flatten()
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| uid.to_string());
        let group = header
            .groupname()
            .ok()
            .flatten()
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| gid.to_string());
        let mtime = header.mtime().map_err(Error::tar(member))?;
        let link_target = entry
            .link_name_bytes()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let (size, sha256) = if kind == EntryKind::File {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let read = entry.read(&mut buffer).map_err(Error::tar(member))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                size += read as u64;
            }
            (size, Some(hex::encode(hasher.finalize())))
        } else {
            (0, None)
        };
        files.push(FileEntry {
            path,
            kind,
            mode: format!("{mode:04o}"),
            owner: format!("{user}/{group}"),
            uid,
            gid,
            size,
            mtime,
            sha256,
            link_target,
        });
    }
    // tar stops at its end-of-archive blocks; read the stream to its real end so a
    // truncated or corrupt tail (a compressor's checksum, the ar member) is reported too.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(Error::tar(member))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string('-', 0o755), "-rwxr-xr-x");
        assert_eq!(mode_string('d', 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string('-', 0o4644), "-rwSr--r--");
        assert_eq!(mode_string('-', 0o2755), "-rwxr-sr-x");
    }
}
