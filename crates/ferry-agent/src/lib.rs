//! The agent's update state machine: poll the channel pointer, verify, download, install,
//! restart, health-check, then commit or roll back, journaled so a crash resumes cleanly.
#![warn(missing_docs)]

pub mod agent;
pub mod backoff;
pub mod config;
pub mod config_bundle;
pub mod download;
mod error;
pub mod fault;
pub mod floor;
pub mod fsutil;
pub mod health;
pub mod install;
pub mod journal;
pub mod metrics;
pub mod poll;
pub mod report;
pub mod restart;
pub mod self_update;
mod space;

pub use agent::{Agent, Outcome, RunOptions, StatusReport, run};
pub use config::{AgentFile, Overrides, Settings};
pub use error::Error;
