//! sd_notify: tell the supervisor (`ferry run`, or systemd with `Type=notify`) about state
//! changes, above all `READY=1`.

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
    let socket_address = socket_address.to_string_lossy().into_owned();
    let notify_error = |source| Error::Notify {
        socket: socket_address.clone(),
        source,
    };
    let socket = UnixDatagram::unbound().map_err(notify_error)?;
    if let Some(name) = socket_address.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(notify_error)?;
        socket
            .send_to_addr(state.as_bytes(), &address)
            .map_err(notify_error)?;
    } else {
        socket
            .send_to(state.as_bytes(), &socket_address)
            .map_err(notify_error)?;
    }
    Ok(true)
}
