//! A real S3-compatible server for tests: `moto_server` (PyPI `moto[server]`) started on a
//! free 127.0.0.1 port, waited for, with a bucket made, and killed when dropped. Also a tiny
//! proxy that strips conditional headers, standing in for the S3-compatible servers that
//! silently ignore If-Match / If-None-Match on PUT (moto itself honours them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port};

/// The bucket every started server has.
pub const BUCKET: &str = "ferry-test";
/// Credentials the test server accepts (moto accepts any unless started with auth).
pub const ACCESS_KEY_ID: &str = "ferry-test-key";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "ferry-test-secret";

/// A running moto server.
pub struct S3Server {
    guard: ChildGuard,
    port: u16,
}

impl S3Server {
    /// Start moto with bucket [`BUCKET`]. Panics with a clear message if `moto_server` is
    /// missing (`scripts/test` installs it).
    pub fn start() -> S3Server {
        let server = S3Server::spawn(&[]);
        server.create_bucket(BUCKET);
        server
    }

    /// Start moto with authentication on: every request must carry credentials of an IAM user
    /// made in moto, so any key given by a test is wrong. No bucket is made.
    pub fn start_with_auth() -> S3Server {
        S3Server::spawn(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn spawn(environment: &[(&str, &str)]) -> S3Server {
        let on_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("moto_server").is_file())
        });
        assert!(
            on_path,
            "moto_server is not on PATH; run scripts/test, which installs it into a virtualenv (scripts/python-tools), or put that virtualenv's bin on PATH"
        );
        let mut last_error = String::new();
        // A port that was free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut command = Command::new("moto_server");
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (name, value) in environment {
                command.env(name, value);
            }
            let mut guard = ChildGuard::spawn(&mut command);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = guard.child().try_wait() {
                    last_error = format!("moto_server exited with {status}");
                    break;
                }
                if http_request(port, "GET", "/", &[], b"")
                    .is_ok_and(|response| response.starts_with("HTTP/1."))
                {
                    return S3Server { guard, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if last_error.is_empty() {
                last_error = "moto_server did not answer within 30 s".into();
            }
        }
        panic!("cannot start moto_server: {last_error}");
    }

    /// Make another bucket.
    pub fn create_bucket(&self, name: &str) {
        let response = http_request(self.port, "PUT", &format!("/{name}"), &[], b"")
            .unwrap_or_else(|error| panic!("create bucket {name}: {error}"));
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "create bucket {name}: {response}"
        );
    }

    /// Let anyone read the objects under `prefix` of [`BUCKET`] (a bucket policy), as a CDN in
    /// front of a public bucket, or one with origin access, reads them.
    pub fn allow_public_reads(&self, prefix: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{BUCKET}/{prefix}/*"}}]}}"#
        );
        let response = http_request(
            self.port,
            "PUT",
            &format!("/{BUCKET}?policy"),
            &[],
            policy.as_bytes(),
        )
        .unwrap_or_else(|error| panic!("put the bucket policy: {error}"));
        assert!(
            response.starts_with("HTTP/1.1 20"),
            "put the bucket policy: {response}"
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://ferry-test/<prefix>`.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment a client needs to reach this server (endpoint, region, credentials;
    /// instance-metadata lookups off so nothing leaves 127.0.0.1).
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FERRY_S3_ENDPOINT", self.endpoint()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Set [`S3Server::environment`] on a command.
    pub fn apply(&self, command: &mut Command) {
        for (name, value) in self.environment() {
            command.env(name, value);
        }
    }

    /// The server process's PID.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the whole response as text.
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A proxy in front of an S3 server that drops `If-Match` / `If-None-Match` from every
/// request: it behaves like an S3-compatible store that ignores conditional requests.
pub struct ConditionStrippingProxy {
    port: u16,
    _acceptor: std::thread::JoinHandle<()>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ConditionStrippingProxy {
    /// Listen on a free 127.0.0.1 port and forward to `upstream_port`.
    pub fn start(upstream_port: u16) -> ConditionStrippingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, upstream_port);
                });
            }
        });
        ConditionStrippingProxy {
            port,
            _acceptor: acceptor,
            stop,
        }
    }

    /// The endpoint URL clients should use.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ConditionStrippingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn proxy_connection(client: TcpStream, upstream_port: u16) -> std::io::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut upstream_reader = upstream.try_clone()?;
    let mut client_writer = client.try_clone()?;
    let responses = std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_reader, &mut client_writer);
        let _ = client_writer.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    let mut upstream_writer = upstream;
    // Bounded: one connection carries at most this many requests in a test.
    for _ in 0..100_000 {
        let mut head = Vec::new();
        let mut content_length = 0u64;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                let _ = upstream_writer.shutdown(Shutdown::Write);
                let _ = responses.join();
                return Ok(());
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("if-match:") || lower.starts_with("if-none-match:") {
                continue;
            }
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            head.extend_from_slice(line.as_bytes());
            if end {
                break;
            }
        }
        upstream_writer.write_all(&head)?;
        std::io::copy(
            &mut (&mut reader).take(content_length),
            &mut upstream_writer,
        )?;
    }
    Ok(())
}

/// A store for a test that runs on both kinds: `<dir>/store` as `file://`, or `prefix` on a
/// fresh S3 test server. Keep it for the test's length (it owns the server).
pub struct TestStore {
    /// The store URL.
    pub url: String,
    /// The environment a `ferry` command needs to reach it (empty for `file://`).
    pub environment: Vec<(&'static str, String)>,
    /// The S3 server, when there is one.
    pub server: Option<S3Server>,
}

impl TestStore {
    /// A `file://` store under `dir`, or (`s3`) one on a new S3 test server.
    pub fn new(dir: &std::path::Path, s3: bool, prefix: &str) -> TestStore {
        if s3 {
            let server = S3Server::start();
            TestStore {
                url: server.store_url(prefix),
                environment: server.environment(),
                server: Some(server),
            }
        } else {
            std::fs::create_dir_all(dir.join("store")).expect("create the store directory");
            TestStore {
                url: format!("file://{}", dir.join("store").display()),
                environment: Vec::new(),
                server: None,
            }
        }
    }
}
