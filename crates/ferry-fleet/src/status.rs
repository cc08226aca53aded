//! The fleet's status: read the channel pointer and every host report, then summarise (a
//! pure function of those, so it is tested without a store). The serialised
//! [`FleetStatus`] is the stable `ferry status --json` schema (docs/rollout.md).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_release::{
    ChannelPointer, HostShard, HostState, format_time, host_percentile, rollout_seed,
};
use ferry_store::Store;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Error;
use crate::report::{HostReport, parse_time};

/// The schema number of [`FleetStatus`]; bumped only by an incompatible change.
pub const STATUS_SCHEMA: u32 = 1;

/// The largest host report read (agents write about 1 KiB).
const MAX_REPORT_BYTES: u64 = 64 * 1024;
/// The largest report shard read (agents keep theirs below 4 MiB).
const MAX_SHARD_BYTES: u64 = 8 * 1024 * 1024;
/// Report reads in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// The channel's pointer as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Its serial.
    pub serial: u64,
    /// The release version it names.
    pub version: String,
    /// True when the rollout is paused.
    pub paused: bool,
    /// The time base of the waves (RFC 3339).
    pub published_at: String,
    /// The waves in `--waves` form.
    pub waves: String,
    /// When the pointer expires, if ever.
    pub expires_at: Option<String>,
    /// Who published the release, from what (its release document; not verified here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ferry_release::Provenance>,
}

/// One host's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// The host id.
    pub host: String,
    /// The version it runs (committed).
    pub version: Option<String>,
    /// The serial of that release.
    pub serial: Option<u64>,
    /// The highest serial it accepted.
    pub highest_serial: u64,
    /// The agent's state: `new`, `ok`, `updating`, `rolled-back`, `refused`, `failed`.
    pub state: String,
    /// `healthy`, `unhealthy`, `updating` or `unknown`.
    pub health: String,
    /// When it last reported (RFC 3339).
    pub last_seen: Option<String>,
    /// Seconds since it last reported.
    pub last_seen_s: Option<u64>,
    /// The last error it reported.
    pub last_error: Option<String>,
    /// Its place in rollouts, `0..100`.
    pub percentile: u8,
    /// Its wave in the current rollout, 1-based.
    pub wave: Option<usize>,
    /// Runs the channel's current release.
    pub on_current: bool,
    /// Tried the channel's current release and marked it bad.
    pub failed_current: bool,
    /// Should have moved by now but has not reported for longer than the stale limit.
    pub stale: bool,
    /// When its state last changed (RFC 3339): when it took, or failed, what it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// Why it has not installed the published release yet (its wave, its update window,
    /// the application's update lock, the next boot), as the host said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Set while an operator holds its updates (`ferry agent hold`): who, since when, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Hosts per version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version (`none` for hosts with nothing installed).
    pub version: String,
    /// How many hosts run it.
    pub hosts: usize,
    /// Hosts by agent state.
    pub states: BTreeMap<String, usize>,
    /// True when it is the channel's current release.
    pub current: bool,
}

/// Progress of one wave of the current rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveProgress {
    /// 1-based.
    pub wave: usize,
    /// Hosts below this percentile belong to this wave or an earlier one.
    pub percent: u8,
    /// Seconds after `published_at`.
    pub after_s: u64,
    /// When it opens (RFC 3339).
    pub opens_at: String,
    /// True once open (and the channel not paused).
    pub open: bool,
    /// Known hosts in this wave.
    pub hosts: usize,
    /// Of them, on the current release.
    pub updated: usize,
    /// Of them, failed the current release.
    pub failed: usize,
    /// Of them, neither yet.
    pub pending: usize,
}

/// Counts over the whole fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Hosts that reported on this channel.
    pub hosts: usize,
    /// On the current release.
    pub updated: usize,
    /// Failed the current release.
    pub failed: usize,
    /// Neither yet.
    pub pending: usize,
    /// Flagged stale.
    pub stale: usize,
    /// Held by an operator (`ferry agent hold`).
    #[serde(default)]
    pub held: usize,
    /// Reports that could not be read (or name another channel) and were left out.
    pub ignored_reports: usize,
}

/// The whole picture; its JSON form is `ferry status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// [`STATUS_SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// When this status was made (RFC 3339).
    pub generated_at: String,
    /// The stale limit used, in seconds.
    pub stale_after_s: u64,
    /// The pointer (`null` when the channel was never published).
    pub pointer: Option<ChannelState>,
    /// Totals.
    pub totals: Totals,
    /// Hosts by version, most hosts first.
    pub versions: Vec<VersionSummary>,
    /// The current rollout's waves.
    pub waves: Vec<WaveProgress>,
    /// Every host, by host id.
    pub hosts: Vec<HostRow>,
    /// The deploy holding the channel's lock (`ferry deploy`), if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_lock: Option<ferry_store::lock::DeployLock>,
}

fn health_of(report: &HostReport) -> &'static str {
    match report.state {
        HostState::Updating => "updating",
        HostState::Failed => "unhealthy",
        _ if report.version.is_none() => "unknown",
        state if state.is_serving() => "healthy",
        _ => "unknown",
    }
}

/// Summarise `reports` against `pointer` at `now`. A host is stale when it is not on the
/// current release, has not failed it, its wave opened more than `stale_after` ago (and the
/// channel is not paused), and it has not reported for longer than `stale_after`: it should
/// have moved and said so, and did neither. A host whose agent sends heartbeats
/// (`heartbeat-s` in its report) is also stale when its report is older than
/// `stale_after`, whatever it runs, and then does not count as updated.
pub fn summarize(
    app: &str,
    channel: &str,
    pointer: Option<&ChannelPointer>,
    reports: Vec<HostReport>,
    ignored_reports: usize,
    now: OffsetDateTime,
    stale_after: Duration,
) -> FleetStatus {
    let stale_after_time =
        time::Duration::seconds(stale_after.as_secs().min(i64::MAX as u64) as i64);
    let current_version = pointer.map(|pointer| pointer.release.version.as_str());
    let mut hosts: Vec<HostRow> = reports
        .into_iter()
        .map(|report| {
            let percentile = host_percentile(&rollout_seed(&report.host_id, app, channel));
            let wave = pointer.and_then(|pointer| pointer.rollout.wave_of(percentile));
            let on_current =
                current_version.is_some() && report.version.as_deref() == current_version;
            let failed_current =
                !on_current && current_version.is_some_and(|version| report.marked_bad(version));
            let last_seen = report.updated_at_time();
            // With heartbeats, silence for longer than the limit means the host is gone,
            // whatever version it last reported.
            let silent = report.heartbeat_s.is_some()
                && last_seen.is_none_or(|seen| {
                    seen.checked_add(stale_after_time)
                        .is_some_and(|limit| limit < now)
                });
            let moving = match (pointer, last_seen) {
                (Some(pointer), last_seen) if !on_current && !failed_current && !pointer.paused => {
                    let opened = wave
                        .and_then(|index| pointer.rollout.opens_at(index, pointer.published_at))
                        .unwrap_or(pointer.published_at);
                    // A limit too large to add to a time means "never stale" (no overflow panic).
                    let past = |moment: OffsetDateTime| {
                        moment
                            .checked_add(stale_after_time)
                            .is_some_and(|limit| limit < now)
                    };
                    past(opened) && last_seen.is_none_or(past)
                }
                _ => false,
            };
            let stale = silent || moving;
            HostRow {
                host: report.host_id.clone(),
                health: health_of(&report).to_owned(),
                version: report.version,
                serial: report.serial,
                highest_serial: report.highest_serial,
                state: report.state.to_string(),
                last_seen: last_seen.map(format_time),
                last_seen_s: last_seen.map(|seen| (now - seen).whole_seconds().max(0) as u64),
                last_error: report.last_error,
                percentile,
                wave: wave.map(|index| index + 1),
                on_current,
                failed_current,
                stale,
                last_change: report.last_change_at.clone(),
                waiting: report.waiting.clone(),
                held: report.held.clone(),
            }
        })
        .collect();
    hosts.sort_by(|left, right| left.host.cmp(&right.host));

    let mut by_version: BTreeMap<String, VersionSummary> = BTreeMap::new();
    for host in &hosts {
        let version = host.version.clone().unwrap_or_else(|| "none".into());
        let summary = by_version
            .entry(version.clone())
            .or_insert_with(|| VersionSummary {
                current: Some(version.as_str()) == current_version,
                version,
                hosts: 0,
                states: BTreeMap::new(),
            });
        summary.hosts += 1;
        *summary.states.entry(host.state.clone()).or_default() += 1;
    }
    let mut versions: Vec<VersionSummary> = by_version.into_values().collect();
    versions.sort_by(|left, right| {
        right
            .hosts
            .cmp(&left.hosts)
            .then_with(|| left.version.cmp(&right.version))
    });

    let waves = pointer
        .map(|pointer| {
            pointer
                .rollout
                .waves
                .iter()
                .enumerate()
                .map(|(index, wave)| {
                    let opens_at = pointer
                        .rollout
                        .opens_at(index, pointer.published_at)
                        .unwrap_or(pointer.published_at);
                    let members: Vec<&HostRow> = hosts
                        .iter()
                        .filter(|host| host.wave == Some(index + 1))
                        .collect();
                    let updated = members
                        .iter()
                        .filter(|host| host.on_current && !host.stale)
                        .count();
                    let failed = members.iter().filter(|host| host.failed_current).count();
                    WaveProgress {
                        wave: index + 1,
                        percent: wave.percent,
                        after_s: wave.after_s,
                        opens_at: format_time(opens_at),
                        open: !pointer.paused && opens_at <= now,
                        hosts: members.len(),
                        updated,
                        failed,
                        pending: members.len() - updated - failed,
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    // A host gone silent is not counted as updated: nobody knows what it runs now.
    let updated = hosts
        .iter()
        .filter(|host| host.on_current && !host.stale)
        .count();
    let failed = hosts.iter().filter(|host| host.failed_current).count();
    let totals = Totals {
        hosts: hosts.len(),
        updated,
        failed,
        pending: hosts.len() - updated - failed,
        stale: hosts.iter().filter(|host| host.stale).count(),
        held: hosts.iter().filter(|host| host.held.is_some()).count(),
        ignored_reports,
    };
    FleetStatus {
        schema: STATUS_SCHEMA,
        app: app.to_owned(),
        channel: channel.to_owned(),
        generated_at: format_time(now),
        stale_after_s: stale_after.as_secs(),
        pointer: pointer.map(|pointer| ChannelState {
            serial: pointer.serial,
            version: pointer.release.version.clone(),
            paused: pointer.paused,
            published_at: format_time(pointer.published_at),
            waves: pointer.rollout.to_spec(),
            expires_at: pointer.expires_at.map(format_time),
            provenance: None,
        }),
        totals,
        versions,
        waves,
        hosts,
        deploy_lock: None,
    }
}

/// Read the pointer and every host report of `app` on `channel` from the store and
/// summarise them. The pointer's signature is not checked here (`ferry verify` does that);
/// this is a view for operators.
pub async fn collect(
    store: &Store,
    app: &str,
    channel: &str,
    stale_after: Duration,
) -> Result<FleetStatus, Error> {
    let pointer = ferry_store::read_pointer(store, app, channel)
        .await?
        .map(|current| current.pointer);
    let hosts_prefix = ferry_release::layout::hosts_prefix(app);
    let shards_prefix = ferry_release::layout::host_shards_prefix(app);
    let (listing, shard_listing) =
        futures::try_join!(store.list(&hosts_prefix), store.list(&shards_prefix))?;
    let host_objects = listing
        .into_iter()
        .filter(|object| object.path.ends_with(".json"))
        .map(|object| (object.path, MAX_REPORT_BYTES, false));
    let shard_objects = shard_listing
        .into_iter()
        .filter(|object| object.path.ends_with(".json"))
        .map(|object| (object.path, MAX_SHARD_BYTES, true));
    let reads = futures::stream::iter(host_objects.chain(shard_objects))
        .map(|(path, limit, shard)| async move {
            let read = store.get(&path, limit).await;
            (path, shard, read)
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    // One report per host: a host that moved to shards may have left its own object behind
    // for a moment, and the newer report wins.
    let mut by_host: BTreeMap<String, HostReport> = BTreeMap::new();
    let mut ignored = 0;
    for (path, shard, read) in reads {
        let object = match read {
            Ok(Some(object)) => object,
            // Deleted between the listing and the read: the host is gone.
            Ok(None) => continue,
            Err(ferry_store::Error::TooLarge { location, .. }) => {
                tracing::warn!(report = location, "ignoring an oversized host report");
                ignored += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let location = store.location(&path);
        let found = if shard {
            match HostShard::parse(&object.bytes) {
                Ok(document) if document.app == app => document.reports.into_values().collect(),
                Ok(_) => {
                    ignored += 1;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(
                        shard = location,
                        "ignoring an unreadable report shard: {error}"
                    );
                    ignored += 1;
                    continue;
                }
            }
        } else {
            match crate::report::parse_report(&object.bytes, &location) {
                Some(report) => vec![report],
                None => {
                    ignored += 1;
                    continue;
                }
            }
        };
        for report in found {
            if report.channel != channel || report.app != app {
                ignored += 1;
                continue;
            }
            match by_host.get(&report.host_id) {
                Some(known) if known.updated_at_time() >= report.updated_at_time() => {}
                _ => {
                    by_host.insert(report.host_id.clone(), report);
                }
            }
        }
    }
    let reports: Vec<HostReport> = by_host.into_values().collect();
    let mut status = summarize(
        app,
        channel,
        pointer.as_ref(),
        reports,
        ignored,
        ferry_release::now_utc(),
        stale_after,
    );
    if let Some(state) = status.pointer.as_mut() {
        state.provenance = ferry_store::read_release_document(store, app, &state.version)
            .await?
            .and_then(|release| release.provenance);
    }
    status.deploy_lock = ferry_store::lock::read_lock(store, app, channel)
        .await?
        .filter(|lock| !lock.expired(ferry_release::now_utc()));
    Ok(status)
}

/// Parse an RFC 3339 time from a status field (for renderers).
pub fn parse_status_time(text: &str) -> Option<OffsetDateTime> {
    parse_time(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_release::{ReleaseRef, Rollout, SCHEMA};

    use super::*;
    use crate::report::BadEntry;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    fn pointer(version: &str, waves: &str, paused: bool) -> ChannelPointer {
        ChannelPointer {
            schema: SCHEMA,
            app: "hello".into(),
            channel: "stable".into(),
            serial: 7,
            release: ReleaseRef {
                version: version.into(),
                artifacts: BTreeMap::new(),
            },
            rollout: Rollout::parse(waves).unwrap(),
            paused,
            urgent: false,
            published_at: at(0),
            expires_at: None,
        }
    }

    fn report(host: &str, version: &str, state: &str, seen: i64, bad: &[&str]) -> HostReport {
        HostReport {
            app: "hello".into(),
            channel: "stable".into(),
            host_id: host.into(),
            version: Some(version.into()),
            serial: Some(1),
            highest_serial: 7,
            state: state.into(),
            step: "idle".into(),
            last_error: None,
            bad: bad
                .iter()
                .map(|version| BadEntry {
                    version: (*version).into(),
                    serial: 7,
                    reason: "health".into(),
                    ..Default::default()
                })
                .collect(),
            updated_at: Some(format_time(at(seen))),
            last_change_at: None,
            ..Default::default()
        }
    }

    /// A host id in wave `wave` (0-based) of `rollout`.
    fn host_in_wave(rollout: &Rollout, wave: usize, skip: usize) -> String {
        (0..10_000)
            .map(|index| format!("host-{index}"))
            .filter(|host| {
                rollout.wave_of(host_percentile(&rollout_seed(host, "hello", "stable")))
                    == Some(wave)
            })
            .nth(skip)
            .unwrap()
    }

    #[test]
    fn versions_waves_failures_and_stale_hosts_are_summarised() {
        let pointer = pointer("2.0", "20%:0,50%:10m,100%:1h", false);
        let rollout = &pointer.rollout;
        let first_a = host_in_wave(rollout, 0, 0);
        let first_b = host_in_wave(rollout, 0, 1);
        let first_c = host_in_wave(rollout, 0, 2);
        let second = host_in_wave(rollout, 1, 0);
        let third = host_in_wave(rollout, 2, 0);
        let reports = vec![
            report(&first_a, "2.0", "ok", 30, &[]),
            report(&first_b, "1.0", "rolled-back", 40, &["2.0"]),
            // Wave 1 opened at 0; silent since before: stale at 15 min with a 5 min limit.
            report(&first_c, "1.0", "ok", -100, &[]),
            // Wave 2 opened at 10 min: not yet stale at 12 min (limit 5 min).
            report(&second, "1.0", "ok", -100, &[]),
            report(&third, "1.0", "ok", -100, &[]),
        ];
        let status = summarize(
            "hello",
            "stable",
            Some(&pointer),
            reports,
            1,
            at(12 * 60),
            Duration::from_secs(300),
        );
        assert_eq!(status.totals.hosts, 5);
        assert_eq!(status.totals.updated, 1);
        assert_eq!(status.totals.failed, 1);
        assert_eq!(status.totals.pending, 3);
        assert_eq!(status.totals.ignored_reports, 1);
        let stale: Vec<&str> = status
            .hosts
            .iter()
            .filter(|host| host.stale)
            .map(|host| host.host.as_str())
            .collect();
        assert_eq!(stale, vec![first_c.as_str()]);
        assert_eq!(status.versions[0].version, "1.0");
        assert_eq!(status.versions[0].hosts, 4);
        assert_eq!(status.versions[1].version, "2.0");
        assert!(status.versions[1].current);
        assert_eq!(status.waves.len(), 3);
        assert_eq!(
            (
                status.waves[0].hosts,
                status.waves[0].updated,
                status.waves[0].failed
            ),
            (3, 1, 1)
        );
        assert!(status.waves[0].open && status.waves[1].open && !status.waves[2].open);
        assert_eq!(status.waves[1].pending, 1);
        let row = status
            .hosts
            .iter()
            .find(|host| host.host == first_b)
            .unwrap();
        assert!(row.failed_current && !row.on_current);
        assert_eq!(row.health, "healthy");
        assert_eq!(row.wave, Some(1));
        assert_eq!(row.last_seen_s, Some(12 * 60 - 40));
        // The JSON schema keeps its names.
        let json = serde_json::to_value(&status).unwrap();
        for key in [
            "schema",
            "app",
            "channel",
            "generated_at",
            "stale_after_s",
            "pointer",
            "totals",
            "versions",
            "waves",
            "hosts",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["pointer"]["waves"], "20%:0,50%:10m,100%:1h");
    }

    #[test]
    fn a_paused_channel_flags_no_host_stale_and_opens_no_wave() {
        let pointer = pointer("2.0", "20%:0,100%:10m", true);
        let host = host_in_wave(&pointer.rollout, 0, 0);
        let status = summarize(
            "hello",
            "stable",
            Some(&pointer),
            vec![report(&host, "1.0", "ok", -1000, &[])],
            0,
            at(3600),
            Duration::from_secs(60),
        );
        assert_eq!(status.totals.stale, 0);
        assert!(status.waves.iter().all(|wave| !wave.open));
        assert!(status.pointer.unwrap().paused);
    }

    #[test]
    fn a_host_with_heartbeats_that_went_silent_is_stale_and_not_counted_updated() {
        let pointer = pointer("2.0", "100%:0", false);
        let with_heartbeat = |host: &str, seen: i64| HostReport {
            heartbeat_s: Some(60),
            ..report(host, "2.0", "ok", seen, &[])
        };
        let status = summarize(
            "hello",
            "stable",
            Some(&pointer),
            vec![
                // On the release, but silent for 10 minutes with a 1-minute heartbeat.
                with_heartbeat("gone", 3000),
                with_heartbeat("alive", 3590),
                // No heartbeat: an old report on the release says nothing about liveness.
                report("quiet", "2.0", "ok", 10, &[]),
            ],
            0,
            at(3600),
            Duration::from_secs(180),
        );
        let stale: Vec<&str> = status
            .hosts
            .iter()
            .filter(|host| host.stale)
            .map(|host| host.host.as_str())
            .collect();
        assert_eq!(stale, ["gone"]);
        assert_eq!(status.totals.updated, 2);
        assert_eq!(status.totals.pending, 1);
    }

    #[test]
    fn an_enormous_stale_limit_flags_nothing_and_does_not_overflow() {
        let pointer = pointer("2.0", "100%:0", false);
        let status = summarize(
            "hello",
            "stable",
            Some(&pointer),
            vec![report("web-1", "1.0", "ok", -1000, &[])],
            0,
            at(3600),
            Duration::from_secs(u64::MAX),
        );
        assert_eq!(status.totals.stale, 0);
    }

    #[test]
    fn no_pointer_and_no_reports_is_an_empty_status() {
        let status = summarize(
            "hello",
            "stable",
            None,
            vec![],
            0,
            at(0),
            Duration::from_secs(60),
        );
        assert!(status.pointer.is_none());
        assert!(status.hosts.is_empty() && status.waves.is_empty());
    }
}
