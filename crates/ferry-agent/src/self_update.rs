//! The agent updating itself (`[self-update]` in the agent file): it follows ferry's own
//! channel (app `ferry`) in the same store with the same trusted keys, downloads and installs
//! the new ferry package, **tests the new binary** (`<binary> agent status --config <this
//! config>` must exit 0: it starts, parses this config and reads the journals), and only then
//! re-executes itself into it — same PID, same arguments and environment, the journal on disk
//! carrying the state across. The services it manages are separate processes and are never
//! touched. A new binary that fails the test is rolled back (the previous release made current
//! again) and marked bad, and the old agent keeps running.
//!
//! State: `<state-dir>/<app>.<channel>.self-update.json`, written atomically before each step.
//! After the re-exec the new process finds the step `re-executing` and commits it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_release::TrustedKeys;
use ferry_store::Store;
use serde::{Deserialize, Serialize};

use crate::install::Install;
use crate::journal::Release;
use crate::poll::Polled;
use crate::{Error, install};

/// How long the new binary's self-test may take.
const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `[self-update]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfUpdateSettings {
    /// The app holding ferry's package (default `ferry`).
    pub app: String,
    /// Its channel.
    pub channel: String,
    /// How the ferry package is installed.
    pub install: Install,
    /// The ferry binary the package provides, the one to re-execute into.
    pub binary: PathBuf,
    /// This agent's config file, for the new binary's self-test.
    pub config_path: PathBuf,
}

/// What is in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum SelfUpdateStep {
    /// Nothing.
    #[default]
    Idle,
    /// Installing and testing `target`.
    Installing {
        /// The new release.
        target: Release,
    },
    /// `target` passed its test; the process is (or was) re-executing into it.
    ReExecuting {
        /// The new release.
        target: Release,
    },
}

/// The self-update journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SelfUpdateState {
    /// Highest pointer serial accepted.
    pub highest_serial: u64,
    /// ETag of the last pointer handled.
    pub etag: Option<String>,
    /// The ferry release this agent runs (once it installed one).
    pub current: Option<Release>,
    /// The one before.
    pub previous: Option<Release>,
    /// Artifacts (sha256) that failed their test here.
    #[serde(default)]
    pub bad: Vec<String>,
    /// What is in flight.
    #[serde(default)]
    pub step: SelfUpdateStep,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The result of one self-update cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfUpdateOutcome {
    /// Nothing to do.
    UpToDate,
    /// The new binary is installed and tested: re-execute into it now.
    ReExec {
        /// The binary.
        binary: PathBuf,
        /// Its release version.
        version: String,
    },
    /// The new binary failed; the previous one is current again.
    RolledBack {
        /// The failed version.
        version: String,
        /// Why.
        reason: String,
    },
    /// The pointer was refused.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Follows ferry's own channel.
pub struct SelfUpdater {
    settings: SelfUpdateSettings,
    store: Store,
    trusted: TrustedKeys,
    cache_dir: PathBuf,
    architecture: String,
    journal: PathBuf,
    state: SelfUpdateState,
}

impl SelfUpdater {
    /// Load the journal; when it says a re-exec was under way, this process is the new binary:
    /// commit it.
    pub fn new(
        settings: SelfUpdateSettings,
        journal: PathBuf,
        store: Store,
        trusted: TrustedKeys,
        cache_dir: PathBuf,
        architecture: String,
    ) -> Result<SelfUpdater, Error> {
        let state =
            crate::journal::read_json::<SelfUpdateState>(&journal, "read the self-update journal")?
                .unwrap_or_default();
        let mut updater = SelfUpdater {
            settings,
            store,
            trusted,
            cache_dir,
            architecture,
            journal,
            state,
        };
        if let SelfUpdateStep::ReExecuting { target } = updater.state.step.clone() {
            tracing::info!(
                version = %target.version, serial = target.serial, pid = std::process::id(),
                "agent re-executed into its new release; self-update committed"
            );
            updater.state.previous = updater.state.current.take();
            updater.state.current = Some(target);
            updater.state.step = SelfUpdateStep::Idle;
            updater.state.last_error = None;
            updater.save()?;
        }
        Ok(updater)
    }

    /// The journal state.
    pub fn state(&self) -> &SelfUpdateState {
        &self.state
    }

    fn save(&self) -> Result<(), Error> {
        crate::journal::write_json(&self.journal, &self.state)
    }

    /// One cycle: poll ferry's channel; install and test a new release; say whether to re-exec.
    pub async fn cycle(&mut self) -> Result<SelfUpdateOutcome, Error> {
        if let SelfUpdateStep::Installing { target } = self.state.step.clone() {
            // Interrupted between install and test: test again (or roll back).
            return self.test_or_roll_back(target).await;
        }
        if let SelfUpdateStep::ReExecuting { target } = self.state.step.clone() {
            // The process stopped between the journal write and the exec: exec now.
            return Ok(SelfUpdateOutcome::ReExec {
                binary: self.settings.binary.clone(),
                version: target.version,
            });
        }
        let polled = crate::poll::poll_pointer(
            &self.store,
            &self.settings.app,
            &self.settings.channel,
            self.state.etag.as_deref(),
            self.state.highest_serial,
            &self.trusted,
        )
        .await?;
        let (pointer, etag) = match polled {
            Polled::NotModified | Polled::Missing => return Ok(SelfUpdateOutcome::UpToDate),
            Polled::Stale {
                serial,
                highest_seen,
                etag,
            } => {
                tracing::warn!(app = %self.settings.app, channel = %self.settings.channel, "ignored a stale self-update pointer: serial {serial} is lower than serial {highest_seen} already seen");
                self.state.etag = etag;
                self.save()?;
                return Ok(SelfUpdateOutcome::UpToDate);
            }
            Polled::Refused { reason, etag } => {
                tracing::error!(app = %self.settings.app, channel = %self.settings.channel, "REFUSED self-update pointer: {reason}");
                self.state.etag = etag;
                self.state.last_error = Some(format!("refused self-update pointer: {reason}"));
                self.save()?;
                return Ok(SelfUpdateOutcome::Refused { reason });
            }
            Polled::Verified { document, etag, .. } => (document.pointer, etag),
        };
        self.state.etag = etag;
        let Some(artifact) = pointer
            .release
            .artifacts
            .get(&self.architecture)
            .or_else(|| pointer.release.artifacts.get("all"))
        else {
            let reason = format!(
                "ferry release {} has no package for {}",
                pointer.release.version, self.architecture
            );
            self.save()?;
            return Ok(SelfUpdateOutcome::Refused { reason });
        };
        let target = Release::named_by(&pointer, artifact);
        self.state.highest_serial = self.state.highest_serial.max(pointer.serial);
        let installed = self
            .state
            .current
            .as_ref()
            .is_some_and(|current| current.sha256 == target.sha256);
        if installed || self.state.bad.contains(&target.sha256) || pointer.paused {
            self.save()?;
            return Ok(SelfUpdateOutcome::UpToDate);
        }
        tracing::info!(version = %target.version, serial = target.serial, "new ferry release for this agent");
        let package = crate::download::download(&self.store, &self.cache_dir, &target).await?;
        self.state.step = SelfUpdateStep::Installing {
            target: target.clone(),
        };
        self.save()?;
        let method = &self.settings.install;
        let installed = install::install_off_thread(method, &package, &target.version, false).await;
        if let Err(error) = installed {
            return self.roll_back(target, error.to_string()).await;
        }
        self.test_or_roll_back(target).await
    }

    /// The exec into the new binary failed (this process still runs the old one): roll the
    /// new release back so the next cycle does not try again.
    pub async fn exec_failed(&mut self, reason: String) -> Result<SelfUpdateOutcome, Error> {
        match self.state.step.clone() {
            SelfUpdateStep::ReExecuting { target } | SelfUpdateStep::Installing { target } => {
                self.roll_back(target, format!("cannot re-execute: {reason}"))
                    .await
            }
            SelfUpdateStep::Idle => Ok(SelfUpdateOutcome::UpToDate),
        }
    }

    async fn test_or_roll_back(&mut self, target: Release) -> Result<SelfUpdateOutcome, Error> {
        let binary = self.settings.binary.clone();
        let config = self.settings.config_path.clone();
        let tested = tokio::task::spawn_blocking(move || self_test(&binary, &config))
            .await
            .unwrap_or_else(|error| Err(format!("self-test task failed: {error}")));
        match tested {
            Ok(()) => {
                self.state.step = SelfUpdateStep::ReExecuting {
                    target: target.clone(),
                };
                self.save()?;
                tracing::info!(version = %target.version, binary = %self.settings.binary.display(), "new agent binary passed its self-test; re-executing");
                Ok(SelfUpdateOutcome::ReExec {
                    binary: self.settings.binary.clone(),
                    version: target.version,
                })
            }
            Err(reason) => self.roll_back(target, reason).await,
        }
    }

    async fn roll_back(
        &mut self,
        failed: Release,
        reason: String,
    ) -> Result<SelfUpdateOutcome, Error> {
        tracing::error!(version = %failed.version, "new agent release failed, rolling back: {reason}");
        let restore = self.state.current.clone();
        let result = match (&self.settings.install, &restore) {
            (Install::Unpack { root, .. }, Some(previous)) => {
                let dir = install::release_dir(root, &previous.version);
                install::switch_current(root, &dir)
            }
            (_, Some(previous)) => {
                let package =
                    crate::download::download(&self.store, &self.cache_dir, previous).await?;
                let method = &self.settings.install;
                install::install_off_thread(method, &package, &previous.version, false).await
            }
            (_, None) => Err(Error::Install {
                version: failed.version.clone(),
                message: "no earlier ferry release was installed by this agent to go back to"
                    .into(),
            }),
        };
        if !self.state.bad.contains(&failed.sha256) {
            self.state.bad.push(failed.sha256.clone());
        }
        self.state.step = SelfUpdateStep::Idle;
        self.state.last_error = Some(match &result {
            Ok(()) => format!(
                "ferry {} failed and was rolled back: {reason}",
                failed.version
            ),
            Err(error) => format!(
                "ferry {} failed ({reason}) and the rollback failed too: {error}",
                failed.version
            ),
        });
        self.save()?;
        if let Err(error) = result {
            tracing::error!("SELF-UPDATE ROLLBACK FAILED: {error}");
        } else {
            tracing::warn!(version = %failed.version, "agent release marked bad and rolled back; this agent keeps running");
        }
        Ok(SelfUpdateOutcome::RolledBack {
            version: failed.version,
            reason,
        })
    }
}

/// Run `<binary> agent status --config <config>`: the new binary must start, parse this
/// config and read the journals, within [`SELF_TEST_TIMEOUT`].
fn self_test(binary: &Path, config: &Path) -> Result<(), String> {
    let mut child = Command::new(binary)
        .args(["agent", "status", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let deadline = std::time::Instant::now() + SELF_TEST_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "self-test `{} agent status` exited with {status}: {}",
                    binary.display(),
                    stderr.trim()
                ));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "self-test `{} agent status` did not finish in {SELF_TEST_TIMEOUT:?}",
                    binary.display()
                ));
            }
            Err(error) => return Err(format!("cannot wait for the self-test: {error}")),
        }
    }
}

/// Replace this process with `binary`, same arguments and environment. Returns only on
/// failure.
pub fn re_exec(binary: &Path) -> Error {
    use std::os::unix::process::CommandExt;
    let error = Command::new(binary)
        .args(std::env::args_os().skip(1))
        .exec();
    Error::io("re-execute into", binary, error)
}
