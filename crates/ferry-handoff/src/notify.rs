//! sd_notify: tell the supervisor (`ferry run`, or systemd with `Type=notify`) about state
//! changes, above all `READY=1`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use crate::{Error, env};

/// Tell the supervisor this process is ready to take traffic (`READY=1`).
///
/// Returns `Ok(false)` when no supervisor listens (no `NOTIFY_SOCKET`), so calling it is
/// always safe.
pub fn ready() -> Result<bool, Error> {
    notify("READY=1")
}

/// Send one sd_notify state string (for example `READY=1`, `STOPPING=1`, `STATUS=…`).
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is not set.
pub fn notify(state: &str) -> Result<bool, Error> {
    let Some(socket_address) = std::env::var_os(env::NOTIFY_SOCKET) else {
        return Ok(false);
    };
    send_notify(&socket_address, state).map_err(|source| Error::Notify {
        socket: socket_address.to_string_lossy().into_owned(),
        source,
    })?;
    Ok(true)
}

/// Send one sd_notify datagram to `socket_address`: a path, or `@name` for the abstract
/// namespace. The one implementation of the sender, shared with `ferry run`, which forwards
/// `READY=1` to systemd with it.
pub fn send_notify(socket_address: &OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match socket_address.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(state.as_bytes(), std::path::Path::new(socket_address))?;
        }
    }
    Ok(())
}
