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
    /// A key named by `trust` or `trust-root` cannot be used.
    #[error(
        "cannot load the keys named by `{key}`: {message}; check the paths in the agent config (the .pub files made by `ferry keygen`)"
    )]
    TrustedKeys {
        /// `trust` or `trust-root`.
        key: &'static str,
        /// What failed, with the OS reason.
        message: String,
    },
    /// A file-system operation failed. The cause is part of the message and deliberately not
    /// a `source()`: the agent logs one line per error, and a chained cause would print the
    /// same OS error twice.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A file system has too little room for what the signed release says it needs.
    #[error("{}", no_space_text(path, *need, *have))]
    NoSpace {
        /// The directory written to.
        path: PathBuf,
        /// Bytes needed (0 when a write simply failed with ENOSPC).
        need: u64,
        /// Bytes available.
        have: u64,
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

    /// "Try again later": the store, the local disk or a lock failed, not the release. The
    /// agent backs off, polls again (so a newer serial supersedes a stuck update) and never
    /// marks a release bad for one of these.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Store { .. } | Error::Io { .. } | Error::NoSpace { .. }
        )
    }

    /// A local I/O failure; "no space left on device" becomes [`Error::NoSpace`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        cause: std::io::Error,
    ) -> Error {
        let path = path.into();
        if cause.raw_os_error() == Some(libc::ENOSPC) {
            let have = crate::space::available_bytes(&path).unwrap_or(0);
            return Error::NoSpace {
                path,
                need: 0,
                have,
            };
        }
        Error::Io {
            action,
            path,
            cause,
        }
    }
}

fn no_space_text(path: &std::path::Path, need: u64, have: u64) -> String {
    let need = if need == 0 {
        String::new()
    } else {
        format!("need {} MB, ", megabytes(need))
    };
    format!(
        "no space left on {}: {need}have {} MB (free some space there; the agent retries by itself)",
        path.display(),
        megabytes(have)
    )
}

fn megabytes(bytes: u64) -> String {
    let tenths = bytes.div_ceil(100_000);
    format!("{}.{}", tenths / 10, tenths % 10)
}
