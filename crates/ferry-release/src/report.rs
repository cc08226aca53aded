//! The host report, one wire type for its writer and its readers: agents write it to
//! `apps/<app>/hosts/<host-id>.json` and print it for `ferry agent status`; `ferry status`,
//! `watch` and the dashboard read it. Readers are lenient — unknown fields are ignored and
//! missing optional ones default — so an older or newer agent's report still shows up.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The schema number agents write.
pub const HOST_REPORT_SCHEMA: u32 = 1;

/// How a host's last update ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// Nothing installed yet.
    #[default]
    New,
    /// The committed release runs.
    Ok,
    /// An update is in flight.
    Updating,
    /// A release failed and the committed one was restored.
    RolledBack,
    /// A pointer or release was refused; nothing changed.
    Refused,
    /// A "try again later" fault (store, disk, missing blob); the agent retries by itself.
    Retrying,
    /// A release failed and so did the rollback: the service needs attention.
    Failed,
    /// A state this reader does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

impl HostState {
    /// The state as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::New => "new",
            HostState::Ok => "ok",
            HostState::Updating => "updating",
            HostState::RolledBack => "rolled-back",
            HostState::Refused => "refused",
            HostState::Retrying => "retrying",
            HostState::Failed => "failed",
            HostState::Unknown => "unknown",
        }
    }

    /// Whether the service is running a release that passed its checks (ok, or back on one).
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            HostState::Ok | HostState::RolledBack | HostState::Refused | HostState::Retrying
        )
    }
}

impl From<&str> for HostState {
    /// The state a report's text names; a state this version does not know is `Unknown`.
    fn from(text: &str) -> HostState {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .unwrap_or(HostState::Unknown)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A release a host tried and marked bad: not tried again until a higher serial names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BadRelease {
    /// The version.
    pub version: String,
    /// The artifact's sha256.
    #[serde(default)]
    pub sha256: String,
    /// The serial it was tried with.
    #[serde(default)]
    pub serial: u64,
    /// Why it failed.
    #[serde(default)]
    pub reason: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
}

/// How the last release a host took was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DownloadRecord {
    /// The release.
    pub version: String,
    /// `patch` (rebuilt from a cached release), `full`, or `cached` (nothing fetched).
    pub via: String,
    /// Bytes fetched from the store for it.
    pub bytes: u64,
    /// The size of the full artifact.
    pub full_bytes: u64,
    /// Why a patch was not used, when one was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One host's status report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostReport {
    /// Always [`HOST_REPORT_SCHEMA`] when written by this version.
    #[serde(default = "default_schema")]
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The channel the host follows.
    pub channel: String,
    /// The host.
    pub host_id: String,
    /// The committed version.
    #[serde(default)]
    pub version: Option<String>,
    /// The serial of the committed release.
    #[serde(default)]
    pub serial: Option<u64>,
    /// The highest serial the host accepted.
    #[serde(default)]
    pub highest_serial: u64,
    /// How the last update ended.
    #[serde(default)]
    pub state: HostState,
    /// The agent's journal step.
    #[serde(default)]
    pub step: String,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Releases marked bad on this host.
    #[serde(default)]
    pub bad: Vec<BadRelease>,
    /// When the report was written (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The last commit or rollback (RFC 3339).
    #[serde(default)]
    pub last_change_at: Option<String>,
    /// The version of the agent that wrote it.
    #[serde(default)]
    pub agent_version: String,
    /// The agent rewrites this report at least this often (seconds): a report older than
    /// that says the host (or its agent) is gone. Absent: no heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u64>,
    /// How the last release was fetched (absent in reports of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_download: Option<DownloadRecord>,
    /// Why a published release is not installed yet, when it waits (its rollout wave, the
    /// update window, the application's update lock, the next boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Set while an operator holds updates of this app on this host (`ferry agent hold`):
    /// who, since when, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

fn default_schema() -> u32 {
    HOST_REPORT_SCHEMA
}

impl HostReport {
    /// Parse a stored report.
    pub fn parse(bytes: &[u8]) -> Result<HostReport, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// When the report was written, parsed.
    pub fn updated_at_time(&self) -> Option<OffsetDateTime> {
        parse_time(self.updated_at.as_deref()?)
    }

    /// True when this host marked `version` bad.
    pub fn marked_bad(&self, version: &str) -> bool {
        self.bad.iter().any(|entry| entry.version == version)
    }
}

/// The schema number of report shards.
pub const HOST_SHARD_SCHEMA: u32 = 1;

/// The most shards an app's reports can be spread over.
pub const MAX_REPORT_SHARDS: u32 = 65_536;

/// Many hosts' reports in one object (`apps/<app>/hosts-shards/<of>/<shard>.json`), for fleets
/// too large to read one object per host: agents with `report-shards` read-modify-write their
/// shard with compare-and-swap, and `ferry status` reads a few hundred objects instead of
/// 100,000 (docs/scale.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostShard {
    /// [`HOST_SHARD_SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// This shard's index, below `of`.
    pub shard: u32,
    /// How many shards the app's reports are spread over.
    pub of: u32,
    /// The reports, by host id.
    #[serde(default)]
    pub reports: std::collections::BTreeMap<String, HostReport>,
}

impl HostShard {
    /// An empty shard.
    pub fn new(app: &str, shard: u32, of: u32) -> HostShard {
        HostShard {
            schema: HOST_SHARD_SCHEMA,
            app: app.to_owned(),
            shard,
            of,
            reports: Default::default(),
        }
    }

    /// Parse a stored shard.
    pub fn parse(bytes: &[u8]) -> Result<HostShard, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The shard (below `of`) that holds `host_id`'s report: the first four bytes of its
    /// SHA-256, so hosts spread evenly whatever their ids look like.
    pub fn index_of(host_id: &str, of: u32) -> u32 {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(host_id.as_bytes());
        let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        head % of.max(1)
    }
}

/// An RFC 3339 moment, as reports and documents write them.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spread_evenly_over_shards_and_a_shard_round_trips() {
        let mut counts = vec![0u32; 16];
        for index in 0..16_000 {
            counts[HostShard::index_of(&format!("host-{index}"), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&count| (800..1200).contains(&count)),
            "{counts:?}"
        );
        assert_eq!(HostShard::index_of("any", 1), 0);
        let mut shard = HostShard::new("hello", 3, 16);
        shard.reports.insert(
            "web-1".into(),
            HostReport {
                app: "hello".into(),
                host_id: "web-1".into(),
                ..Default::default()
            },
        );
        let bytes = serde_json::to_vec(&shard).unwrap();
        assert_eq!(HostShard::parse(&bytes).unwrap(), shard);
    }

    #[test]
    fn a_report_round_trips_and_unknown_states_and_fields_are_tolerated() {
        let report = HostReport {
            schema: HOST_REPORT_SCHEMA,
            app: "hello".into(),
            channel: "stable".into(),
            host_id: "web-1".into(),
            version: Some("1.0".into()),
            serial: Some(3),
            highest_serial: 4,
            state: HostState::RolledBack,
            step: "idle".into(),
            last_error: None,
            bad: Vec::new(),
            updated_at: Some("2026-11-27T05:00:00Z".into()),
            last_change_at: None,
            agent_version: "0.1.0".into(),
            heartbeat_s: None,
            last_download: None,
            waiting: None,
            held: None,
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains(r#""state":"rolled-back""#), "{text}");
        assert_eq!(HostReport::parse(text.as_bytes()).unwrap(), report);
        let newer = br#"{"app":"a","channel":"c","host-id":"h","state":"hibernating","extra":1}"#;
        let parsed = HostReport::parse(newer).unwrap();
        assert_eq!(parsed.state, HostState::Unknown);
        assert_eq!(parsed.schema, HOST_REPORT_SCHEMA);
        assert!(HostReport::parse(b"not json").is_err());
    }
}
