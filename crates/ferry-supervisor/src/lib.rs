//! `ferry run`: bind and hold the listening sockets with one stable PID, start the app with
//! them, and replace it on reload without dropping a connection.
//!
//! The pieces, each in its own module: [`listen`] binds the sockets once, [`spawn`] starts a
//! child with them as fds 3.. (the systemd socket-activation protocol), [`readiness`] tells
//! when a child is ready (`READY=1` on its own notify socket, an HTTP probe, or a delay),
//! [`supervisor`] runs the reload / drain / restart state machine, and [`control`] is the
//! Unix-socket protocol the agent uses to ask for a reload (server and blocking client).
//!
//! The entry point, [`Supervisor::run`], takes already-made pieces — a [`Config`], bound
//! listeners and a shutdown future — so tests drive the same code as `ferry run`.
#![warn(missing_docs)]

mod child;
pub mod config;
pub mod control;
mod error;
pub mod listen;
pub mod readiness;
pub mod spawn;
pub mod supervisor;

pub use config::Config;
pub use error::Error;
pub use listen::{BoundListener, ListenAddress, ListenSpec};
pub use supervisor::{Handle, Status, Supervisor};
