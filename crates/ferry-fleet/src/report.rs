//! The host report as agents write it (`apps/<app>/hosts/<host-id>.json`, see docs/agent.md),
//! read leniently: fields this reader does not know are ignored and missing optional ones
//! default, so a newer or older agent's report still shows up in the status.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A release a host tried and marked bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BadEntry {
    /// The version.
    pub version: String,
    /// The serial it was tried with.
    #[serde(default)]
    pub serial: u64,
    /// Why it failed.
    #[serde(default)]
    pub reason: String,
}

/// One host's status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostReport {
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
    /// `new`, `ok`, `updating`, `rolled-back`, `refused` or `failed`.
    #[serde(default)]
    pub state: String,
    /// The agent's journal step.
    #[serde(default)]
    pub step: String,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Releases marked bad on this host.
    #[serde(default)]
    pub bad: Vec<BadEntry>,
    /// When the report was written (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The last commit or rollback (RFC 3339).
    #[serde(default)]
    pub last_change_at: Option<String>,
}

impl HostReport {
    /// Parse a report; `None` (with a warning in the log) when it is not one.
    pub fn parse(bytes: &[u8], location: &str) -> Option<HostReport> {
        match serde_json::from_slice(bytes) {
            Ok(report) => Some(report),
            Err(error) => {
                tracing::warn!(
                    report = location,
                    "ignoring an unreadable host report: {error}"
                );
                None
            }
        }
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

/// An RFC 3339 moment.
pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_report_parses_and_unknown_fields_are_ignored() {
        let text = br#"{"schema":1,"app":"hello","channel":"stable","host-id":"web-1","version":"1.0",
            "serial":3,"highest-serial":4,"state":"rolled-back","step":"idle",
            "last-error":"release 2.0 failed","bad":[{"version":"2.0","sha256":"ab","serial":4,"reason":"health","at":"2026-11-27T08:00:00Z"}],
            "updated-at":"2026-11-27T08:00:01Z","last-change-at":null,"agent-version":"0.1.0","future-field":1}"#;
        let report = HostReport::parse(text, "test").unwrap();
        assert_eq!(report.host_id, "web-1");
        assert!(report.marked_bad("2.0"));
        assert!(!report.marked_bad("1.0"));
        assert_eq!(
            report.updated_at_time().unwrap().unix_timestamp(),
            parse_time("2026-11-27T08:00:01Z").unwrap().unix_timestamp()
        );
        assert!(HostReport::parse(b"not json", "test").is_none());
    }
}
