//! The keyring: `apps/<app>/keyring.json`, signed by the app's **root keys** (kept offline).
//! It says which release keys may sign which channels, how many of them a channel needs (a
//! threshold per channel), which keys are revoked, and which root keys sign the next
//! keyring. Agents pin only the root keys; every change — a new release key, a revocation,
//! a new threshold, new root keys — reaches them through the store.
//!
//! Every keyring has a serial that only grows. A keyring is accepted when a threshold of the
//! *previous* keyring's root keys signed it (for the first one: of the pinned roots), so a
//! root rotation is followed by hosts that were never touched, and an older keyring
//! replayed from a backup is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keys::TrustedKeys;
use crate::{Error, Result};

/// One release key in a keyring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringKey {
    /// A name for people (`alice`, `ci`).
    pub name: String,
    /// The minisign public key (the base64 line of a `.pub` file).
    pub public_key: String,
    /// The channels it may sign: names, or `*` for every channel.
    pub channels: Vec<String>,
    /// A revoked key signs nothing any more; it stays listed so everyone sees it was.
    #[serde(default)]
    pub revoked: bool,
}

/// The keyring of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Always [`crate::SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// Grows with every new keyring.
    pub serial: u64,
    /// The root public keys (base64 lines) that sign the next keyring.
    pub roots: Vec<String>,
    /// How many of them must sign it.
    pub root_threshold: usize,
    /// The release keys.
    pub keys: Vec<KeyringKey>,
    /// Signatures a channel's pointer needs (`*`: every other channel); default 1.
    #[serde(default)]
    pub thresholds: BTreeMap<String, usize>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

impl Keyring {
    /// The root keys, with the root threshold.
    pub fn root_keys(&self) -> Result<TrustedKeys> {
        let roots = self
            .roots
            .iter()
            .map(|root| ("keyring root", root.as_str()));
        Ok(keys_of(roots)?.with_threshold(self.root_threshold))
    }

    /// Signatures `channel` needs.
    pub fn threshold(&self, channel: &str) -> usize {
        self.thresholds
            .get(channel)
            .or_else(|| self.thresholds.get("*"))
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    /// The keys that may sign `channel` (not revoked, allowed there), with its threshold:
    /// what a pointer of that channel is verified with.
    pub fn trusted_for(&self, channel: &str) -> Result<TrustedKeys> {
        let allowed = self.keys.iter().filter(|key| {
            !key.revoked
                && key
                    .channels
                    .iter()
                    .any(|allowed| allowed == "*" || allowed == channel)
        });
        let keys = allowed.map(|key| (key.name.as_str(), key.public_key.as_str()));
        Ok(keys_of(keys)?.with_threshold(self.threshold(channel)))
    }

    /// Every listed key, revoked ones included (a publisher may build on a state a revoked
    /// key wrote: the next serial supersedes it).
    pub fn listed_keys(&self) -> Result<TrustedKeys> {
        keys_of(
            self.keys
                .iter()
                .map(|key| (key.name.as_str(), key.public_key.as_str())),
        )
    }
}

/// A key set from (name, base64 public key) pairs; the name labels errors.
fn keys_of<'a>(keys: impl Iterator<Item = (&'a str, &'a str)>) -> Result<TrustedKeys> {
    let mut set = TrustedKeys::new();
    for (name, public_key) in keys {
        set.add_text(public_key, Path::new(name))?;
    }
    Ok(set)
}

/// Verify `bytes` as the keyring that follows `previous` (`None`: the first one the verifier
/// sees, checked against `pinned` roots): signed by a threshold of the previous roots, for
/// `app`, with a higher serial. Returns it.
pub fn verify_keyring(
    bytes: &[u8],
    app: &str,
    previous: Option<&Keyring>,
    pinned: &TrustedKeys,
) -> Result<Keyring> {
    let what = format!("keyring of {app}");
    let (roots, previous_serial) = match previous {
        Some(previous) => (previous.root_keys()?, previous.serial),
        None => (pinned.clone(), 0),
    };
    let (payload, _) = crate::verify_envelope_signers(bytes, &roots, &what)?;
    let keyring: Keyring = serde_json::from_str(&payload).map_err(|error| Error::Malformed {
        what: what.clone(),
        message: error.to_string(),
    })?;
    if keyring.schema != crate::SCHEMA {
        return Err(Error::Malformed {
            what,
            message: format!("schema {} is not {}", keyring.schema, crate::SCHEMA),
        });
    }
    if keyring.app != app {
        return Err(Error::Malformed {
            what,
            message: format!("it is the keyring of {:?}", keyring.app),
        });
    }
    if keyring.serial <= previous_serial {
        return Err(Error::KeyringReplayed {
            app: app.to_owned(),
            serial: keyring.serial,
            known: previous_serial,
        });
    }
    if keyring.roots.is_empty()
        || keyring.root_threshold == 0
        || keyring.root_threshold > keyring.roots.len()
    {
        return Err(Error::Malformed {
            what,
            message: format!(
                "it needs {} of {} root keys",
                keyring.root_threshold,
                keyring.roots.len()
            ),
        });
    }
    Ok(keyring)
}
