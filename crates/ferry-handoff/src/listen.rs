//! Listeners: taken over from the socket-activation protocol (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, fds 3..) or bound fresh when the program runs on its own.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, LISTEN_FDS_START, env};

/// A listening socket: TCP (IPv4 or IPv6) or a Unix stream socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// Set or clear non-blocking mode (async runtimes need it set).
    pub fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.set_nonblocking(nonblocking),
            Listener::Unix(listener) => listener.set_nonblocking(nonblocking),
        }
    }

    /// A printable form of the local address.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map(|address| address.to_string())
                .unwrap_or_else(|_| "tcp".to_owned()),
            Listener::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|address| address.as_pathname().map(|path| path.display().to_string()))
                .unwrap_or_else(|| "unix".to_owned()),
        }
    }
}

/// An inherited listener with the name the supervisor gave it (`LISTEN_FDNAMES`).
#[derive(Debug)]
pub struct NamedListener {
    /// The name (`unknown` when the supervisor gave none, as systemd does).
    pub name: String,
    /// The socket.
    pub listener: Listener,
}

/// Whether the inherited descriptors were already wrapped; wrapping them twice would make
/// two owners of one fd.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Take over the listeners passed by `ferry run` or systemd.
///
/// Returns an empty list when none were passed or when they were meant for another process
/// (`LISTEN_PID` is not this process, e.g. a child of the app inherited the variables). The
/// descriptors are marked close-on-exec so they do not leak further. Can be called once per
/// process; a second call returns [`Error::AlreadyTaken`].
pub fn inherited() -> Result<Vec<NamedListener>, Error> {
    let Some(count) = std::env::var_os(env::LISTEN_FDS) else {
        return Ok(Vec::new());
    };
    let count = count.to_string_lossy().into_owned();
    let Some(pid) = std::env::var_os(env::LISTEN_PID) else {
        return Ok(Vec::new());
    };
    let pid = pid.to_string_lossy().into_owned();
    let pid: u32 = pid.trim().parse().map_err(|_| Error::InvalidEnvironment {
        variable: env::LISTEN_PID,
        value: pid.clone(),
        reason: "not a process id",
    })?;
    if pid != std::process::id() {
        return Ok(Vec::new());
    }
    let count: i32 = count
        .trim()
        .parse()
        .map_err(|_| Error::InvalidEnvironment {
            variable: env::LISTEN_FDS,
            value: count.clone(),
            reason: "not a number",
        })?;
    if !(0..=4096).contains(&count) {
        return Err(Error::InvalidEnvironment {
            variable: env::LISTEN_FDS,
            value: count.to_string(),
            reason: "out of range 0..=4096",
        });
    }
    let names: Vec<String> = match std::env::var(env::LISTEN_FDNAMES) {
        Ok(names) if !names.is_empty() => names.split(':').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::AlreadyTaken);
    }
    let mut listeners = Vec::with_capacity(count as usize);
    for index in 0..count {
        let fd = LISTEN_FDS_START + index;
        let listener = adopt(fd)?;
        let name = names
            .get(index as usize)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        listeners.push(NamedListener { name, listener });
    }
    Ok(listeners)
}

/// The inherited listener called `name` (or, when none has that name, the first inherited
/// one); when nothing was inherited, a fresh listener bound to `fallback_address`
/// (`127.0.0.1:8080`, `[::1]:8080`, or an absolute Unix socket path).
pub fn listener(name: &str, fallback_address: &str) -> Result<Listener, Error> {
    let mut inherited = inherited()?;
    if inherited.is_empty() {
        return bind(fallback_address);
    }
    let position = inherited
        .iter()
        .position(|named| named.name == name)
        .unwrap_or(0);
    Ok(inherited.swap_remove(position).listener)
}

/// Bind a fresh listener: `IP:PORT`, `[IPv6]:PORT`, or an absolute Unix socket path
/// (optionally written `unix:/path`).
pub fn bind(address: &str) -> Result<Listener, Error> {
    let bind_error = |source| Error::Bind {
        address: address.to_owned(),
        source,
    };
    if let Some(path) = address
        .strip_prefix("unix:")
        .or(address.starts_with('/').then_some(address))
    {
        return UnixListener::bind(path)
            .map(Listener::Unix)
            .map_err(bind_error);
    }
    let socket_address: SocketAddr = address.parse().map_err(|_| Error::InvalidAddress {
        address: address.to_owned(),
    })?;
    TcpListener::bind(socket_address)
        .map(Listener::Tcp)
        .map_err(bind_error)
}

/// Check that `fd` is a listening stream socket of a family we can wrap, mark it
/// close-on-exec, and take ownership of it.
fn adopt(fd: RawFd) -> Result<Listener, Error> {
    let not_a_listener = |reason: String| Error::NotAListener { fd, reason };
    let mut accepting: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `accepting`.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(not_a_listener(std::io::Error::last_os_error().to_string()));
    }
    if accepting == 0 {
        return Err(not_a_listener("the socket is not listening".to_owned()));
    }
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `length` bytes into `storage`.
    let result = unsafe { libc::getsockname(fd, (&raw mut storage).cast(), &mut length) };
    if result != 0 {
        return Err(not_a_listener(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: fcntl on a descriptor we were given; F_SETFD has no memory effects.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    match libc::c_int::from(storage.ss_family) {
        // SAFETY: the protocol hands these descriptors to this process (LISTEN_PID matched)
        // and TAKEN guarantees they are wrapped only once.
        libc::AF_INET | libc::AF_INET6 => {
            Ok(Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) }))
        }
        libc::AF_UNIX => Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) })),
        family => Err(not_a_listener(format!(
            "unsupported address family {family}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rejects_garbage_with_a_clear_error() {
        let error = bind("not an address").unwrap_err();
        assert!(matches!(error, Error::InvalidAddress { .. }), "{error}");
        assert!(error.to_string().contains("not an address"));
    }

    #[test]
    fn bind_tcp_and_unix() {
        let tcp = bind("127.0.0.1:0").unwrap();
        assert!(matches!(tcp, Listener::Tcp(_)));
        let dir = std::env::temp_dir().join(format!("ferry-handoff-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let unix = bind(path.to_str().unwrap()).unwrap();
        assert!(matches!(unix, Listener::Unix(_)));
        assert_eq!(unix.describe(), path.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn adopt_refuses_a_socket_that_is_not_listening() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let error = adopt(socket.as_raw_fd()).unwrap_err();
        assert!(matches!(error, Error::NotAListener { .. }), "{error}");
    }
}
