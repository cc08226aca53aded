//! The one error type of ferry-supervisor; every variant names what it was about.

use std::io;
use std::path::PathBuf;

/// What can go wrong while binding, starting, reloading, or talking to a supervisor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `--listen NAME=ADDR` value could not be understood.
    #[error("invalid listener {spec:?}: {reason}")]
    InvalidListenSpec {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding a listening socket failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command to supervise cannot be started.
    #[error("cannot start {program}: {reason}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        reason: String,
    },
    /// The `--health` URL is not a plain `http://host:port/path` URL.
    #[error("invalid health URL {url:?}: {reason}")]
    InvalidHealthUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A new process exited before it became ready.
    #[error("new process exited before ready ({status})")]
    ExitedBeforeReady {
        /// How it exited (`status 1`, `signal 9`).
        status: String,
    },
    /// A new process did not become ready within the deadline.
    #[error("new process {pid} was not ready within {seconds:.1} s ({how})")]
    NotReadyInTime {
        /// Its PID.
        pid: u32,
        /// The deadline.
        seconds: f64,
        /// What readiness was waited for.
        how: String,
    },
    /// The supervisor is shutting down and took no new work.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A system call failed.
    #[error("{what}: {source}")]
    System {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The control socket could not be created or reached.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The other side of the control socket answered something unexpected.
    #[error("control socket {path}: unexpected answer: {message}")]
    ControlProtocol {
        /// The socket's path.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The supervisor answered a control request with a failure (for a reload: the old
    /// process keeps serving).
    #[error("supervisor at {path} reported failure: {message}")]
    Refused {
        /// The socket's path.
        path: PathBuf,
        /// The supervisor's error message.
        message: String,
    },
}

impl Error {
    pub(crate) fn system(what: impl Into<String>, source: io::Error) -> Error {
        Error::System {
            what: what.into(),
            source,
        }
    }
}
