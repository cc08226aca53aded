//! The documents ferry keeps in a store: a release (one version, one artifact per
//! architecture) and a channel pointer (which release a channel runs now, with a serial that
//! only grows). Both are JSON payloads that travel inside a signed [`crate::Envelope`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The schema number written into every document; readers refuse other numbers.
pub const SCHEMA: u32 = 1;

/// One artifact (a .deb) as the documents name it: content-addressed by sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Path inside the store, `artifacts/<sha256>.deb`.
    pub path: String,
}

impl ArtifactRef {
    /// The reference for a file with this hash and size, at its content-addressed path.
    pub fn new(sha256: &str, size: u64) -> ArtifactRef {
        ArtifactRef {
            sha256: sha256.to_owned(),
            size,
            path: crate::layout::artifact(sha256),
        }
    }
}

/// The release a pointer names: its version and its artifact per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    /// The package version, e.g. `1.4.2-1`.
    pub version: String,
    /// Debian architecture (`amd64`, `arm64`, `all`) → artifact.
    pub artifacts: BTreeMap<String, ArtifactRef>,
}

/// One step of a staged rollout: `percent` of hosts may update `after_s` seconds after
/// `published_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Share of hosts, 0..=100.
    pub percent: u8,
    /// Seconds after publication when this wave opens.
    pub after_s: u64,
}

/// The rollout plan of a pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The waves, in order.
    pub waves: Vec<Wave>,
}

impl Default for Rollout {
    /// One wave: every host, at once.
    fn default() -> Rollout {
        Rollout {
            waves: vec![Wave {
                percent: 100,
                after_s: 0,
            }],
        }
    }
}

/// A signed release document: `apps/<app>/releases/<version>.json`. Immutable once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The app (the channel namespace in the store).
    pub app: String,
    /// The Debian package name inside the artifacts.
    pub package: String,
    /// The package version.
    pub version: String,
    /// Architecture → artifact.
    pub artifacts: BTreeMap<String, ArtifactRef>,
    /// Free-form notes from the publisher.
    #[serde(default)]
    pub notes: String,
    /// When it was published.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// Who published it, from which commit, with which ferry (signed with the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Where a release came from, as its publisher recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Provenance {
    /// The signing key's id.
    pub key_id: String,
    /// `user@host` that ran the publish.
    pub by: String,
    /// The git checkout it was published from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitProvenance>,
    /// The ferry version that published it.
    pub ferry_version: String,
}

/// The git state of a release's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GitProvenance {
    /// The commit checked out (full hash).
    pub commit: String,
    /// Whether the tree had changes not in that commit.
    pub dirty: bool,
    /// The branch checked out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag naming the commit exactly, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Release {
    /// The reference a pointer embeds for this release.
    pub fn reference(&self) -> ReleaseRef {
        ReleaseRef {
            version: self.version.clone(),
            artifacts: self.artifacts.clone(),
        }
    }

    /// The store path of this release document, relative to the store root.
    pub fn path(app: &str, version: &str) -> String {
        crate::layout::release(app, version)
    }
}

/// The payload of a channel pointer: `apps/<app>/channels/<channel>.json`, the only object
/// agents poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPointer {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The channel, e.g. `stable`.
    pub channel: String,
    /// Grows by at least one with every new pointer state.
    pub serial: u64,
    /// The release this channel runs.
    pub release: ReleaseRef,
    /// How fast hosts may move to it.
    #[serde(default)]
    pub rollout: Rollout,
    /// When true, agents take no new update from this pointer.
    #[serde(default)]
    pub paused: bool,
    /// When true (`ferry publish --urgent`, a security fix), agents install it even outside
    /// their update windows. Written only when set, so other pointers read as before; an
    /// agent older than this field refuses an urgent pointer (unknown field), never
    /// installs it silently.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// When this pointer state was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// After this moment agents refuse the pointer (off when `null`).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
}

impl ChannelPointer {
    /// The store path of a channel's pointer.
    pub fn path(app: &str, channel: &str) -> String {
        crate::layout::channel(app, channel)
    }

    /// The store path of one history entry of a channel.
    pub fn history_path(app: &str, channel: &str, serial: u64) -> String {
        crate::layout::channel_history(app, channel, serial)
    }

    /// The store folder holding a channel's history.
    pub fn history_prefix(app: &str, channel: &str) -> String {
        crate::layout::channel_history_prefix(app, channel)
    }

    /// True when `expires_at` is set and not after `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

/// A moment as RFC 3339 text (`2026-11-27T05:00:00Z`), the form documents use.
pub fn format_time(moment: OffsetDateTime) -> String {
    moment
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| moment.unix_timestamp().to_string())
}

/// The current time in UTC, truncated to whole seconds (documents carry seconds only).
pub fn now_utc() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_payload_matches_the_design_document_shape() {
        let text = r#"{"schema":1,"app":"hello","channel":"stable","serial":42,
 "release":{"version":"1.4.2-1","artifacts":{"amd64":{"sha256":"ab","size":123,"path":"artifacts/ab.deb"}}},
 "rollout":{"waves":[{"percent":10,"after_s":0},{"percent":100,"after_s":600}]},
 "paused":false,"published_at":"2026-11-27T05:00:00Z","expires_at":null}"#;
        let pointer: ChannelPointer = serde_json::from_str(text).unwrap();
        assert_eq!(pointer.serial, 42);
        assert_eq!(pointer.release.artifacts["amd64"].size, 123);
        assert_eq!(pointer.rollout.waves.len(), 2);
        assert!(pointer.expires_at.is_none());
        let back = serde_json::to_string(&pointer).unwrap();
        assert!(
            back.contains(r#""published_at":"2026-11-27T05:00:00Z""#),
            "{back}"
        );
        assert!(back.contains(r#""expires_at":null"#), "{back}");
    }

    #[test]
    fn unknown_fields_in_a_pointer_are_refused() {
        let text = r#"{"schema":1,"app":"a","channel":"c","serial":1,"release":{"version":"1","artifacts":{}},
            "published_at":"2026-11-27T05:00:00Z","expires_at":null,"sneaky":true}"#;
        assert!(serde_json::from_str::<ChannelPointer>(text).is_err());
    }
}
