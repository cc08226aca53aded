//! Fleet status for ferry, on the object store alone: the host reports agents write to
//! `apps/<app>/hosts/<host-id>.json`, read together with the channel pointer and summarised
//! per host, per version and per rollout wave, with stale hosts flagged — and the judge
//! `ferry watch` uses to decide whether a rollout is done, still going, or failing.
//!
//! No printing here: `ferry status`, `ferry watch` and `ferry dashboard` render what
//! [`FleetStatus`] holds (its JSON form is the documented `--json` schema).
#![warn(missing_docs)]

mod report;
mod status;
mod watch;

pub use report::{BadEntry, HostReport};
pub use status::{
    ChannelState, FleetStatus, HostRow, STATUS_SCHEMA, Totals, VersionSummary, WaveProgress,
    collect, parse_status_time, summarize,
};
pub use watch::{Threshold, Verdict, judge};

/// Everything that can go wrong reading a fleet's status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] ferry_store::Error),
    /// A threshold like `5%` or `3` could not be read.
    #[error("invalid failure threshold {text:?}: {message}")]
    InvalidThreshold {
        /// The text given.
        text: String,
        /// What is wrong.
        message: String,
    },
}
