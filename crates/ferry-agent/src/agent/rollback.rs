//! Failure after the host was touched: put the committed release back (reinstall its cached
//! artifact, restart, re-check) and mark the failed release bad, so it is not tried again until
//! a newer serial names it.

use std::time::Instant;

use ferry_release::HostState;

use super::{Agent, Outcome, now_text};
use crate::journal::{BadRelease, Release, Step};
use crate::metrics::Metrics;
use crate::{Error, fault, health, install};

impl Agent {
    pub(super) async fn fail(&mut self, target: Release, error: Error) -> Result<Outcome, Error> {
        tracing::error!(
            app = %self.settings.app, channel = %self.settings.channel, version = %target.version, serial = target.serial,
            step = self.state.step.name(), "update failed: {error}; rolling back"
        );
        self.roll_back(target, error.to_string(), false).await
    }

    /// Put the committed release back: reinstall its cached artifact, restart, re-check;
    /// mark `target` bad either way.
    pub(super) async fn roll_back(
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
                let method = &self.settings.install;
                install::install_off_thread(method, &package, &previous.version, recovering)
                    .await?;
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
                HostState::RolledBack
            } else {
                HostState::Failed
            },
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

    pub(super) fn mark_bad(&mut self, target: &Release, reason: &str) {
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
}
