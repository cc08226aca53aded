//! Channel pointers in a store: the signed-pointer protocol of [`crate::pointer`] applied to
//! `apps/<app>/channels/<channel>.json` and its history, plus the rollback rule.

use ferry_release::{ChannelPointer, KeyId};
use time::OffsetDateTime;

use crate::error::Error;
use crate::pointer::{self, PointerDocument, PointerTarget, Signer};
use crate::store::Store;

impl PointerDocument for ChannelPointer {
    const KIND: &'static str = "channel pointer";
    const COMMENT: &'static str = "pointer";

    fn header(&self) -> (u64, &str, &str) {
        (self.serial, &self.app, &self.channel)
    }

    fn validate(&self) -> Result<(), String> {
        let schema = ferry_release::SCHEMA;
        (self.schema == schema).then_some(()).ok_or_else(|| {
            format!(
                "schema {} is not {schema} (a newer ferry wrote it?)",
                self.schema
            )
        })
    }

    fn comment_detail(&self) -> String {
        format!(" version={}", self.release.version)
    }
}

/// Where a channel's pointer and history live.
pub fn channel_target(app: &str, channel: &str) -> PointerTarget {
    PointerTarget {
        app: app.to_owned(),
        channel: channel.to_owned(),
        pointer: ChannelPointer::path(app, channel),
        history_prefix: ChannelPointer::history_prefix(app, channel),
    }
}

/// A channel pointer as read by a reader that shows what is there (signature not checked).
#[derive(Debug, Clone)]
pub struct CurrentPointer {
    /// The payload.
    pub pointer: ChannelPointer,
    /// The ETag of the object read.
    pub etag: Option<String>,
}

/// Read and parse a channel's pointer without checking its signature; `None` when the channel
/// has never been published. Publishers build on [`pointer::read_verified`] instead.
pub async fn read_pointer(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<CurrentPointer>, Error> {
    Ok(
        pointer::read_unverified::<ChannelPointer>(store, &channel_target(app, channel))
            .await?
            .map(|read| CurrentPointer {
                pointer: read.document,
                etag: read.etag,
            }),
    )
}

/// Read a release document without checking its signature, for display (who published it,
/// from which commit); `None` when it is missing or unreadable.
pub async fn read_release_document(
    store: &Store,
    app: &str,
    version: &str,
) -> Result<Option<ferry_release::Release>, Error> {
    let path = ferry_release::Release::path(app, version);
    let Some(object) = store
        .get(&path, ferry_release::MAX_DOCUMENT_BYTES as u64)
        .await?
    else {
        return Ok(None);
    };
    let what = format!("release {}", store.location(&path));
    Ok(ferry_release::Envelope::from_bytes(&object.bytes, &what)
        .ok()
        .and_then(|envelope| serde_json::from_str(&envelope.payload).ok()))
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

/// A channel's history, oldest first; with `last`, only the newest `last` entries (only those
/// are read).
pub async fn history(
    store: &Store,
    app: &str,
    channel: &str,
    last: Option<usize>,
) -> Result<Vec<HistoryEntry>, Error> {
    let entries =
        pointer::history::<ChannelPointer>(store, &channel_target(app, channel), last).await?;
    Ok(entries
        .into_iter()
        .map(|entry| HistoryEntry {
            serial: entry.document.serial,
            version: entry.document.release.version.clone(),
            published_at: entry.document.published_at,
            key_id: entry.key_id,
            pointer: entry.document,
        })
        .collect())
}

/// The result of advancing a channel.
pub type Advanced = pointer::Advanced<ChannelPointer>;

/// Give a channel a new pointer state with the next free serial, built on its verified
/// current state (see [`pointer::advance`]).
pub async fn advance_channel<F>(
    store: &Store,
    signer: &Signer<'_>,
    app: &str,
    channel: &str,
    single_publisher: bool,
    make: F,
) -> Result<Advanced, Error>
where
    F: FnMut(u64, Option<&ChannelPointer>) -> Result<ChannelPointer, Error>,
{
    pointer::advance(
        store,
        &channel_target(app, channel),
        signer,
        single_publisher,
        make,
    )
    .await
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
            urgent: false,
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
}
