//! The agent library's one error type. Every variant names what it was working on (a path,
//! a version, a URL) so the log line alone tells the operator what to look at.

use std::path::PathBuf;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file or an override is wrong.
    #[error("bad agent config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal exists but cannot be understood.
    #[error(
        "the journal {path} is corrupt: {message} (move it away to start fresh; the installed release is left as it is)"
    )]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another agent already works on this app and channel.
    #[error(
        "another agent (PID {holder}) is already running for this app and channel (lock {path}); stop it first, or use `ferry agent status`"
    )]
    AlreadyRunning {
        /// The lock file.
        path: PathBuf,
        /// The PID written in it.
        holder: String,
    },
    /// The store could not be reached or answered an error.
    #[error("store: {message}")]
    Store {
        /// What failed.
        message: String,
    },
    /// A document or artifact was refused (signature, key, serial, expiry, hash, size...).
    #[error("refused {what}: {reason}")]
    Refused {
        /// What was refused (`channel pointer`, `artifact <sha>`).
        what: String,
        /// Why.
        reason: String,
    },
    /// A .deb entry would land outside the install root.
    #[error("refused {package}: entry {entry:?} {reason}")]
    UnsafeEntry {
        /// The package file.
        package: PathBuf,
        /// The offending entry path.
        entry: String,
        /// Why it is unsafe.
        reason: &'static str,
    },
    /// Installing a release failed.
    #[error("install of {version} failed: {message}")]
    Install {
        /// The release version.
        version: String,
        /// What failed.
        message: String,
    },
    /// Restarting the service failed.
    #[error("restart ({method}) failed: {message}")]
    Restart {
        /// The restart method.
        method: &'static str,
        /// What failed.
        message: String,
    },
    /// The health check did not pass before its deadline.
    #[error("health check failed: {message}")]
    Unhealthy {
        /// The last failure seen.
        message: String,
    },
}

impl Error {
    /// Whether this error came from the store being unreachable or failing — the case the
    /// agent backs off from without touching the service.
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store { .. })
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
