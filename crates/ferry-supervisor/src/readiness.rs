//! Telling when a new process is ready: `READY=1` on the notify socket the supervisor gives
//! each child, or an HTTP health probe for apps that do not speak sd_notify. Also the
//! forwarding of readiness to systemd's own notify socket.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::Error;

/// A per-child sd_notify socket in the abstract namespace (no file to clean up). A task reads
/// every datagram, so a chatty child (`WATCHDOG=1`, `STATUS=…`) never blocks on a full queue.
#[derive(Debug)]
pub struct NotifySocket {
    /// The `NOTIFY_SOCKET` value for the child (`@name`).
    pub address: String,
    ready: watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl NotifySocket {
    /// Bind a fresh socket for generation `generation`.
    pub fn bind(generation: u64) -> Result<NotifySocket, Error> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        let name = format!("ferry-run/{}/{generation}/{nonce:08x}", std::process::id());
        let system_error =
            |source| Error::system(format!("cannot bind notify socket @{name}"), source);
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(system_error)?;
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&address).map_err(system_error)?;
        socket.set_nonblocking(true).map_err(system_error)?;
        let socket = tokio::net::UnixDatagram::from_std(socket).map_err(system_error)?;
        let (sender, ready) = watch::channel(false);
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer).await {
                let text = String::from_utf8_lossy(&buffer[..length]);
                for line in text.lines() {
                    if line == "READY=1" {
                        let _ = sender.send(true);
                    } else if let Some(status) = line.strip_prefix("STATUS=") {
                        tracing::info!(generation, status, "status from the app");
                    }
                }
            }
        });
        Ok(NotifySocket {
            address: format!("@{name}"),
            ready,
            reader,
        })
    }

    /// Resolves once `READY=1` arrived.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|ready| *ready).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A parsed `http://host:port/path` health URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthUrl {
    host: String,
    port: u16,
    path: String,
}

impl std::str::FromStr for HealthUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<HealthUrl, Error> {
        let invalid = |reason| Error::InvalidHealthUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port is not a number"))?,
            None => 80,
        };
        Ok(HealthUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl HealthUrl {
    /// One probe: `Ok(status)` with the HTTP status code, or the connection error.
    pub async fn probe(&self, timeout: Duration) -> std::io::Result<u16> {
        let attempt = async {
            let mut stream =
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let host = if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            };
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: ferry-run\r\nConnection: close\r\n\r\n",
                self.path, self.port
            );
            stream.write_all(request.as_bytes()).await?;
            let mut head = Vec::with_capacity(256);
            let mut buffer = [0u8; 256];
            while !head.contains(&b'\n') && head.len() < 8192 {
                let length = stream.read(&mut buffer).await?;
                if length == 0 {
                    break;
                }
                head.extend_from_slice(&buffer[..length]);
            }
            let line = String::from_utf8_lossy(&head);
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse::<u16>().ok())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
                })?;
            Ok(status)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "health probe timed out",
            )),
        }
    }
}

/// Send `state` to an sd_notify socket (systemd's, for `Type=notify` units).
pub fn notify_systemd(socket_address: &OsStr, state: &str) -> std::io::Result<()> {
    ferry_handoff::send_notify(socket_address, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_health_urls() {
        let url: HealthUrl = "http://127.0.0.1:8080/health".parse().unwrap();
        assert_eq!(
            url,
            HealthUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            }
        );
        let url: HealthUrl = "http://[::1]:81".parse().unwrap();
        assert_eq!(
            url,
            HealthUrl {
                host: "::1".into(),
                port: 81,
                path: "/".into()
            }
        );
        for bad in ["https://x/", "http://:80/", "http://host:port/"] {
            let error = bad.parse::<HealthUrl>().unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[tokio::test]
    async fn notify_socket_sees_ready_from_another_socket() {
        let socket = NotifySocket::bind(7).unwrap();
        notify_systemd(OsStr::new(&socket.address), "STATUS=starting\nREADY=1").unwrap();
        tokio::time::timeout(Duration::from_secs(10), socket.ready())
            .await
            .expect("READY=1 seen");
    }
}
