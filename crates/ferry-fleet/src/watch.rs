//! The judge behind `ferry watch`: given the fleet's status and the release being rolled out,
//! is the rollout done, still going, failing beyond the allowed threshold, or replaced by
//! another publish? Pure, so the thresholds are tested exactly; the command does the polling
//! and the halting.

use crate::Error;
use crate::status::FleetStatus;

/// How many failed hosts are tolerated before a rollout is halted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// A share of the hosts that report on the channel (`5%`).
    Percent(f64),
    /// A number of hosts (`3`).
    Hosts(usize),
}

impl Threshold {
    /// Read `5%`, `0.5%` or `3`.
    pub fn parse(text: &str) -> Result<Threshold, Error> {
        let invalid = |message: &str| Error::InvalidThreshold {
            text: text.to_owned(),
            message: message.to_owned(),
        };
        let trimmed = text.trim();
        if let Some(percent) = trimmed.strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .map_err(|_| invalid("expected a percentage like 5% or a host count like 3"))?;
            if !(0.0..=100.0).contains(&value) {
                return Err(invalid("a percentage must be between 0% and 100%"));
            }
            return Ok(Threshold::Percent(value));
        }
        trimmed
            .parse()
            .map(Threshold::Hosts)
            .map_err(|_| invalid("expected a percentage like 5% or a host count like 3"))
    }

    /// True when `failed` of `total` hosts is more than this threshold allows.
    pub fn exceeded(&self, failed: usize, total: usize) -> bool {
        match *self {
            Threshold::Percent(percent) => failed as f64 > percent / 100.0 * total as f64,
            Threshold::Hosts(hosts) => failed > hosts,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Percent(percent) => write!(formatter, "{percent}%"),
            Threshold::Hosts(hosts) => write!(formatter, "{hosts} hosts"),
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still going: `updated` of `total` hosts are on the release, `failed` failed it.
    Rolling {
        /// Hosts on the release.
        updated: usize,
        /// Hosts that failed it.
        failed: usize,
        /// Hosts known.
        total: usize,
    },
    /// Every host is on the release, or failed it within the threshold.
    Done {
        /// Hosts on the release.
        updated: usize,
        /// Hosts that failed it (within the threshold).
        failed: usize,
    },
    /// More hosts failed than the threshold allows: halt.
    Failing {
        /// Hosts that failed it.
        failed: usize,
        /// Hosts known.
        total: usize,
    },
    /// The channel no longer names the release (another publish, a rollback).
    Superseded {
        /// What it names now (`None`: the pointer is gone).
        version: Option<String>,
        /// Its serial.
        serial: Option<u64>,
    },
}

/// Judge the rollout of `version` (published as `serial` or later) from `status`.
pub fn judge(status: &FleetStatus, version: &str, threshold: Threshold) -> Verdict {
    let Some(pointer) = &status.pointer else {
        return Verdict::Superseded {
            version: None,
            serial: None,
        };
    };
    if pointer.version != version {
        return Verdict::Superseded {
            version: Some(pointer.version.clone()),
            serial: Some(pointer.serial),
        };
    }
    let total = status.totals.hosts;
    let updated = status.totals.updated;
    let failed = status.totals.failed;
    if threshold.exceeded(failed, total) {
        return Verdict::Failing { failed, total };
    }
    if total > 0 && updated + failed == total && !pointer.paused {
        return Verdict::Done { updated, failed };
    }
    Verdict::Rolling {
        updated,
        failed,
        total,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{BadEntry, HostReport};
    use crate::status::summarize;

    #[test]
    fn thresholds_parse_and_compare_strictly() {
        assert_eq!(Threshold::parse("5%").unwrap(), Threshold::Percent(5.0));
        assert_eq!(Threshold::parse(" 0.5 %").unwrap(), Threshold::Percent(0.5));
        assert_eq!(Threshold::parse("3").unwrap(), Threshold::Hosts(3));
        for bad in ["", "x", "-1", "150%", "five%"] {
            let error = Threshold::parse(bad).unwrap_err().to_string();
            assert!(error.contains("threshold"), "{bad}: {error}");
        }
        let five = Threshold::Percent(5.0);
        // 5% of 50 is 2.5: two failures are tolerated, three are not.
        assert!(!five.exceeded(2, 50));
        assert!(five.exceeded(3, 50));
        assert!(!Threshold::Hosts(3).exceeded(3, 10));
        assert!(Threshold::Hosts(3).exceeded(4, 10));
        assert!(Threshold::Percent(0.0).exceeded(1, 1000));
        assert!(!Threshold::Percent(0.0).exceeded(0, 0));
    }

    fn status(current: &str, paused: bool, hosts: &[(&str, bool)]) -> FleetStatus {
        let pointer = ferry_release::ChannelPointer {
            schema: 1,
            app: "a".into(),
            channel: "c".into(),
            serial: 5,
            release: ferry_release::ReleaseRef {
                version: current.into(),
                artifacts: Default::default(),
            },
            rollout: Default::default(),
            paused,
            urgent: false,
            published_at: ferry_release::now_utc(),
            expires_at: None,
        };
        let reports = hosts
            .iter()
            .enumerate()
            .map(|(index, (version, failed))| HostReport {
                app: "a".into(),
                channel: "c".into(),
                host_id: format!("h{index}"),
                version: Some((*version).into()),
                serial: Some(1),
                highest_serial: 5,
                state: if *failed { "rolled-back" } else { "ok" }.into(),
                step: "idle".into(),
                last_error: None,
                bad: if *failed {
                    vec![BadEntry {
                        version: current.into(),
                        serial: 5,
                        reason: "health".into(),
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                updated_at: Some(ferry_release::format_time(ferry_release::now_utc())),
                last_change_at: None,
                ..Default::default()
            })
            .collect();
        summarize(
            "a",
            "c",
            Some(&pointer),
            reports,
            0,
            ferry_release::now_utc(),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn the_judge_says_rolling_done_failing_or_superseded() {
        let five = Threshold::Percent(5.0);
        let rolling = status("2", false, &[("2", false), ("1", false), ("1", false)]);
        assert_eq!(
            judge(&rolling, "2", five),
            Verdict::Rolling {
                updated: 1,
                failed: 0,
                total: 3
            }
        );
        let done = status("2", false, &[("2", false), ("2", false)]);
        assert_eq!(
            judge(&done, "2", five),
            Verdict::Done {
                updated: 2,
                failed: 0
            }
        );
        let failing = status("2", false, &[("2", false), ("1", true)]);
        assert_eq!(
            judge(&failing, "2", five),
            Verdict::Failing {
                failed: 1,
                total: 2
            }
        );
        assert_eq!(
            judge(&failing, "2", Threshold::Percent(50.0)),
            Verdict::Done {
                updated: 1,
                failed: 1
            }
        );
        assert!(matches!(
            judge(&done, "3", five),
            Verdict::Superseded { version: Some(version), .. } if version == "2"
        ));
        let paused = status("2", true, &[("2", false)]);
        assert!(matches!(judge(&paused, "2", five), Verdict::Rolling { .. }));
        let empty = status("2", false, &[]);
        assert!(matches!(judge(&empty, "2", five), Verdict::Rolling { .. }));
    }
}
