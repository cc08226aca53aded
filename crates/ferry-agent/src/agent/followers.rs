//! What the agent follows besides its release channel, after the release step of each cycle
//! and never while a release update is in flight: config bundles and ferry's own channel.

use super::{Agent, Outcome};

impl Agent {
    /// Apply a new config bundle, if any. A config rollback or refusal shows in the outcome
    /// only when the release step had nothing to say.
    pub(super) async fn config_cycle(&mut self, outcome: Outcome) -> Outcome {
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
