//! The update loop: wait → poll the channel pointer (conditional GET) → verify → download →
//! install → restart → health check → commit, or roll back to the committed release. Every
//! step is journaled before it runs, so a crash resumes from the journal to a consistent end.
//!
//! [`run`] takes already-made pieces (settings, an open store, a shutdown future), so the
//! tests drive exactly the code production runs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_release::{ChannelPointer, MAX_DOCUMENT_BYTES, PointerCheck, TrustedKeys};
use ferry_store::{Fetched, Store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::backoff::{Backoff, Jitter};
use crate::config::Settings;
use crate::fault;
use crate::floor::FloorRecords;
use crate::journal::{BadRelease, Journal, Release, State, Step};
use crate::metrics::Metrics;
use crate::{Error, health, install, restart};

/// How [`run`] behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One cycle (resume, poll, maybe update), then return.
    pub once: bool,
    /// Counters to update (and serve elsewhere).
    pub metrics: Option<Arc<Metrics>>,
}

/// What one cycle ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pointer did not change (or names what is installed).
    UpToDate,
    /// No pointer is published yet.
    NoPointer,
    /// A release was installed and committed.
    Installed {
        /// Its version.
        version: String,
    },
    /// A release failed and the committed one was restored.
    RolledBack {
        /// The version that failed.
        version: String,
    },
    /// The pointer or artifact was refused; nothing changed.
    Refused {
        /// Why.
        reason: String,
    },
    /// Not this host's turn in the rollout yet, or the channel is paused.
    Waiting {
        /// Why.
        reason: String,
    },
}

/// The status report written to `apps/<app>/hosts/<host-id>.json` and printed by
/// `ferry agent status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct StatusReport {
    /// Always 1.
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// This host.
    pub host_id: String,
    /// Committed version, if any.
    pub version: Option<String>,
    /// Serial of the committed release.
    pub serial: Option<u64>,
    /// Highest serial accepted.
    pub highest_serial: u64,
    /// `ok`, `updating`, `rolled-back`, `refused`, `retrying`, `failed` or `new`.
    pub state: String,
    /// The journal step.
    pub step: String,
    /// The last error, if the last cycle failed.
    pub last_error: Option<String>,
    /// Releases marked bad here.
    pub bad: Vec<BadRelease>,
    /// When this report was made (RFC 3339).
    pub updated_at: String,
    /// The last commit or rollback (RFC 3339).
    pub last_change_at: Option<String>,
    /// The agent's version.
    pub agent_version: String,
}

/// The status of a journal state.
pub fn status_report(settings: &Settings, state: &State) -> StatusReport {
    StatusReport {
        schema: 1,
        app: settings.app.clone(),
        channel: settings.channel.clone(),
        host_id: settings.host_id.clone(),
        version: state.current.as_ref().map(|r| r.version.clone()),
        serial: state.current.as_ref().map(|r| r.serial),
        highest_serial: state.highest_serial,
        state: state.outcome.clone().unwrap_or_else(|| {
            if state.current.is_some() {
                "ok".into()
            } else {
                "new".into()
            }
        }),
        step: state.step.name().to_string(),
        last_error: state.last_error.clone(),
        bad: state.bad.clone(),
        updated_at: now_text(),
        last_change_at: state.last_change_at.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
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

/// The agent: settings, store, trusted keys, the journal and its state.
pub struct Agent {
    settings: Settings,
    store: Store,
    trusted: TrustedKeys,
    journal: Journal,
    state: State,
    metrics: Arc<Metrics>,
    /// Held for the agent's life: one agent per app and channel.
    _lock: crate::journal::JournalLock,
    /// ETag of a pointer verified and handled this run but not committed to the journal
    /// (a refusal or a wait); it keeps the next polls conditional.
    seen_etag: Option<String>,
    /// Config bundles, when configured.
    config: Option<crate::config_bundle::ConfigApplier>,
    /// Self-update, when configured.
    self_update: Option<crate::self_update::SelfUpdater>,
    /// Set when the last cycle hit a "try again later" fault that it answered itself (a blob
    /// missing or wrong in the store): the run loop backs off instead of waiting one interval.
    retry_soon: bool,
    /// Copies of the serial floor outside the journal.
    floor: FloorRecords,
}

impl Agent {
    /// Load keys and the journal. Nothing is touched yet.
    pub fn new(settings: Settings, store: Store, metrics: Arc<Metrics>) -> Result<Agent, Error> {
        let trusted = TrustedKeys::from_files(&settings.trust).map_err(|error| Error::Config {
            path: settings.trust.first().cloned().unwrap_or_default(),
            message: ErrorChain(&error).to_string(),
        })?;
        for dir in [&settings.state_dir, &settings.cache_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create directory", dir.as_path(), e))?;
        }
        let journal = Journal::new(&settings.state_dir, &settings.app, &settings.channel);
        let lock = journal.lock()?;
        let mut state = journal.load(&settings.app, &settings.channel)?;
        let floor = FloorRecords::new(&settings);
        let recovered = floor.recover(&trusted, &settings.app, &settings.channel);
        if recovered > state.highest_serial {
            tracing::warn!(
                app = %settings.app, channel = %settings.channel, journal = state.highest_serial, recovered,
                "the journal's serial floor is lower than a signed copy kept on this host (state dir wiped or restored?); using the copy"
            );
            state.highest_serial = recovered;
            journal.save(&state)?;
        }
        if let Some(current) = &state.current {
            metrics
                .current_serial
                .store(current.serial, Ordering::Relaxed);
        }
        let config = match &settings.config {
            Some(config) => Some(crate::config_bundle::ConfigApplier::new(
                &settings.app,
                &settings.channel,
                config.clone(),
                &settings.state_dir,
                settings.restart.clone(),
                settings.health.clone(),
                store.clone(),
                trusted.clone(),
            )?),
            None => None,
        };
        let self_update = match &settings.self_update {
            Some(self_update) => Some(crate::self_update::SelfUpdater::new(
                self_update.clone(),
                settings.state_dir.join(format!(
                    "{}.{}.self-update.json",
                    settings.app, settings.channel
                )),
                store.clone(),
                trusted.clone(),
                settings.cache_dir.clone(),
                settings.architecture.clone(),
            )?),
            None => None,
        };
        Ok(Agent {
            config,
            self_update,
            settings,
            store,
            trusted,
            journal,
            state,
            metrics,
            seen_etag: None,
            retry_soon: false,
            floor,
            _lock: lock,
        })
    }

    /// The journal state.
    pub fn state(&self) -> &State {
        &self.state
    }

    fn save(&mut self) -> Result<(), Error> {
        self.journal.save(&self.state)
    }

    fn enter(&mut self, step: Step, point: &str) -> Result<(), Error> {
        self.state.step = step;
        self.save()?;
        fault::point(point);
        Ok(())
    }

    /// One cycle: finish whatever the journal says is in flight, else poll and maybe update.
    pub async fn cycle(&mut self) -> Result<Outcome, Error> {
        self.retry_soon = false;
        let outcome = if self.state.step != Step::Idle {
            self.resume().await?
        } else {
            self.poll().await?
        };
        // Config and self-update run after the release step and only when no release update
        // is in flight, so the three never overlap.
        if self.state.step != Step::Idle {
            return Ok(outcome);
        }
        let outcome = self.config_cycle(outcome).await;
        self.self_update_cycle().await;
        Ok(outcome)
    }

    /// Apply a new config bundle, if any. A config rollback or refusal shows in the outcome
    /// only when the release step had nothing to say.
    async fn config_cycle(&mut self, outcome: Outcome) -> Outcome {
        let Some(config) = self.config.as_mut() else {
            return outcome;
        };
        let version = self
            .state
            .current
            .as_ref()
            .map(|current| current.version.clone())
            .unwrap_or_default();
        let quiet = matches!(
            outcome,
            Outcome::UpToDate | Outcome::NoPointer | Outcome::Waiting { .. }
        );
        match config.cycle(&version).await {
            Ok(crate::config_bundle::ConfigOutcome::RolledBack { serial, .. }) if quiet => {
                Outcome::RolledBack {
                    version: format!("config serial {serial}"),
                }
            }
            Ok(crate::config_bundle::ConfigOutcome::Refused { reason }) if quiet => {
                Outcome::Refused { reason }
            }
            Ok(_) => outcome,
            Err(error) => {
                tracing::warn!(app = %self.settings.app, "config step failed: {error}");
                outcome
            }
        }
    }

    /// Follow ferry's own channel; re-execute into a new, tested binary.
    async fn self_update_cycle(&mut self) {
        let Some(updater) = self.self_update.as_mut() else {
            return;
        };
        match updater.cycle().await {
            Ok(crate::self_update::SelfUpdateOutcome::ReExec { binary, version }) => {
                tracing::info!(%version, binary = %binary.display(), "re-executing into the new agent");
                let error = crate::self_update::re_exec(&binary);
                // Only reached when exec failed: this binary keeps running.
                tracing::error!("cannot re-execute into the new agent: {error}");
                if let Err(error) = updater.exec_failed(error.to_string()).await {
                    tracing::error!("self-update rollback failed: {error}");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("self-update step failed: {error}"),
        }
    }

    async fn resume(&mut self) -> Result<Outcome, Error> {
        let step = self.state.step.clone();
        tracing::warn!(
            app = %self.settings.app, channel = %self.settings.channel, step = step.name(),
            journal = %self.journal.path().display(), "resuming an interrupted update"
        );
        match step {
            Step::Idle => Ok(Outcome::UpToDate),
            // Nothing on the host was touched yet: poll again, so a newer serial (or a store
            // that changed meanwhile) decides what to fetch, not a stale journal entry.
            Step::Downloading { .. } => {
                self.state.step = Step::Idle;
                self.save()?;
                self.poll().await
            }
            Step::Installing { target } => self.install_restart_check(target, true).await,
            Step::Restarting { target } => self.restart_check(target).await,
            Step::Checking { target } => self.check_and_commit(target, None).await,
            Step::RollingBack { target, reason } => self.roll_back(target, reason, true).await,
        }
    }

    async fn poll(&mut self) -> Result<Outcome, Error> {
        let started = Instant::now();
        Metrics::increment(&self.metrics.polls);
        let path = ChannelPointer::path(&self.settings.app, &self.settings.channel);
        let known = self.seen_etag.clone().or_else(|| self.state.etag.clone());
        let fetched = match self
            .store
            .get_if_changed(&path, known.as_deref(), MAX_DOCUMENT_BYTES as u64)
            .await
        {
            Ok(fetched) => fetched,
            Err(error) => match store_error(error, "channel pointer") {
                Error::Refused { reason, .. } => return self.refuse_pointer(None, reason).await,
                other => return Err(other),
            },
        };
        let object = match fetched {
            Fetched::NotModified => {
                Metrics::increment(&self.metrics.not_modified);
                tracing::debug!(app = %self.settings.app, channel = %self.settings.channel, "pointer not modified");
                return Ok(Outcome::UpToDate);
            }
            Fetched::Missing => {
                tracing::info!(app = %self.settings.app, channel = %self.settings.channel, pointer = %self.store.location(&path), "no release published on this channel yet");
                return Ok(Outcome::NoPointer);
            }
            Fetched::Changed(object) => object,
        };
        let check = PointerCheck {
            app: &self.settings.app,
            channel: &self.settings.channel,
            highest_seen: (self.state.highest_serial > 0).then_some(self.state.highest_serial),
            now: ferry_release::now_utc(),
        };
        let verified = match ferry_release::verify_pointer(&object.bytes, &self.trusted, &check) {
            Ok(verified) => verified,
            Err(error) => {
                let reason = format!("{error}");
                return self.refuse_pointer(object.etag, reason).await;
            }
        };
        let pointer = verified.pointer;
        tracing::info!(
            app = %self.settings.app, channel = %self.settings.channel, version = %pointer.release.version,
            serial = pointer.serial, key = %verified.key_id, duration_ms = started.elapsed().as_millis() as u64,
            step = "verify", "pointer verified"
        );
        let architecture = &self.settings.architecture;
        let Some(artifact) = pointer
            .release
            .artifacts
            .get(architecture)
            .or_else(|| pointer.release.artifacts.get("all"))
        else {
            let reason = format!(
                "release {} has no artifact for architecture {architecture} (it has: {})",
                pointer.release.version,
                pointer
                    .release
                    .artifacts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return self.refuse_pointer(object.etag, reason).await;
        };
        let target = Release {
            version: pointer.release.version.clone(),
            serial: pointer.serial,
            sha256: artifact.sha256.clone(),
            size: artifact.size,
            path: artifact.path.clone(),
        };
        if pointer.paused {
            self.seen_etag = object.etag;
            let reason = format!("channel is paused at serial {}", pointer.serial);
            tracing::info!(app = %self.settings.app, channel = %self.settings.channel, serial = pointer.serial, "{reason}");
            return Ok(Outcome::Waiting { reason });
        }
        if let Some(reason) = self.wave_wait(&pointer) {
            tracing::info!(app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial, "{reason}");
            // No ETag remembered: the next poll fetches the pointer again to re-judge the wave.
            return Ok(Outcome::Waiting { reason });
        }
        if self
            .state
            .current
            .as_ref()
            .is_some_and(|current| current.sha256 == target.sha256)
        {
            let changed =
                target.serial != self.state.highest_serial || self.state.etag != object.etag;
            if target.serial > self.state.highest_serial {
                self.floor.record(&object.bytes);
            }
            self.state.highest_serial = self.state.highest_serial.max(target.serial);
            if let Some(current) = &mut self.state.current {
                current.serial = current.serial.max(target.serial);
            }
            self.state.etag = object.etag;
            self.seen_etag = None;
            if changed {
                self.save()?;
            }
            return Ok(Outcome::UpToDate);
        }
        if let Some(bad) = self
            .state
            .bad
            .iter()
            .find(|bad| bad.sha256 == target.sha256 && bad.serial >= target.serial)
        {
            let reason = format!(
                "release {} was marked bad here ({}); waiting for a newer serial",
                bad.version, bad.reason
            );
            tracing::warn!(app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial, "{reason}");
            self.seen_etag = object.etag;
            return Ok(Outcome::Waiting { reason });
        }
        // Accept: the serial is persisted before anything else happens.
        if target.serial > self.state.highest_serial {
            self.floor.record(&object.bytes);
        }
        self.state.highest_serial = self.state.highest_serial.max(target.serial);
        self.update(target, object.etag).await
    }

    /// Why this host must wait for its rollout wave, or `None` when it may update now.
    fn wave_wait(&self, pointer: &ChannelPointer) -> Option<String> {
        let seed = format!(
            "{}/{}/{}",
            self.settings.host_id, self.settings.app, self.settings.channel
        );
        wave_wait(&seed, pointer, ferry_release::now_utc())
    }

    async fn refuse_pointer(
        &mut self,
        etag: Option<String>,
        reason: String,
    ) -> Result<Outcome, Error> {
        Metrics::increment(&self.metrics.refused);
        tracing::error!(app = %self.settings.app, channel = %self.settings.channel, step = "verify", "REFUSED channel pointer: {reason}; nothing installed, the service is left as it is");
        self.seen_etag = etag;
        self.state.last_error = Some(format!("refused channel pointer: {reason}"));
        self.state.outcome = Some("refused".into());
        self.save()?;
        self.report().await;
        Ok(Outcome::Refused { reason })
    }

    /// Download, then install, restart, check; `etag` is the pointer's, remembered on commit.
    async fn update(&mut self, target: Release, etag: Option<String>) -> Result<Outcome, Error> {
        self.enter(
            Step::Downloading {
                target: target.clone(),
            },
            "downloading",
        )?;
        self.state.outcome = Some("updating".into());
        self.report().await;
        let started = Instant::now();
        match download(&self.store, &self.settings.cache_dir, &target).await {
            Ok(_) => {}
            // The store does not (yet) hold what the signed release names: a lagging replica,
            // a half-synced mirror, a corrupted copy. Not the release's fault: retried.
            Err(error @ Error::Refused { .. }) => {
                return self.refuse_release(target, error, false).await;
            }
            Err(error) => return self.retry_later(error).await,
        }
        tracing::info!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = "download", bytes = target.size, duration_ms = started.elapsed().as_millis() as u64, "artifact downloaded and verified"
        );
        fault::point("downloaded");
        let outcome = self.install_restart_check(target, false).await?;
        if matches!(outcome, Outcome::Installed { .. }) {
            self.state.etag = etag;
            self.save()?;
        } else if !self.retry_soon {
            self.seen_etag = etag;
        }
        Ok(outcome)
    }

    async fn install_restart_check(
        &mut self,
        target: Release,
        recovering: bool,
    ) -> Result<Outcome, Error> {
        self.enter(
            Step::Installing {
                target: target.clone(),
            },
            "installing",
        )?;
        let started = Instant::now();
        let package = match self.cached_artifact(&target).await {
            Ok(package) => package,
            Err(error) if error.is_transient() && recovering => return Err(error),
            Err(error) if error.is_transient() => return self.retry_later(error).await,
            Err(error) => return self.refuse_release(target, error, false).await,
        };
        // Prepare (unpack into its own directory, check the package): nothing running is
        // touched yet, so a failure here is a refusal, not a rollback.
        let method = self.settings.install.clone();
        let (version, prepared_package) = (target.version.clone(), package.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            install::prepare(&method, &prepared_package, &version)
        })
        .await
        .unwrap_or_else(|join| {
            Err(Error::Install {
                version: target.version.clone(),
                message: join.to_string(),
            })
        });
        match prepared {
            Ok(()) => {}
            // A full disk or a local I/O fault: nothing was touched, try again later.
            Err(error) if error.is_transient() && recovering => return Err(error),
            Err(error) if error.is_transient() => return self.retry_later(error).await,
            // The verified package itself cannot be installed (unsafe or unreadable entries):
            // the same bytes will fail the same way, so it is marked bad.
            Err(error) => return self.refuse_release(target, error, true).await,
        }
        let method = self.settings.install.clone();
        let version = target.version.clone();
        let result = tokio::task::spawn_blocking(move || {
            install::activate(&method, &package, &version, recovering)
        })
        .await
        .unwrap_or_else(|join| {
            Err(Error::Install {
                version: target.version.clone(),
                message: join.to_string(),
            })
        });
        if let Err(error) = result {
            return self.fail(target, error).await;
        }
        self.log_step(&target, "install", started, "installed");
        fault::point("installed");
        self.restart_check(target).await
    }

    /// A release that cannot be installed now, nothing on the host touched. With `mark_bad`
    /// (the verified package itself is broken) it is not tried again until a newer serial;
    /// without (the store does not hold the right bytes yet) the next poll tries again.
    async fn refuse_release(
        &mut self,
        target: Release,
        error: Error,
        mark_bad: bool,
    ) -> Result<Outcome, Error> {
        Metrics::increment(&self.metrics.refused);
        let reason = error.to_string();
        let next = if mark_bad {
            "marked bad here until a newer serial"
        } else {
            "will try again"
        };
        tracing::error!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = self.state.step.name(), "REFUSED: {reason}; nothing installed, the service is left as it is ({next})"
        );
        if mark_bad {
            self.mark_bad(&target, &reason);
        } else {
            // Forget the pointer's ETag so the next poll reads and judges it again.
            self.seen_etag = None;
            self.retry_soon = true;
        }
        self.state.step = Step::Idle;
        self.state.last_error = Some(reason.clone());
        self.state.outcome = Some("refused".into());
        self.save()?;
        self.report().await;
        Ok(Outcome::Refused { reason })
    }

    /// A "try again later" fault before anything on the host was touched: back to idle, so the
    /// next cycle polls again (a newer serial supersedes this one), and the error goes to the
    /// run loop, which backs off.
    async fn retry_later(&mut self, error: Error) -> Result<Outcome, Error> {
        tracing::warn!(
            app = %self.settings.app, channel = %self.settings.channel, step = self.state.step.name(),
            "{error}; the service is left as it is and the update is retried"
        );
        self.state.step = Step::Idle;
        self.state.last_error = Some(error.to_string());
        self.state.outcome = Some("retrying".into());
        self.seen_etag = None;
        self.save()?;
        self.report().await;
        Err(error)
    }

    async fn restart_check(&mut self, target: Release) -> Result<Outcome, Error> {
        self.enter(
            Step::Restarting {
                target: target.clone(),
            },
            "restarting",
        )?;
        let started = Instant::now();
        let pid = match self.restart_service().await {
            Ok(pid) => pid,
            Err(error) => return self.fail(target, error).await,
        };
        self.log_step(&target, "restart", started, "service restarted");
        fault::point("restarted");
        self.check_and_commit(target, pid).await
    }

    async fn restart_service(&self) -> Result<Option<u32>, Error> {
        let method = self.settings.restart.clone();
        tokio::task::spawn_blocking(move || restart::restart(&method))
            .await
            .unwrap_or_else(|join| {
                Err(Error::Restart {
                    method: "restart",
                    message: join.to_string(),
                })
            })
    }

    async fn check_and_commit(
        &mut self,
        target: Release,
        pid: Option<u32>,
    ) -> Result<Outcome, Error> {
        self.enter(
            Step::Checking {
                target: target.clone(),
            },
            "checking",
        )?;
        let started = Instant::now();
        if let Err(error) = health::check(&self.settings.health, &target.version, pid).await {
            return self.fail(target, error).await;
        }
        self.log_step(&target, "health", started, "healthy");
        self.state
            .commit(target.clone(), self.settings.keep_artifacts);
        self.state.outcome = Some("ok".into());
        self.state.last_change_at = Some(now_text());
        self.save()?;
        fault::point("committed");
        Metrics::increment(&self.metrics.installs);
        self.metrics
            .current_serial
            .store(target.serial, Ordering::Relaxed);
        tracing::info!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = "commit", "release committed"
        );
        self.prune_cache();
        self.report().await;
        Ok(Outcome::Installed {
            version: target.version,
        })
    }

    async fn fail(&mut self, target: Release, error: Error) -> Result<Outcome, Error> {
        tracing::error!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = self.state.step.name(), "update failed: {error}; rolling back"
        );
        self.roll_back(target, error.to_string(), false).await
    }

    /// Put the committed release back: reinstall its cached artifact, restart, re-check;
    /// mark `target` bad either way.
    async fn roll_back(
        &mut self,
        target: Release,
        reason: String,
        recovering: bool,
    ) -> Result<Outcome, Error> {
        self.enter(
            Step::RollingBack {
                target: target.clone(),
                reason: reason.clone(),
            },
            "rolling-back",
        )?;
        let started = Instant::now();
        self.mark_bad(&target, &reason);
        Metrics::increment(&self.metrics.rollbacks);
        let mut rollback_error = None;
        if let Some(previous) = self.state.current.clone() {
            let result: Result<(), Error> = async {
                let package = self.cached_artifact(&previous).await?;
                let method = self.settings.install.clone();
                let version = previous.version.clone();
                tokio::task::spawn_blocking(move || {
                    install::install(&method, &package, &version, recovering)
                })
                .await
                .unwrap_or_else(|join| {
                    Err(Error::Install {
                        version: previous.version.clone(),
                        message: join.to_string(),
                    })
                })?;
                let pid = self.restart_service().await?;
                health::check(&self.settings.health, &previous.version, pid).await
            }
            .await;
            if let Err(error) = result {
                tracing::error!(
                    app = %self.settings.app, channel = %self.settings.channel, version = %previous.version,
                    step = "rollback", "ROLLBACK FAILED: {error}; the service needs attention"
                );
                rollback_error = Some(error.to_string());
            }
        }
        self.state.step = Step::Idle;
        self.state.last_error = Some(match &rollback_error {
            None => format!(
                "release {} (serial {}) failed and was rolled back: {reason}",
                target.version, target.serial
            ),
            Some(error) => format!(
                "release {} (serial {}) failed: {reason}; rollback failed too: {error}",
                target.version, target.serial
            ),
        });
        self.state.outcome = Some(
            if rollback_error.is_none() && self.state.current.is_some() {
                "rolled-back"
            } else {
                "failed"
            }
            .into(),
        );
        self.state.last_change_at = Some(now_text());
        self.save()?;
        fault::point("rolled-back");
        tracing::warn!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = "rollback", duration_ms = started.elapsed().as_millis() as u64,
            restored = self.state.current.as_ref().map(|r| r.version.as_str()).unwrap_or("nothing"),
            "release marked bad and rolled back"
        );
        self.report().await;
        Ok(Outcome::RolledBack {
            version: target.version,
        })
    }

    fn mark_bad(&mut self, target: &Release, reason: &str) {
        self.state.bad.retain(|bad| bad.sha256 != target.sha256);
        self.state.bad.push(BadRelease {
            version: target.version.clone(),
            sha256: target.sha256.clone(),
            serial: target.serial,
            reason: reason.to_string(),
            at: now_text(),
        });
        // Keep the list short: the newest twenty.
        let excess = self.state.bad.len().saturating_sub(20);
        self.state.bad.drain(..excess);
    }

    /// The cached artifact of a release, downloading it again if it was lost from the cache.
    async fn cached_artifact(&self, release: &Release) -> Result<PathBuf, Error> {
        let path = artifact_path(&self.settings.cache_dir, &release.sha256);
        if path.is_file() {
            return Ok(path);
        }
        tracing::warn!(version = %release.version, "artifact missing from the cache; downloading it again");
        download(&self.store, &self.settings.cache_dir, release).await
    }

    fn prune_cache(&self) {
        let keep = self.state.referenced_artifacts();
        let Ok(entries) = std::fs::read_dir(&self.settings.cache_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sha) = name
                .strip_suffix(".deb")
                .or_else(|| name.strip_suffix(".deb.part"))
            else {
                continue;
            };
            if !keep.iter().any(|kept| kept == sha) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn log_step(&self, target: &Release, step: &'static str, started: Instant, message: &str) {
        tracing::info!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step, duration_ms = started.elapsed().as_millis() as u64, "{message}"
        );
    }

    /// Write the status report to the store (best effort: a read-only store is fine).
    pub async fn report(&self) {
        if !self.settings.report {
            return;
        }
        let report = status_report(&self.settings, &self.state);
        let Ok(mut bytes) = serde_json::to_vec_pretty(&report) else {
            return;
        };
        bytes.push(b'\n');
        let path = format!(
            "apps/{}/hosts/{}.json",
            self.settings.app, self.settings.host_id
        );
        let write = self.store.put_overwrite(&path, Bytes::from(bytes));
        match tokio::time::timeout(Duration::from_secs(10), write).await {
            Ok(Ok(())) => tracing::debug!(report = %self.store.location(&path), "status reported"),
            Ok(Err(error)) => tracing::warn!("cannot write the status report: {error}"),
            Err(_) => tracing::warn!("cannot write the status report: no answer within 10s"),
        }
    }
}

/// This host's place in a staged rollout; the rule lives in `ferry_release` so the agent,
/// `ferry status` and `ferry watch` agree on who is in which wave.
pub use ferry_release::host_percentile;

/// Why a host with `seed` must still wait for `pointer`'s rollout at `now`, or `None`.
pub fn wave_wait(
    seed: &str,
    pointer: &ChannelPointer,
    now: time::OffsetDateTime,
) -> Option<String> {
    let percentile = host_percentile(seed);
    // Checked date arithmetic inside: an absurd delay in a signed pointer means "not yet", never a panic.
    let open = pointer
        .rollout
        .host_may_update(percentile, pointer.published_at, now);
    (!open).then(|| {
        format!("host is at percentile {percentile} of the rollout; its wave has not opened yet")
    })
}

fn store_error(error: ferry_store::Error, what: &str) -> Error {
    match error {
        ferry_store::Error::TooLarge { .. } | ferry_store::Error::Release(_) => Error::Refused {
            what: what.to_string(),
            reason: error.to_string(),
        },
        other => Error::Store {
            message: format!("{}", ErrorChain(&other)),
        },
    }
}

/// Formats an error with its causes, `a: b: c`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(formatter, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Where the cache keeps an artifact.
pub fn artifact_path(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join(format!("{sha256}.deb"))
}

/// Fetch an artifact into the cache: resume a partial file with a ranged GET, hash as it
/// streams, never take more than the signed size, rename into place only when the sha256
/// matches. A mismatch deletes the partial file; a broken connection keeps it for resuming.
pub async fn download(
    store: &Store,
    cache_dir: &Path,
    release: &Release,
) -> Result<PathBuf, Error> {
    let refused = |reason: String| Error::Refused {
        what: format!("artifact {} of {}", release.path, release.version),
        reason,
    };
    if release.sha256.len() != 64 || !release.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(format!(
            "sha256 {:?} is not 64 hex digits",
            release.sha256
        )));
    }
    let final_path = artifact_path(cache_dir, &release.sha256);
    if final_path.is_file() {
        return Ok(final_path);
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io("create directory", cache_dir, e))?;
    let part_path = cache_dir.join(format!("{}.deb.part", release.sha256));
    // A partial download of another artifact is stale: the target changed (a newer serial
    // superseded it). It must not keep the disk full for this one.
    remove_stale_parts(cache_dir, &part_path);
    let mut hasher = sha2::Sha256::new();
    let mut have = 0u64;
    if let Ok(mut existing) = std::fs::File::open(&part_path) {
        let length = existing.metadata().map(|m| m.len()).unwrap_or(0);
        if length <= release.size {
            have = std::io::copy(&mut existing, &mut HashWriter(&mut hasher))
                .map_err(|e| Error::io("read", &part_path, e))?;
        }
    }
    if have > release.size {
        have = 0;
        hasher = sha2::Sha256::new();
    }
    // The signed size says what is coming: refuse to start a download that cannot fit.
    crate::fsutil::require_space(cache_dir, release.size - have)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part_path)
        .await
        .map_err(|e| Error::io("open", &part_path, e))?;
    file.set_len(have)
        .await
        .map_err(|e| Error::io("truncate", &part_path, e))?;
    file.seek(std::io::SeekFrom::End(0))
        .await
        .map_err(|e| Error::io("seek", &part_path, e))?;
    if have > 0 {
        tracing::info!(version = %release.version, offset = have, "resuming the download");
    }
    if have < release.size {
        let (total, mut stream) =
            store
                .stream_from(&release.path, have)
                .await
                .map_err(|error| match error {
                    ferry_store::Error::NotFound { .. } => refused(format!("{error}")),
                    other => store_error(other, "artifact"),
                })?;
        if total != release.size {
            drop(file);
            let _ = std::fs::remove_file(&part_path);
            return Err(refused(format!(
                "the store holds {total} bytes but the signed release says {}",
                release.size
            )));
        }
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| store_error(error, "artifact"))?;
            if have + chunk.len() as u64 > release.size {
                drop(file);
                let _ = std::fs::remove_file(&part_path);
                return Err(refused(format!(
                    "the store sent more than the signed size of {} bytes",
                    release.size
                )));
            }
            hasher.update(&chunk);
            if let Err(cause) = file.write_all(&chunk).await {
                let error = Error::io("write", cache_dir, cause);
                if matches!(error, Error::NoSpace { .. }) {
                    // The partial file is what fills the disk; resuming it needs space anyway.
                    drop(file);
                    let _ = std::fs::remove_file(&part_path);
                    return Err(Error::NoSpace {
                        path: cache_dir.to_path_buf(),
                        need: release.size,
                        have: crate::fsutil::available_bytes(cache_dir).unwrap_or(0),
                    });
                }
                return Err(error);
            }
            have += chunk.len() as u64;
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io("write", &part_path, e))?;
    file.sync_all()
        .await
        .map_err(|e| Error::io("fsync", &part_path, e))?;
    drop(file);
    if have < release.size {
        return Err(Error::Store {
            message: format!(
                "download of {} stopped at {have} of {} bytes; will resume",
                release.path, release.size
            ),
        });
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&release.sha256) {
        let _ = std::fs::remove_file(&part_path);
        return Err(refused(format!(
            "sha256 mismatch: the signed release says {}, the download is {actual}",
            release.sha256
        )));
    }
    std::fs::rename(&part_path, &final_path)
        .map_err(|e| Error::io("rename into place", &final_path, e))?;
    crate::fsutil::sync_dir(cache_dir)?;
    Ok(final_path)
}

/// Remove every `*.deb.part` in the cache except `keep`.
fn remove_stale_parts(cache_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && path.to_string_lossy().ends_with(".deb.part") {
            tracing::info!(file = %path.display(), "removing a stale partial download");
            let _ = std::fs::remove_file(&path);
        }
    }
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.update(buffer);
        Ok(buffer.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_store(dir: &Path) -> Store {
        std::fs::create_dir_all(dir).unwrap();
        Store::open(
            &format!("file://{}", dir.display()),
            &ferry_store::StoreOptions::default(),
        )
        .unwrap()
    }

    fn release_of(bytes: &[u8]) -> Release {
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        Release {
            version: "1.0".into(),
            serial: 1,
            path: format!("artifacts/{sha256}.deb"),
            sha256,
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn rollout_waves_open_by_percentile_and_time() {
        let text = r#"{"schema":1,"app":"a","channel":"c","serial":1,"release":{"version":"1","artifacts":{}},
            "rollout":{"waves":[{"percent":10,"after_s":0},{"percent":100,"after_s":600}]},
            "published_at":"2026-11-27T05:00:00Z","expires_at":null}"#;
        let pointer: ChannelPointer = serde_json::from_str(text).unwrap();
        let (early, late) = (0..1000)
            .map(|n| format!("host-{n}"))
            .partition::<Vec<_>, _>(|seed| host_percentile(seed) < 10);
        assert!(!early.is_empty() && !late.is_empty());
        let at = |seconds: i64| pointer.published_at + time::Duration::seconds(seconds);
        assert_eq!(wave_wait(&early[0], &pointer, at(1)), None);
        assert!(wave_wait(&late[0], &pointer, at(1)).is_some());
        assert_eq!(wave_wait(&late[0], &pointer, at(600)), None);
        assert_eq!(
            host_percentile(&late[0]),
            host_percentile(&late[0]),
            "stable per host"
        );
    }

    #[test]
    fn a_wave_delay_past_the_end_of_time_waits_instead_of_panicking() {
        let text = r#"{"schema":1,"app":"a","channel":"c","serial":1,"release":{"version":"1","artifacts":{}},
            "rollout":{"waves":[{"percent":100,"after_s":18446744073709551615}]},
            "published_at":"2026-11-27T05:00:00Z","expires_at":null}"#;
        let pointer: ChannelPointer = serde_json::from_str(text).unwrap();
        assert!(wave_wait("host-1", &pointer, ferry_release::now_utc()).is_some());
    }

    #[tokio::test]
    async fn download_resumes_a_partial_file_with_a_ranged_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let artifact: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let release = release_of(&artifact);
        // The store's first half is garbage: only a download that resumes at the partial
        // file's end (a ranged read) ends with the right bytes.
        let mut stored = artifact.clone();
        stored[..100_000].fill(0xAA);
        store
            .put_overwrite(&release.path, Bytes::from(stored))
            .await
            .unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join(format!("{}.deb.part", release.sha256)),
            &artifact[..100_000],
        )
        .unwrap();

        let path = download(&store, &cache, &release).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), artifact);
        assert!(!cache.join(format!("{}.deb.part", release.sha256)).exists());
    }

    #[tokio::test]
    async fn download_refuses_wrong_size_and_wrong_hash_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let cache = dir.path().join("cache");
        let artifact = vec![7u8; 50_000];
        let release = release_of(&artifact);

        store
            .put_overwrite(&release.path, Bytes::from(artifact[..10_000].to_vec()))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(
            error.to_string().contains("signed release says 50000"),
            "{error}"
        );

        let mut tampered = artifact.clone();
        tampered[25_000] = 8;
        store
            .put_overwrite(&release.path, Bytes::from(tampered))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(error.to_string().contains("sha256 mismatch"), "{error}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "nothing left in the cache"
        );

        let error = download(
            &store,
            &cache,
            &Release {
                sha256: "../../etc".into(),
                ..release.clone()
            },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }

    #[tokio::test]
    async fn a_longer_object_than_signed_is_cut_off_not_read_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(&dir.path().join("store"));
        let cache = dir.path().join("cache");
        let artifact = vec![1u8; 10_000];
        let release = release_of(&artifact);
        let mut longer = artifact.clone();
        longer.extend(std::iter::repeat_n(2u8, 1_000_000));
        store
            .put_overwrite(&release.path, Bytes::from(longer))
            .await
            .unwrap();
        let error = download(&store, &cache, &release).await.unwrap_err();
        assert!(matches!(error, Error::Refused { .. }), "{error}");
    }
}
