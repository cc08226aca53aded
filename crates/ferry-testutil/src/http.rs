//! A small blocking HTTP/1.1 client for tests: keep-alive connections, `Content-Length`
//! bodies, and errors sorted into the classes a load test reports (refused, reset, timeout,
//! malformed) instead of one opaque `io::Error`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What went wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The connection was refused (nobody listening).
    Refused,
    /// The connection was reset or closed before a full response arrived.
    Reset,
    /// No full response within the timeout.
    Timeout,
    /// Something arrived that is not a well-formed HTTP/1.1 response.
    Malformed,
}

impl Failure {
    fn from_io(error: &io::Error) -> Failure {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::InvalidData => Failure::Malformed,
            _ => Failure::Reset,
        }
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, as text (lossy).
    pub body: String,
    /// Whether the server said `Connection: close` (the connection cannot be reused).
    pub close: bool,
}

/// One client connection; reused for keep-alive until the server closes it.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connect to `address`, with `timeout` for the connect and for each later read/write.
    pub fn open(address: SocketAddr, timeout: Duration) -> Result<Connection, Failure> {
        let stream =
            TcpStream::connect_timeout(&address, timeout).map_err(|e| Failure::from_io(&e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| Failure::from_io(&e))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| Failure::from_io(&e))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Send `GET path` and read the whole response.
    pub fn get(&mut self, path: &str) -> Result<Response, Failure> {
        self.get_inner(path).map_err(|e| Failure::from_io(&e))
    }

    /// Write `GET path` without waiting for the answer ([`Connection::receive`] reads it).
    pub fn send(&mut self, path: &str) -> Result<(), Failure> {
        self.send_inner(path).map_err(|e| Failure::from_io(&e))
    }

    /// Read the response to the request [`Connection::send`] wrote.
    pub fn receive(&mut self) -> Result<Response, Failure> {
        self.receive_inner().map_err(|e| Failure::from_io(&e))
    }

    fn send_inner(&mut self, path: &str) -> io::Result<()> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ferry-test\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())
    }

    fn get_inner(&mut self, path: &str) -> io::Result<Response> {
        self.send_inner(path)?;
        self.receive_inner()
    }

    fn receive_inner(&mut self) -> io::Result<Response> {
        let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the status line",
            ));
        }
        let mut parts = line.split_whitespace();
        if !parts
            .next()
            .is_some_and(|version| version.starts_with("HTTP/1."))
        {
            return Err(malformed("not an HTTP/1.x status line"));
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed("no status code"))?;
        let mut length: Option<usize> = None;
        let mut close = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside the headers",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| malformed("a header without ':'"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| malformed("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(malformed(
                    "chunked bodies are not supported by this test client",
                ));
            }
        }
        let length = length.ok_or_else(|| malformed("no content-length"))?;
        if length > 16 * 1024 * 1024 {
            return Err(malformed("body larger than 16 MiB"));
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close,
        })
    }
}

/// One request on a fresh connection.
pub fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Failure> {
    Connection::open(address, timeout)?.get(path)
}
