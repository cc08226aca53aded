//! The keyring in the store (docs/trust.md): reading it link by link from what a verifier
//! already accepted, writing a new one (history entry first, create-only), and pointers that
//! need several signatures — staged at `apps/<app>/staged/<channel>.json`, signed by each
//! signer in turn, and committed to the channel with the usual compare-and-swap once enough
//! have signed.

use bytes::Bytes;
use ferry_release::{
    ChannelPointer, Envelope, Keyring, MAX_DOCUMENT_BYTES, SigningKey, TrustedKeys, layout,
    sign_document, verify_keyring,
};

use crate::error::Error;
use crate::store::{CreateOutcome, Store, SwapOutcome};

/// The most keyrings a verifier walks in one refresh.
const MAX_KEYRING_STEPS: u64 = 1000;

/// The app's current keyring, verified from `known` (the keyring the caller accepted
/// before; `None`: from the `pinned` root keys): every keyring after `known` up to the
/// current one is read from the history and checked against the roots of the one before
/// it. `Ok(None)`: the store has no keyring (and the caller knew none). An older keyring
/// than `known` is refused ([`ferry_release::Error::KeyringReplayed`]).
pub async fn refresh_keyring(
    store: &Store,
    app: &str,
    known: Option<&Keyring>,
    pinned: &TrustedKeys,
) -> Result<Option<Keyring>, Error> {
    let path = layout::keyring(app);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Ok(known.cloned());
    };
    let offered = unverified(&object.bytes, &path)?;
    let known_serial = known.map_or(0, |keyring| keyring.serial);
    if let Some(known) = known {
        if offered.serial < known.serial {
            return Err(ferry_release::Error::KeyringReplayed {
                app: app.to_owned(),
                serial: offered.serial,
                known: known.serial,
            }
            .into());
        }
        if offered.serial == known.serial {
            return Ok(Some(known.clone()));
        }
    }
    if offered.serial - known_serial > MAX_KEYRING_STEPS {
        return Err(Error::InvalidRequest(format!(
            "the keyring of {app} jumped from serial {known_serial} to {}: more than {MAX_KEYRING_STEPS} steps to verify",
            offered.serial
        )));
    }
    let mut current = known.cloned();
    // The first keyring a verifier sees is the one its pinned roots signed: the walk
    // starts there when it knew none.
    let first = if known.is_none() { 1 } else { known_serial + 1 };
    for serial in first..offered.serial {
        let entry = layout::keyring_history(app, serial);
        let Some(object) = store.get(&entry, MAX_DOCUMENT_BYTES as u64).await? else {
            if current.is_none() {
                // History before the first keyring this verifier can check is optional.
                continue;
            }
            return Err(Error::InvalidRequest(format!(
                "keyring {serial} of {app} is missing from the store ({entry}); it is needed to follow the chain from {known_serial}"
            )));
        };
        match verify_keyring(&object.bytes, app, current.as_ref(), pinned) {
            Ok(keyring) => current = Some(keyring),
            // Before the pinned roots' own keyring, entries signed by earlier roots are skipped.
            Err(_) if current.is_none() => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Some(verify_keyring(
        &object.bytes,
        app,
        current.as_ref(),
        pinned,
    )?))
}

/// The keyring as stored, signatures not checked (for `ferry keyring` to build the next).
pub async fn read_keyring(store: &Store, app: &str) -> Result<Option<Keyring>, Error> {
    let path = layout::keyring(app);
    match store.get(&path, MAX_DOCUMENT_BYTES as u64).await? {
        Some(object) => Ok(Some(unverified(&object.bytes, &path)?)),
        None => Ok(None),
    }
}

fn unverified(bytes: &[u8], path: &str) -> Result<Keyring, Error> {
    let envelope = Envelope::from_bytes(bytes, path)?;
    serde_json::from_str(&envelope.payload).map_err(|error| {
        ferry_release::Error::Malformed {
            what: path.to_owned(),
            message: error.to_string(),
        }
        .into()
    })
}

/// Sign `keyring` with every key of `roots` and write it: the history entry (create-only,
/// so two administrators cannot both write serial n), then `keyring.json`.
pub async fn write_keyring(
    store: &Store,
    keyring: &Keyring,
    roots: &[&SigningKey],
) -> Result<(), Error> {
    let (first, others) = roots.split_first().ok_or_else(|| {
        Error::InvalidRequest("a keyring needs at least one root key to sign it".into())
    })?;
    let comment = format!(
        "ferry keyring app={} serial={}",
        keyring.app, keyring.serial
    );
    let mut envelope = sign_document(first, keyring, &comment)?;
    for key in others {
        envelope.add_signature(key, &comment)?;
    }
    let bytes = Bytes::from(envelope.to_bytes());
    let entry = layout::keyring_history(&keyring.app, keyring.serial);
    if store.put_create(&entry, bytes.clone()).await? == CreateOutcome::AlreadyExists {
        return Err(Error::InvalidRequest(format!(
            "keyring serial {} of {} was written meanwhile by someone else; run the command again",
            keyring.serial, keyring.app
        )));
    }
    store
        .put_overwrite(&layout::keyring(&keyring.app), bytes)
        .await
}

/// Write a pointer state that is not in force yet: `apps/<app>/staged/<channel>.json`.
pub async fn write_staged(
    store: &Store,
    pointer: &ChannelPointer,
    envelope: &Envelope,
) -> Result<(), Error> {
    store
        .put_overwrite(
            &layout::staged_pointer(&pointer.app, &pointer.channel),
            Bytes::from(envelope.to_bytes()),
        )
        .await
}

/// The staged pointer of a channel, signatures not checked.
pub async fn read_staged(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<(ChannelPointer, Envelope)>, Error> {
    let path = layout::staged_pointer(app, channel);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Ok(None);
    };
    let envelope = Envelope::from_bytes(&object.bytes, &path)?;
    let pointer: ChannelPointer = serde_json::from_str(&envelope.payload).map_err(|error| {
        ferry_release::Error::Malformed {
            what: path.clone(),
            message: error.to_string(),
        }
    })?;
    Ok(Some((pointer, envelope)))
}

/// Put a fully signed staged pointer in force: the channel must still be at the serial just
/// before it (else it was staged on a state that is gone: stage again). Writes the history
/// entry (create-only), swaps the pointer (If-Match), removes the staged file.
pub async fn commit_staged(
    store: &Store,
    pointer: &ChannelPointer,
    envelope: &Envelope,
) -> Result<(), Error> {
    let path = layout::channel(&pointer.app, &pointer.channel);
    let current = store.get(&path, MAX_DOCUMENT_BYTES as u64).await?;
    let (current_serial, etag) = match &current {
        Some(object) => {
            let envelope = Envelope::from_bytes(&object.bytes, &path)?;
            let serial = serde_json::from_str::<ChannelPointer>(&envelope.payload)
                .map(|pointer| pointer.serial)
                .unwrap_or(0);
            (serial, object.etag.clone())
        }
        None => (0, None),
    };
    if ferry_release::next_serial(current_serial) != Some(pointer.serial) {
        return Err(Error::InvalidRequest(format!(
            "the staged pointer has serial {}, but {}/{} is at serial {current_serial} now: stage the release again (ferry publish --stage)",
            pointer.serial, pointer.app, pointer.channel
        )));
    }
    let bytes = Bytes::from(envelope.to_bytes());
    let history = layout::channel_history(&pointer.app, &pointer.channel, pointer.serial);
    if store.put_create(&history, bytes.clone()).await? == CreateOutcome::AlreadyExists {
        return Err(Error::InvalidRequest(format!(
            "serial {} of {}/{} was taken meanwhile: stage the release again",
            pointer.serial, pointer.app, pointer.channel
        )));
    }
    match store.put_if_match(&path, bytes, etag.as_deref()).await? {
        SwapOutcome::Written(_) => {}
        _ => {
            return Err(Error::InvalidRequest(format!(
                "{}/{} moved while the staged pointer was committed: stage the release again",
                pointer.app, pointer.channel
            )));
        }
    }
    store
        .delete(&layout::staged_pointer(&pointer.app, &pointer.channel))
        .await
}
