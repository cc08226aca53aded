//! Fetching a release through a patch: when the store has a signed delta index for the
//! release and this host's cache holds one of its bases, download the patch (a few percent
//! of the package), rebuild the package's expanded form and check it against the signed
//! sha256 — then it is installed like a downloaded package. Anything that goes wrong (no
//! index, no cached base, a corrupt patch, a hash mismatch) is not the release's fault: the
//! full artifact is downloaded instead and the reason reported.

use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_release::{DeltaIndex, DownloadRecord, MAX_DOCUMENT_BYTES, PATCH_ALGORITHM, TrustedKeys};
use ferry_store::Store;
use sha2::Digest;

use crate::Error;
use crate::download::{artifact_path, download};
use crate::journal::Release;

/// The largest expanded form rebuilt from a patch (the base is held in memory).
const MAX_PATCHED_BYTES: u64 = ferry_delta::MAX_EXPANDED_BYTES;

/// Fetch `release` into the cache: through a patch when one applies, else in full. Returns
/// the cached file and how it was fetched.
pub async fn fetch(
    store: &Store,
    trusted: &TrustedKeys,
    cache_dir: &Path,
    app: &str,
    release: &Release,
) -> Result<(PathBuf, DownloadRecord), Error> {
    let record = |via: &str, bytes: u64, note: Option<String>| DownloadRecord {
        version: release.version.clone(),
        via: via.to_owned(),
        bytes,
        full_bytes: release.size,
        note,
    };
    let final_path = artifact_path(cache_dir, &release.sha256);
    if final_path.is_file() {
        return Ok((final_path, record("cached", 0, None)));
    }
    let note = match patched(store, trusted, cache_dir, app, release).await {
        Ok(Patched::Built { path, bytes }) => return Ok((path, record("patch", bytes, None))),
        Ok(Patched::Unavailable(reason)) => reason,
        Err(reason) => {
            tracing::warn!(version = %release.version, "the patch did not work, downloading the whole package: {reason}");
            Some(format!("patch failed, took the full download: {reason}"))
        }
    };
    let path = download(store, cache_dir, release).await?;
    Ok((path, record("full", release.size, note)))
}

enum Patched {
    /// The expanded form is in the cache under the artifact's name.
    Built { path: PathBuf, bytes: u64 },
    /// No patch to try (with a note when there were patches, but none for this host).
    Unavailable(Option<String>),
}

async fn patched(
    store: &Store,
    trusted: &TrustedKeys,
    cache_dir: &Path,
    app: &str,
    release: &Release,
) -> Result<Patched, String> {
    let index_path = ferry_release::layout::deltas(app, &release.version);
    let object = match store.get(&index_path, MAX_DOCUMENT_BYTES as u64).await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(Patched::Unavailable(None)),
        Err(error) => return Err(format!("cannot read {index_path}: {error}")),
    };
    let what = store.location(&index_path);
    let (payload, _) = ferry_release::verify_envelope(&object.bytes, trusted, &what)
        .map_err(|error| format!("{error}"))?;
    let index: DeltaIndex = serde_json::from_str(&payload)
        .map_err(|error| format!("{what} is not a delta index: {error}"))?;
    if index.app != app || index.version != release.version {
        return Err(format!(
            "{what} is the index of {} {}, not of {app} {}",
            index.app, index.version, release.version
        ));
    }
    let Some(deltas) = index.for_artifact(&release.sha256) else {
        return Ok(Patched::Unavailable(None));
    };
    if deltas.target.size != release.size || deltas.expanded.size > MAX_PATCHED_BYTES {
        return Ok(Patched::Unavailable(None));
    }
    let usable = deltas.patches.iter().find(|patch| {
        patch.algorithm == PATCH_ALGORITHM
            && patch.size < release.size
            && patch.base_expanded.size <= MAX_PATCHED_BYTES
            && artifact_path(cache_dir, &patch.base.sha256).is_file()
    });
    let Some(patch) = usable else {
        let bases: Vec<&str> = deltas
            .patches
            .iter()
            .map(|p| p.base_version.as_str())
            .collect();
        return Ok(Patched::Unavailable(Some(format!(
            "no cached base for the published patches (from {})",
            bases.join(", ")
        ))));
    };
    crate::fsutil::require_space(cache_dir, patch.size + deltas.expanded.size)
        .map_err(|error| error.to_string())?;
    let bytes = store
        .get(&patch.path, patch.size)
        .await
        .map_err(|error| format!("cannot download {}: {error}", patch.path))?
        .ok_or_else(|| format!("{} is not in the store", patch.path))?
        .bytes;
    if ferry_release::sha256_hex(&bytes) != patch.sha256 {
        return Err(format!("{} does not have the signed sha256", patch.path));
    }
    let base_path = artifact_path(cache_dir, &patch.base.sha256);
    let expected = deltas.expanded.clone();
    let base_expanded = patch.base_expanded.clone();
    let final_path = artifact_path(cache_dir, &release.sha256);
    let patched_path = cache_dir.join(format!("{}.deb.patched", release.sha256));
    let downloaded = bytes.len() as u64 + object.bytes.len() as u64;
    let built = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let base = ferry_release::read_local_file(&base_path, MAX_PATCHED_BYTES)
            .map_err(|error| format!("cannot read the cached base: {error}"))?;
        let base = ferry_delta::expand(&base, MAX_PATCHED_BYTES).map_err(|error| error.to_string())?;
        if base.len() as u64 != base_expanded.size
            || ferry_release::sha256_hex(&base) != base_expanded.sha256
        {
            return Err("the cached base is not the one the patch was made from".into());
        }
        let file = std::fs::File::create(&patched_path)
            .map_err(|error| format!("cannot create {}: {error}", patched_path.display()))?;
        let mut out = HashingFile {
            file: std::io::BufWriter::new(file),
            hasher: sha2::Sha256::new(),
        };
        let result = ferry_delta::apply(&base, &bytes, expected.size, &mut out)
            .map_err(|error| error.to_string())
            .and_then(|written| {
                out.file
                    .flush()
                    .and_then(|()| out.file.get_ref().sync_all())
                    .map_err(|error| format!("cannot write {}: {error}", patched_path.display()))?;
                let sha256 = hex::encode(out.hasher.clone().finalize());
                if written != expected.size || sha256 != expected.sha256 {
                    return Err(format!(
                        "the rebuilt package has sha256 {sha256} ({written} bytes); the signed index says {} ({} bytes)",
                        expected.sha256, expected.size
                    ));
                }
                std::fs::rename(&patched_path, &final_path)
                    .map_err(|error| format!("cannot move the rebuilt package into place: {error}"))
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&patched_path);
        }
        result
    })
    .await
    .map_err(|error| format!("applying the patch panicked: {error}"))?;
    built?;
    crate::fsutil::sync_dir(cache_dir).map_err(|error| error.to_string())?;
    tracing::info!(version = %release.version, from = %patch.base_version, bytes = downloaded, full = release.size, "package rebuilt from a patch and verified");
    Ok(Patched::Built {
        path: artifact_path(cache_dir, &release.sha256),
        bytes: downloaded,
    })
}

struct HashingFile {
    file: std::io::BufWriter<std::fs::File>,
    hasher: sha2::Sha256,
}

impl Write for HashingFile {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
