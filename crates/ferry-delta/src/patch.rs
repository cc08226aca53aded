//! bsdiff 4 patches between expanded forms.

use std::io::Write;

use crate::Error;

/// A patch that turns `base` into `target` (both expanded forms).
pub fn diff(base: &[u8], target: &[u8]) -> Result<Vec<u8>, Error> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(base, target)
        .compare(std::io::Cursor::new(&mut patch))
        .map_err(|error| Error::Patch(format!("bsdiff failed: {error}")))?;
    Ok(patch)
}

/// Apply `patch` to `base`, writing the result to `out`; refuses a patch that would write
/// more than `limit` bytes. Returns the number of bytes written. Memory: `base` and the
/// patch, plus qbsdiff's small buffers — the result streams to `out`.
pub fn apply(base: &[u8], patch: &[u8], limit: u64, out: impl Write) -> Result<u64, Error> {
    let patcher = qbsdiff::Bspatch::new(patch)
        .map_err(|error| Error::Patch(format!("the patch is not a bsdiff 4 patch: {error}")))?;
    if patcher.hint_target_size() > limit {
        return Err(Error::Patch(format!(
            "the patch would write {} bytes, more than the {limit} signed",
            patcher.hint_target_size()
        )));
    }
    patcher
        .apply(base, out)
        .map_err(|error| Error::Patch(format!("the patch does not apply: {error}")))
}
