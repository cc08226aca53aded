//! The update loop: wait → poll the channel pointer (conditional GET) → verify → download →
//! install → restart → health check → commit, or roll back to the committed release. Every
//! step is journaled before it runs, so a crash resumes from the journal to a consistent end.
//!
//! [`run`] takes already-made pieces (settings, an open store, a shutdown future), so the
//! tests drive exactly the code production runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferry_release::{ChannelPointer, HostState, TrustedKeys};
use ferry_store::{Object, Store};

use crate::config::{Apply, Settings};
pub use crate::download::{artifact_path, download};
use crate::fault;
use crate::floor::FloorRecords;
use crate::journal::{Journal, PendingBoot, Release, State, Step};
use crate::keyring::{KeyringTrust, poll_pointer_with_keyring};
use crate::metrics::Metrics;
use crate::poll::{ErrorChain, Polled, poll_pointer};
pub use crate::report::{StatusReport, local_status, now_text, status_report};
use crate::update_lock::{Acquired, Hold};
pub use run::{AppRun, OpenStore, RunOptions, run, run_apps};

mod followers;
mod rollback;
mod run;
use crate::install::Part;
use crate::{Error, health, install, restart};

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

/// The agent: settings, store, trusted keys, the journal and its state.
pub struct Agent {
    settings: Settings,
    store: Store,
    /// Where reports go when not to `store` (an `http(s)://` store is read-only).
    report_store: Option<Store>,
    trusted: TrustedKeys,
    /// With `trust-root`: the keyring that says which keys sign this channel.
    keyring: Option<KeyringTrust>,
    /// When this process last wrote the report (for heartbeats).
    last_report: std::sync::Mutex<Option<Instant>>,
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
    /// The operator's hold as last reported (so placing or lifting one is reported).
    reported_hold: Option<String>,
    /// The other apps of a multi-app agent (state dir, app, channel): self-update waits
    /// while one of them is mid-update.
    pub(crate) siblings: Vec<(PathBuf, String, String)>,
}

impl Agent {
    /// Load keys and the journal. Nothing is touched yet.
    pub fn new(settings: Settings, store: Store, metrics: Arc<Metrics>) -> Result<Agent, Error> {
        let load_keys = |paths: &[PathBuf], key: &'static str| {
            TrustedKeys::from_files(paths).map_err(|error| Error::TrustedKeys {
                key,
                message: ErrorChain(&error).to_string(),
            })
        };
        let flat = load_keys(&settings.trust, "trust")?;
        let keyring = if settings.trust_root.is_empty() {
            None
        } else {
            Some(KeyringTrust::load(
                load_keys(&settings.trust_root, "trust-root")?,
                settings
                    .state_dir
                    .join(format!("{}.keyring.json", settings.app)),
            )?)
        };
        // What the floor copies, config bundles and self-update verify with: the trust list,
        // or with only root keys pinned, the keys the accepted keyring allows on this channel.
        let trusted = match keyring.as_ref().and_then(KeyringTrust::current) {
            Some(current) if flat.is_empty() => current
                .trusted_for(&settings.channel)
                .map(|keys| keys.with_threshold(1))
                .map_err(|error| Error::Config {
                    path: settings.state_dir.clone(),
                    message: error.to_string(),
                })?,
            _ => flat,
        };
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
            report_store: None,
            trusted,
            keyring,
            last_report: std::sync::Mutex::new(None),
            journal,
            state,
            metrics,
            seen_etag: None,
            retry_soon: false,
            floor,
            reported_hold: None,
            siblings: Vec::new(),
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
        self.note_waiting(&outcome).await?;
        let outcome = self.config_cycle(outcome).await;
        self.self_update_cycle().await;
        Ok(outcome)
    }

    /// Keep the journal's (and the report's) "waiting" note in step with the cycle's outcome,
    /// and report when an operator's hold was placed or lifted.
    async fn note_waiting(&mut self, outcome: &Outcome) -> Result<(), Error> {
        let waiting = match outcome {
            Outcome::Waiting { reason } => Some(reason.clone()),
            Outcome::UpToDate | Outcome::NoPointer => self.state.waiting.clone(),
            _ => None,
        };
        let held = Hold::read(&self.hold_path()).map(|hold| hold.describe());
        let changed = waiting != self.state.waiting;
        if changed {
            self.state.waiting = waiting;
            self.save()?;
        }
        if changed || held != self.reported_hold {
            self.reported_hold = held;
            self.report().await;
        }
        Ok(())
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
        let polled = match &mut self.keyring {
            Some(keyring) => {
                poll_pointer_with_keyring(
                    &self.store,
                    &self.settings.app,
                    &self.settings.channel,
                    known.as_deref(),
                    self.state.highest_serial,
                    keyring,
                    &self.trusted,
                )
                .await?
            }
            None => {
                poll_pointer(
                    &self.store,
                    &self.settings.app,
                    &self.settings.channel,
                    known.as_deref(),
                    self.state.highest_serial,
                    &self.trusted,
                )
                .await?
            }
        };
        let (verified, object) = match polled {
            Polled::NotModified => {
                Metrics::increment(&self.metrics.not_modified);
                tracing::debug!(app = %self.settings.app, channel = %self.settings.channel, "pointer not modified");
                return Ok(Outcome::UpToDate);
            }
            Polled::Missing => {
                tracing::info!(app = %self.settings.app, channel = %self.settings.channel, pointer = %self.store.location(&path), "no release published on this channel yet");
                return Ok(Outcome::NoPointer);
            }
            Polled::Refused { reason, etag } => return self.refuse_pointer(etag, reason).await,
            Polled::Stale {
                serial,
                highest_seen,
                etag,
            } => {
                // Routine behind a CDN (an edge still caching the previous pointer) and what a
                // replay looks like: either way nothing moves backwards and the host is fine.
                Metrics::increment(&self.metrics.stale_pointers);
                tracing::warn!(
                    app = %self.settings.app, channel = %self.settings.channel, serial, highest_seen, step = "verify",
                    "ignored a stale channel pointer: serial {serial} is lower than serial {highest_seen} already seen (a cache or replica behind the store, or a replay); the service is left as it is"
                );
                self.seen_etag = etag;
                return Ok(Outcome::UpToDate);
            }
            Polled::Verified {
                document,
                etag,
                bytes,
            } => (document, Object { bytes, etag }),
        };
        let pointer = verified.pointer;
        if pointer.serial > self.state.highest_serial {
            tracing::info!(
                app = %self.settings.app, channel = %self.settings.channel, version = %pointer.release.version,
                serial = pointer.serial, key = %verified.key_id, duration_ms = started.elapsed().as_millis() as u64,
                step = "verify", "pointer verified"
            );
        } else {
            // The same pointer again: a store without ETags (a static server with `etag off`)
            // answers every poll in full.
            tracing::debug!(
                app = %self.settings.app, channel = %self.settings.channel, serial = pointer.serial,
                step = "verify", "pointer verified, unchanged"
            );
        }
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
        let target = Release::named_by(&pointer, artifact);
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
            let waited = self.state.waiting.take().is_some();
            let pending = self.state.pending_boot.take().is_some();
            let waited = waited || pending;
            if changed || waited {
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
        let before = self.state.clone();
        if target.serial > self.state.highest_serial {
            self.floor.record(&object.bytes);
        }
        self.state.highest_serial = self.state.highest_serial.max(target.serial);
        if let Some(reason) = self.install_gate(pointer.urgent, &target) {
            // Verified and accepted, not installed yet: fetch it now (so the install is quick
            // when the gate opens) and look again at the next poll, which re-reads the pointer.
            self.prefetch(&target).await;
            if self.state != before {
                self.save()?;
            }
            tracing::info!(app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial, "{reason}");
            return Ok(Outcome::Waiting { reason });
        }
        self.update(target, object.etag, pointer.urgent).await
    }

    /// Why nothing may be installed or restarted now: an operator's hold, or (unless the
    /// release is urgent) a closed update window.
    pub(super) fn held_or_outside_window(&self, urgent: bool) -> Option<String> {
        let app = &self.settings.app;
        if let Some(hold) = Hold::read(&self.hold_path()) {
            return Some(format!(
                "{}; `ferry agent release {app}` lets the update go on",
                hold.describe()
            ));
        }
        if urgent {
            return None;
        }
        self.settings.window.wait_reason(jiff::Timestamp::now())
    }

    /// Why a verified release may not be installed now (an operator's hold, the update
    /// window, `apply = "on-reboot"`), or `None`.
    fn install_gate(&mut self, urgent: bool, target: &Release) -> Option<String> {
        if let Some(reason) = self.held_or_outside_window(urgent) {
            return Some(reason);
        }
        // A host with nothing installed has nothing to restart: its first release goes in now.
        if self.settings.apply == Apply::OnReboot && self.state.current.is_some() {
            let boot = &self.settings.boot_id;
            match &self.state.pending_boot {
                Some(pending) if pending.sha256 == target.sha256 && &pending.boot_id != boot => {}
                Some(pending) if pending.sha256 == target.sha256 => {
                    return Some(format!(
                        "release {} installs at the next boot (apply = \"on-reboot\")",
                        target.version
                    ));
                }
                _ => {
                    self.state.pending_boot = Some(PendingBoot {
                        sha256: target.sha256.clone(),
                        boot_id: boot.clone(),
                    });
                    return Some(format!(
                        "release {} installs at the next boot (apply = \"on-reboot\")",
                        target.version
                    ));
                }
            }
        }
        None
    }

    /// The operator's hold file of this app (`ferry agent hold`).
    fn hold_path(&self) -> PathBuf {
        Hold::path(
            &self.settings.state_dir,
            &self.settings.app,
            &self.settings.channel,
        )
    }

    /// Download and verify a release that waits, into the cache; a failure is only logged
    /// (the install downloads it again).
    async fn prefetch(&mut self, target: &Release) {
        if artifact_path(&self.settings.cache_dir, &target.sha256).is_file() {
            return;
        }
        match self.fetch(target).await {
            Ok(bytes) => tracing::info!(
                app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
                step = "download", bytes, "artifact downloaded and verified ahead of its install"
            ),
            Err(error) => tracing::warn!(
                app = %self.settings.app, channel = %self.settings.channel, version = %target.version,
                "cannot download the waiting release yet (tried again later): {error}"
            ),
        }
    }

    /// Fetch a release into the cache (from a patch, whole, or already there), counted in
    /// the metrics and the journal's `last_download`; returns the bytes fetched. A release
    /// fetched ahead of its install (a window, a hold) keeps the record of that download.
    async fn fetch(&mut self, target: &Release) -> Result<u64, Error> {
        let (_, record) = crate::delta::fetch(
            &self.store,
            &self.trusted,
            &self.settings.cache_dir,
            &self.settings.app,
            target,
        )
        .await?;
        self.metrics.record_download(&record);
        let bytes = record.bytes;
        let prefetched = record.via == "cached"
            && self
                .state
                .last_download
                .as_ref()
                .is_some_and(|last| last.version == record.version);
        if !prefetched {
            self.state.last_download = Some(record);
        }
        Ok(bytes)
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
        self.state.outcome = Some(HostState::Refused);
        self.save()?;
        self.report().await;
        Ok(Outcome::Refused { reason })
    }

    /// Download, then install, restart, check; `etag` is the pointer's, remembered on commit.
    async fn update(
        &mut self,
        target: Release,
        etag: Option<String>,
        urgent: bool,
    ) -> Result<Outcome, Error> {
        self.enter(
            Step::Downloading {
                target: target.clone(),
            },
            "downloading",
        )?;
        let outcome_before = self.state.outcome;
        self.state.outcome = Some(HostState::Updating);
        // Whatever it waited for is over; the update lock may set a new reason below.
        self.state.waiting = None;
        self.report().await;
        let started = Instant::now();
        match self.fetch(&target).await {
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
            step = "download", bytes = self.state.last_download.as_ref().map_or(target.size, |record| record.bytes), full = target.size, duration_ms = started.elapsed().as_millis() as u64, "artifact downloaded and verified"
        );
        fault::point("downloaded");
        // The application's update lock: held by the agent from here through the health
        // check, so nothing the application guards is cut off by the install or restart.
        let _held = match self.settings.update_lock.clone() {
            Some(lock) => {
                let acquired = match lock.try_acquire() {
                    Ok(Some(held)) => Ok(Acquired::Held(held)),
                    Ok(None) => {
                        // Contended: say so while waiting.
                        self.state.waiting = Some(format!(
                            "waiting for the application's update lock {}",
                            lock.path.display()
                        ));
                        self.report().await;
                        let acquired = lock.acquire().await;
                        self.state.waiting = None;
                        acquired
                    }
                    Err(error) => Err(error),
                };
                let held = match acquired {
                    Ok(Acquired::Held(held)) => held,
                    Ok(Acquired::Expired) => None,
                    Ok(Acquired::Skipped(reason)) => {
                        return self.postpone(&target, outcome_before, reason);
                    }
                    Err(error) => return self.retry_later(error).await,
                };
                // The wait may have been long: a hold placed or a window closed meanwhile
                // still counts.
                if let Some(reason) = self.held_or_outside_window(urgent) {
                    return self.postpone(&target, outcome_before, reason);
                }
                held
            }
            None => None,
        };
        let outcome = self.install_restart_check(target, false).await?;
        if matches!(outcome, Outcome::Installed { .. }) {
            self.state.etag = etag;
            self.save()?;
        } else if !self.retry_soon {
            self.seen_etag = etag;
        }
        Ok(outcome)
    }

    /// Leave a downloaded release for a later poll (nothing on the host touched).
    fn postpone(
        &mut self,
        target: &Release,
        outcome_before: Option<HostState>,
        reason: String,
    ) -> Result<Outcome, Error> {
        tracing::warn!(app = %self.settings.app, channel = %self.settings.channel, version = %target.version, "{reason}");
        self.state.step = Step::Idle;
        self.state.outcome = outcome_before;
        self.save()?;
        Ok(Outcome::Waiting { reason })
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
        let method = &self.settings.install;
        let prepared =
            install::run_off_thread(Part::Prepare, method, &package, &target.version, false).await;
        match prepared {
            Ok(()) => {}
            // A full disk or a local I/O fault: nothing was touched, try again later.
            Err(error) if error.is_transient() && recovering => return Err(error),
            Err(error) if error.is_transient() => return self.retry_later(error).await,
            // The verified package itself cannot be installed (unsafe or unreadable entries):
            // the same bytes will fail the same way, so it is marked bad.
            Err(error) => return self.refuse_release(target, error, true).await,
        }
        let method = &self.settings.install;
        let result = install::run_off_thread(
            Part::Activate,
            method,
            &package,
            &target.version,
            recovering,
        )
        .await;
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
        self.state.outcome = Some(HostState::Refused);
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
        self.state.outcome = Some(HostState::Retrying);
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
        self.state.outcome = Some(HostState::Ok);
        self.state.waiting = None;
        self.state.pending_boot = None;
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

    /// With `report-shards`, the host's own report object of before is removed (best effort),
    /// so `ferry status` does not read it too.
    pub async fn retire_host_object(&self) {
        let store = self.report_store.as_ref().unwrap_or(&self.store);
        if !self.settings.report || self.settings.report_shards == 0 || store.is_read_only() {
            return;
        }
        let path = ferry_store::host_report_path(&self.settings.app, &self.settings.host_id);
        let delete = store.delete(&path);
        if let Ok(Err(error)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), delete).await
        {
            tracing::debug!("cannot remove the per-host report object: {error}");
        }
    }

    /// Write the status report to the store, or to `report-store` when set (best effort: a
    /// read-only store is fine).
    pub async fn report(&self) {
        let store = self.report_store.as_ref().unwrap_or(&self.store);
        crate::report::write_report(store, &self.settings, &self.state).await;
        if let Ok(mut last) = self.last_report.lock() {
            *last = Some(Instant::now());
        }
    }

    /// How long ago the report was last written by this process (`None`: not yet).
    pub fn report_age(&self) -> Option<std::time::Duration> {
        self.last_report
            .lock()
            .ok()
            .and_then(|last| last.map(|at| at.elapsed()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
