//! Checking a channel end to end, as `ferry verify` and a careful operator would: the
//! pointer's signature and fields, the release it names, and every artifact re-hashed and
//! checked against its `.minisig`.

use std::io::{Seek, Write};

use ferry_release::{
    ArtifactRef, ChannelPointer, KeyId, MAX_DOCUMENT_BYTES, PointerCheck, Release, TrustedKeys,
    verify_artifact_signature, verify_pointer, verify_release,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::Error;
use crate::store::Store;

/// What a successful verification found.
#[derive(Debug, Clone)]
pub struct ChannelReport {
    /// The verified pointer.
    pub pointer: ChannelPointer,
    /// The key that signed the pointer.
    pub pointer_key: KeyId,
    /// The key that signed the release.
    pub release_key: KeyId,
    /// The artifacts re-hashed, by architecture.
    pub artifacts: Vec<(String, ArtifactRef)>,
}

/// Verify a channel completely. `highest_seen` is the highest serial this verifier accepted
/// before (a lower one is refused).
pub async fn verify_channel(
    store: &Store,
    trusted: &TrustedKeys,
    app: &str,
    channel: &str,
    highest_seen: Option<u64>,
    now: OffsetDateTime,
) -> Result<ChannelReport, Error> {
    if trusted.is_empty() {
        return Err(ferry_release::Error::NoTrustedKeys.into());
    }
    let pointer_path = ChannelPointer::path(app, channel);
    let Some(object) = store.get(&pointer_path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Err(Error::NotFound {
            what: format!("channel {app}/{channel}"),
            location: store.location(&pointer_path),
            hint: ": nothing published on this channel yet, or a wrong --store/--app/--channel"
                .into(),
        });
    };
    let check = PointerCheck {
        app,
        channel,
        highest_seen,
        now,
    };
    let verified = verify_pointer(&object.bytes, trusted, &check)?;
    let pointer = verified.pointer;

    let release_path = Release::path(app, &pointer.release.version);
    let Some(release_object) = store.get(&release_path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Err(Error::NotFound {
            what: format!("release {app} {}", pointer.release.version),
            location: store.location(&release_path),
            hint: ": the pointer names a release that is not in the store".into(),
        });
    };
    let release = verify_release(
        &release_object.bytes,
        trusted,
        app,
        &pointer.release.version,
    )?;
    if release.release.reference() != pointer.release {
        return Err(Error::ArtifactMismatch {
            location: store.location(&release_path),
            message: "the pointer and the release document name different artifacts".into(),
        });
    }

    let mut artifacts = Vec::new();
    for (architecture, artifact) in &pointer.release.artifacts {
        check_artifact(store, trusted, artifact).await?;
        artifacts.push((architecture.clone(), artifact.clone()));
    }
    Ok(ChannelReport {
        pointer,
        pointer_key: verified.key_id,
        release_key: release.key_id,
        artifacts,
    })
}

/// Download an artifact into a temporary file while hashing it, compare size and sha256 with
/// the signed reference, then check its `.minisig`.
async fn check_artifact(
    store: &Store,
    trusted: &TrustedKeys,
    artifact: &ArtifactRef,
) -> Result<(), Error> {
    let location = store.location(&artifact.path);
    let expected_path = ferry_release::layout::artifact(&artifact.sha256);
    if artifact.path != expected_path {
        return Err(Error::ArtifactMismatch {
            location,
            message: format!("its path is not the content address {expected_path}"),
        });
    }
    let temp_error = |source| Error::Io {
        operation: "write temporary file for",
        path: artifact.path.clone().into(),
        source,
    };
    let mut temp = tempfile::tempfile().map_err(temp_error)?;
    let (size, mut stream) = store.stream_from(&artifact.path, 0).await?;
    if size != artifact.size {
        return Err(Error::ArtifactMismatch {
            location,
            message: format!("it is {size} bytes, the release says {}", artifact.size),
        });
    }
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if received > artifact.size {
            return Err(Error::ArtifactMismatch {
                location,
                message: "it is longer than the release says".into(),
            });
        }
        hasher.update(&chunk);
        temp.write_all(&chunk).map_err(temp_error)?;
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != artifact.sha256 || received != artifact.size {
        return Err(Error::ArtifactMismatch {
            location,
            message: format!(
                "its sha256 is {sha256} ({received} bytes), the signed release says {}",
                artifact.sha256
            ),
        });
    }
    let signature_path = format!("{}.minisig", artifact.path);
    let Some(signature) = store.get(&signature_path, 64 * 1024).await? else {
        return Err(Error::NotFound {
            what: "artifact signature".into(),
            location: store.location(&signature_path),
            hint: String::new(),
        });
    };
    let signature = String::from_utf8_lossy(&signature.bytes).into_owned();
    temp.rewind().map_err(temp_error)?;
    verify_artifact_signature(&mut temp, &signature, trusted, &location)?;
    Ok(())
}
