//! The signed-pointer protocol, written once: a mutable pointer object plus an immutable,
//! create-only history of every state it was in. Channels, config bundles and ferry's own
//! channel all speak it through this module.
//!
//! Advancing (DESIGN.md "Publish", step 3): the publisher first *verifies* the state it builds
//! on — signature by a key it trusts, the names, a possible serial, and the history entry that
//! serial claims — so an unsigned write to the store can never choose the next serial. It then
//! claims `serial + 1` by creating `history/<serial>.json` (whoever creates it owns that
//! serial) and moves the pointer with If-Match on the ETag it read (create-only when there is
//! none). On a conflict the pointer is read again: a higher verified serial means a later
//! publish superseded ours (ours stays in the history); otherwise we swap again. So the pointer
//! always ends at the highest serial, and a publisher that died between the two writes leaves
//! only a history entry that the next publish skips.

use std::time::Duration;

use bytes::Bytes;
use ferry_release::{
    Envelope, KeyId, MAX_DOCUMENT_BYTES, MAX_SERIAL, SigningKey, TrustedKeys, next_serial,
    serial_is_possible, sign_document,
};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::store::{CreateOutcome, Object, Store, SwapOutcome};

/// Attempts at claiming a serial / swapping the pointer before giving up.
const MAX_ATTEMPTS: u32 = 200;

/// A document that lives behind a signed pointer.
pub trait PointerDocument: Serialize + DeserializeOwned + Clone {
    /// What it is called in messages (`channel pointer`, `config bundle`).
    const KIND: &'static str;
    /// The first word of its signed comment after `ferry` (`pointer`, `config`).
    const COMMENT: &'static str;
    /// Its serial, app and channel.
    fn header(&self) -> (u64, &str, &str);
    /// Document-specific checks a reader relies on (schema, names); the reason on failure.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// What the signed comment says after the header (` version=1.4.2-1`), or nothing.
    fn comment_detail(&self) -> String {
        String::new()
    }
    /// Its serial.
    fn serial(&self) -> u64 {
        self.header().0
    }
    /// The app it belongs to.
    fn app(&self) -> &str {
        self.header().1
    }
    /// The channel it belongs to.
    fn channel(&self) -> &str {
        self.header().2
    }
    /// The one-line trusted comment signed with it (`minisign -V` shows it).
    fn comment(&self) -> String {
        let (serial, app, channel) = self.header();
        format!(
            "ferry {} app={app} channel={channel} serial={serial}{}",
            Self::COMMENT,
            self.comment_detail()
        )
    }
}

/// Where one pointer and its history live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerTarget {
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// The pointer object agents poll.
    pub pointer: String,
    /// The folder of `<serial>.json` history entries.
    pub history_prefix: String,
}

impl PointerTarget {
    /// The history entry of `serial`.
    pub fn history(&self, serial: u64) -> String {
        format!("{}/{serial}.json", self.history_prefix)
    }

    fn serial_of(&self, path: &str) -> Option<u64> {
        path.strip_prefix(&self.history_prefix)?
            .strip_prefix('/')?
            .strip_suffix(".json")?
            .parse()
            .ok()
    }

    fn describe<T: PointerDocument>(&self, store: &Store) -> String {
        format!(
            "{} {}/{} ({})",
            T::KIND,
            self.app,
            self.channel,
            store.location(&self.pointer)
        )
    }
}

/// A pointer state read without checking its signature (for listings, which show what is
/// there; `ferry verify` checks).
#[derive(Debug, Clone)]
pub struct Unverified<T> {
    /// The payload.
    pub document: T,
    /// The ETag of the object read.
    pub etag: Option<String>,
    /// The key its signature claims.
    pub key_id: Option<KeyId>,
    /// The stored bytes.
    pub bytes: Bytes,
}

/// A pointer state whose signature, names, serial and history entry were checked.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The payload.
    pub document: T,
    /// The ETag to swap against.
    pub etag: Option<String>,
    /// The key that signed it.
    pub key_id: KeyId,
}

/// Who signs a new pointer state, and what they trust of the state before it.
#[derive(Debug)]
pub struct Signer<'a> {
    /// The signing key.
    pub key: &'a SigningKey,
    /// The keys whose pointer states may be built on; always includes `key`'s public half.
    pub trusted: TrustedKeys,
    /// The current state may be signed by another trusted key: this publish is a rotation.
    pub new_key: bool,
    /// Build on the highest *verified* history entry instead of the pointer, replacing a
    /// pointer that does not verify (logged; for recovering from a forged write).
    pub force_reset: bool,
}

impl<'a> Signer<'a> {
    /// A signer that trusts its own key and `also_trusted`.
    pub fn new(key: &'a SigningKey, also_trusted: &TrustedKeys) -> Signer<'a> {
        let mut trusted = also_trusted.clone();
        trusted.add_signing_key(key);
        Signer {
            key,
            trusted,
            new_key: false,
            force_reset: false,
        }
    }
}

/// The result of advancing a pointer.
#[derive(Debug, Clone)]
pub struct Advanced<T> {
    /// The serial this publish got (always recorded in the history).
    pub serial: u64,
    /// The state written.
    pub pointer: T,
    /// Set when another publisher's higher serial reached the pointer first.
    pub superseded_by: Option<u64>,
}

fn parse<T: PointerDocument>(bytes: &[u8], what: &str) -> Result<(T, Envelope), Error> {
    let envelope = Envelope::from_bytes(bytes, what)?;
    let document: T = serde_json::from_str(&envelope.payload).map_err(|error| {
        ferry_release::Error::Malformed {
            what: what.to_owned(),
            message: error.to_string(),
        }
    })?;
    Ok((document, envelope))
}

/// The pointer object as stored and what to call it in messages; `None` when never written.
async fn get_pointer<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
) -> Result<Option<(Object, String)>, Error> {
    let object = store
        .get(&target.pointer, MAX_DOCUMENT_BYTES as u64)
        .await?;
    Ok(object.map(|object| (object, target.describe::<T>(store))))
}

/// Read the pointer without checking its signature; `None` when it was never written.
pub async fn read_unverified<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
) -> Result<Option<Unverified<T>>, Error> {
    let Some((object, what)) = get_pointer::<T>(store, target).await? else {
        return Ok(None);
    };
    let (document, envelope) = parse::<T>(&object.bytes, &what)?;
    Ok(Some(Unverified {
        document,
        etag: object.etag,
        key_id: envelope.claimed_key_id(),
        bytes: object.bytes,
    }))
}

/// Why a stored state cannot be built on, as a sentence.
fn check<T: PointerDocument>(
    bytes: &[u8],
    trusted: &TrustedKeys,
    target: &PointerTarget,
) -> Result<(T, KeyId, String), String> {
    // "it": every caller puts the reason after the document's name and location.
    let (payload, key_id) =
        ferry_release::verify_envelope(bytes, trusted, "it").map_err(|error| error.to_string())?;
    let document: T = serde_json::from_str(&payload).map_err(|error| error.to_string())?;
    if document.app() != target.app || document.channel() != target.channel {
        return Err(format!(
            "it names {}/{}, not {}/{}",
            document.app(),
            document.channel(),
            target.app,
            target.channel
        ));
    }
    if !serial_is_possible(document.serial()) {
        return Err(format!(
            "its serial {} is outside the range ferry writes (1 to {MAX_SERIAL})",
            document.serial()
        ));
    }
    document.validate()?;
    Ok((document, key_id, payload))
}

/// Verify one stored state (a pointer or history entry) as a publisher would before building
/// on it: signature by `trusted`, names, a possible serial, document checks.
pub fn verify_state<T: PointerDocument>(
    bytes: &[u8],
    trusted: &TrustedKeys,
    target: &PointerTarget,
    what: &str,
) -> Result<(T, KeyId), Error> {
    check::<T>(bytes, trusted, target)
        .map(|(document, key_id, _)| (document, key_id))
        .map_err(|reason| Error::UnverifiedPointer {
            what: what.to_owned(),
            reason,
        })
}

/// Read the pointer and check it can be built on: signed by a trusted key, for this app and
/// channel, a possible serial, and the history entry of that serial holding the same payload.
/// `None` when the pointer was never written.
pub async fn read_verified<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    trusted: &TrustedKeys,
) -> Result<Option<Verified<T>>, Error> {
    let Some((object, what)) = get_pointer::<T>(store, target).await? else {
        return Ok(None);
    };
    let refuse = |reason: String| Error::UnverifiedPointer {
        what: what.clone(),
        reason,
    };
    let (document, key_id, payload) = check::<T>(&object.bytes, trusted, target).map_err(refuse)?;
    let history_path = target.history(document.serial());
    let entry = store.get(&history_path, MAX_DOCUMENT_BYTES as u64).await?;
    let recorded = entry
        .as_ref()
        .and_then(|entry| Envelope::from_bytes(&entry.bytes, &history_path).ok())
        .is_some_and(|envelope| envelope.payload == payload);
    if !recorded {
        return Err(refuse(format!(
            "its serial {} has no matching history entry at {} (every publish writes one first)",
            document.serial(),
            store.location(&history_path)
        )));
    }
    Ok(Some(Verified {
        document,
        etag: object.etag,
        key_id,
    }))
}

/// The serials present in the history, unsorted.
pub async fn history_serials(store: &Store, target: &PointerTarget) -> Result<Vec<u64>, Error> {
    let objects = store.list(&target.history_prefix).await?;
    Ok(objects
        .iter()
        .filter_map(|object| target.serial_of(&object.path))
        .collect())
}

/// The history, oldest first, signatures not checked; with `last`, only the newest `last`
/// entries (only those are read).
pub async fn history<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    last: Option<usize>,
) -> Result<Vec<Unverified<T>>, Error> {
    let mut serials = history_serials(store, target).await?;
    serials.sort_unstable();
    if let Some(last) = last {
        serials.drain(..serials.len().saturating_sub(last));
    }
    let reads = futures::stream::iter(serials.into_iter().map(|serial| async move {
        let path = target.history(serial);
        let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
            return Ok::<_, Error>(None);
        };
        let (document, envelope) = parse::<T>(&object.bytes, &store.location(&path))?;
        Ok(Some(Unverified {
            document,
            etag: object.etag,
            key_id: envelope.claimed_key_id(),
            bytes: object.bytes,
        }))
    }))
    .buffered(8)
    .collect::<Vec<_>>()
    .await;
    let mut entries = Vec::new();
    for read in reads {
        if let Some(entry) = read? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The newest history entry that verifies (highest serial first), skipping forged ones.
async fn highest_verified<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    trusted: &TrustedKeys,
) -> Result<Option<(T, KeyId)>, Error> {
    let mut serials = history_serials(store, target).await?;
    serials.retain(|serial| serial_is_possible(*serial));
    serials.sort_unstable_by(|a, b| b.cmp(a));
    for serial in serials {
        let path = target.history(serial);
        let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
            continue;
        };
        match check::<T>(&object.bytes, trusted, target) {
            Ok((document, key_id, _)) if document.serial() == serial => {
                return Ok(Some((document, key_id)));
            }
            Ok(_) => tracing::warn!(path, "history entry names another serial; skipped"),
            Err(reason) => {
                tracing::warn!(path, "history entry does not verify ({reason}); skipped")
            }
        }
    }
    Ok(None)
}

/// What a new state is built on.
struct Base<T> {
    document: Option<T>,
    key_id: Option<KeyId>,
    serial: u64,
    /// The pointer object's ETag as read (the swap's precondition); `None`: no object.
    etag: Option<String>,
}

async fn base<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    signer: &Signer<'_>,
) -> Result<Base<T>, Error> {
    if !signer.force_reset {
        let current = read_verified::<T>(store, target, &signer.trusted).await?;
        return Ok(match current {
            Some(current) => Base {
                serial: current.document.serial(),
                key_id: Some(current.key_id),
                document: Some(current.document),
                etag: current.etag,
            },
            None => Base {
                document: None,
                key_id: None,
                serial: 0,
                etag: None,
            },
        });
    }
    let etag = match store
        .get(&target.pointer, MAX_DOCUMENT_BYTES as u64)
        .await?
    {
        Some(object) => Some(object.etag.unwrap_or_default()),
        None => None,
    };
    let Some((document, key_id)) = highest_verified::<T>(store, target, &signer.trusted).await?
    else {
        return Err(Error::NoVerifiedHistory {
            what: target.describe::<T>(store),
        });
    };
    tracing::warn!(
        app = %target.app, channel = %target.channel, serial = document.serial(),
        "--force-reset: building on the highest verified history entry, replacing whatever the pointer holds"
    );
    Ok(Base {
        serial: document.serial(),
        key_id: Some(key_id),
        document: Some(document),
        etag,
    })
}

/// The state a publisher would build on (for plans and dry runs): the verified pointer, or
/// with `force_reset` the highest verified history entry. Refuses what cannot be built on.
pub async fn current_for_publish<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    signer: &Signer<'_>,
) -> Result<Option<T>, Error> {
    let base = base::<T>(store, target, signer).await?;
    check_signer(store, target, signer, &base)?;
    Ok(base.document)
}

fn check_signer<T: PointerDocument>(
    store: &Store,
    target: &PointerTarget,
    signer: &Signer<'_>,
    base: &Base<T>,
) -> Result<(), Error> {
    match base.key_id {
        Some(signed_by) if signed_by != signer.key.id() && !signer.new_key => {
            Err(Error::SignerChanged {
                what: target.describe::<T>(store),
                serial: base.serial,
                signed_by: signed_by.to_string(),
                signing_with: signer.key.id().to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Give the pointer a new state with the next free serial. `make` builds the state for a
/// serial from the verified state before it (it may run several times when publishers race).
/// `single_publisher` is for stores that ignore conditional writes: the caller promises no one
/// else publishes now, and the next serial also counts the highest verified history entry.
pub async fn advance<T, F>(
    store: &Store,
    target: &PointerTarget,
    signer: &Signer<'_>,
    single_publisher: bool,
    mut make: F,
) -> Result<Advanced<T>, Error>
where
    T: PointerDocument,
    F: FnMut(u64, Option<&T>) -> Result<T, Error>,
{
    let what = target.describe::<T>(store);
    // Serials known to be taken in the history (by a racing publisher, a publisher that died
    // before moving the pointer, or a forged entry: all are skipped, none is built on).
    let mut floor = if single_publisher {
        highest_verified::<T>(store, target, &signer.trusted)
            .await?
            .map_or(0, |(document, _)| document.serial())
    } else {
        0
    };
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            pause(attempt).await;
        }
        let base = base::<T>(store, target, signer).await?;
        check_signer(store, target, signer, &base)?;
        let serial = next_serial(base.serial.max(floor)).ok_or(Error::SerialExhausted {
            what: what.clone(),
            serial: base.serial.max(floor),
        })?;
        let document = make(serial, base.document.as_ref())?;
        if document.serial() != serial
            || document.app() != target.app
            || document.channel() != target.channel
        {
            return Err(Error::InvalidRequest(format!(
                "internal error: {} built for {}/{} serial {} instead of {}/{} serial {serial}",
                T::KIND,
                document.app(),
                document.channel(),
                document.serial(),
                target.app,
                target.channel
            )));
        }
        let envelope = sign_document(signer.key, &document, &document.comment())?.to_bytes();
        if envelope.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the signed {} is {} bytes, more than the {MAX_DOCUMENT_BYTES} agents accept",
                T::KIND,
                envelope.len()
            )));
        }
        let envelope = Bytes::from(envelope);
        if store
            .put_create(&target.history(serial), envelope.clone())
            .await?
            == CreateOutcome::AlreadyExists
        {
            tracing::debug!(app = %target.app, channel = %target.channel, serial, "serial taken; retrying");
            floor = floor.max(serial);
            continue;
        }
        // We own `serial`. Move the pointer to it unless a higher serial got there first.
        let mut etag = base.etag;
        for swap in 0..MAX_ATTEMPTS {
            if swap > 0 {
                pause(swap).await;
            }
            match store
                .put_if_match(&target.pointer, envelope.clone(), etag.as_deref())
                .await?
            {
                SwapOutcome::Written(_) => {
                    return Ok(Advanced {
                        serial,
                        pointer: document,
                        superseded_by: None,
                    });
                }
                SwapOutcome::Conflict => {}
            }
            let Some(now) = store
                .get(&target.pointer, MAX_DOCUMENT_BYTES as u64)
                .await?
            else {
                etag = None;
                continue;
            };
            match check::<T>(&now.bytes, &signer.trusted, target) {
                Ok((now_document, _, _)) if now_document.serial() >= serial => {
                    tracing::info!(
                        app = %target.app, channel = %target.channel, serial,
                        newer = now_document.serial(), "a newer publish reached the pointer first"
                    );
                    return Ok(Advanced {
                        serial,
                        pointer: document,
                        superseded_by: Some(now_document.serial()),
                    });
                }
                Ok(_) => etag = Some(now.etag.unwrap_or_default()),
                Err(_) if signer.force_reset => etag = Some(now.etag.unwrap_or_default()),
                Err(reason) => {
                    return Err(Error::UnverifiedPointer {
                        what: what.clone(),
                        reason: format!(
                            "it changed while this publish held serial {serial}, to something that does not verify: {reason}"
                        ),
                    });
                }
            }
        }
        return Err(Error::TooManyConflicts {
            what,
            attempts: MAX_ATTEMPTS,
        });
    }
    Err(Error::TooManyConflicts {
        what,
        attempts: MAX_ATTEMPTS,
    })
}

/// A short random pause that grows with the attempt number, so racing publishers spread out.
async fn pause(attempt: u32) {
    let ceiling = 5 + 10 * u64::from(attempt.min(20));
    let millis = rand::random_range(1..=ceiling);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}
