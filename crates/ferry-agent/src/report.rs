//! The host report: what the journal's state means for the operator, printed by
//! `ferry agent status` and written to `apps/<app>/hosts/<host-id>.json`.

use std::time::Duration;

use bytes::Bytes;
use ferry_release::{HostReport, HostShard, HostState};
use ferry_store::{Store, SwapOutcome};

/// The largest report shard read (about 2,000 hosts' reports).
const MAX_SHARD_BYTES: u64 = 4 * 1024 * 1024;

use crate::Error;
use crate::config::Settings;
use crate::journal::{Journal, State};

/// The status report written to `apps/<app>/hosts/<host-id>.json` and printed by
/// `ferry agent status`: the one host report type, shared with its readers.
pub type StatusReport = HostReport;

/// The status of a journal state.
pub fn status_report(settings: &Settings, state: &State) -> StatusReport {
    HostReport {
        schema: ferry_release::HOST_REPORT_SCHEMA,
        app: settings.app.clone(),
        channel: settings.channel.clone(),
        host_id: settings.host_id.clone(),
        version: state.current.as_ref().map(|r| r.version.clone()),
        serial: state.current.as_ref().map(|r| r.serial),
        highest_serial: state.highest_serial,
        state: state.outcome.unwrap_or(if state.current.is_some() {
            HostState::Ok
        } else {
            HostState::New
        }),
        step: state.step.name().to_string(),
        last_error: state.last_error.clone(),
        bad: state.bad.clone(),
        updated_at: Some(now_text()),
        last_change_at: state.last_change_at.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        heartbeat_s: settings.heartbeat.map(|every| every.as_secs().max(1)),
        last_download: state.last_download.clone(),
        waiting: state.waiting.clone(),
        held: crate::update_lock::Hold::read(&crate::update_lock::Hold::path(
            &settings.state_dir,
            &settings.app,
            &settings.channel,
        ))
        .map(|hold| hold.describe()),
    }
}

/// Read the local status without touching the store (for `ferry agent status`).
pub fn local_status(settings: &Settings) -> Result<StatusReport, Error> {
    let journal = Journal::new(&settings.state_dir, &settings.app, &settings.channel);
    let state = journal.load(&settings.app, &settings.channel)?;
    Ok(status_report(settings, &state))
}

/// The current time as RFC 3339.
pub fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Write the report of `state` to the store (best effort: a read-only store is fine, and a
/// store that does not answer within 10 s does not hold up the agent).
pub async fn write_report(store: &Store, settings: &Settings, state: &State) {
    // A read-only store (a CDN) takes no reports; the agent said so when it started.
    if !settings.report || store.is_read_only() {
        return;
    }
    let report = status_report(settings, state);
    let sharded = settings.report_shards > 0;
    let shard = HostShard::index_of(&settings.host_id, settings.report_shards);
    let path = if sharded {
        ferry_release::layout::host_shard(&settings.app, settings.report_shards, shard)
    } else {
        ferry_store::host_report_path(&settings.app, &settings.host_id)
    };
    let write = async {
        if sharded {
            return write_to_shard(store, &path, shard, settings.report_shards, report).await;
        }
        let mut bytes = serde_json::to_vec_pretty(&report).unwrap_or_default();
        bytes.push(b'\n');
        store.put_overwrite(&path, Bytes::from(bytes)).await
    };
    match tokio::time::timeout(Duration::from_secs(10), write).await {
        Ok(Ok(())) => tracing::debug!(report = %store.location(&path), "status reported"),
        Ok(Err(error)) => tracing::warn!("cannot write the status report: {error}"),
        Err(_) => tracing::warn!("cannot write the status report: no answer within 10s"),
    }
}

/// Put `report` into its shard: read the shard, replace this host's entry, write it back only
/// if nobody else wrote it in between (compare-and-swap), else read again — with a growing,
/// random pause, so the hosts of one shard reporting at once spread out. An unreadable shard
/// starts afresh (its other hosts put themselves back at their next report).
async fn write_to_shard(
    store: &Store,
    path: &str,
    shard: u32,
    of: u32,
    report: HostReport,
) -> Result<(), ferry_store::Error> {
    const ATTEMPTS: u32 = 12;
    let mut jitter = crate::backoff::Jitter::new(&report.host_id);
    for attempt in 0..ATTEMPTS {
        let current = store.get(path, MAX_SHARD_BYTES).await?;
        let mut document = match current
            .as_ref()
            .map(|object| HostShard::parse(&object.bytes))
        {
            Some(Ok(document)) if document.app == report.app && document.of == of => document,
            Some(_) => {
                tracing::warn!(shard = %store.location(path), "the report shard is unreadable or not this app's; starting it afresh");
                HostShard::new(&report.app, shard, of)
            }
            None => HostShard::new(&report.app, shard, of),
        };
        document
            .reports
            .insert(report.host_id.clone(), report.clone());
        let Ok(bytes) = serde_json::to_vec(&document) else {
            return Ok(());
        };
        let expected = current.as_ref().and_then(|object| object.etag.as_deref());
        match store
            .put_if_match(path, Bytes::from(bytes), expected)
            .await?
        {
            SwapOutcome::Written(_) => return Ok(()),
            SwapOutcome::Conflict => {
                let ceiling = Duration::from_millis(20 << attempt.min(6));
                let pause = ceiling / 4 + jitter.up_to(ceiling * 3 / 4);
                tracing::debug!(shard = %store.location(path), attempt, pause_ms = pause.as_millis() as u64, "report shard changed meanwhile; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
    Err(ferry_store::Error::TooManyConflicts {
        what: format!("the report shard {}", store.location(path)),
        attempts: ATTEMPTS,
    })
}
