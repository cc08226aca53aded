//! What an application links to restart without dropping a request: listeners inherited
//! through the systemd socket-activation protocol, readiness via sd_notify, and a shutdown
//! signal for draining.
//!
//! The same three calls work under `ferry run`, under systemd socket activation, and when
//! the program is started by hand (then the listener is bound fresh):
//!
//! ```no_run
//! fn main() -> Result<(), ferry_handoff::Error> {
//!     // The inherited socket named `http` (or the first one), else bind this address.
//!     let listener = ferry_handoff::listener("http", "127.0.0.1:8080")?;
//!     let shutdown = ferry_handoff::shutdown()?;
//!     // ... start serving on `listener` ...
//!     ferry_handoff::ready()?; // tells the supervisor (or systemd) to route traffic here
//!     shutdown.wait(); // SIGTERM or SIGINT: stop accepting, finish in-flight work, exit
//!     Ok(())
//! }
//! ```
//!
//! `Shutdown` is also a `Future`, usable from any async runtime.
#![warn(missing_docs)]

mod error;
mod listen;
mod notify;
mod shutdown;

pub use error::Error;
pub use listen::{Listener, NamedListener, bind, inherited, listener};
pub use notify::{notify, ready, send_notify};
pub use shutdown::{Shutdown, shutdown};

/// The environment variables of the socket-activation and notify protocols.
pub mod env {
    /// The PID the inherited sockets are meant for; anyone else ignores them.
    pub const LISTEN_PID: &str = "LISTEN_PID";
    /// How many sockets were passed, as fds 3, 4, ….
    pub const LISTEN_FDS: &str = "LISTEN_FDS";
    /// Colon-separated names of the passed sockets, in fd order.
    pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
    /// The datagram socket that receives `READY=1` (a path, or `@name` for the abstract namespace).
    pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
}

/// The first file descriptor of the socket-activation protocol.
pub const LISTEN_FDS_START: i32 = 3;
