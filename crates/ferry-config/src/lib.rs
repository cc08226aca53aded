//! Config bundles: configuration that travels separately from packages. A bundle is a set of
//! files (an `.env` for systemd's `EnvironmentFile`, TOML, anything) for one app and channel,
//! signed like a release, serial-numbered, stored under `apps/<app>/config/<channel>/`, and
//! applied on hosts by the agent: written atomically, the previous kept, rolled back when the
//! service fails its health check.
//!
//! Bundles are **signed, not encrypted**: anyone who can read the store can read them. A
//! secret stays on the host and is named by reference (`KEY=@file:/etc/hello/secret` in an
//! `.env` file), resolved when the bundle is applied.
#![warn(missing_docs)]

mod apply;
mod document;
mod error;
mod store;

pub use apply::{Applied, apply_bundle, bundle_from_files, resolve_env_text};
pub use document::{
    Bundle, BundleFile, MAX_BUNDLE_FILES, SCHEMA, bundle_path, history_path, history_prefix,
    verify_bundle,
};
pub use error::Error;
pub use store::{Pushed, config_target, push, read_current, rollback};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
