//! ferry's data model and trust: release and channel-pointer documents, their signed
//! envelopes (minisign), and the rules for serials and expiry.
//!
//! Everything an agent needs to decide "may I install this?" lives here, free of I/O policy:
//! the caller fetches bytes (from any store) and hands them to [`verify_pointer`] /
//! [`verify_release`] together with its [`TrustedKeys`] and the highest serial it has seen.
//!
//! It is also the schema home every other crate shares: `document` (releases, pointers,
//! store paths), `envelope` (signing and verifying), `keys`, `rollout` (waves), `serial` (the
//! checked serial rule), `delta` (the signed index of patches between releases), `name` (the one name rule), `report` (the host report and its
//! states), and `local` (the one bounded reader for local files).
#![warn(missing_docs)]

mod delta;
mod document;
mod envelope;
mod error;
mod keyring;
mod keys;
pub mod layout;
mod local;
mod name;
mod report;
mod rollout;
mod serial;

pub use delta::{ArtifactDeltas, DeltaIndex, Digest, PATCH_ALGORITHM, PatchRef};
pub use document::{
    ArtifactRef, ChannelPointer, GitProvenance, Provenance, Release, ReleaseRef, Rollout, SCHEMA,
    Wave, format_time, now_utc,
};
pub use envelope::{
    Envelope, MAX_DOCUMENT_BYTES, PointerCheck, VerifiedPointer, VerifiedRelease, sign_artifact,
    sign_document, verify_artifact_signature, verify_envelope, verify_envelope_signers,
    verify_pointer, verify_release,
};
pub use error::Error;
pub use keyring::{Keyring, KeyringKey, verify_keyring};
pub use keys::{GeneratedKeyPair, KeyId, SigningKey, TrustedKeys, generate_key_pair};
pub use local::{read_local_file, read_local_text};
pub use name::{MAX_NAME_CHARS, check_name, validate_name};
pub use report::{
    BadRelease, DownloadRecord, HOST_REPORT_SCHEMA, HOST_SHARD_SCHEMA, HostReport, HostShard,
    HostState, MAX_REPORT_SHARDS, parse_time,
};
pub use rollout::{MAX_DELAY_S, format_delay, host_percentile, rollout_seed};
pub use serial::{MAX_SERIAL, next_serial, serial_is_possible};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The sha256 of `bytes` as lowercase hex, the form used in artifact names and documents.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
