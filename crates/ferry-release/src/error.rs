//! The one error type of ferry-release: every way a key, a document or a signature can be
//! wrong, each naming what it was about.

use std::path::PathBuf;

/// Everything that can go wrong while loading keys, signing or verifying documents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rollout plan (`--waves`) is malformed or makes no sense.
    #[error("invalid rollout waves {spec:?}: {message}")]
    InvalidRollout {
        /// The plan as written.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key file could not be read.
    #[error("cannot read key {path}")]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error("cannot write key {path}")]
    WriteKey {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists already and would be overwritten.
    #[error("refusing to overwrite existing key file {path} (move it away or pick another prefix)")]
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file is not a minisign key.
    #[error("{path} is not a valid minisign {kind} key: {message}")]
    InvalidKey {
        /// The key file (or a description of where the key came from).
        path: PathBuf,
        /// "secret" or "public".
        kind: &'static str,
        /// What minisign said.
        message: String,
    },
    /// The secret key is password-protected and no password was given.
    #[error(
        "secret key {path} is encrypted with a password; set FERRY_KEY_PASSWORD, or make an unencrypted key with `ferry keygen` or `minisign -G -W`"
    )]
    EncryptedKey {
        /// The key file.
        path: PathBuf,
    },
    /// The password did not decrypt the secret key.
    #[error("cannot decrypt secret key {path}: {message}")]
    DecryptKey {
        /// The key file.
        path: PathBuf,
        /// What minisign said.
        message: String,
    },
    /// Signing failed.
    #[error("cannot sign {what}: {message}")]
    Sign {
        /// What was being signed.
        what: String,
        /// What minisign said.
        message: String,
    },
    /// No trusted keys were given.
    #[error("no trusted public keys given: nothing can be verified")]
    NoTrustedKeys,
    /// A keyring older than (or as old as) the one already accepted.
    #[error(
        "the keyring of {app} in the store has serial {serial}, but serial {known} was already accepted: an older keyring replayed (refused; the accepted one stays in force)"
    )]
    KeyringReplayed {
        /// The app.
        app: String,
        /// The serial offered.
        serial: u64,
        /// The serial accepted before.
        known: u64,
    },
    /// Fewer trusted keys signed than the keyring asks for.
    #[error(
        "{what} is signed by {have} of the {need} keys the keyring asks for (valid signers: {signers}); collect more signatures with `ferry sign`"
    )]
    BelowThreshold {
        /// Which document.
        what: String,
        /// Valid signatures from allowed keys.
        have: usize,
        /// Signatures required.
        need: usize,
        /// Who signed validly.
        signers: String,
    },
    /// A document is larger than [`crate::MAX_DOCUMENT_BYTES`].
    #[error("{what} is {size} bytes, more than the {limit}-byte limit for a ferry document")]
    DocumentTooLarge {
        /// Which document.
        what: String,
        /// Its size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// A document is not a valid envelope or payload.
    #[error("{what} is malformed: {message}")]
    Malformed {
        /// Which document.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A document or artifact is signed by a key that is not trusted.
    #[error("{what} is signed by key {key_id}, which is not among the trusted keys ({trusted})")]
    UntrustedKey {
        /// Which document.
        what: String,
        /// The key that signed it.
        key_id: String,
        /// The trusted key ids.
        trusted: String,
    },
    /// The signature does not match the content.
    #[error("bad signature on {what}: {message} (the content was changed after signing)")]
    BadSignature {
        /// Which document.
        what: String,
        /// What minisign said.
        message: String,
    },
    /// A document is for another app/channel/version than the one asked for.
    #[error("{what} names {field} {found:?}, expected {expected:?}")]
    Mismatch {
        /// Which document.
        what: String,
        /// Which field.
        field: &'static str,
        /// Its value in the document.
        found: String,
        /// The value the caller expected.
        expected: String,
    },
    /// A pointer's serial is lower than one already accepted: a replay or a stale replica.
    #[error(
        "channel {app}/{channel} pointer has serial {serial}, lower than serial {highest_seen} already seen (replayed or stale pointer)"
    )]
    SerialRegressed {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// The serial in the pointer.
        serial: u64,
        /// The highest serial seen before.
        highest_seen: u64,
    },
    /// The pointer's `expires_at` is in the past.
    #[error(
        "channel {app}/{channel} pointer (serial {serial}) expired at {expires_at}; publish again to refresh it"
    )]
    Expired {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// The serial.
        serial: u64,
        /// When it expired (RFC 3339).
        expires_at: String,
    },
    /// A serial outside what ferry ever writes (0, or above [`crate::MAX_SERIAL`]): a forged or
    /// broken document that would freeze the channel if it were accepted.
    #[error(
        "{what} has serial {serial}, outside the range ferry writes (1 to {max}); it was not written by a ferry publish"
    )]
    ImpossibleSerial {
        /// Which document.
        what: String,
        /// The serial in it.
        serial: u64,
        /// The highest serial allowed.
        max: u64,
    },
    /// A name (app, channel, host id, file) breaks the name rule.
    #[error("{kind} {name:?} cannot be used: {message}")]
    InvalidName {
        /// What the name is for.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}
