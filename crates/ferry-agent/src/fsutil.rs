//! Durable file writes: write to a temp file, fsync it, rename over the target, fsync the
//! directory — so a crash leaves either the old file or the new one, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::Error;
pub use crate::space::available_bytes;

/// Write `contents` to `path` atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        file.write_all(contents)
            .map_err(|e| Error::io("write", &temp, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| Error::io("rename into place", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Refuse to start writing `need` bytes under `path` when the file system cannot hold them.
pub fn require_space(path: &Path, need: u64) -> Result<(), Error> {
    let Ok(have) = available_bytes(path) else {
        return Ok(()); // cannot tell: let the write itself say
    };
    if have < need {
        return Err(Error::NoSpace {
            path: path.to_path_buf(),
            need,
            have,
        });
    }
    Ok(())
}

/// fsync a directory so a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
