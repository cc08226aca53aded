//! Trust through the app's keyring (docs/trust.md): with `trust-root` the agent pins root
//! keys only. Whenever the channel pointer changed, it first follows the keyring chain in the
//! store (each new keyring signed by a threshold of the previous one's roots; an older one
//! refused), keeps the accepted keyring in its state dir, and verifies the pointer with the
//! keys the keyring allows on the channel and the channel's threshold. A revoked key's
//! pointer is therefore refused at the next poll, and no host is touched for a rotation.

use std::path::PathBuf;

use ferry_release::{Keyring, PointerCheck, TrustedKeys, VerifiedPointer};
use ferry_store::Store;

use crate::Error;
use crate::poll::{Polled, pointer_verdict, poll_raw, store_error};

/// The keyring side of an agent's trust.
pub struct KeyringTrust {
    pinned: TrustedKeys,
    current: Option<Keyring>,
    path: PathBuf,
}

impl KeyringTrust {
    /// From the pinned roots and the keyring accepted before (`<state-dir>/<app>.keyring.json`).
    pub fn load(pinned: TrustedKeys, path: PathBuf) -> Result<KeyringTrust, Error> {
        let current = match ferry_release::read_local_file(&path, 1 << 20) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|error| Error::Config {
                    path: path.clone(),
                    message: format!("not a keyring ferry wrote: {error}"),
                })?,
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(Error::io("read", &path, error)),
        };
        Ok(KeyringTrust {
            pinned,
            current,
            path,
        })
    }

    /// The keyring in force, if any.
    pub fn current(&self) -> Option<&Keyring> {
        self.current.as_ref()
    }

    /// Follow the store's keyring chain from the accepted one. A store error is "later"; a
    /// keyring that does not verify, or an older one, is a refusal (the accepted one stays).
    async fn refresh(&mut self, store: &Store, app: &str) -> Result<(), Refresh> {
        match ferry_store::refresh_keyring(store, app, self.current.as_ref(), &self.pinned).await {
            Ok(Some(keyring)) => {
                if self.current.as_ref().map(|known| known.serial) != Some(keyring.serial) {
                    tracing::info!(
                        app,
                        serial = keyring.serial,
                        keys = keyring.keys.len(),
                        "keyring accepted"
                    );
                    let bytes = serde_json::to_vec_pretty(&keyring).unwrap_or_default();
                    crate::fsutil::write_atomic(&self.path, &bytes).map_err(Refresh::Later)?;
                    self.current = Some(keyring);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) if error.is_transient() => {
                Err(Refresh::Later(store_error(error, "keyring")))
            }
            Err(error) => Err(Refresh::Refused(format!("keyring: {error}"))),
        }
    }

    /// The keys a pointer of `channel` is verified with: the keyring's, else `flat`.
    fn trusted_for(
        &self,
        app: &str,
        channel: &str,
        flat: &TrustedKeys,
    ) -> Result<TrustedKeys, String> {
        match &self.current {
            Some(keyring) => keyring
                .trusted_for(channel)
                .map_err(|error| error.to_string()),
            None if !flat.is_empty() => Ok(flat.clone()),
            None => Err(format!(
                "no keyring for {app} in the store, and this agent pins only root keys: write one with `ferry keyring init`"
            )),
        }
    }
}

enum Refresh {
    Later(Error),
    Refused(String),
}

/// [`crate::poll::poll_pointer`] with keyring trust: fetch the pointer; when it changed,
/// refresh the keyring, then verify it with the keys and threshold the keyring sets for the
/// channel.
pub async fn poll_pointer_with_keyring(
    store: &Store,
    app: &str,
    channel: &str,
    known_etag: Option<&str>,
    highest_serial: u64,
    keyring: &mut KeyringTrust,
    flat: &TrustedKeys,
) -> Result<Polled<VerifiedPointer>, Error> {
    let path = ferry_release::ChannelPointer::path(app, channel);
    let (bytes, etag) = match poll_raw(store, &path, known_etag).await? {
        Ok(changed) => changed,
        Err(answer) => return Ok(answer),
    };
    match keyring.refresh(store, app).await {
        Ok(()) => {}
        Err(Refresh::Later(error)) => return Err(error),
        // A keyring that does not verify is ignored; the accepted one stays in force.
        Err(Refresh::Refused(reason)) => {
            tracing::error!(
                app,
                "REFUSED the keyring in the store: {reason}; keeping keyring serial {:?}",
                keyring.current.as_ref().map(|k| k.serial)
            );
        }
    }
    let trusted = match keyring.trusted_for(app, channel, flat) {
        Ok(trusted) => trusted,
        Err(reason) => return Ok(Polled::Refused { reason, etag }),
    };
    let check = PointerCheck {
        app,
        channel,
        highest_seen: (highest_serial > 0).then_some(highest_serial),
        now: ferry_release::now_utc(),
    };
    Ok(pointer_verdict(
        ferry_release::verify_pointer(&bytes, &trusted, &check),
        etag,
        bytes,
    ))
}
