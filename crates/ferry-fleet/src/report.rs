//! The host report as agents write it (`apps/<app>/hosts/<host-id>.json`, see docs/agent.md),
//! read leniently: fields this reader does not know are ignored and missing optional ones
//! default, so a newer or older agent's report still shows up in the status.

pub use ferry_release::{BadRelease as BadEntry, HostReport, parse_time};

/// Parse a report; `None` (with a warning in the log) when it is not one.
pub fn parse_report(bytes: &[u8], location: &str) -> Option<HostReport> {
    match HostReport::parse(bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_report_parses_and_unknown_fields_are_ignored() {
        let text = br#"{"schema":1,"app":"hello","channel":"stable","host-id":"web-1","version":"1.0",
            "serial":3,"highest-serial":4,"state":"rolled-back","step":"idle",
            "last-error":"release 2.0 failed","bad":[{"version":"2.0","sha256":"ab","serial":4,"reason":"health","at":"2026-11-27T08:00:00Z"}],
            "updated-at":"2026-11-27T08:00:01Z","last-change-at":null,"agent-version":"0.1.0","future-field":1}"#;
        let report = parse_report(text, "test").unwrap();
        assert_eq!(report.host_id, "web-1");
        assert!(report.marked_bad("2.0"));
        assert!(!report.marked_bad("1.0"));
        assert_eq!(
            report.updated_at_time().unwrap().unix_timestamp(),
            parse_time("2026-11-27T08:00:01Z").unwrap().unix_timestamp()
        );
        assert!(parse_report(b"not json", "test").is_none());
    }
}
