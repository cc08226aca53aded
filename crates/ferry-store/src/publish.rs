//! `ferry publish` as a library: first a plan (hash and sign every artifact, look at what the
//! store already has, build the release document) that writes nothing — `--dry-run` prints
//! it — then its execution in the order of DESIGN.md "Publish": artifacts and their
//! signatures, the release (create-only), then the channel (history + pointer).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use ferry_release::{
    ArtifactRef, ChannelPointer, Envelope, MAX_DOCUMENT_BYTES, Release, ReleaseRef, Rollout,
    SCHEMA, SigningKey, sign_artifact, sign_document,
};

use crate::pointer::{self, PointerDocument, Signer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::channel::{Advanced, advance_channel, channel_target};
use crate::error::Error;
use crate::progress::Progress;
use crate::store::{ConditionalPut, CreateOutcome, Store};

/// One .deb to publish, with the fields read from its control file.
#[derive(Debug, Clone)]
pub struct ArtifactInput {
    /// The local file.
    pub file: PathBuf,
    /// Its `Package`.
    pub package: String,
    /// Its `Version`.
    pub version: String,
    /// Its `Architecture`.
    pub architecture: String,
}

/// What to publish where.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The app (namespace in the store).
    pub app: String,
    /// The channel to point at the release.
    pub channel: String,
    /// Notes stored in the release.
    pub notes: String,
    /// The rollout plan written into the pointer.
    pub rollout: Rollout,
    /// When the pointer expires (off when `None`).
    pub expires_at: Option<OffsetDateTime>,
    /// Publish even if the store ignores conditional writes.
    pub single_publisher: bool,
    /// Who, from what, with which ferry: written into the release document.
    pub provenance: Option<ferry_release::Provenance>,
    /// Mark the pointer urgent: agents install it even outside their update windows.
    pub urgent: bool,
}

/// One artifact in a plan.
#[derive(Debug, Clone)]
pub struct PlannedArtifact {
    /// The local file.
    pub file: PathBuf,
    /// Its architecture.
    pub architecture: String,
    /// Where it goes, hash and size.
    pub reference: ArtifactRef,
    /// Its detached minisign signature.
    pub signature: String,
    /// True when the store lacks the artifact and it will be uploaded.
    pub upload: bool,
    /// True when the store lacks its `.minisig`.
    pub upload_signature: bool,
}

/// Everything `publish` will do; computing it writes nothing.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Options it was made with.
    pub options: PublishOptions,
    /// The Debian package name.
    pub package: String,
    /// The version.
    pub version: String,
    /// The artifacts, one per architecture.
    pub artifacts: Vec<PlannedArtifact>,
    /// The release document.
    pub release: Release,
    /// True when the identical release is already in the store.
    pub release_exists: bool,
    /// The channel's serial now (`None`: never published).
    pub current_serial: Option<u64>,
    /// True when the channel already points at exactly this release with this rollout: the
    /// pointer is left alone.
    pub channel_unchanged: bool,
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// The plan executed.
    pub plan: PublishPlan,
    /// The channel result (`None` when the channel was already at this release).
    pub advanced: Option<Advanced>,
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.size += read as u64;
        Ok(read)
    }
}

/// Hash and sign a file in one pass over it.
fn hash_and_sign(key: &SigningKey, input: &ArtifactInput) -> Result<(String, u64, String), Error> {
    let file = std::fs::File::open(&input.file).map_err(|source| Error::Io {
        operation: "read",
        path: input.file.clone(),
        source,
    })?;
    let mut reader = HashingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let comment = format!(
        "ferry artifact {}_{}_{}.deb",
        input.package, input.version, input.architecture
    );
    let signature = sign_artifact(key, &mut reader, &comment)?;
    Ok((
        hex::encode(reader.hasher.finalize()),
        reader.size,
        signature,
    ))
}

fn describe(artifacts: &BTreeMap<String, ArtifactRef>) -> String {
    artifacts
        .iter()
        .map(|(architecture, artifact)| format!("{architecture}: sha256 {}", artifact.sha256))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check an app and channel with ferry's one name rule (the one agents apply to their config),
/// so nothing is published where no agent could follow it.
pub fn validate_target(app: &str, channel: &str) -> Result<(), Error> {
    for (label, value) in [("app", app), ("channel", channel)] {
        ferry_release::check_name(value).map_err(|message| {
            Error::InvalidRequest(format!(
                "{label} {value:?} cannot be used in a store path: {message}"
            ))
        })?;
    }
    Ok(())
}

/// Work out what publishing `inputs` would do. Reads the store, writes nothing.
pub async fn plan_publish(
    store: &Store,
    signer: &Signer<'_>,
    inputs: &[ArtifactInput],
    options: &PublishOptions,
) -> Result<PublishPlan, Error> {
    let Some(first) = inputs.first() else {
        return Err(Error::InvalidRequest(
            "nothing to publish: give at least one .deb".into(),
        ));
    };
    for input in inputs {
        if input.package != first.package || input.version != first.version {
            return Err(Error::InvalidRequest(format!(
                "one publish is one release: {} is {} {} but {} is {} {}",
                input.file.display(),
                input.package,
                input.version,
                first.file.display(),
                first.package,
                first.version
            )));
        }
    }
    for (index, input) in inputs.iter().enumerate() {
        if let Some(other) = inputs[..index]
            .iter()
            .find(|other| other.architecture == input.architecture)
        {
            return Err(Error::InvalidRequest(format!(
                "{} and {} are both for architecture {}; give one .deb per architecture",
                other.file.display(),
                input.file.display(),
                input.architecture
            )));
        }
    }
    validate_target(&options.app, &options.channel)?;
    // A Debian version may hold `:` and `~`, which the name rule refuses; it only has to be
    // one path segment.
    let version = &first.version;
    if version.is_empty()
        || version.contains(['/', '\\'])
        || version.starts_with('.')
        || version.chars().any(char::is_whitespace)
    {
        return Err(Error::InvalidRequest(format!(
            "version {version:?} cannot be used in a store path (no slashes, spaces or leading dot)"
        )));
    }

    if let Some(expires_at) = options.expires_at {
        if expires_at <= ferry_release::now_utc() {
            return Err(Error::InvalidRequest(format!(
                "the pointer would expire at {}, which is not in the future: agents would refuse it at once (give --expires-in a positive duration, or leave it off)",
                ferry_release::format_time(expires_at)
            )));
        }
    }
    // Verify what the channel holds before anything is hashed or uploaded: a forged or
    // foreign-key pointer stops the publish here, with nothing written.
    let current = pointer::current_for_publish::<ChannelPointer>(
        store,
        &channel_target(&options.app, &options.channel),
        signer,
    )
    .await?;

    let mut artifacts = Vec::new();
    for input in inputs {
        // Blocking on purpose: planning is a CLI step with nothing else to run meanwhile, and
        // `block_in_place` would panic on a current-thread runtime.
        let (sha256, size, signature) = hash_and_sign(signer.key, input)?;
        let reference = ArtifactRef::new(&sha256, size);
        let present = store.head(&reference.path).await?;
        let upload = match present {
            Some(info) if info.size == size => false,
            Some(info) => {
                tracing::warn!(path = %reference.path, stored = info.size, local = size, "stored artifact has the wrong size; uploading again");
                true
            }
            None => true,
        };
        let upload_signature = store
            .head(&format!("{}.minisig", reference.path))
            .await?
            .is_none();
        artifacts.push(PlannedArtifact {
            file: input.file.clone(),
            architecture: input.architecture.clone(),
            reference,
            signature,
            upload,
            upload_signature,
        });
    }
    let references: BTreeMap<String, ArtifactRef> = artifacts
        .iter()
        .map(|artifact| (artifact.architecture.clone(), artifact.reference.clone()))
        .collect();

    let release_path = Release::path(&options.app, &first.version);
    let existing = store.get(&release_path, MAX_DOCUMENT_BYTES as u64).await?;
    let (release, release_exists) = match existing {
        Some(object) => {
            let what = format!("release {}", store.location(&release_path));
            let envelope = Envelope::from_bytes(&object.bytes, &what)?;
            let stored: Release = serde_json::from_str(&envelope.payload).map_err(|error| {
                ferry_release::Error::Malformed {
                    what: what.clone(),
                    message: error.to_string(),
                }
            })?;
            if stored.artifacts != references {
                return Err(Error::ReleaseConflict {
                    app: options.app.clone(),
                    version: first.version.clone(),
                    existing: describe(&stored.artifacts),
                });
            }
            (stored, true)
        }
        None => (
            Release {
                schema: SCHEMA,
                app: options.app.clone(),
                package: first.package.clone(),
                version: first.version.clone(),
                artifacts: references,
                notes: options.notes.clone(),
                published_at: ferry_release::now_utc(),
                provenance: options.provenance.clone(),
            },
            false,
        ),
    };

    let channel_unchanged = current.as_ref().is_some_and(|current| {
        current.release == release.reference()
            && current.rollout == options.rollout
            && current.expires_at.is_none()
            && options.expires_at.is_none()
            && !current.paused
            && !signer.force_reset
    });
    Ok(PublishPlan {
        options: options.clone(),
        package: first.package.clone(),
        version: first.version.clone(),
        artifacts,
        release,
        release_exists,
        current_serial: current.map(|current| current.serial),
        channel_unchanged,
    })
}

/// Refuse to go on when the store ignores conditional writes, unless the user opted into
/// single-publisher mode.
pub(crate) async fn require_conditional_put(
    store: &Store,
    single_publisher: bool,
) -> Result<(), Error> {
    match store.check_conditional_put().await? {
        ConditionalPut::Honoured => Ok(()),
        ConditionalPut::Ignored if single_publisher => {
            tracing::warn!(store = %store.url(), "store ignores conditional writes; continuing in single-publisher mode");
            Ok(())
        }
        ConditionalPut::Ignored => Err(Error::ConditionalPutIgnored {
            url: store.url().to_owned(),
        }),
    }
}

impl PublishPlan {
    /// Carry the plan out: blobs first, pointer last.
    pub async fn execute(
        self,
        store: &Store,
        signer: &Signer<'_>,
        progress: &dyn Progress,
    ) -> Result<PublishOutcome, Error> {
        self.upload(store, signer, progress).await?;
        if self.channel_unchanged {
            return Ok(PublishOutcome {
                plan: self,
                advanced: None,
            });
        }
        let reference = self.release.reference();
        let advanced = repoint(store, signer, &self.options, reference).await?;
        Ok(PublishOutcome {
            plan: self,
            advanced: Some(advanced),
        })
    }

    /// Upload what [`PublishPlan::execute`] uploads, then **stage** the next pointer state
    /// instead of moving the channel: signed by this key, written to
    /// `apps/<app>/staged/<channel>.json` for `ferry sign` to collect the other signatures
    /// a keyring threshold asks for (docs/trust.md). Returns the staged state.
    pub async fn stage(
        self,
        store: &Store,
        signer: &Signer<'_>,
        progress: &dyn Progress,
    ) -> Result<(ChannelPointer, Envelope), Error> {
        self.upload(store, signer, progress).await?;
        let serial = match self.current_serial {
            None => 1,
            Some(current) => ferry_release::next_serial(current).ok_or(Error::SerialExhausted {
                what: format!("channel {}/{}", self.options.app, self.options.channel),
                serial: current,
            })?,
        };
        let pointer = ChannelPointer {
            schema: SCHEMA,
            app: self.options.app.clone(),
            channel: self.options.channel.clone(),
            serial,
            release: self.release.reference(),
            rollout: self.options.rollout.clone(),
            paused: false,
            urgent: self.options.urgent,
            published_at: ferry_release::now_utc(),
            expires_at: self.options.expires_at,
        };
        let envelope = sign_document(signer.key, &pointer, &pointer.comment())?;
        crate::keyring::write_staged(store, &pointer, &envelope).await?;
        Ok((pointer, envelope))
    }

    /// The artifacts, their signatures and the release document.
    async fn upload(
        &self,
        store: &Store,
        signer: &Signer<'_>,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        require_conditional_put(store, self.options.single_publisher).await?;
        for artifact in &self.artifacts {
            if artifact.upload {
                store
                    .upload_file(&artifact.reference.path, &artifact.file, progress)
                    .await?;
            }
            if artifact.upload_signature {
                let path = format!("{}.minisig", artifact.reference.path);
                store
                    .put_create(&path, Bytes::from(artifact.signature.clone()))
                    .await?;
            }
        }
        if !self.release_exists {
            let path = Release::path(&self.options.app, &self.version);
            let comment = format!(
                "ferry release app={} version={}",
                self.options.app, self.version
            );
            let envelope = sign_document(signer.key, &self.release, &comment)?;
            if store
                .put_create(&path, Bytes::from(envelope.to_bytes()))
                .await?
                == CreateOutcome::AlreadyExists
            {
                // Another publisher of the same version won the race: fine if it is identical.
                let stored = store.get(&path, MAX_DOCUMENT_BYTES as u64).await?;
                let identical = stored
                    .and_then(|object| Envelope::from_bytes(&object.bytes, &path).ok())
                    .and_then(|envelope| serde_json::from_str::<Release>(&envelope.payload).ok())
                    .is_some_and(|stored| stored.artifacts == self.release.artifacts);
                if !identical {
                    return Err(Error::ReleaseConflict {
                        app: self.options.app.clone(),
                        version: self.version.clone(),
                        existing: "written by a concurrent publish".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Point `options.channel` at `release` with the next serial.
pub(crate) async fn repoint(
    store: &Store,
    signer: &Signer<'_>,
    options: &PublishOptions,
    release: ReleaseRef,
) -> Result<Advanced, Error> {
    advance_channel(
        store,
        signer,
        &options.app,
        &options.channel,
        options.single_publisher,
        |serial, _current| {
            Ok(ChannelPointer {
                schema: SCHEMA,
                app: options.app.clone(),
                channel: options.channel.clone(),
                serial,
                release: release.clone(),
                rollout: options.rollout.clone(),
                paused: false,
                urgent: options.urgent,
                published_at: ferry_release::now_utc(),
                expires_at: options.expires_at,
            })
        },
    )
    .await
}

/// Point a channel at a release that is already in the store (rollback, promote). Checks the
/// release document exists and names the same artifacts.
pub async fn repoint_channel(
    store: &Store,
    signer: &Signer<'_>,
    options: &PublishOptions,
    release: ReleaseRef,
) -> Result<Advanced, Error> {
    let path = Release::path(&options.app, &release.version);
    let Some(object) = store.get(&path, MAX_DOCUMENT_BYTES as u64).await? else {
        return Err(Error::NotFound {
            what: format!("release {} {}", options.app, release.version),
            location: store.location(&path),
            hint: String::new(),
        });
    };
    // The release is re-signed into the channel by this pointer: it must carry a trusted
    // signature of its own, not just sit in the store.
    let stored = ferry_release::verify_release(
        &object.bytes,
        &signer.trusted,
        &options.app,
        &release.version,
    )?
    .release;
    if stored.artifacts != release.artifacts {
        return Err(Error::ReleaseConflict {
            app: options.app.clone(),
            version: release.version.clone(),
            existing: describe(&stored.artifacts),
        });
    }
    for artifact in release.artifacts.values() {
        if store.head(&artifact.path).await?.is_none() {
            return Err(Error::NotFound {
                what: format!("artifact of release {}", release.version),
                location: store.location(&artifact.path),
                hint: ": the store is missing a blob this release needs".into(),
            });
        }
    }
    require_conditional_put(store, options.single_publisher).await?;
    repoint(store, signer, options, release).await
}

/// What [`set_paused`] did.
#[derive(Debug, Clone)]
pub enum PauseOutcome {
    /// A new pointer state was written.
    Changed(Advanced),
    /// The channel already was in the requested state; nothing was written.
    Unchanged(ChannelPointer),
}

/// Pause (`paused = true`) or resume a channel: a new pointer state with the next serial, the
/// same release, rollout and expiry, and — unless `restart_waves` — the same `published_at`,
/// so the waves keep their time base across a pause. With `restart_waves` the waves count
/// again from now.
pub async fn set_paused(
    store: &Store,
    signer: &Signer<'_>,
    app: &str,
    channel: &str,
    paused: bool,
    restart_waves: bool,
    single_publisher: bool,
) -> Result<PauseOutcome, Error> {
    let current = pointer::current_for_publish::<ChannelPointer>(
        store,
        &channel_target(app, channel),
        signer,
    )
    .await?;
    let Some(current) = current else {
        return Err(Error::InvalidRequest(format!(
            "channel {app}/{channel} has never been published; nothing to {}",
            if paused { "pause" } else { "resume" }
        )));
    };
    if current.paused == paused && !restart_waves && !signer.force_reset {
        return Ok(PauseOutcome::Unchanged(current));
    }
    require_conditional_put(store, single_publisher).await?;
    let advanced = advance_channel(
        store,
        signer,
        app,
        channel,
        single_publisher,
        |serial, now| {
            let Some(now) = now else {
                return Err(Error::InvalidRequest(format!(
                    "channel {app}/{channel} disappeared while changing it"
                )));
            };
            let mut pointer = now.clone();
            pointer.serial = serial;
            pointer.paused = paused;
            if restart_waves {
                pointer.published_at = ferry_release::now_utc();
            }
            Ok(pointer)
        },
    )
    .await?;
    Ok(PauseOutcome::Changed(advanced))
}

/// Roll a channel back (as `ferry rollback`): a new pointer state with a higher serial naming
/// `to`, or the newest earlier release with another version. Returns the version it moved
/// from and the new state.
pub async fn rollback_channel(
    store: &Store,
    signer: &Signer<'_>,
    app: &str,
    channel: &str,
    to: Option<&str>,
    single_publisher: bool,
    urgent: bool,
) -> Result<(String, Advanced), Error> {
    let target = channel_target(app, channel);
    let Some(current) =
        pointer::current_for_publish::<ChannelPointer>(store, &target, signer).await?
    else {
        return Err(Error::InvalidRequest(format!(
            "channel {app}/{channel} has never been published; nothing to roll back"
        )));
    };
    // Only history entries signed by a trusted key are candidates: an unsigned entry written
    // into the history must never be re-signed into the channel.
    let entries: Vec<crate::channel::HistoryEntry> =
        pointer::history::<ChannelPointer>(store, &target, None)
            .await?
            .into_iter()
            .filter_map(|entry| {
                let what = store.location(&target.history(entry.document.serial));
                match pointer::verify_state::<ChannelPointer>(
                    &entry.bytes,
                    &signer.trusted,
                    &target,
                    &what,
                ) {
                    Ok((pointer, key_id)) => Some(crate::channel::HistoryEntry {
                        serial: pointer.serial,
                        version: pointer.release.version.clone(),
                        published_at: pointer.published_at,
                        key_id: Some(key_id),
                        pointer,
                    }),
                    Err(error) => {
                        tracing::warn!("skipping a history entry that does not verify: {error}");
                        None
                    }
                }
            })
            .collect();
    let release = crate::channel::rollback_target(&entries, &current, to)?;
    let options = PublishOptions {
        app: app.to_owned(),
        channel: channel.to_owned(),
        notes: String::new(),
        rollout: Rollout::default(),
        expires_at: None,
        single_publisher,
        provenance: None,
        urgent,
    };
    let advanced = repoint_channel(store, signer, &options, release).await?;
    Ok((current.release.version, advanced))
}
