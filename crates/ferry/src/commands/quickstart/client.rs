//! The quickstart's built-in load client: a few threads that keep asking the service for
//! its version, over kept-alive and fresh connections, and classify every reply. Bounded:
//! it stops when told to, and every socket operation has a timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client saw, reply by reply.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// 200 replies, by the version they named.
    pub ok_by_version: BTreeMap<String, u64>,
    /// Replies or failures that were not a 200 with a version, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Kept-alive connections the server closed while idle, so the request was sent again on a
    /// fresh connection before any byte of an answer arrived — what every HTTP client does.
    pub reconnects: u64,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.ok_by_version.values().sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: &Tally) {
        for (version, count) in &other.ok_by_version {
            *self.ok_by_version.entry(version.clone()).or_default() += count;
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.reconnects += other.reconnects;
    }
}

/// A running load client.
pub struct LoadClient {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tally: Arc<Mutex<Tally>>,
}

impl LoadClient {
    /// Start `workers` threads against `address`; even-numbered ones keep their connection
    /// alive, odd-numbered ones open a new connection per request.
    pub fn start(address: SocketAddr, workers: usize) -> LoadClient {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let threads = (0..workers)
            .map(|worker| {
                let stop = Arc::clone(&stop);
                let tally = Arc::clone(&tally);
                std::thread::spawn(move || {
                    let keep_alive = worker % 2 == 0;
                    let mut local = Tally::default();
                    let mut connection: Option<Connection> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let outcome =
                            request_version(address, keep_alive, &mut connection, &mut local);
                        match outcome {
                            Ok(version) => *local.ok_by_version.entry(version).or_default() += 1,
                            Err(kind) => {
                                *local.errors.entry(kind).or_default() += 1;
                                connection = None;
                                // Do not spin on a dead service.
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        if local.ok() % 256 == 0 {
                            tally
                                .lock()
                                .expect("tally lock")
                                .merge(&std::mem::take(&mut local));
                        }
                    }
                    tally.lock().expect("tally lock").merge(&local);
                })
            })
            .collect();
        LoadClient {
            stop,
            threads,
            tally,
        }
    }

    /// The replies counted so far (threads flush every few hundred replies).
    pub fn snapshot(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }

    /// Stop every thread and return the final tally.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.tally.lock().expect("tally lock").clone()
    }
}

struct Connection {
    reader: BufReader<TcpStream>,
}

fn connect(address: SocketAddr) -> Result<Connection, &'static str> {
    let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT).map_err(classify)?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(classify)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(classify)?;
    let _ = stream.set_nodelay(true);
    Ok(Connection {
        reader: BufReader::new(stream),
    })
}

fn classify(error: std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
        ErrorKind::UnexpectedEof => "closed",
        _ => "io",
    }
}

/// One `GET /`. A kept-alive connection that turns out to be closed before any byte of the
/// answer arrived is retried once on a fresh connection, as HTTP clients do for idempotent
/// requests; every other failure is counted.
fn request_version(
    address: SocketAddr,
    keep_alive: bool,
    connection: &mut Option<Connection>,
    tally: &mut Tally,
) -> Result<String, &'static str> {
    let reused = connection.is_some();
    if connection.is_none() {
        *connection = Some(connect(address)?);
    }
    let open = connection.as_mut().expect("connected above");
    match exchange(open, keep_alive) {
        Ok(version) => {
            if !keep_alive {
                *connection = None;
            }
            Ok(version)
        }
        Err(Failure::BeforeAnswer(_)) if reused => {
            tally.reconnects += 1;
            let mut fresh = connect(address)?;
            let result = exchange(&mut fresh, keep_alive).map_err(Failure::kind);
            *connection = if keep_alive && result.is_ok() {
                Some(fresh)
            } else {
                None
            };
            result
        }
        Err(failure) => {
            *connection = None;
            Err(failure.kind())
        }
    }
}

enum Failure {
    /// Nothing of an answer arrived (the connection was closed or reset first).
    BeforeAnswer(&'static str),
    /// Part of an answer arrived, or a wrong one.
    During(&'static str),
}

impl Failure {
    fn kind(self) -> &'static str {
        match self {
            Failure::BeforeAnswer(kind) | Failure::During(kind) => kind,
        }
    }
}

fn exchange(connection: &mut Connection, keep_alive: bool) -> Result<String, Failure> {
    let request = if keep_alive {
        "GET / HTTP/1.1\r\nHost: quickstart\r\n\r\n"
    } else {
        "GET / HTTP/1.1\r\nHost: quickstart\r\nConnection: close\r\n\r\n"
    };
    connection
        .reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|error| Failure::BeforeAnswer(classify(error)))?;
    let mut status_line = String::new();
    match connection.reader.read_line(&mut status_line) {
        Ok(0) => return Err(Failure::BeforeAnswer("closed")),
        Ok(_) => {}
        Err(error) => return Err(Failure::BeforeAnswer(classify(error))),
    }
    let mut content_length: Option<usize> = None;
    loop {
        let mut line = String::new();
        match connection.reader.read_line(&mut line) {
            Ok(0) => return Err(Failure::During("closed")),
            Ok(_) => {}
            Err(error) => return Err(Failure::During(classify(error))),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().ok();
        }
    }
    let length = content_length.ok_or(Failure::During("wrong"))?;
    if length > 4096 {
        return Err(Failure::During("wrong"));
    }
    let mut body = vec![0; length];
    connection
        .reader
        .read_exact(&mut body)
        .map_err(|error| Failure::During(classify(error)))?;
    if !status_line.starts_with("HTTP/1.1 200") {
        return Err(Failure::During("wrong"));
    }
    let version = String::from_utf8_lossy(&body).trim().to_owned();
    if version.is_empty() {
        return Err(Failure::During("wrong"));
    }
    Ok(version)
}

/// A single `GET /` on a fresh connection, for "which version answers now?".
pub fn current_version(address: SocketAddr) -> Option<String> {
    let mut connection = connect(address).ok()?;
    exchange(&mut connection, false).ok()
}
