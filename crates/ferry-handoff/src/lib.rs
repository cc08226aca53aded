//! What an application links to restart without dropping a request: listeners inherited
//! through the systemd socket-activation protocol, readiness via sd_notify, and a shutdown
//! signal for draining.
#![warn(missing_docs)]
