//! Config bundles on the host (`[config]` in the agent file): poll
//! `apps/<app>/config/<channel>.json`, verify it like a pointer (trusted key, app, channel,
//! serial never lower), write its files into the config directory atomically, restart the
//! service with the release's restart method, health-check it, and commit — or put the
//! previous bundle's files back, restart again and mark the serial bad.
//!
//! It runs in the same agent, under the same lock, after the release step of each cycle and
//! only when no release update is in flight, so a config change and a release change never
//! overlap: a release rollback keeps the current config, a config rollback keeps the current
//! release. Every step is journaled in `<state-dir>/<app>.<channel>.config.json` (written
//! atomically) before it is taken, so a crash resumes: an interrupted apply is finished and
//! checked, an interrupted rollback is redone.

use std::path::{Path, PathBuf};

use ferry_config::{Bundle, apply_bundle, bundle_path, verify_bundle};
use ferry_release::TrustedKeys;
use ferry_store::Store;
use serde::{Deserialize, Serialize};

use crate::health::Health;
use crate::poll::Polled;
use crate::restart::Restart;
use crate::{Error, health, restart};

/// Where bundles land and which channel they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSettings {
    /// The directory the bundle's files are written into.
    pub dir: PathBuf,
    /// The config channel followed (default: the release channel).
    pub channel: String,
}

/// What the journal says is in flight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum ConfigStep {
    /// Nothing.
    #[default]
    Idle,
    /// Writing `target`'s files, restarting, checking.
    Applying {
        /// The bundle being applied.
        target: Bundle,
    },
    /// Putting the committed bundle's files back after `failed` broke the service.
    RollingBack {
        /// The bundle that failed.
        failed: Bundle,
        /// Why.
        reason: String,
    },
}

/// The config journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigState {
    /// The highest serial accepted (applied, or failed and marked bad).
    pub highest_serial: u64,
    /// ETag of the last pointer handled, for conditional polls.
    pub etag: Option<String>,
    /// The bundle in effect (applied and healthy).
    pub current: Option<Bundle>,
    /// The one before it.
    pub previous: Option<Bundle>,
    /// Serials that failed here and were rolled back.
    #[serde(default)]
    pub bad_serials: Vec<u64>,
    /// What is in flight.
    #[serde(default)]
    pub step: ConfigStep,
    /// The last failure, for `status`.
    pub last_error: Option<String>,
}

/// The result of one config cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// Nothing new.
    UpToDate,
    /// Nothing was ever pushed for this channel.
    NoBundle,
    /// A new bundle was applied and the service is healthy with it.
    Applied {
        /// Its serial.
        serial: u64,
    },
    /// A bundle broke the service; the previous files are back.
    RolledBack {
        /// The failed serial.
        serial: u64,
        /// Why it failed.
        reason: String,
    },
    /// The bundle was refused (signature, serial, app/channel); nothing was touched.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Applies config bundles for one app.
pub struct ConfigApplier {
    app: String,
    settings: ConfigSettings,
    restart: Restart,
    health: Health,
    store: Store,
    trusted: TrustedKeys,
    journal: PathBuf,
    state: ConfigState,
}

impl ConfigApplier {
    /// Load the config journal (a corrupt one is an error, never silently reset).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: &str,
        release_channel: &str,
        settings: ConfigSettings,
        state_dir: &Path,
        restart: Restart,
        health: Health,
        store: Store,
        trusted: TrustedKeys,
    ) -> Result<ConfigApplier, Error> {
        let journal = state_dir.join(format!("{app}.{release_channel}.config.json"));
        let state = crate::journal::read_json::<ConfigState>(&journal, "read the config journal")?
            .unwrap_or_default();
        Ok(ConfigApplier {
            app: app.to_owned(),
            settings,
            restart,
            health,
            store,
            trusted,
            journal,
            state,
        })
    }

    /// The journal state.
    pub fn state(&self) -> &ConfigState {
        &self.state
    }

    fn save(&self) -> Result<(), Error> {
        crate::journal::write_json(&self.journal, &self.state)
    }

    /// One cycle: finish what the journal says is in flight, else poll and maybe apply.
    /// `version` is the release running now (it fills `{version}` in the health check).
    pub async fn cycle(&mut self, version: &str) -> Result<ConfigOutcome, Error> {
        match self.state.step.clone() {
            ConfigStep::Idle => {}
            ConfigStep::Applying { target } => {
                tracing::warn!(app = %self.app, serial = target.serial, "resuming an interrupted config apply");
                return self.apply_check_commit(target, version).await;
            }
            ConfigStep::RollingBack { failed, reason } => {
                tracing::warn!(app = %self.app, serial = failed.serial, "resuming an interrupted config rollback");
                return self.roll_back(failed, reason, version).await;
            }
        }
        let channel = self.settings.channel.clone();
        let path = bundle_path(&self.app, &channel);
        let highest_seen = (self.state.highest_serial > 0).then_some(self.state.highest_serial);
        let (app, trusted) = (&self.app, &self.trusted);
        let polled = crate::poll::poll(
            &self.store,
            &path,
            self.state.etag.as_deref(),
            "config bundle",
            |bytes| {
                verify_bundle(bytes, trusted, app, &channel, highest_seen)
                    .map(|(bundle, _)| bundle)
                    .map_err(|error| error.to_string())
            },
        )
        .await?;
        let (bundle, etag) = match polled {
            Polled::NotModified => return Ok(ConfigOutcome::UpToDate),
            Polled::Stale {
                serial,
                highest_seen,
                etag,
            } => {
                tracing::warn!(app = %self.app, channel = %channel, "ignored a stale config pointer: serial {serial} is lower than serial {highest_seen} already seen");
                self.state.etag = etag;
                self.save()?;
                return Ok(ConfigOutcome::UpToDate);
            }
            Polled::Missing => return Ok(ConfigOutcome::NoBundle),
            Polled::Refused { reason, etag } => {
                tracing::error!(app = %self.app, channel = %channel, "REFUSED config bundle: {reason}");
                self.state.etag = etag;
                self.state.last_error = Some(format!("refused config bundle: {reason}"));
                self.save()?;
                return Ok(ConfigOutcome::Refused { reason });
            }
            Polled::Verified { document, etag, .. } => (document, etag),
        };
        let same_files = self
            .state
            .current
            .as_ref()
            .is_some_and(|current| current.files == bundle.files);
        if bundle.serial == self.state.highest_serial
            || same_files
            || self.state.bad_serials.contains(&bundle.serial)
        {
            // Seen before, or the same files under a new serial: nothing to write or restart.
            self.state.etag = etag;
            self.state.highest_serial = self.state.highest_serial.max(bundle.serial);
            if same_files {
                self.state.current = Some(bundle);
            }
            self.save()?;
            return Ok(ConfigOutcome::UpToDate);
        }
        self.state.etag = etag;
        tracing::info!(
            app = %self.app, channel = %channel, serial = bundle.serial,
            files = %bundle.summary(), "config bundle verified"
        );
        self.apply_check_commit(bundle, version).await
    }

    async fn apply_check_commit(
        &mut self,
        target: Bundle,
        version: &str,
    ) -> Result<ConfigOutcome, Error> {
        self.state.step = ConfigStep::Applying {
            target: target.clone(),
        };
        self.save()?;
        let result = async {
            apply_bundle(&self.settings.dir, &target, self.state.current.as_ref())
                .map_err(|error| format!("cannot apply: {error}"))?;
            let pid = self.restart_service().await?;
            health::check(&self.health, version, pid)
                .await
                .map_err(|error| error.to_string())
        }
        .await;
        match result {
            Ok(()) => {
                let serial = target.serial;
                self.state.previous = self.state.current.take();
                self.state.current = Some(target);
                self.state.highest_serial = self.state.highest_serial.max(serial);
                self.state.step = ConfigStep::Idle;
                self.state.last_error = None;
                self.save()?;
                tracing::info!(app = %self.app, serial, dir = %self.settings.dir.display(), "config applied");
                Ok(ConfigOutcome::Applied { serial })
            }
            Err(reason) => {
                tracing::error!(app = %self.app, serial = target.serial, "config update failed, rolling back: {reason}");
                self.roll_back(target, reason, version).await
            }
        }
    }

    async fn roll_back(
        &mut self,
        failed: Bundle,
        reason: String,
        version: &str,
    ) -> Result<ConfigOutcome, Error> {
        self.state.step = ConfigStep::RollingBack {
            failed: failed.clone(),
            reason: reason.clone(),
        };
        self.save()?;
        // Back to the committed files; with none, to no files at all.
        let restore = self.state.current.clone().unwrap_or_else(|| Bundle {
            files: Vec::new(),
            ..failed.clone()
        });
        let result = async {
            apply_bundle(&self.settings.dir, &restore, Some(&failed))
                .map_err(|error| format!("cannot restore the previous config: {error}"))?;
            let pid = self.restart_service().await?;
            health::check(&self.health, version, pid)
                .await
                .map_err(|error| error.to_string())
        }
        .await;
        let serial = failed.serial;
        if !self.state.bad_serials.contains(&serial) {
            self.state.bad_serials.push(serial);
        }
        self.state.highest_serial = self.state.highest_serial.max(serial);
        self.state.step = ConfigStep::Idle;
        match result {
            Ok(()) => {
                self.state.last_error = Some(format!(
                    "config serial {serial} failed and was rolled back: {reason}"
                ));
                tracing::warn!(app = %self.app, serial, "config serial marked bad and rolled back");
            }
            Err(rollback_error) => {
                self.state.last_error = Some(format!(
                    "config serial {serial} failed ({reason}) and the rollback failed too: {rollback_error}"
                ));
                tracing::error!(app = %self.app, serial, "CONFIG ROLLBACK FAILED: {rollback_error}");
            }
        }
        self.save()?;
        Ok(ConfigOutcome::RolledBack { serial, reason })
    }

    async fn restart_service(&self) -> Result<Option<u32>, String> {
        let method = self.restart.clone();
        tokio::task::spawn_blocking(move || restart::restart(&method))
            .await
            .map_err(|error| format!("restart task failed: {error}"))?
            .map_err(|error| error.to_string())
    }
}
