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
    /// The other apps served by the same process (state dir, app, channel).
    pub siblings: Vec<(std::path::PathBuf, String, String)>,
}

/// Opens an app's store (again, with backoff, while it cannot be opened yet).
pub type OpenStore = Box<dyn Fn() -> Result<Store, ferry_store::Error>>;

/// One app of a multi-app agent, ready to run.
pub struct AppRun {
    /// Its settings.
    pub settings: Settings,
    /// Opens its store; apps on the same store get one client and its connection pool.
    pub open_store: OpenStore,
    /// Where its reports go, when not to `store`.
    pub report_store: Option<Store>,
    /// Its counters, served with an `app` label.
    pub metrics: Arc<Metrics>,
}

/// Run several apps in one process until `shutdown` resolves (or one cycle each with
/// `once`). Each app has its own loop, journal, lock and report, and none waits for another:
/// one app's slow health check or failed release never delays the others' updates. Returns
/// each app's `app/channel` with how its run ended.
pub async fn run_apps(
    apps: Vec<AppRun>,
    shutdown: impl Future<Output = ()>,
    once: bool,
) -> Vec<(String, Result<Option<Outcome>, Error>)> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let several = apps.len() > 1;
    let everyone: Vec<(std::path::PathBuf, String, String)> = apps
        .iter()
        .map(|app| {
            (
                app.settings.state_dir.clone(),
                app.settings.app.clone(),
                app.settings.channel.clone(),
            )
        })
        .collect();
    let runs = apps.into_iter().map(|app| {
        let stopped = stopped.clone();
        let name = format!("{}/{}", app.settings.app, app.settings.channel);
        let siblings = everyone
            .iter()
            .filter(|(_, other, channel)| {
                (other, channel) != (&app.settings.app, &app.settings.channel)
            })
            .cloned()
            .collect();
        async move {
            let options = RunOptions {
                once,
                metrics: Some(app.metrics),
                report_store: app.report_store,
                siblings,
            };
            let mut delay = Duration::from_secs(1);
            loop {
                let mut until_stopped = stopped.clone();
                let shutdown = async move {
                    let _ = until_stopped.wait_for(|stop| *stop).await;
                };
                let result = match (app.open_store)() {
                    Ok(store) => run(app.settings.clone(), store, shutdown, options.clone()).await,
                    // A store that is down when the agent starts (a file:// directory not
                    // mounted yet) is waited for like one that goes down later, this app's
                    // alone: the host must not be left unmanaged, nor the other apps held up.
                    Err(error) if error.is_transient() && !once => {
                        tracing::warn!(
                            app = %name, store = %app.settings.store, retry_in_ms = delay.as_millis() as u64,
                            "cannot open the store, retrying (the service is not touched): {error}"
                        );
                        let mut until_stopped = stopped.clone();
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = until_stopped.wait_for(|stop| *stop) => return (name, Ok(None)),
                        }
                        delay = (delay * 2).min(app.settings.backoff_max.max(delay));
                        continue;
                    }
                    Err(error) => Err(Error::Store {
                        message: format!("cannot open the store {}: {error}", app.settings.store),
                    }),
                };
                match result {
                    // An app that cannot start (its keys unreadable, its journal locked by
                    // another agent) is tried again, without holding up the others.
                    Err(error) if several && !once => {
                        tracing::error!(
                            app = %name, retry_in_ms = delay.as_millis() as u64,
                            "this app's agent cannot run: {error}; the other apps go on, and it is tried again"
                        );
                        let mut until_stopped = stopped.clone();
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = until_stopped.wait_for(|stop| *stop) => return (name, Ok(None)),
                        }
                        delay = (delay * 2).min(app.settings.backoff_max.max(delay));
                    }
                    other => return (name, other),
                }
            }
        }
    });
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    tokio::pin!(shutdown);
    tokio::select! {
        results = &mut all => results,
        () = &mut shutdown => {
            let _ = stop.send(true);
            all.await
        }
    }
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
    agent.siblings = options.siblings.clone();
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
