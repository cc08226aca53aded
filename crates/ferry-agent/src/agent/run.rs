//! The run loop: one cycle after another until shutdown, with the interval and jitter between
//! them, and exponential backoff while the store (or the disk) says "try again later".

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_store::Store;

use super::{Agent, Outcome};
use crate::Error;
use crate::backoff::{Backoff, Jitter};
use crate::config::Settings;
use crate::metrics::Metrics;

/// How [`run`] behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One cycle (resume, poll, maybe update), then return.
    pub once: bool,
    /// Counters to update (and serve elsewhere).
    pub metrics: Option<Arc<Metrics>>,
    /// Where reports are written, when not to the store read from (`report-store`).
    pub report_store: Option<Store>,
}

/// Run the agent until `shutdown` resolves (or for one cycle with `once`). Store errors back
/// off exponentially with jitter and never touch the service; other errors are logged and
/// retried at the next interval.
pub async fn run(
    settings: Settings,
    store: Store,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<Option<Outcome>, Error> {
    let metrics = options.metrics.clone().unwrap_or_default();
    let mut agent = Agent::new(settings, store, metrics.clone())?;
    if let Some(report_store) = options.report_store.clone() {
        agent.report_store = Some(report_store);
    }
    agent.retire_host_object().await;
    let settings = agent.settings.clone();
    tracing::info!(
        app = %settings.app, channel = %settings.channel, host = %settings.host_id, store = %agent.store.url(),
        interval_ms = settings.interval.as_millis() as u64, "agent started"
    );
    let mut jitter = Jitter::new(&settings.host_id);
    let mut backoff = Backoff::new(
        settings.interval.max(Duration::from_millis(100)),
        settings.backoff_max,
    );
    tokio::pin!(shutdown);
    let mut heartbeat_due = settings
        .heartbeat
        .map(|every| every + jitter.up_to(every / 10));
    loop {
        let cycle = agent.cycle();
        let result = tokio::select! {
            result = cycle => result,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(None);
            }
        };
        let wait = match result {
            Ok(outcome) if agent.retry_soon && !options.once => {
                // Answered, but only "not yet" (the store lacks the right bytes): poll again
                // with the same backoff as an unreachable store, not a hot loop.
                let wait = backoff.failure(&mut jitter);
                tracing::info!(
                    app = %settings.app, channel = %settings.channel, ?outcome,
                    retry_in_ms = wait.as_millis() as u64, "retrying the update"
                );
                wait
            }
            Ok(outcome) => {
                if backoff.failures() > 0 {
                    tracing::info!(app = %settings.app, channel = %settings.channel, "store reachable again");
                }
                backoff.success();
                if options.once {
                    return Ok(Some(outcome));
                }
                settings.interval + jitter.up_to(settings.jitter)
            }
            Err(error) => {
                Metrics::increment(&metrics.errors);
                if options.once {
                    return Err(error);
                }
                if error.is_store() {
                    let wait = backoff.failure(&mut jitter);
                    tracing::warn!(
                        app = %settings.app, channel = %settings.channel, failures = backoff.failures(),
                        retry_in_ms = wait.as_millis() as u64, "store unavailable, backing off (the service is not touched): {error}"
                    );
                    wait
                } else if error.is_transient() {
                    let wait = backoff.failure(&mut jitter);
                    tracing::warn!(
                        app = %settings.app, channel = %settings.channel, failures = backoff.failures(),
                        retry_in_ms = wait.as_millis() as u64, "backing off (the service is not touched): {error}"
                    );
                    wait
                } else {
                    tracing::error!(app = %settings.app, channel = %settings.channel, "cycle failed: {error}");
                    agent.state.last_error = Some(error.to_string());
                    settings.interval + jitter.up_to(settings.jitter)
                }
            }
        };
        // Heartbeat: the report is rewritten when nothing else wrote it for a while, so
        // `ferry status` can tell a host that is gone from one with nothing to say.
        if let (Some(due), Some(every)) = (heartbeat_due, settings.heartbeat) {
            if agent.report_age().is_none_or(|age| age >= due) {
                tracing::debug!(app = %settings.app, channel = %settings.channel, "heartbeat: report refreshed");
                agent.report().await;
                heartbeat_due = Some(every + jitter.up_to(every / 10));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(None);
            }
        }
    }
}
