//! Bundles in a store: push (the same compare-and-swap protocol as channel pointers, so two
//! operators pushing at once get distinct serials and the pointer ends at the highest),
//! reading the current bundle, listing the history, and rolling back (a new serial repeating
//! an older bundle's files).

use std::time::Duration;

use bytes::Bytes;
use ferry_release::{Envelope, KeyId, MAX_DOCUMENT_BYTES, SigningKey, sign_document};
use ferry_store::{CreateOutcome, Store, SwapOutcome};

use crate::Error;
use crate::document::{Bundle, BundleFile, SCHEMA, bundle_path, history_path, history_prefix};

/// Attempts at claiming a serial or swapping the pointer before giving up.
const MAX_ATTEMPTS: u32 = 100;

/// The result of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The bundle written (its serial is in the history for good).
    pub bundle: Bundle,
    /// Set when a concurrent push with a higher serial reached the pointer first.
    pub superseded_by: Option<u64>,
}

/// One bundle of a channel's history (signature not checked: listings show what is there).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The bundle.
    pub bundle: Bundle,
    /// The key that claims to have signed it.
    pub key_id: Option<KeyId>,
}

fn parse_unverified(bytes: &[u8], what: &str) -> Result<(Bundle, Option<KeyId>), Error> {
    let envelope = Envelope::from_bytes(bytes, what)?;
    let bundle: Bundle =
        serde_json::from_str(&envelope.payload).map_err(|error| Error::Malformed {
            what: what.to_owned(),
            message: error.to_string(),
        })?;
    Ok((bundle, envelope.claimed_key_id()))
}

/// The current bundle of a channel, unverified, with the pointer's raw bytes (to verify) and
/// its ETag; `None` when nothing was ever pushed.
pub async fn read_current(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<(Bundle, Bytes, Option<String>)>, Error> {
    let path = bundle_path(app, channel);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Ok(None);
    };
    let (bundle, _) = parse_unverified(&object.bytes, &store.location(&path))?;
    Ok(Some((bundle, object.bytes, object.etag)))
}

async fn history_serials(store: &Store, app: &str, channel: &str) -> Result<Vec<u64>, Error> {
    let prefix = format!("{}/", history_prefix(app, channel));
    Ok(store
        .list(&history_prefix(app, channel))
        .await?
        .iter()
        .filter_map(|object| {
            object
                .path
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect())
}

/// A channel's bundles, oldest first; with `last`, only the newest `last`.
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
    let mut entries = Vec::with_capacity(serials.len());
    for serial in serials {
        let path = history_path(app, channel, serial);
        let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
            continue;
        };
        let (bundle, key_id) = parse_unverified(&object.bytes, &store.location(&path))?;
        entries.push(HistoryEntry { bundle, key_id });
    }
    Ok(entries)
}

/// Push `files` as the next bundle of `app`/`channel`, signed with `key`.
pub async fn push(
    store: &Store,
    key: &SigningKey,
    app: &str,
    channel: &str,
    files: Vec<BundleFile>,
    copied_from: Option<u64>,
) -> Result<Pushed, Error> {
    let mut files = files;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let pointer_path = bundle_path(app, channel);
    let mut floor = 0;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)) * 10)).await;
        }
        let current = read_current(store, app, channel).await?;
        let current_serial = current.as_ref().map_or(0, |(bundle, _, _)| bundle.serial);
        let serial = current_serial.max(floor) + 1;
        let bundle = Bundle {
            schema: SCHEMA,
            app: app.to_owned(),
            channel: channel.to_owned(),
            serial,
            files: files.clone(),
            pushed_at: ferry_release::now_utc(),
            copied_from,
        };
        bundle.validate(&format!("{app}/{channel}"))?;
        let comment = format!("ferry config app={app} channel={channel} serial={serial}");
        let envelope = sign_document(key, &bundle, &comment)?.to_bytes();
        if envelope.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::Push {
                app: app.to_owned(),
                channel: channel.to_owned(),
                message: format!(
                    "the bundle is {} bytes, more than the {MAX_DOCUMENT_BYTES} agents accept",
                    envelope.len()
                ),
            });
        }
        let envelope = Bytes::from(envelope);
        let claimed = store
            .put_create(&history_path(app, channel, serial), envelope.clone())
            .await?;
        if claimed == CreateOutcome::AlreadyExists {
            let highest = history_serials(store, app, channel)
                .await?
                .into_iter()
                .max()
                .unwrap_or(serial);
            floor = floor.max(highest).max(serial);
            continue;
        }
        // We own `serial`: move the pointer to it unless a higher serial got there first.
        let mut etag = current.and_then(|(_, _, etag)| etag);
        let mut known = current_serial;
        for swap in 0..MAX_ATTEMPTS {
            if swap > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(swap.min(20)) * 10)).await;
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
                    tracing::info!(app, channel, serial, files = %bundle.summary(), "config pushed");
                    return Ok(Pushed {
                        bundle,
                        superseded_by: None,
                    });
                }
                SwapOutcome::Conflict => match read_current(store, app, channel).await? {
                    Some((now, _, _)) if now.serial >= serial => {
                        return Ok(Pushed {
                            bundle,
                            superseded_by: Some(now.serial),
                        });
                    }
                    Some((now, _, now_etag)) => {
                        known = now.serial;
                        etag = now_etag;
                    }
                    None => {
                        known = 0;
                        etag = None;
                    }
                },
            }
        }
        break;
    }
    Err(Error::Push {
        app: app.to_owned(),
        channel: channel.to_owned(),
        message: format!("gave up after {MAX_ATTEMPTS} attempts (too many concurrent pushes?)"),
    })
}

/// Push a new serial repeating the files of an earlier bundle: `to`, or by default the newest
/// earlier bundle whose files differ from the current ones. Returns the serial copied and the
/// push.
pub async fn rollback(
    store: &Store,
    key: &SigningKey,
    app: &str,
    channel: &str,
    to: Option<u64>,
) -> Result<(u64, Pushed), Error> {
    let error = |message: String| Error::Rollback {
        app: app.to_owned(),
        channel: channel.to_owned(),
        message,
    };
    let Some((current, _, _)) = read_current(store, app, channel).await? else {
        return Err(error("nothing was ever pushed".to_owned()));
    };
    let entries = history(store, app, channel, None).await?;
    let target = match to {
        Some(serial) => entries
            .into_iter()
            .find(|entry| entry.bundle.serial == serial)
            .ok_or_else(|| {
                error(format!(
                    "there is no serial {serial} (see `ferry config history`)"
                ))
            })?,
        None => entries
            .into_iter()
            .rev()
            .find(|entry| {
                entry.bundle.serial < current.serial && entry.bundle.files != current.files
            })
            .ok_or_else(|| {
                error(format!(
                    "no earlier bundle differs from the current serial {}",
                    current.serial
                ))
            })?,
    };
    let from = target.bundle.serial;
    let pushed = push(store, key, app, channel, target.bundle.files, Some(from)).await?;
    Ok((from, pushed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::verify_bundle;
    use ferry_release::TrustedKeys;
    use ferry_store::StoreOptions;

    fn setup() -> (tempfile::TempDir, Store, SigningKey, TrustedKeys) {
        let dir = tempfile::tempdir().unwrap();
        let pair = ferry_release::generate_key_pair(&dir.path().join("release")).unwrap();
        let key = SigningKey::from_file(&pair.secret_path, None).unwrap();
        let trusted = TrustedKeys::from_files(&[pair.public_path]).unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let store = Store::open(
            &url,
            &StoreOptions {
                create_local_root: true,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        (dir, store, key, trusted)
    }

    fn file(name: &str, content: &str) -> BundleFile {
        BundleFile {
            name: name.to_owned(),
            mode: 0o640,
            content: content.to_owned(),
        }
    }

    #[tokio::test]
    async fn concurrent_pushes_get_distinct_serials_and_the_pointer_ends_highest() {
        let (_dir, store, key, trusted) = setup();
        let key = std::sync::Arc::new(key);
        let mut tasks = Vec::new();
        for index in 0..8 {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let files = vec![file("app.env", &format!("N={index}\n"))];
                push(&store, &key, "hello", "stable", files, None)
                    .await
                    .unwrap()
            }));
        }
        let mut serials = Vec::new();
        for task in tasks {
            serials.push(task.await.unwrap().bundle.serial);
        }
        serials.sort_unstable();
        assert_eq!(serials, (1..=8).collect::<Vec<_>>());
        let (current, bytes, _) = read_current(&store, "hello", "stable")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.serial, 8);
        let (verified, _) = verify_bundle(&bytes, &trusted, "hello", "stable", Some(8)).unwrap();
        assert_eq!(verified, current);
        let error = verify_bundle(&bytes, &trusted, "hello", "stable", Some(9)).unwrap_err();
        assert!(matches!(error, Error::SerialRegressed { .. }), "{error}");
        assert!(verify_bundle(&bytes, &trusted, "other", "stable", None).is_err());
        assert_eq!(
            history(&store, "hello", "stable", None)
                .await
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            history(&store, "hello", "stable", Some(3))
                .await
                .unwrap()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn rollback_repeats_the_previous_different_bundle_with_a_new_serial() {
        let (_dir, store, key, _trusted) = setup();
        let error = rollback(&store, &key, "hello", "stable", None)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("nothing was ever pushed"),
            "{error}"
        );
        for text in ["A=1\n", "A=2\n", "A=2\n"] {
            push(
                &store,
                &key,
                "hello",
                "stable",
                vec![file("app.env", text)],
                None,
            )
            .await
            .unwrap();
        }
        let (from, pushed) = rollback(&store, &key, "hello", "stable", None)
            .await
            .unwrap();
        assert_eq!(from, 1);
        assert_eq!(pushed.bundle.serial, 4);
        assert_eq!(pushed.bundle.copied_from, Some(1));
        assert_eq!(pushed.bundle.files[0].content, "A=1\n");
        let (_, pushed) = rollback(&store, &key, "hello", "stable", Some(2))
            .await
            .unwrap();
        assert_eq!(pushed.bundle.files[0].content, "A=2\n");
        let error = rollback(&store, &key, "hello", "stable", Some(42))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no serial 42"), "{error}");
    }

    #[tokio::test]
    async fn a_tampered_bundle_is_refused() {
        let (_dir, store, key, trusted) = setup();
        push(
            &store,
            &key,
            "hello",
            "stable",
            vec![file("app.env", "A=1\n")],
            None,
        )
        .await
        .unwrap();
        let (_, bytes, _) = read_current(&store, "hello", "stable")
            .await
            .unwrap()
            .unwrap();
        let tampered = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("A=1", "A=9");
        assert!(verify_bundle(tampered.as_bytes(), &trusted, "hello", "stable", None).is_err());
    }
}
