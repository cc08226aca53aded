//! Bundles in a store: the signed-pointer protocol of `ferry_store::pointer` applied to
//! `apps/<app>/config/<channel>.json` and its history, so two operators pushing at once get
//! distinct serials and the pointer ends at the highest; reading the current bundle, listing
//! the history, and rolling back (a new serial repeating an older bundle's files).

use bytes::Bytes;
use ferry_store::Store;
use ferry_store::pointer::{self, PointerDocument, PointerTarget, Signer};

use crate::Error;
use crate::document::{Bundle, BundleFile, SCHEMA, bundle_path, history_prefix};

impl PointerDocument for Bundle {
    // A bundle checks its own invariants (schema, file names, count) as readers rely on.
    fn validate(&self) -> Result<(), String> {
        Bundle::validate(self, &format!("{}/{}", self.app, self.channel))
            .map_err(|error| error.to_string())
    }

    fn header(&self) -> (u64, &str, &str) {
        (self.serial, &self.app, &self.channel)
    }

    const KIND: &'static str = "config bundle";
    const COMMENT: &'static str = "config";
}

/// Where a channel's bundles live.
pub fn config_target(app: &str, channel: &str) -> PointerTarget {
    PointerTarget {
        app: app.to_owned(),
        channel: channel.to_owned(),
        pointer: bundle_path(app, channel),
        history_prefix: history_prefix(app, channel),
    }
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The bundle written (its serial is in the history for good).
    pub bundle: Bundle,
    /// Set when a concurrent push with a higher serial reached the pointer first.
    pub superseded_by: Option<u64>,
}

/// The current bundle of a channel, unverified, with the pointer's raw bytes (to verify) and
/// its ETag; `None` when nothing was ever pushed.
pub async fn read_current(
    store: &Store,
    app: &str,
    channel: &str,
) -> Result<Option<(Bundle, Bytes, Option<String>)>, Error> {
    Ok(
        pointer::read_unverified::<Bundle>(store, &config_target(app, channel))
            .await?
            .map(|read| (read.document, read.bytes, read.etag)),
    )
}

/// Push `files` as the next bundle of `app`/`channel`, signed by `signer` on top of the
/// verified current bundle.
pub async fn push(
    store: &Store,
    signer: &Signer<'_>,
    app: &str,
    channel: &str,
    files: Vec<BundleFile>,
    copied_from: Option<u64>,
) -> Result<Pushed, Error> {
    let mut files = files;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let advanced = pointer::advance::<Bundle, _>(
        store,
        &config_target(app, channel),
        signer,
        false,
        |serial, _current| {
            let bundle = Bundle {
                schema: SCHEMA,
                app: app.to_owned(),
                channel: channel.to_owned(),
                serial,
                files: files.clone(),
                pushed_at: ferry_release::now_utc(),
                copied_from,
            };
            bundle
                .validate(&format!("{app}/{channel}"))
                .map_err(|error| ferry_store::Error::InvalidRequest(error.to_string()))?;
            Ok(bundle)
        },
    )
    .await?;
    tracing::info!(app, channel, serial = advanced.serial, files = %advanced.pointer.summary(), "config pushed");
    Ok(Pushed {
        bundle: advanced.pointer,
        superseded_by: advanced.superseded_by,
    })
}

/// Push a new serial repeating the files of an earlier bundle: `to`, or by default the newest
/// earlier bundle whose files differ from the current ones. Only bundles signed by a key the
/// signer trusts are candidates. Returns the serial copied and the push.
pub async fn rollback(
    store: &Store,
    signer: &Signer<'_>,
    app: &str,
    channel: &str,
    to: Option<u64>,
) -> Result<(u64, Pushed), Error> {
    let error = |message: String| Error::Rollback {
        app: app.to_owned(),
        channel: channel.to_owned(),
        message,
    };
    let target = config_target(app, channel);
    let Some(current) = pointer::current_for_publish::<Bundle>(store, &target, signer).await?
    else {
        return Err(error("nothing was ever pushed".to_owned()));
    };
    let entries: Vec<Bundle> = pointer::history::<Bundle>(store, &target, None)
        .await?
        .into_iter()
        .filter_map(|entry| {
            let what = store.location(&target.history(entry.document.serial));
            pointer::verify_state::<Bundle>(&entry.bytes, &signer.trusted, &target, &what)
                .map(|(bundle, _)| bundle)
                .map_err(|refused| {
                    tracing::warn!("skipping a bundle that does not verify: {refused}")
                })
                .ok()
        })
        .collect();
    let target = match to {
        Some(serial) => entries
            .into_iter()
            .find(|bundle| bundle.serial == serial)
            .ok_or_else(|| {
                error(format!(
                    "there is no serial {serial} signed by a trusted key (see `ferry config history`)"
                ))
            })?,
        None => entries
            .into_iter()
            .rev()
            .find(|bundle| bundle.serial < current.serial && bundle.files != current.files)
            .ok_or_else(|| {
                error(format!(
                    "no earlier bundle differs from the current serial {}",
                    current.serial
                ))
            })?,
    };
    let from = target.serial;
    let pushed = push(store, signer, app, channel, target.files, Some(from)).await?;
    Ok((from, pushed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::verify_bundle;
    use ferry_release::{SigningKey, TrustedKeys};
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
        let _ = &trusted;
        let mut tasks = Vec::new();
        for index in 0..8 {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let files = vec![file("app.env", &format!("N={index}\n"))];
                let signer = Signer::new(&key, &TrustedKeys::new());
                push(&store, &signer, "hello", "stable", files, None)
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
            pointer::history::<Bundle>(&store, &config_target("hello", "stable"), None)
                .await
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            pointer::history::<Bundle>(&store, &config_target("hello", "stable"), Some(3))
                .await
                .unwrap()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn rollback_repeats_the_previous_different_bundle_with_a_new_serial() {
        let (_dir, store, key, _trusted) = setup();
        let key = Signer::new(&key, &TrustedKeys::new());
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
        let key = Signer::new(&key, &TrustedKeys::new());
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
