//! Making a release's patches at publish.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use ferry_release::{
    ArtifactDeltas, ArtifactRef, DeltaIndex, Digest, MAX_DOCUMENT_BYTES, PATCH_ALGORITHM, PatchRef,
    SCHEMA, SigningKey, layout, sha256_hex, sign_document,
};
use ferry_store::Store;

use crate::{Error, diff, expand};

/// How many patches to make, and for what.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Patches from this many of the channel's most recent earlier artifacts (per
    /// architecture); 0 makes none.
    pub count: usize,
    /// Packages whose expanded form is larger get no patches.
    pub max_expanded: u64,
}

impl Default for DeltaOptions {
    fn default() -> DeltaOptions {
        DeltaOptions {
            count: 3,
            max_expanded: crate::MAX_EXPANDED_BYTES,
        }
    }
}

/// Make and store the patches of a release and its signed delta index: for each artifact
/// (architecture, local file, reference), patches from up to `options.count` earlier
/// artifacts of that architecture in the channel's history, newest first. Patches go to
/// `artifacts/patches/<sha256>.bsdiff` (create-only), the index to
/// `apps/<app>/deltas/<version>.json` (create-only: an index already there is kept). A
/// patch no smaller than the full artifact is dropped. Returns the index, or `None` when
/// there was nothing to patch from.
pub async fn publish_deltas(
    store: &Store,
    key: &SigningKey,
    app: &str,
    channel: &str,
    version: &str,
    artifacts: &[(String, PathBuf, ArtifactRef)],
    options: &DeltaOptions,
) -> Result<Option<DeltaIndex>, Error> {
    if options.count == 0 {
        return Ok(None);
    }
    let index_path = layout::deltas(app, version);
    if let Some(existing) = store.get(&index_path, MAX_DOCUMENT_BYTES as u64).await? {
        let envelope = ferry_release::Envelope::from_bytes(&existing.bytes, &index_path)?;
        if let Ok(index) = serde_json::from_str::<DeltaIndex>(&envelope.payload) {
            return Ok(Some(index));
        }
    }
    // Enough history to find `count` distinct earlier artifacts even with a few rollbacks
    // and pauses in between, without reading the whole channel at every publish.
    let history = ferry_store::history(store, app, channel, Some(options.count * 8)).await?;
    let mut by_architecture: BTreeMap<String, ArtifactDeltas> = BTreeMap::new();
    for (architecture, file, target) in artifacts {
        // Earlier artifacts of this architecture, newest first, each once.
        let mut bases: Vec<(String, ArtifactRef)> = Vec::new();
        for entry in history.iter().rev() {
            let Some(base) = entry.pointer.release.artifacts.get(architecture) else {
                continue;
            };
            if base.sha256 == target.sha256
                || bases.iter().any(|(_, seen)| seen.sha256 == base.sha256)
            {
                continue;
            }
            bases.push((entry.version.clone(), base.clone()));
            if bases.len() == options.count {
                break;
            }
        }
        if bases.is_empty() {
            continue;
        }
        let target_bytes = std::fs::read(file)
            .map_err(|error| Error::Patch(format!("cannot read {}: {error}", file.display())))?;
        let target_expanded = match expand(&target_bytes, options.max_expanded) {
            Ok(expanded) => expanded,
            Err(Error::TooLarge { limit }) => {
                tracing::info!(
                    architecture,
                    limit,
                    "package too large for deltas; agents download it whole"
                );
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut patches = Vec::new();
        for (base_version, base) in bases {
            match make_patch(
                store,
                &base_version,
                &base,
                &target_expanded,
                target.size,
                options,
            )
            .await
            {
                Ok(Some(patch)) => patches.push(patch),
                Ok(None) => {}
                // A base that is gone or unreadable only costs its patch.
                Err(error) => {
                    tracing::warn!(base = %base_version, "no patch from {base_version}: {error}")
                }
            }
        }
        if patches.is_empty() {
            continue;
        }
        patches.sort_by_key(|patch| patch.size);
        by_architecture.insert(
            architecture.clone(),
            ArtifactDeltas {
                target: Digest {
                    sha256: target.sha256.clone(),
                    size: target.size,
                },
                expanded: Digest::of(&target_expanded),
                patches,
            },
        );
    }
    if by_architecture.is_empty() {
        return Ok(None);
    }
    let index = DeltaIndex {
        schema: SCHEMA,
        app: app.to_owned(),
        version: version.to_owned(),
        artifacts: by_architecture,
        published_at: ferry_release::now_utc(),
    };
    let envelope = sign_document(key, &index, &format!("ferry deltas {app} {version}"))?;
    store
        .put_create(&index_path, Bytes::from(envelope.to_bytes()))
        .await?;
    Ok(Some(index))
}

/// The delta index of `app` `version` as stored (signature not checked: for display).
pub async fn read_index(
    store: &Store,
    app: &str,
    version: &str,
) -> Result<Option<DeltaIndex>, Error> {
    let path = layout::deltas(app, version);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Ok(None);
    };
    let envelope = ferry_release::Envelope::from_bytes(&object.bytes, &path)?;
    Ok(serde_json::from_str(&envelope.payload).ok())
}

/// "from 1.0.0 5.7 KB (1.3 %)" for each patch of an index, for listings.
pub fn describe_patches(index: &DeltaIndex) -> Vec<String> {
    let mut lines = Vec::new();
    for (architecture, artifact) in &index.artifacts {
        for patch in &artifact.patches {
            lines.push(format!(
                "{architecture} from {} {:.1} KB ({:.1} %)",
                patch.base_version,
                patch.size as f64 / 1000.0,
                100.0 * patch.size as f64 / artifact.target.size.max(1) as f64
            ));
        }
    }
    lines
}

/// One patch from `base` to the target's expanded form, stored; `None` when it would be no
/// smaller than the full artifact.
async fn make_patch(
    store: &Store,
    base_version: &str,
    base: &ArtifactRef,
    target_expanded: &[u8],
    target_size: u64,
    options: &DeltaOptions,
) -> Result<Option<PatchRef>, Error> {
    let Some(object) = store.get(&base.path, base.size).await? else {
        return Err(Error::Patch(format!("{} is not in the store", base.path)));
    };
    if sha256_hex(&object.bytes) != base.sha256 {
        return Err(Error::Patch(format!(
            "{} does not have the sha256 its release names",
            base.path
        )));
    }
    let base_expanded = expand(&object.bytes, options.max_expanded)?;
    let patch = diff(&base_expanded, target_expanded)?;
    if patch.len() as u64 >= target_size {
        return Ok(None);
    }
    let sha256 = sha256_hex(&patch);
    let path = layout::patch(&sha256);
    let size = patch.len() as u64;
    store.put_create(&path, Bytes::from(patch)).await?;
    Ok(Some(PatchRef {
        base_version: base_version.to_owned(),
        base: Digest {
            sha256: base.sha256.clone(),
            size: base.size,
        },
        base_expanded: Digest::of(&base_expanded),
        algorithm: PATCH_ALGORITHM.to_owned(),
        sha256,
        size,
        path,
    }))
}
