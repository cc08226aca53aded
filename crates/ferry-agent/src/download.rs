//! The resumable, verified download of an artifact into the agent's cache: a ranged GET
//! resumes a partial file, the sha256 is computed as bytes stream in, never more than the
//! signed size is taken, free space is checked first, and the file is renamed into place only
//! when the hash matches.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::Digest;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use ferry_store::Store;

use crate::Error;
use crate::journal::Release;
use crate::poll::store_error;

/// Where the cache keeps an artifact.
pub fn artifact_path(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join(format!("{sha256}.deb"))
}

/// Fetch an artifact into the cache: resume a partial file with a ranged GET, hash as it
/// streams, never take more than the signed size, rename into place only when the sha256
/// matches. A mismatch deletes the partial file; a broken connection keeps it for resuming.
pub async fn download(
    store: &Store,
    cache_dir: &Path,
    release: &Release,
) -> Result<PathBuf, Error> {
    let refused = |reason: String| Error::Refused {
        what: format!("artifact {} of {}", release.path, release.version),
        reason,
    };
    if release.sha256.len() != 64 || !release.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(format!(
            "sha256 {:?} is not 64 hex digits",
            release.sha256
        )));
    }
    let final_path = artifact_path(cache_dir, &release.sha256);
    if final_path.is_file() {
        return Ok(final_path);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io("create directory", cache_dir, e))?;
    let part_path = cache_dir.join(format!("{}.deb.part", release.sha256));
    // A partial download of another artifact is stale: the target changed (a newer serial
    // superseded it). It must not keep the disk full for this one.
    remove_stale_parts(cache_dir, &part_path);
    let mut hasher = sha2::Sha256::new();
    let mut have = 0u64;
    if let Ok(mut existing) = std::fs::File::open(&part_path) {
        let length = existing.metadata().map(|m| m.len()).unwrap_or(0);
        if length <= release.size {
            have = std::io::copy(&mut existing, &mut HashWriter(&mut hasher))
                .map_err(|e| Error::io("read", &part_path, e))?;
        }
    }
    if have > release.size {
        have = 0;
        hasher = sha2::Sha256::new();
    }
    // The signed size says what is coming: refuse to start a download that cannot fit.
    crate::fsutil::require_space(cache_dir, release.size - have)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part_path)
        .await
        .map_err(|e| Error::io("open", &part_path, e))?;
    file.set_len(have)
        .await
        .map_err(|e| Error::io("truncate", &part_path, e))?;
    file.seek(std::io::SeekFrom::End(0))
        .await
        .map_err(|e| Error::io("seek", &part_path, e))?;
    if have > 0 {
        tracing::info!(version = %release.version, offset = have, "resuming the download");
    }
    if have < release.size {
        let (total, mut stream) =
            store
                .stream_from(&release.path, have)
                .await
                .map_err(|error| match error {
                    ferry_store::Error::NotFound { .. } => refused(format!("{error}")),
                    other => store_error(other, "artifact"),
                })?;
        if total != release.size {
            drop(file);
            let _ = std::fs::remove_file(&part_path);
            return Err(refused(format!(
                "the store holds {total} bytes but the signed release says {}",
                release.size
            )));
        }
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| store_error(error, "artifact"))?;
            if have + chunk.len() as u64 > release.size {
                drop(file);
                let _ = std::fs::remove_file(&part_path);
                return Err(refused(format!(
                    "the store sent more than the signed size of {} bytes",
                    release.size
                )));
            }
            hasher.update(&chunk);
            if let Err(cause) = file.write_all(&chunk).await {
                let error = Error::io("write", cache_dir, cause);
                if matches!(error, Error::NoSpace { .. }) {
                    // The partial file is what fills the disk; resuming it needs space anyway.
                    drop(file);
                    let _ = std::fs::remove_file(&part_path);
                    return Err(Error::NoSpace {
                        path: cache_dir.to_path_buf(),
                        need: release.size,
                        have: crate::fsutil::available_bytes(cache_dir).unwrap_or(0),
                    });
                }
                return Err(error);
            }
            have += chunk.len() as u64;
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io("write", &part_path, e))?;
    file.sync_all()
        .await
        .map_err(|e| Error::io("fsync", &part_path, e))?;
    drop(file);
    if have < release.size {
        return Err(Error::Store {
            message: format!(
                "download of {} stopped at {have} of {} bytes; will resume",
                release.path, release.size
            ),
        });
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&release.sha256) {
        let _ = std::fs::remove_file(&part_path);
        return Err(refused(format!(
            "sha256 mismatch: the signed release says {}, the download is {actual}",
            release.sha256
        )));
    }
    std::fs::rename(&part_path, &final_path)
        .map_err(|e| Error::io("rename into place", &final_path, e))?;
    crate::fsutil::sync_dir(cache_dir)?;
    Ok(final_path)
}

/// Remove every `*.deb.part` in the cache except `keep`.
fn remove_stale_parts(cache_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && path.to_string_lossy().ends_with(".deb.part") {
            tracing::info!(file = %path.display(), "removing a stale partial download");
            let _ = std::fs::remove_file(&path);
        }
    }
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.update(buffer);
        Ok(buffer.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn local_store(dir: &Path) -> Store {
        std::fs::create_dir_all(dir).unwrap();
        Store::open(
            &format!("file://{}", dir.display()),
            &ferry_store::StoreOptions::default(),
        )
        .unwrap()
    }

    fn release_of(bytes: &[u8]) -> Release {
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        Release {
            version: "1.0".into(),
            serial: 1,
            path: format!("artifacts/{sha256}.deb"),
            sha256,
            size: bytes.len() as u64,
        }
    }

    #[tokio::test]
    async fn download_resumes_a_partial_file_with_a_ranged_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let artifact: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let release = release_of(&artifact);
        // The store's first half is garbage: only a download that resumes at the partial
        // file's end (a ranged read) ends with the right bytes.
        let mut stored = artifact.clone();
        stored[..100_000].fill(0xAA);
        store
            .put_overwrite(&release.path, Bytes::from(stored))
            .await
            .unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join(format!("{}.deb.part", release.sha256)),
            &artifact[..100_000],
        )
        .unwrap();

        let path = download(&store, &cache, &release).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), artifact);
        assert!(!cache.join(format!("{}.deb.part", release.sha256)).exists());
    }

    #[tokio::test]
    async fn download_refuses_wrong_size_and_wrong_hash_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let cache = dir.path().join("cache");
        let artifact = vec![7u8; 50_000];
        let release = release_of(&artifact);

        store
            .put_overwrite(&release.path, Bytes::from(artifact[..10_000].to_vec()))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(
            error.to_string().contains("signed release says 50000"),
            "{error}"
        );

        let mut tampered = artifact.clone();
        tampered[25_000] = 8;
        store
            .put_overwrite(&release.path, Bytes::from(tampered))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(error.to_string().contains("sha256 mismatch"), "{error}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "nothing left in the cache"
        );

        let error = download(
            &store,
            &cache,
            &Release {
                sha256: "../../etc".into(),
                ..release.clone()
            },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }

    #[tokio::test]
    async fn a_longer_object_than_signed_is_cut_off_not_read_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let cache = dir.path().join("cache");
        let artifact = vec![1u8; 10_000];
        let release = release_of(&artifact);
        let mut longer = artifact.clone();
        longer.extend(std::iter::repeat_n(2u8, 1_000_000));
        store
            .put_overwrite(&release.path, Bytes::from(longer))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error}");
    }
}
