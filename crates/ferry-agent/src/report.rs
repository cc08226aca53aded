//! The host report: what the journal's state means for the operator, printed by
//! `ferry agent status` and written to `apps/<app>/hosts/<host-id>.json`.

use std::time::Duration;

use bytes::Bytes;
use ferry_release::{HostReport, HostState};
use ferry_store::Store;

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
    let Ok(mut bytes) = serde_json::to_vec_pretty(&report) else {
        return;
    };
    bytes.push(b'\n');
    let path = ferry_store::host_report_path(&settings.app, &settings.host_id);
    let write = store.put_overwrite(&path, Bytes::from(bytes));
    match tokio::time::timeout(Duration::from_secs(10), write).await {
        Ok(Ok(())) => tracing::debug!(report = %store.location(&path), "status reported"),
        Ok(Err(error)) => tracing::warn!("cannot write the status report: {error}"),
        Err(_) => tracing::warn!("cannot write the status report: no answer within 10s"),
    }
}
