//! What the agent follows besides its release channel, after the release step of each cycle
//! and never while a release update is in flight: config bundles and ferry's own channel.

use super::{Agent, Outcome};

impl Agent {
    /// Apply a new config bundle, if any. A config rollback or refusal shows in the outcome
    /// only when the release step had nothing to say.
    pub(super) async fn config_cycle(&mut self, outcome: Outcome) -> Outcome {
        if self.config.is_none() {
            return outcome;
        }
        // A bundle restarts the service as a release does: the hold, the update window and
        // the application's update lock apply to it too (it waits for the next poll).
        if let Some(reason) = self.held_or_outside_window(false) {
            tracing::debug!(app = %self.settings.app, "config bundles wait too: {reason}");
            return outcome;
        }
        let _held = match self
            .settings
            .update_lock
            .as_ref()
            .map(|lock| lock.try_acquire())
        {
            Some(Ok(Some(held))) => held,
            Some(Ok(None)) => {
                tracing::debug!(app = %self.settings.app, "the application holds its update lock; config bundles wait for the next poll");
                return outcome;
            }
            Some(Err(error)) => {
                tracing::warn!(app = %self.settings.app, "config step skipped: {error}");
                return outcome;
            }
            None => None,
        };
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
    pub(super) async fn self_update_cycle(&mut self) {
        if self.self_update.is_none() {
            return;
        }
        // Re-executing replaces the whole process: in a multi-app agent, wait until no other
        // app is in the middle of an update (their journals say so).
        if let Some(busy) = self.siblings.iter().find_map(|(dir, app, channel)| {
            let state = crate::journal::Journal::new(dir, app, channel)
                .load(app, channel)
                .ok()?;
            (state.step != crate::journal::Step::Idle).then(|| format!("{app}/{channel}"))
        }) {
            tracing::debug!(busy = %busy, "self-update waits: another app's update is in flight");
            return;
        }
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
}
