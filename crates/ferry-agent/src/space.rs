//! Free space on a file system, for refusing to start a write that cannot fit and for saying
//! how much room there was when one did not.

use std::path::Path;

/// Bytes an unprivileged writer may still put on the file system holding `path` (or its
/// nearest existing parent).
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let text = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `text` is a valid C string and `stats` a writable statvfs for the call to fill.
    let result = unsafe { libc::statvfs(text.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let stats = unsafe { stats.assume_init() };
    // fsblkcnt_t and c_ulong are u64 here but narrower on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}
