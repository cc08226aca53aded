//! The deploy lock: one `ferry deploy` per channel at a time. An advisory object at
//! `apps/<app>/locks/<channel>.json` naming its owner and when it expires, taken with a
//! create-only write (or a compare-and-swap over an expired one) and removed when the deploy
//! ends. It guards against two people deploying at once, not against an attacker: agents
//! never read it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Error;
use crate::store::{Store, SwapOutcome};

/// What the lock object says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeployLock {
    /// `user@host` of the deploy holding it.
    pub owner: String,
    /// What it deploys.
    pub version: String,
    /// When it was taken (RFC 3339).
    pub since: String,
    /// When it lapses by itself, so a deploy killed on the way does not block the channel
    /// for ever (RFC 3339).
    pub expires_at: String,
}

impl DeployLock {
    /// Whether the lock has lapsed at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        ferry_release::parse_time(&self.expires_at).is_none_or(|expires| expires <= now)
    }
}

/// The outcome of [`acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock is ours; release it with this ETag.
    Taken {
        /// The written lock's ETag.
        etag: Option<String>,
        /// The lapsed or broken lock it replaced, if any.
        replaced: Option<DeployLock>,
    },
    /// Someone else holds it.
    Held(DeployLock),
}

/// Read the lock of `app`/`channel`, if there is one.
pub async fn read_lock(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<DeployLock>, Error> {
    let path = ferry_release::layout::deploy_lock(app, channel);
    Ok(store
        .get(&path, 64 * 1024)
        .await?
        .and_then(|object| serde_json::from_slice(&object.bytes).ok()))
}

/// Take the lock for `wanted`, unless another unexpired one is there (or `force`, which
/// breaks it).
pub async fn acquire(
    store: &Store,
    app: &str,
    channel: &str,
    wanted: &DeployLock,
    force: bool,
) -> Result<Acquired, Error> {
    let path = ferry_release::layout::deploy_lock(app, channel);
    let bytes = Bytes::from(serde_json::to_vec_pretty(wanted).unwrap_or_default());
    for _ in 0..5 {
        let current = store.get(&path, 64 * 1024).await?;
        let (expected, replaced) = match &current {
            None => (None, None),
            Some(object) => {
                let lock: Option<DeployLock> = serde_json::from_slice(&object.bytes).ok();
                match lock {
                    Some(lock) if !force && !lock.expired(ferry_release::now_utc()) => {
                        return Ok(Acquired::Held(lock));
                    }
                    other => (object.etag.clone(), other),
                }
            }
        };
        if current.is_some() && expected.is_none() {
            // A store without ETags cannot swap safely; only an absent lock can be taken.
            return Err(Error::InvalidRequest(format!(
                "the deploy lock {} has no ETag to replace it by; delete it by hand",
                store.location(&path)
            )));
        }
        match store
            .put_if_match(&path, bytes.clone(), expected.as_deref())
            .await?
        {
            SwapOutcome::Written(etag) => return Ok(Acquired::Taken { etag, replaced }),
            SwapOutcome::Conflict => continue,
        }
    }
    Err(Error::TooManyConflicts {
        what: format!("the deploy lock {}", store.location(&path)),
        attempts: 5,
    })
}

/// Remove the lock, if it is still the one this deploy wrote.
pub async fn release(
    store: &Store,
    app: &str,
    channel: &str,
    owner: &DeployLock,
) -> Result<(), Error> {
    if read_lock(store, app, channel).await?.as_ref() == Some(owner) {
        store
            .delete(&ferry_release::layout::deploy_lock(app, channel))
            .await?;
    }
    Ok(())
}
