//! The one error type of ferry-config: every variant names the bundle, file or store object
//! involved.

use std::path::PathBuf;

/// What can go wrong building, pushing, verifying or applying a config bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file given to a bundle is not acceptable (name, size, encoding, duplicate).
    #[error("config file {name:?}: {message}")]
    InvalidFile {
        /// The file's name (or path as given).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret reference (`@file:PATH`) could not be resolved on this host.
    #[error("{file}: {key}=@file:{path} cannot be resolved: {message}")]
    Secret {
        /// The bundle file holding the reference.
        file: String,
        /// The variable.
        key: String,
        /// The referenced file.
        path: PathBuf,
        /// Why (missing, unreadable, a value an env file cannot hold).
        message: String,
    },
    /// A bundle document is malformed or does not match what was expected.
    #[error("config bundle {what}: {message}")]
    Malformed {
        /// Which bundle.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A serial lower than one accepted before (a replayed or stale bundle).
    #[error(
        "config bundle {app}/{channel} serial {serial} is older than serial {highest_seen} accepted before (replayed or stale store?)"
    )]
    SerialRegressed {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// The serial offered.
        serial: u64,
        /// The highest accepted before.
        highest_seen: u64,
    },
    /// The push protocol could not finish (too many concurrent pushes).
    #[error("cannot push config for {app}/{channel}: {message}")]
    Push {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// What happened.
        message: String,
    },
    /// Nothing to roll back to, or the named serial does not exist.
    #[error("cannot roll back config {app}/{channel}: {message}")]
    Rollback {
        /// The app.
        app: String,
        /// The channel.
        channel: String,
        /// Why.
        message: String,
    },
    /// Signing or verifying failed.
    #[error(transparent)]
    Release(#[from] ferry_release::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_store::Error),
}
