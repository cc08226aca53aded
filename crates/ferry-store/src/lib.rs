//! The object-store layer: ferry's store layout on `file://` and `s3://`, conditional
//! reads and writes, and the compare-and-swap publish protocol.
//!
//! - `store` / `open`: a [`Store`] on one backend, opened from a URL, with capped, conditional
//!   and ranged reads, create-only and compare-and-swap writes, multipart uploads, and errors
//!   that classify themselves ([`Error::is_transient`]);
//! - [`pointer`]: the signed-pointer protocol, written once — verified read, history, advance
//!   (create-only history entry, then If-Match on the pointer) — for any [`PointerDocument`];
//! - `channel`: that protocol for channel pointers, plus the rollback rule;
//! - `publish`: `ferry publish` as a plan (writes nothing) and its execution, rollback,
//!   promote, pause; `verify`: a channel checked as an agent would.
#![warn(missing_docs)]

mod channel;
mod error;
mod keyring;
pub mod lock;
mod open;
pub mod pointer;
mod progress;
mod publish;
mod store;
mod verify;

pub use channel::{
    Advanced, CurrentPointer, HistoryEntry, advance_channel, channel_target, history, read_pointer,
    read_release_document, rollback_target,
};
pub use error::Error;
pub use ferry_release::layout;
pub use keyring::{
    commit_staged, read_keyring, read_staged, refresh_keyring, write_keyring, write_staged,
};
pub use pointer::{PointerDocument, PointerTarget, Signer};
pub use progress::{NoProgress, Progress};
pub use publish::{
    ArtifactInput, PauseOutcome, PlannedArtifact, PublishOptions, PublishOutcome, PublishPlan,
    plan_publish, repoint_channel, rollback_channel, set_paused, validate_target,
};
pub use store::{
    ConditionalPut, CreateOutcome, Credentials, DEFAULT_POINTER_MAX_AGE, Fetched,
    MULTIPART_THRESHOLD, Object, ObjectInfo, Store, StoreOptions, SwapOutcome,
};
pub use verify::{ChannelReport, verify_channel};

/// Where an agent writes its status report: `apps/<app>/hosts/<host-id>.json` (write it with
/// [`Store::put_overwrite`]).
pub fn host_report_path(app: &str, host_id: &str) -> String {
    layout::host_report(app, host_id)
}
