//! The verified poll, written once for the three channels an agent follows (its release
//! channel, its config bundles, ferry's own channel): a conditional GET of one pointer object,
//! then the caller's verification of the bytes. A store that fails is "try again later"
//! ([`Error::Store`]); an object that is there but cannot be accepted (too large, forged,
//! replayed) is a refusal with the ETag to remember, so it is not fetched again until it
//! changes.

use bytes::Bytes;
use ferry_release::{
    ChannelPointer, MAX_DOCUMENT_BYTES, PointerCheck, TrustedKeys, VerifiedPointer,
};
use ferry_store::{Fetched, Store};

use crate::Error;

/// What one poll found.
#[derive(Debug)]
pub enum Polled<T> {
    /// The object still has the ETag the caller knew.
    NotModified,
    /// There is no such object.
    Missing,
    /// A new object that verified.
    Verified {
        /// What verification made of it.
        document: T,
        /// Its ETag.
        etag: Option<String>,
        /// Its bytes (the signed envelope).
        bytes: Bytes,
    },
    /// A correctly signed pointer older than one already accepted: a cache, CDN edge or
    /// replica behind the store (or a replay). Nothing to do; it is not an error of the host.
    Stale {
        /// Its serial.
        serial: u64,
        /// The highest serial accepted before.
        highest_seen: u64,
        /// Its ETag, so it is not fetched again until it changes.
        etag: Option<String>,
    },
    /// A new object that was refused.
    Refused {
        /// Why.
        reason: String,
        /// Its ETag, when it was read at all.
        etag: Option<String>,
    },
}

/// Fetch `path` unless it still has `known_etag`, and verify it with `verify`.
pub async fn poll<T>(
    store: &Store,
    path: &str,
    known_etag: Option<&str>,
    what: &str,
    verify: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Polled<T>, Error> {
    let fetched = match store
        .get_if_changed(path, known_etag, MAX_DOCUMENT_BYTES as u64)
        .await
    {
        Ok(fetched) => fetched,
        Err(error) => {
            return match store_error(error, what) {
                Error::Refused { reason, .. } => Ok(Polled::Refused { reason, etag: None }),
                other => Err(other),
            };
        }
    };
    Ok(match fetched {
        Fetched::NotModified => Polled::NotModified,
        Fetched::Missing => Polled::Missing,
        Fetched::Changed(object) => match verify(&object.bytes) {
            Ok(document) => Polled::Verified {
                document,
                etag: object.etag,
                bytes: object.bytes,
            },
            Err(reason) => Polled::Refused {
                reason,
                etag: object.etag,
            },
        },
    })
}

/// Poll the channel pointer of `app`/`channel` and verify it completely (trusted signature,
/// names, a serial not below `highest_serial`, expiry), for the release channel and ferry's
/// own channel alike.
pub async fn poll_pointer(
    store: &Store,
    app: &str,
    channel: &str,
    known_etag: Option<&str>,
    highest_serial: u64,
    trusted: &TrustedKeys,
) -> Result<Polled<VerifiedPointer>, Error> {
    let check = PointerCheck {
        app,
        channel,
        highest_seen: (highest_serial > 0).then_some(highest_serial),
        now: ferry_release::now_utc(),
    };
    let path = ChannelPointer::path(app, channel);
    Ok(match poll_raw(store, &path, known_etag).await? {
        Ok((bytes, etag)) => pointer_verdict(
            ferry_release::verify_pointer(&bytes, trusted, &check),
            etag,
            bytes,
        ),
        Err(answer) => answer,
    })
}

/// Fetch a channel pointer for the caller to verify: its bytes and ETag when it changed, or
/// the answer that already ends the poll (not modified, missing, unreadable).
pub async fn poll_raw(
    store: &Store,
    path: &str,
    known_etag: Option<&str>,
) -> Result<Result<(Bytes, Option<String>), Polled<VerifiedPointer>>, Error> {
    Ok(
        match poll(store, path, known_etag, "channel pointer", |_| Ok(())).await? {
            Polled::Verified { bytes, etag, .. } => Ok((bytes, etag)),
            Polled::NotModified => Err(Polled::NotModified),
            Polled::Missing => Err(Polled::Missing),
            Polled::Stale {
                serial,
                highest_seen,
                etag,
            } => Err(Polled::Stale {
                serial,
                highest_seen,
                etag,
            }),
            Polled::Refused { reason, etag } => Err(Polled::Refused { reason, etag }),
        },
    )
}

/// What a pointer's verification means for the poll: accepted, stale (signed but older than
/// the serial floor: never installed, never an error), or refused.
pub fn pointer_verdict(
    verified: Result<VerifiedPointer, ferry_release::Error>,
    etag: Option<String>,
    bytes: Bytes,
) -> Polled<VerifiedPointer> {
    match verified {
        Ok(document) => Polled::Verified {
            document,
            etag,
            bytes,
        },
        Err(ferry_release::Error::SerialRegressed {
            serial,
            highest_seen,
            ..
        }) => Polled::Stale {
            serial,
            highest_seen,
            etag,
        },
        Err(error) => Polled::Refused {
            reason: error.to_string(),
            etag,
        },
    }
}

/// A store error as the agent sees it, classified by the store itself: worth a retry
/// ([`Error::Store`]), or an answer that refuses what was read ([`Error::Refused`]).
pub fn store_error(error: ferry_store::Error, what: &str) -> Error {
    if error.is_transient() {
        Error::Store {
            message: format!("{what}: {}", ErrorChain(&error)),
        }
    } else {
        Error::Refused {
            what: what.to_string(),
            reason: error.to_string(),
        }
    }
}

/// Formats an error with its causes, `a: b: c`.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(formatter, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
