//! Channel pointers in a store: reading the current one, listing a channel's history, and
//! advancing a channel to a new serial safely while other publishers do the same
//! (DESIGN.md "Publish", step 3).
//!
//! The history object `history/<serial>.json` is written create-only first: whoever creates
//! it owns that serial, so two publishers never share one. The pointer is then written with
//! If-Match on the ETag read before (create-only when there is none). On a conflict the
//! pointer is read again: if it already names a higher serial, a later publish superseded
//! ours (ours stays in the history); otherwise we swap again. So the pointer always ends at
//! the highest serial, and a publisher that died between the two writes leaves only a
//! history entry that the next publish skips.

use std::time::Duration;

use bytes::Bytes;
use ferry_release::{
    ChannelPointer, Envelope, KeyId, MAX_DOCUMENT_BYTES, SigningKey, sign_document,
};
use futures::StreamExt;
use time::OffsetDateTime;

use crate::error::Error;
use crate::store::{CreateOutcome, Store, SwapOutcome};

/// Attempts at claiming a serial / swapping the pointer before giving up.
const MAX_ATTEMPTS: u32 = 200;

/// A channel pointer as read by a publisher (signature not checked: a publisher may hold a
/// newer key than the one that signed the previous state).
#[derive(Debug, Clone)]
pub struct CurrentPointer {
    /// The payload.
    pub pointer: ChannelPointer,
    /// The ETag to swap against.
    pub etag: Option<String>,
}

/// Read and parse a channel's pointer without checking its signature; `None` when the channel
/// has never been published.
pub async fn read_pointer(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<CurrentPointer>, Error> {
    let path = ChannelPointer::path(app, channel);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Ok(None);
    };
    let what = format!("channel pointer {}", store.location(&path));
    let (pointer, _) = parse_unverified(&object.bytes, &what)?;
    Ok(Some(CurrentPointer {
        pointer,
        etag: object.etag,
    }))
}

fn parse_unverified(bytes: &[u8], what: &str) -> Result<(ChannelPointer, Option<KeyId>), Error> {
    let envelope = Envelope::from_bytes(bytes, what)?;
    let pointer: ChannelPointer = serde_json::from_str(&envelope.payload).map_err(|error| {
        ferry_release::Error::Malformed {
            what: what.to_owned(),
            message: error.to_string(),
        }
    })?;
    Ok((pointer, envelope.claimed_key_id()))
}

/// One state a channel has been in.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its serial.
    pub serial: u64,
    /// The release version it named.
    pub version: String,
    /// When it was written.
    pub published_at: OffsetDateTime,
    /// The key that claims to have signed it (not verified here; `ferry verify` does that).
    pub key_id: Option<KeyId>,
    /// The full payload.
    pub pointer: ChannelPointer,
}

fn serial_of(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// The serials present in a channel's history, unsorted.
async fn history_serials(store: &Store, app: &str, channel: &str) -> Result<Vec<u64>, Error> {
    let objects = store
        .list(&ChannelPointer::history_prefix(app, channel))
        .await?;
    Ok(objects
        .iter()
        .filter_map(|object| serial_of(&object.path))
        .collect())
}

/// A channel's history, oldest first; with `last`, only the newest `last` entries (only those
/// are read).
pub async fn history(
    store: &Store,
    app: &str,
    channel: &str,
    last: Option<usize>,
) -> Result<Vec<HistoryEntry>, Error> {
    let mut serials = history_serials(store, app, channel).await?;
    serials.sort_unstable();
    if let Some(last) = last {
        serials.drain(..serials.len().saturating_sub(last));
    }
    let reads = futures::stream::iter(serials.into_iter().map(|serial| async move {
        let path = ChannelPointer::history_path(app, channel, serial);
        let object = store.get(&path, MAX_DOCUMENT_BYTES as u64).await?;
        let Some(object) = object else {
            return Ok::<_, Error>(None);
        };
        let (pointer, key_id) = parse_unverified(&object.bytes, &store.location(&path))?;
        Ok(Some(HistoryEntry {
            serial,
            version: pointer.release.version.clone(),
            published_at: pointer.published_at,
            key_id,
            pointer,
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

/// The result of advancing a channel.
#[derive(Debug, Clone)]
pub struct Advanced {
    /// The serial this publish got (always recorded in the history).
    pub serial: u64,
    /// The pointer state written.
    pub pointer: ChannelPointer,
    /// Set when another publisher's higher serial reached the pointer first.
    pub superseded_by: Option<u64>,
}

/// Give a channel a new pointer state with the next free serial. `make` builds the payload for
/// a serial given the current pointer (it may run several times when publishers race).
/// `single_publisher` is for stores that ignore conditional writes: the caller promises no
/// one else publishes now, and the next serial is taken from a history listing.
pub async fn advance_channel<F>(
    store: &Store,
    key: &SigningKey,
    app: &str,
    channel: &str,
    single_publisher: bool,
    mut make: F,
) -> Result<Advanced, Error>
where
    F: FnMut(u64, Option<&ChannelPointer>) -> Result<ChannelPointer, Error>,
{
    let pointer_path = ChannelPointer::path(app, channel);
    let mut floor = if single_publisher {
        history_serials(store, app, channel)
            .await?
            .into_iter()
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            pause(attempt).await;
        }
        let current = read_pointer(store, app, channel).await?;
        let current_serial = current.as_ref().map_or(0, |current| current.pointer.serial);
        let serial = current_serial.max(floor) + 1;
        let pointer = make(serial, current.as_ref().map(|current| &current.pointer))?;
        if pointer.serial != serial || pointer.app != app || pointer.channel != channel {
            return Err(Error::InvalidRequest(format!(
                "internal error: pointer built for {}/{} serial {} instead of {app}/{channel} serial {serial}",
                pointer.app, pointer.channel, pointer.serial
            )));
        }
        let comment = format!(
            "ferry pointer app={app} channel={channel} serial={serial} version={}",
            pointer.release.version
        );
        let envelope = Bytes::from(sign_document(key, &pointer, &comment)?.to_bytes());
        let history_path = ChannelPointer::history_path(app, channel, serial);
        if store.put_create(&history_path, envelope.clone()).await? == CreateOutcome::AlreadyExists
        {
            tracing::debug!(
                app,
                channel,
                serial,
                "serial taken by another publisher; retrying"
            );
            let highest = history_serials(store, app, channel)
                .await?
                .into_iter()
                .max()
                .unwrap_or(serial);
            floor = floor.max(highest).max(serial);
            continue;
        }
        // We own `serial`. Move the pointer to it unless a higher serial got there first.
        let mut etag = current.and_then(|current| current.etag);
        let mut known = current_serial;
        for swap in 0..MAX_ATTEMPTS {
            if swap > 0 {
                pause(swap).await;
            }
            let expected = if known == 0 && etag.is_none() {
                None
            } else {
                etag.as_deref()
            };
            match store
                .put_if_match(&pointer_path, envelope.clone(), expected)
                .await?
            {
                SwapOutcome::Written(_) => {
                    return Ok(Advanced {
                        serial,
                        pointer,
                        superseded_by: None,
                    });
                }
                SwapOutcome::Conflict => {
                    let now = read_pointer(store, app, channel).await?;
                    match now {
                        Some(now) if now.pointer.serial >= serial => {
                            tracing::info!(
                                app,
                                channel,
                                serial,
                                newer = now.pointer.serial,
                                "a newer publish reached the pointer first"
                            );
                            return Ok(Advanced {
                                serial,
                                pointer,
                                superseded_by: Some(now.pointer.serial),
                            });
                        }
                        Some(now) => {
                            known = now.pointer.serial;
                            etag = now.etag;
                        }
                        None => {
                            known = 0;
                            etag = None;
                        }
                    }
                }
            }
        }
        return Err(Error::TooManyConflicts {
            app: app.to_owned(),
            channel: channel.to_owned(),
            attempts: MAX_ATTEMPTS,
        });
    }
    Err(Error::TooManyConflicts {
        app: app.to_owned(),
        channel: channel.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// A short random pause that grows with the attempt number, so racing publishers spread out.
async fn pause(attempt: u32) {
    let ceiling = 5 + 10 * u64::from(attempt.min(20));
    let millis = rand::random_range(1..=ceiling);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Which release `ferry rollback` should go back to: `to` when given (any version in the
/// history), else the newest history entry before the current serial whose version differs
/// from the current one.
pub fn rollback_target(
    entries: &[HistoryEntry],
    current: &ChannelPointer,
    to: Option<&str>,
) -> Result<ferry_release::ReleaseRef, Error> {
    let mut older: Vec<&HistoryEntry> = entries
        .iter()
        .filter(|entry| entry.serial < current.serial)
        .collect();
    older.sort_by_key(|entry| std::cmp::Reverse(entry.serial));
    let found = match to {
        Some(version) => entries
            .iter()
            .filter(|entry| entry.version == version)
            .max_by_key(|entry| entry.serial),
        None => older
            .into_iter()
            .find(|entry| entry.version != current.release.version),
    };
    match (found, to) {
        (Some(entry), _) => Ok(entry.pointer.release.clone()),
        (None, Some(version)) => Err(Error::InvalidRequest(format!(
            "channel {}/{} has never pointed at version {version}; `ferry releases` lists the versions it had",
            current.app, current.channel
        ))),
        (None, None) => Err(Error::InvalidRequest(format!(
            "channel {}/{} has no earlier version than {} to roll back to",
            current.app, current.channel, current.release.version
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_release::{ReleaseRef, Rollout, SCHEMA};

    use super::*;

    fn entry(serial: u64, version: &str) -> HistoryEntry {
        let pointer = ChannelPointer {
            schema: SCHEMA,
            app: "hello".into(),
            channel: "stable".into(),
            serial,
            release: ReleaseRef {
                version: version.into(),
                artifacts: BTreeMap::new(),
            },
            rollout: Rollout::default(),
            paused: false,
            published_at: ferry_release::now_utc(),
            expires_at: None,
        };
        HistoryEntry {
            serial,
            version: version.into(),
            published_at: pointer.published_at,
            key_id: None,
            pointer,
        }
    }

    #[test]
    fn rollback_goes_to_the_newest_earlier_other_version() {
        let entries = vec![entry(1, "1"), entry(2, "2"), entry(3, "3"), entry(4, "3")];
        let current = entries[3].pointer.clone();
        assert_eq!(
            rollback_target(&entries, &current, None).unwrap().version,
            "2"
        );
        assert_eq!(
            rollback_target(&entries, &current, Some("1"))
                .unwrap()
                .version,
            "1"
        );
        assert!(rollback_target(&entries, &current, Some("9")).is_err());
        let only = vec![entry(1, "1"), entry(2, "1")];
        assert!(rollback_target(&only, &only[1].pointer, None).is_err());
    }

    #[test]
    fn serials_come_from_history_file_names() {
        assert_eq!(serial_of("apps/a/channels/c/history/42.json"), Some(42));
        assert_eq!(serial_of("apps/a/channels/c/history/x.json"), None);
        assert_eq!(serial_of("apps/a/channels/c/history/7.json.tmp"), None);
    }
}
