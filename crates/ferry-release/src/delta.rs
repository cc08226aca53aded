//! The delta index: `apps/<app>/deltas/<version>.json`, a signed document written at publish
//! beside a release. For each architecture it names the artifact it is about (so it binds to
//! the signed pointer's sha256), the sha256 of that artifact's *expanded* form (the same .deb
//! with uncompressed members, which is what a patch rebuilds and what the agent installs), and
//! the patches that rebuild it from earlier artifacts of the channel.
//!
//! Unknown fields are accepted (a newer publisher may add some); an agent uses only patches
//! whose `algorithm` it knows and falls back to the full download otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The one patch algorithm this version makes and applies: bsdiff 4 (bzip2-compressed
/// blocks) between the expanded forms (schema 1) of two packages.
pub const PATCH_ALGORITHM: &str = "bsdiff40/expanded-deb-1";

/// A file named by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// sha256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            sha256: crate::sha256_hex(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// One patch: applied to the expanded form of `base`, it yields the target's expanded form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRef {
    /// The version the base artifact belongs to (for people; matching is by hash).
    pub base_version: String,
    /// The base artifact, as the pointer of that version named it.
    pub base: Digest,
    /// The base's expanded form, checked before the patch is applied.
    pub base_expanded: Digest,
    /// How the patch is made ([`PATCH_ALGORITHM`]).
    pub algorithm: String,
    /// The patch file's sha256.
    pub sha256: String,
    /// The patch file's size.
    pub size: u64,
    /// Where it is in the store (`artifacts/patches/<sha256>.bsdiff`).
    pub path: String,
}

/// The deltas of one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDeltas {
    /// The artifact (the pointer's sha256 and size for this architecture).
    pub target: Digest,
    /// Its expanded form: what every patch below rebuilds, and what gets installed.
    pub expanded: Digest,
    /// Patches, smallest first.
    pub patches: Vec<PatchRef>,
}

/// The signed delta index of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaIndex {
    /// Always [`crate::SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The release's version.
    pub version: String,
    /// Architecture → deltas of its artifact.
    pub artifacts: BTreeMap<String, ArtifactDeltas>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

impl DeltaIndex {
    /// The deltas for the artifact with this sha256, whatever its architecture.
    pub fn for_artifact(&self, sha256: &str) -> Option<&ArtifactDeltas> {
        self.artifacts
            .values()
            .find(|deltas| deltas.target.sha256.eq_ignore_ascii_case(sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_finds_its_artifact_and_tolerates_new_fields() {
        let text = r#"{"schema":1,"app":"hello","version":"2.0.0","published_at":"2026-12-01T00:00:00Z",
          "artifacts":{"amd64":{"target":{"sha256":"aa","size":10},"expanded":{"sha256":"bb","size":30},
          "patches":[{"base_version":"1.0.0","base":{"sha256":"cc","size":9},"base_expanded":{"sha256":"dd","size":29},
          "algorithm":"bsdiff40/expanded-deb-1","sha256":"ee","size":3,"path":"artifacts/patches/ee.bsdiff","later":1}]}},
          "added_later":true}"#;
        let index: DeltaIndex = serde_json::from_str(text).unwrap();
        let deltas = index.for_artifact("AA").unwrap();
        assert_eq!(deltas.expanded.size, 30);
        assert_eq!(deltas.patches[0].algorithm, PATCH_ALGORITHM);
        assert!(index.for_artifact("ff").is_none());
    }
}
