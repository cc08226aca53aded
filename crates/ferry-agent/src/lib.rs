//! The agent's update state machine: poll the channel pointer, verify, download, install,
//! restart, health-check, then commit or roll back, journaled so a crash resumes cleanly.
//!
//! The modules, in the order a cycle uses them:
//! - [`config`]: the agent file (`AgentFile`, also its one writer) resolved into `Settings`;
//! - [`poll`]: the verified poll, shared by the release channel, config bundles and
//!   self-update, with store errors classified as "try again later" or "refused";
//! - [`agent`]: the state machine (`agent/mod.rs`), its run loop, rollback and the followers
//!   (config bundles, self-update) run after the release step;
//! - [`delta`] (a release rebuilt from a patch, else) [`download`], [`install`], [`restart`],
//!   [`health`]: one step each, each owning its settings type (`Install`, `Restart`, `Health`);
//! - [`journal`]: the crash-safe state files (one JSON reader/writer for all three),
//!   [`floor`]: the signed copies of the serial floor kept outside the journal;
//! - [`window`], [`update_lock`]: when an install may happen (update windows, the
//!   application's lock, the operator's hold);
//! - [`report`]: the host report; [`metrics`], [`backoff`], [`fault`], [`fsutil`].
//!
//! No module imports another that imports it back.
#![warn(missing_docs)]

pub mod agent;
mod agent_file;
pub mod backoff;
pub mod config;
pub mod config_bundle;
pub mod delta;
pub mod download;
mod error;
pub mod fault;
pub mod floor;
pub mod fsutil;
pub mod health;
pub mod install;
pub mod journal;
pub mod keyring;
pub mod metrics;
pub mod poll;
pub mod report;
pub mod restart;
pub mod self_update;
mod space;
pub mod update_lock;
pub mod window;

pub use agent::{Agent, AppRun, Outcome, RunOptions, StatusReport, run, run_apps};
pub use config::{AgentFile, Apply, Overrides, Settings};
pub use error::Error;
