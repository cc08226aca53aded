//! The one error type of ferry-handoff; every variant names what it was about.

use std::io;

/// Everything that can go wrong while taking over listeners, notifying, or installing the
/// shutdown signal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket-activation variable holds something that is not what the protocol allows.
    #[error("environment variable {variable} has an invalid value {value:?}: {reason}")]
    InvalidEnvironment {
        /// The variable's name.
        variable: &'static str,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An inherited file descriptor is not a listening stream socket.
    #[error(
        "inherited file descriptor {fd} is not a listening TCP or Unix stream socket: {reason}"
    )]
    NotAListener {
        /// The descriptor.
        fd: i32,
        /// Why it was rejected.
        reason: String,
    },
    /// The inherited listeners were already taken by an earlier call in this process.
    #[error("the inherited listeners were already taken by an earlier call")]
    AlreadyTaken,
    /// Binding a fresh listener failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The address given to bind is not an IP:port or a Unix socket path.
    #[error(
        "invalid listen address {address:?}: expected IP:PORT, [IPv6]:PORT or an absolute Unix socket path"
    )]
    InvalidAddress {
        /// The address as given.
        address: String,
    },
    /// Sending a notification to the supervisor failed.
    #[error("cannot notify {socket}: {source}")]
    Notify {
        /// The notify socket address.
        socket: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Installing the shutdown signal handler failed.
    #[error("cannot install the shutdown signal handler: {source}")]
    Signal {
        /// The cause.
        #[source]
        source: io::Error,
    },
}
