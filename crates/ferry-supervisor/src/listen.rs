//! Binding the listening sockets, once, in the supervisor: TCP over IPv4 or IPv6 and Unix
//! stream sockets, with a large backlog and without SO_REUSEPORT — every process generation
//! accepts from the one shared queue, so a connection that arrives while processes are
//! swapped waits in that queue instead of being refused.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use crate::Error;

/// The accept backlog asked for; the kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
}

/// One `--listen NAME=ADDR`: the name is what the app sees in `LISTEN_FDNAMES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The socket's name (`http` when not given).
    pub name: String,
    /// The address.
    pub address: ListenAddress,
}

impl std::str::FromStr for ListenSpec {
    type Err = Error;

    /// `NAME=ADDR` or just `ADDR` (named `http`); ADDR is `IP:PORT`, `[IPv6]:PORT`, or an
    /// absolute Unix socket path (optionally written `unix:/path`).
    fn from_str(text: &str) -> Result<ListenSpec, Error> {
        let invalid = |reason: &str| Error::InvalidListenSpec {
            spec: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, address) = match text.split_once('=') {
            Some((name, address)) if !name.contains('/') => (name, address),
            _ => ("http", text),
        };
        if name.is_empty()
            || name.len() > 255
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "the name must be 1-255 letters, digits, '-', '_' or '.'",
            ));
        }
        let address = if let Some(path) = address.strip_prefix("unix:") {
            ListenAddress::Unix(PathBuf::from(path))
        } else if address.starts_with('/') {
            ListenAddress::Unix(PathBuf::from(address))
        } else {
            ListenAddress::Tcp(address.parse().map_err(|_| {
                invalid("expected NAME=IP:PORT, NAME=[IPv6]:PORT or NAME=/absolute/socket/path")
            })?)
        };
        Ok(ListenSpec {
            name: name.to_owned(),
            address,
        })
    }
}

/// A bound, listening socket the supervisor holds for its whole life.
#[derive(Debug)]
pub struct BoundListener {
    /// The name passed in `LISTEN_FDNAMES`.
    pub name: String,
    /// A printable address (with the real port when port 0 was asked for).
    pub description: String,
    /// The socket.
    pub socket: OwnedFd,
    unix_path: Option<PathBuf>,
}

impl BoundListener {
    /// Bind `spec`. A stale Unix socket file (nobody accepting on it) is replaced; a live one
    /// is an error.
    pub fn bind(spec: &ListenSpec) -> Result<BoundListener, Error> {
        match &spec.address {
            ListenAddress::Tcp(address) => {
                let listener = TcpListener::bind(address).map_err(|source| Error::Bind {
                    address: address.to_string(),
                    source,
                })?;
                let description = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| address.to_string());
                let socket = OwnedFd::from(listener);
                set_backlog(&socket, &description)?;
                Ok(BoundListener {
                    name: spec.name.clone(),
                    description,
                    socket,
                    unix_path: None,
                })
            }
            ListenAddress::Unix(path) => {
                let description = path.display().to_string();
                let bind_error = |source| Error::Bind {
                    address: description.clone(),
                    source,
                };
                if let Ok(metadata) = std::fs::symlink_metadata(path) {
                    if !metadata.file_type().is_socket() {
                        return Err(bind_error(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "a file that is not a socket is in the way",
                        )));
                    }
                    if UnixStream::connect(path).is_ok() {
                        return Err(bind_error(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            "another process is accepting on this socket",
                        )));
                    }
                    std::fs::remove_file(path).map_err(bind_error)?;
                }
                let listener = UnixListener::bind(path).map_err(bind_error)?;
                let socket = OwnedFd::from(listener);
                set_backlog(&socket, &description)?;
                Ok(BoundListener {
                    name: spec.name.clone(),
                    description,
                    socket,
                    unix_path: Some(path.clone()),
                })
            }
        }
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Linux lets `listen` be called again on a listening socket to change its backlog; std binds
/// with 128, too small for a burst that arrives while no process is accepting.
fn set_backlog(socket: &OwnedFd, description: &str) -> Result<(), Error> {
    // SAFETY: listen(2) on a socket we own.
    if unsafe { libc::listen(socket.as_raw_fd(), BACKLOG) } != 0 {
        return Err(Error::Bind {
            address: description.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        let spec: ListenSpec = "http=127.0.0.1:8080".parse().unwrap();
        assert_eq!(spec.name, "http");
        assert_eq!(
            spec.address,
            ListenAddress::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        let spec: ListenSpec = "admin=[::1]:9000".parse().unwrap();
        assert_eq!(
            spec.address,
            ListenAddress::Tcp("[::1]:9000".parse().unwrap())
        );
        let spec: ListenSpec = "/run/app.sock".parse().unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.address),
            ("http", ListenAddress::Unix("/run/app.sock".into()))
        );
        let spec: ListenSpec = "api=unix:/run/api.sock".parse().unwrap();
        assert_eq!(spec.address, ListenAddress::Unix("/run/api.sock".into()));
    }

    #[test]
    fn rejects_bad_specs_naming_them() {
        for bad in [
            "http=localhost",
            "a:b=127.0.0.1:1",
            "=127.0.0.1:1",
            "http=8080",
        ] {
            let error = bad.parse::<ListenSpec>().unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn binds_tcp_with_a_real_port_and_replaces_a_stale_unix_socket() {
        let bound = BoundListener::bind(&"http=127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(!bound.description.ends_with(":0"), "{}", bound.description);
        let dir =
            std::env::temp_dir().join(format!("ferry-supervisor-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stale.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the file behind, nobody accepting
        let spec = ListenSpec {
            name: "api".into(),
            address: ListenAddress::Unix(path.clone()),
        };
        let bound = BoundListener::bind(&spec).unwrap();
        let second = BoundListener::bind(&spec).unwrap_err();
        assert!(second.to_string().contains("another process"), "{second}");
        drop(bound);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
