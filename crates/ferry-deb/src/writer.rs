//! Writing a .deb: the file tree (with every parent directory made explicit), md5sums,
//! conffiles, Installed-Size, control.tar and data.tar with GNU tar headers owned by
//! root:root (never PAX, which dpkg refuses), wrapped in an ar archive. Everything that
//! could vary between runs — entry order, timestamps, owners, compressor headers, thread
//! counts — is fixed, so the same inputs and mtime give a byte-identical package.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use md5::{Digest, Md5};

pub use crate::generated::{
    changelog_name, generated_changelog, generated_copyright, package_file_name, year_of,
};

use crate::ar::ArWriter;
use crate::compression::{Compression, Compressor};
use crate::control::Control;
use crate::error::{Error, Result};
pub use crate::tree::validate_package_path;
use crate::tree::{Node, NodeKind, build_tree, installed_size};
use crate::version::{validate_package_name, validate_version};

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk, read while packing.
    Path(PathBuf),
    /// Bytes in memory (generated files).
    Bytes(Vec<u8>),
}

/// What an entry of data.tar is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    /// A regular file.
    File(Source),
    /// A directory.
    Directory,
    /// A symbolic link to the given target.
    Symlink(String),
}

/// One entry of the installed tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The absolute installed path (`/usr/bin/hello`).
    pub path: String,
    /// Permission bits (`0o755`).
    pub mode: u32,
    /// What it is.
    pub source: EntrySource,
}

/// Everything needed to write a package.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    /// Control fields: at least Package, Version, Architecture, Maintainer, Description.
    /// `Installed-Size` is computed and replaces any given value.
    pub control: Control,
    /// The files, directories and links to install (parents are added as needed).
    pub entries: Vec<Entry>,
    /// Extra conffiles (absolute paths); regular files under `/etc` are added
    /// automatically.
    pub conffiles: Vec<String>,
    /// Maintainer scripts and other control files: (name, mode, contents).
    pub control_files: Vec<(String, u32, Vec<u8>)>,
    /// The compression of control.tar and data.tar.
    pub compression: Compression,
    /// Its level.
    pub level: u32,
    /// Compressor threads (the output does not depend on this).
    pub threads: u32,
    /// The timestamp of every entry and ar member (SOURCE_DATE_EPOCH).
    pub mtime: u64,
}

/// Progress callbacks, so a CLI can draw a bar and a daemon can log.
pub trait Listener {
    /// Packing starts: `files` regular files, `bytes` of content in total.
    fn start(&mut self, files: usize, bytes: u64) {
        let _ = (files, bytes);
    }
    /// `bytes` more bytes of content were packed.
    fn advance(&mut self, bytes: u64) {
        let _ = bytes;
    }
}

/// A listener that ignores everything.
pub struct Quiet;
impl Listener for Quiet {}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The final control fields (with Installed-Size).
    pub control: Control,
    /// Number of regular files.
    pub files: usize,
    /// Number of directories (the root included).
    pub directories: usize,
    /// Number of symlinks.
    pub symlinks: usize,
    /// The conffiles.
    pub conffiles: Vec<String>,
    /// Uncompressed size of data.tar.
    pub data_size: u64,
    /// Compressed size of data.tar.
    pub data_compressed_size: u64,
    /// Size of the whole .deb.
    pub package_size: u64,
    /// The ar member names.
    pub members: Vec<String>,
}

/// Writes tar entries with GNU headers, owner root:root and a fixed mtime.
struct TarWriter<W: Write> {
    writer: W,
    mtime: u64,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    fn new(writer: W, mtime: u64) -> Self {
        TarWriter {
            writer,
            mtime,
            written: 0,
        }
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let remainder = (size % 512) as usize;
        if remainder != 0 {
            self.write_raw(&[0u8; 512][..512 - remainder])?;
        }
        Ok(())
    }

    /// A GNU `././@LongLink` entry carrying a name that does not fit 100 bytes.
    fn long_name(&mut self, kind: u8, name: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(name.len() as u64 + 1);
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_cksum();
        self.write_raw(header.as_bytes())?;
        self.write_raw(name)?;
        self.write_raw(&[0])?;
        self.pad(name.len() as u64 + 1)
    }

    /// Write one header (plus GNU long-name entries when needed); the caller writes
    /// `size` bytes of content and then calls [`TarWriter::pad`].
    fn header(
        &mut self,
        name: &str,
        entry_type: tar::EntryType,
        mode: u32,
        size: u64,
        link: Option<&str>,
    ) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        let name_bytes = name.as_bytes();
        if name_bytes.len() > 100 {
            self.long_name(b'L', name_bytes)?;
        }
        let length = name_bytes.len().min(100);
        header.as_old_mut().name[..length].copy_from_slice(&name_bytes[..length]);
        if let Some(link) = link {
            let link_bytes = link.as_bytes();
            if link_bytes.len() > 100 {
                self.long_name(b'K', link_bytes)?;
            }
            let length = link_bytes.len().min(100);
            header.as_old_mut().linkname[..length].copy_from_slice(&link_bytes[..length]);
        }
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_mtime(self.mtime);
        header.set_size(size);
        header.set_cksum();
        self.write_raw(header.as_bytes())
    }

    fn finish(mut self) -> io::Result<W> {
        // The end-of-archive marker: two zero blocks.
        self.write_raw(&[0u8; 1024])?;
        self.writer.flush()?;
        Ok(self.writer)
    }
}

/// Counts bytes written through it.
struct Counter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.count += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn tar_name(node: &Node) -> String {
    match (&node.kind, node.path.is_empty()) {
        (_, true) => "./".to_string(),
        (NodeKind::Directory, false) => format!("./{}/", node.path),
        (_, false) => format!("./{}", node.path),
    }
}

/// Write the package to `output`. data.tar is compressed into `scratch` first (control.tar,
/// which holds the md5sums of data.tar's files, must come before it in the archive), so
/// every file is read exactly once.
pub fn write_package<W: Write, S: Read + Write + Seek>(
    spec: &PackageSpec,
    output: W,
    scratch: &mut S,
    listener: &mut dyn Listener,
) -> Result<Summary> {
    let mut control = spec.control.clone();
    for field in [
        "Package",
        "Version",
        "Architecture",
        "Maintainer",
        "Description",
    ] {
        if control
            .get(field)
            .is_none_or(|value| value.trim().is_empty())
        {
            return Err(Error::Field {
                field: field.into(),
                reason: "missing".into(),
            });
        }
    }
    validate_package_name(control.package().unwrap_or_default())?;
    validate_version(control.version().unwrap_or_default())?;
    spec.compression.check_level(spec.level)?;

    let nodes = build_tree(&spec.entries)?;
    let file_count = nodes
        .iter()
        .filter(|node| matches!(node.kind, NodeKind::File { .. }))
        .count();
    let total_bytes: u64 = nodes
        .iter()
        .map(|node| match node.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();

    // Conffiles: everything under /etc plus the explicit list, which must name files.
    let mut conffiles: BTreeSet<String> = BTreeSet::new();
    for node in &nodes {
        if matches!(node.kind, NodeKind::File { .. }) && node.path.starts_with("etc/") {
            conffiles.insert(node.path.clone());
        }
    }
    for conffile in &spec.conffiles {
        let relative = validate_package_path(conffile)?;
        let is_file = nodes
            .iter()
            .any(|node| node.path == relative && matches!(node.kind, NodeKind::File { .. }));
        if !is_file {
            return Err(Error::PackagePath {
                path: conffile.clone(),
                reason: "is listed as a conffile but the package installs no such file".into(),
            });
        }
        conffiles.insert(relative);
    }

    control.set("Installed-Size", installed_size(&nodes).to_string());
    listener.start(file_count, total_bytes);

    // data.tar, compressed into scratch, hashing as we go.
    scratch
        .seek(SeekFrom::Start(0))
        .map_err(Error::io("rewinding the scratch file"))?;
    let data_size;
    let md5sums;
    {
        let counter = Counter {
            inner: BufWriter::with_capacity(1 << 20, &mut *scratch),
            count: 0,
        };
        let compressor = Compressor::new(counter, spec.compression, spec.level, spec.threads)?;
        let mut tar = TarWriter::new(compressor, spec.mtime);
        // md5 runs on its own thread, fed the same chunks the compressor gets, so hashing
        // overlaps reading and compressing instead of adding to them.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<HashMessage>(8);
        // Hashed chunks come back for reuse, so big files do not cost an allocation (and
        // fresh zeroed pages) per megabyte.
        let (recycle_sender, recycle_receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let (result, hashed) = std::thread::scope(|scope| {
            let hasher_thread = scope.spawn(move || hash_files(receiver, recycle_sender));
            let result = write_data(
                &nodes,
                &conffiles,
                &mut tar,
                &sender,
                &recycle_receiver,
                listener,
            );
            drop(sender);
            (result, hasher_thread.join())
        });
        result?;
        md5sums = hashed.map_err(|_| Error::Io {
            action: "hashing files for md5sums".into(),
            source: io::Error::other("the md5 thread panicked"),
        })?;
        data_size = tar.written + 1024;
        let compressor = tar.finish().map_err(Error::io("writing data.tar"))?;
        let counter = compressor
            .finish()
            .map_err(Error::io("finishing data.tar"))?;
        let mut buffered = counter.inner;
        buffered
            .flush()
            .map_err(Error::io("writing the scratch file"))?;
    }
    let data_compressed_size = scratch
        .stream_position()
        .map_err(Error::io("measuring data.tar"))?;

    // control.tar, in memory: it is small.
    let mut control_entries: Vec<(String, u32, Vec<u8>)> =
        vec![("control".into(), 0o644, control.to_text().into_bytes())];
    if !md5sums.is_empty() {
        control_entries.push(("md5sums".into(), 0o644, md5sums.into_bytes()));
    }
    if !conffiles.is_empty() {
        let text: String = conffiles.iter().map(|path| format!("/{path}\n")).collect();
        control_entries.push(("conffiles".into(), 0o644, text.into_bytes()));
    }
    for (name, mode, contents) in &spec.control_files {
        if matches!(name.as_str(), "control" | "md5sums" | "conffiles")
            || name.is_empty()
            || name.contains('/')
        {
            return Err(Error::PackagePath {
                path: name.clone(),
                reason: "is not a control file ferry lets you supply".into(),
            });
        }
        if control_entries
            .iter()
            .any(|(existing, _, _)| existing == name)
        {
            return Err(Error::DuplicatePath { path: name.clone() });
        }
        control_entries.push((name.clone(), *mode & 0o7777, contents.clone()));
    }
    control_entries.sort_by(|a, b| a.0.cmp(&b.0));
    let control_tar = {
        let compressor = Compressor::new(Vec::new(), spec.compression, spec.level, spec.threads)?;
        let mut tar = TarWriter::new(compressor, spec.mtime);
        let write = |tar: &mut TarWriter<Compressor<Vec<u8>>>| -> io::Result<()> {
            tar.header("./", tar::EntryType::Directory, 0o755, 0, None)?;
            for (name, mode, contents) in &control_entries {
                tar.header(
                    &format!("./{name}"),
                    tar::EntryType::Regular,
                    *mode,
                    contents.len() as u64,
                    None,
                )?;
                tar.write_raw(contents)?;
                tar.pad(contents.len() as u64)?;
            }
            Ok(())
        };
        write(&mut tar).map_err(Error::io("writing control.tar"))?;
        tar.finish()
            .and_then(Compressor::finish)
            .map_err(Error::io("writing control.tar"))?
    };

    // The ar archive.
    let extension = spec.compression.extension();
    let control_name = format!("control.tar{extension}");
    let data_name = format!("data.tar{extension}");
    let mut counter = Counter {
        inner: output,
        count: 0,
    };
    {
        let mut archive =
            ArWriter::new(&mut counter, spec.mtime).map_err(Error::io("writing the package"))?;
        archive
            .append("debian-binary", 4, &mut &b"2.0\n"[..])
            .map_err(Error::io("writing the package"))?;
        archive
            .append(
                &control_name,
                control_tar.len() as u64,
                &mut &control_tar[..],
            )
            .map_err(Error::io("writing the package"))?;
        scratch
            .seek(SeekFrom::Start(0))
            .map_err(Error::io("rewinding the scratch file"))?;
        archive
            .append(&data_name, data_compressed_size, scratch)
            .map_err(Error::io("writing the package"))?;
        archive.finish().map_err(Error::io("writing the package"))?;
    }

    Ok(Summary {
        control,
        files: file_count,
        directories: nodes
            .iter()
            .filter(|node| matches!(node.kind, NodeKind::Directory))
            .count(),
        symlinks: nodes
            .iter()
            .filter(|node| matches!(node.kind, NodeKind::Symlink(_)))
            .count(),
        conffiles: conffiles.iter().map(|path| format!("/{path}")).collect(),
        data_size,
        data_compressed_size,
        package_size: counter.count,
        members: vec!["debian-binary".into(), control_name, data_name],
    })
}

/// What the md5 thread receives: the next chunk of the current file, or the end of a file
/// (with the path to list in md5sums, or `None` for a conffile, which is not listed).
enum HashMessage {
    Chunk(Vec<u8>),
    End(Option<String>),
}

/// The md5 thread: hash chunks in order and build the md5sums text.
fn hash_files(
    receiver: std::sync::mpsc::Receiver<HashMessage>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> String {
    let mut text = String::new();
    let mut hasher = Md5::new();
    for message in receiver {
        match message {
            HashMessage::Chunk(bytes) => {
                hasher.update(&bytes);
                // A full pool or a finished writer just means the buffer is dropped.
                let _ = recycle.try_send(bytes);
            }
            HashMessage::End(path) => {
                let digest = std::mem::take(&mut hasher).finalize();
                if let Some(path) = path {
                    text.push_str(&hex::encode(digest));
                    text.push_str("  ");
                    text.push_str(&path);
                    text.push('\n');
                }
            }
        }
    }
    text
}

/// Write every node into data.tar, sending file contents to the md5 thread as well.
fn write_data<W: Write>(
    nodes: &[Node],
    conffiles: &BTreeSet<String>,
    tar: &mut TarWriter<W>,
    hasher: &std::sync::mpsc::SyncSender<HashMessage>,
    recycled: &std::sync::mpsc::Receiver<Vec<u8>>,
    listener: &mut dyn Listener,
) -> Result<()> {
    let hash_gone = || Error::Io {
        action: "hashing files for md5sums".into(),
        source: io::Error::other("the md5 thread stopped"),
    };
    for node in nodes {
        let name = tar_name(node);
        match &node.kind {
            NodeKind::Directory => tar
                .header(&name, tar::EntryType::Directory, node.mode, 0, None)
                .map_err(Error::io("writing data.tar"))?,
            NodeKind::Symlink(target) => tar
                .header(&name, tar::EntryType::Symlink, node.mode, 0, Some(target))
                .map_err(Error::io("writing data.tar"))?,
            NodeKind::File { source, size } => {
                tar.header(&name, tar::EntryType::Regular, node.mode, *size, None)
                    .map_err(Error::io("writing data.tar"))?;
                match source {
                    Source::Bytes(bytes) => {
                        tar.write_raw(bytes)
                            .map_err(Error::io("writing data.tar"))?;
                        hasher
                            .send(HashMessage::Chunk(bytes.clone()))
                            .map_err(|_| hash_gone())?;
                        listener.advance(*size);
                    }
                    Source::Path(path) => {
                        let file_error = |source| Error::File {
                            path: path.clone(),
                            source,
                        };
                        let mut file = File::open(path).map_err(file_error)?;
                        let mut copied = 0u64;
                        while copied < *size {
                            let want = (*size - copied).min(1 << 20) as usize;
                            let mut chunk = recycled.try_recv().unwrap_or_default();
                            chunk.resize(want, 0);
                            let read = read_up_to(&mut file, &mut chunk).map_err(file_error)?;
                            if read == 0 {
                                break;
                            }
                            chunk.truncate(read);
                            tar.write_raw(&chunk)
                                .map_err(Error::io("writing data.tar"))?;
                            hasher
                                .send(HashMessage::Chunk(chunk))
                                .map_err(|_| hash_gone())?;
                            copied += read as u64;
                            listener.advance(read as u64);
                        }
                        let mut probe = [0u8; 1];
                        let grew =
                            copied == *size && file.read(&mut probe).map_err(file_error)? > 0;
                        if copied != *size || grew {
                            return Err(Error::File {
                                path: path.clone(),
                                source: io::Error::other(format!(
                                    "the file changed while it was being packed ({size} bytes expected)"
                                )),
                            });
                        }
                    }
                }
                tar.pad(*size).map_err(Error::io("writing data.tar"))?;
                let listed = (!conffiles.contains(&node.path)).then(|| node.path.clone());
                hasher
                    .send(HashMessage::End(listed))
                    .map_err(|_| hash_gone())?;
            }
        }
    }
    Ok(())
}

/// Fill `buffer` as far as the file allows; returns the bytes read (short only at EOF).
fn read_up_to(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::rfc2822;
    use std::io::Cursor;

    fn spec(entries: Vec<Entry>) -> PackageSpec {
        let mut control = Control::new();
        control.set("Package", "sample");
        control.set("Version", "1.0-1");
        control.set("Architecture", "all");
        control.set("Maintainer", "Test <test@example.com>");
        control.set("Description", "a sample");
        PackageSpec {
            control,
            entries,
            conffiles: vec![],
            control_files: vec![],
            compression: Compression::Gzip,
            level: 6,
            threads: 1,
            mtime: 1_700_000_000,
        }
    }

    fn file(path: &str, contents: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            source: EntrySource::File(Source::Bytes(contents.as_bytes().to_vec())),
        }
    }

    fn pack(spec: &PackageSpec) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        write_package(spec, &mut out, &mut Cursor::new(Vec::new()), &mut Quiet)?;
        Ok(out)
    }

    #[test]
    fn round_trip_through_the_reader() {
        let long = format!("/usr/share/sample/{}/file", "x".repeat(150));
        let mut spec = spec(vec![
            file("/etc/sample/sample.conf", "a=1\n"),
            file("/usr/bin/sample", "#!/bin/sh\n"),
            file(&long, "deep"),
            Entry {
                path: "/usr/bin/sample-link".into(),
                mode: 0o777,
                source: EntrySource::Symlink("sample".into()),
            },
        ]);
        spec.control_files
            .push(("postinst".into(), 0o755, b"#!/bin/sh\n".to_vec()));
        let bytes = pack(&spec).unwrap();
        let inspection = crate::inspect(&bytes[..]).unwrap();
        let paths: Vec<&str> = inspection
            .files
            .iter()
            .map(|file| file.path.as_str())
            .collect();
        assert_eq!(paths[0], "/");
        assert!(paths.contains(&"/usr/"));
        assert!(paths.contains(&"/usr/share/sample/"));
        assert!(paths.contains(&long.as_str()));
        assert_eq!(
            inspection.conffiles,
            vec!["/etc/sample/sample.conf".to_string()]
        );
        let md5sums = inspection
            .control_files
            .iter()
            .find(|file| file.name == "md5sums")
            .unwrap();
        let md5_text = md5sums.text.as_deref().unwrap();
        assert!(md5_text.contains("  usr/bin/sample\n"));
        assert!(
            !md5_text.contains("etc/sample"),
            "conffiles are not in md5sums"
        );
        assert!(
            inspection
                .files
                .iter()
                .all(|file| file.owner == "root/root" && file.mtime == 1_700_000_000)
        );
        assert!(inspection.control.get("Installed-Size").is_some());
    }

    #[test]
    fn reproducible() {
        let spec = spec(vec![file("/usr/share/a", "x"), file("/usr/share/b", "y")]);
        assert_eq!(pack(&spec).unwrap(), pack(&spec).unwrap());
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in [
            "relative/x",
            "/usr/../../etc/passwd",
            "/",
            "/usr//x",
            "/./x",
        ] {
            let error = pack(&spec(vec![file(path, "x")])).unwrap_err();
            assert!(error.to_string().contains(path), "{path}: {error}");
        }
        let error = pack(&spec(vec![file("/a/b", "x"), file("/a/b", "y")])).unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
        let error = pack(&spec(vec![file("/a", "x"), file("/a/b", "y")])).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    #[test]
    fn installed_size_counts_like_dpkg_gencontrol() {
        let nodes = build_tree(&[
            file("/usr/bin/a", &"x".repeat(1025)),
            file("/usr/bin/b", ""),
        ])
        .unwrap();
        // root, usr, usr/bin = 3 directories; a = 2 KiB; b = 0 KiB.
        assert_eq!(installed_size(&nodes), 5);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_795_770_000), "Fri, 27 Nov 2026 09:00:00 +0000");
        assert_eq!(year_of(1_795_770_000), 2026);
    }
}
