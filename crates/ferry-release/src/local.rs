//! The one way ferry reads a local file it was pointed at (keys, trust lists, configs,
//! bundle files, secrets): only regular files, never more than a cap, and never trusting the
//! size the file system reports. `/dev/zero` reports 0 bytes and never ends; a FIFO reports 0
//! and blocks an open for reading until a writer comes — both are refused here at once.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Read the whole of `path`, refusing anything that is not a regular file or is longer than
/// `limit` bytes.
pub fn read_local_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever. It changes
    // nothing for a regular file. O_NOCTTY: a terminal named by mistake is not adopted.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // Judge the opened file, not the path: it cannot be swapped between the check and the read.
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo_like() {
            "a FIFO or socket"
        } else {
            "a device or other special file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than the {limit}-byte limit for this kind of file"),
        ));
    }
    Ok(bytes)
}

/// [`read_local_file`] for text: the bytes must be UTF-8.
pub fn read_local_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_local_file(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text".to_owned(),
        )
    })
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo() || self.is_socket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_and_a_fifo_and_a_directory_are_refused_at_once() {
        let error = read_local_file(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(error.to_string().contains("special file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let error = read_local_file(&fifo, 1024).unwrap_err();
        assert!(error.to_string().contains("FIFO"), "{error}");
        let error = read_local_file(dir.path(), 1024).unwrap_err();
        assert!(error.to_string().contains("directory"), "{error}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read_local_file(&path, 100).unwrap().len(), 100);
        let error = read_local_file(&path, 99).unwrap_err();
        assert!(error.to_string().contains("99-byte limit"), "{error}");
        assert!(read_local_text(&path, 100).is_ok());
    }
}
