//! hello-service: a small HTTP service on ferry-handoff that answers its version. It is the
//! service ferry's tests, benchmarks and quickstart deploy, so it can be told to be slow, to
//! fail readiness, to be unhealthy or to crash.
//!
//! - listens on the inherited socket named `http` (or the first one), else on `--listen ADDR`,
//!   `HELLO_LISTEN`, or 127.0.0.1:8080; sends `READY=1` once listening;
//! - `GET /` → version + "\n"; `GET /health` → 200 "ok\n" when healthy;
//!   `GET /slow?ms=N` → waits N ms, then answers like `/`; `GET /env/NAME` → the value of
//!   the environment variable `HELLO_<NAME>` + "\n" (404 when unset), so tests can see
//!   configuration a config bundle delivered (only `HELLO_*` variables are shown);
//!   `GET /job?ms=N` → like `/slow`, holding a shared flock on the file `HELLO_UPDATE_LOCK`
//!   names for the whole wait: the update lock ferry's agent waits for before a swap
//!   (`update-lock` in agent.toml); 500 when the variable is unset;
//! - version: `HELLO_VERSION`, else `<exe dir>/../share/hello-service/version`, else the
//!   crate version; mode: `HELLO_MODE`, else `<exe dir>/../share/hello-service/mode`, else
//!   `normal` (`crash`, `fail-ready`, `unhealthy`);
//! - SIGTERM: stop accepting, finish in-flight requests, close idle keep-alive connections,
//!   exit 0.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

/// How long a connection may keep sending requests after SIGTERM; each of those answers
/// carries `Connection: close`. A busy keep-alive client thus learns of the shutdown from a
/// response instead of racing a close, and only connections idle this long are closed.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(1000);
/// The longest `/slow` wait accepted, so a typo cannot park a connection for days.
const MAXIMUM_SLOW_MILLISECONDS: u64 = 600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Crash,
    FailReady,
    Unhealthy,
}

struct State {
    version: String,
    mode: Mode,
    draining: watch::Receiver<bool>,
}

/// Run the service with the process's arguments and environment; the `hello-service`
/// binary is this, and so is `ferry` when it is started under the name `hello-service` (the
/// quickstart packs ferry itself as the example service, so it needs no second build).
pub fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hello-service: error: {message}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut listen_address =
        std::env::var("HELLO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--listen" => {
                listen_address = arguments.next().ok_or("--listen needs an address")?;
            }
            "--help" | "-h" => {
                println!(
                    "usage: hello-service [--listen ADDR]   (see the crate docs for env vars)"
                );
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other:?} (try --listen ADDR)")),
        }
    }
    let version = std::env::var("HELLO_VERSION")
        .ok()
        .or_else(|| read_share_file("version"))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let mode_text = std::env::var("HELLO_MODE")
        .ok()
        .or_else(|| read_share_file("mode"))
        .unwrap_or_else(|| "normal".to_owned());
    let mode = match mode_text.as_str() {
        "normal" | "" => Mode::Normal,
        "crash" => Mode::Crash,
        "fail-ready" => Mode::FailReady,
        "unhealthy" => Mode::Unhealthy,
        other => {
            return Err(format!(
                "unknown mode {other:?} (normal, crash, fail-ready, unhealthy)"
            ));
        }
    };
    let pid = std::process::id();
    if mode == Mode::Crash {
        eprintln!("hello-service[{pid}]: version {version} in mode crash: exiting with status 1");
        return Ok(ExitCode::from(1));
    }
    let listener = ferry_handoff::listener("http", &listen_address).map_err(|e| e.to_string())?;
    let shutdown = ferry_handoff::shutdown().map_err(|e| e.to_string())?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set the listener non-blocking: {e}"))?;
    let description = listener.describe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let (draining_sender, draining) = watch::channel(false);
        let state = Arc::new(State {
            version: version.clone(),
            mode,
            draining,
        });
        let (connections, mut all_closed) = mpsc::channel::<()>(1);
        let accept_loop = async {
            match listener {
                ferry_handoff::Listener::Tcp(listener) => {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| format!("cannot use the listener: {e}"))?;
                    ready(mode, pid, &version, &description);
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                spawn_connection(stream, state.clone(), connections.clone());
                            }
                            Err(error) => accept_failed(error).await,
                        }
                    }
                }
                ferry_handoff::Listener::Unix(listener) => {
                    let listener = tokio::net::UnixListener::from_std(listener)
                        .map_err(|e| format!("cannot use the listener: {e}"))?;
                    ready(mode, pid, &version, &description);
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                spawn_connection(stream, state.clone(), connections.clone())
                            }
                            Err(error) => accept_failed(error).await,
                        }
                    }
                }
            }
        };
        tokio::select! {
            result = accept_loop => return result,
            () = shutdown => {}
        }
        // The accept loop (and with it this process's copy of the listening socket) is gone:
        // new connections wait in the shared queue for the next process.
        eprintln!("hello-service[{pid}]: SIGTERM: draining");
        let _ = draining_sender.send(true);
        drop(connections);
        let _ = all_closed.recv().await;
        eprintln!("hello-service[{pid}]: drained, exiting");
        Ok(ExitCode::SUCCESS)
    })
}

fn ready(mode: Mode, pid: u32, version: &str, description: &str) {
    eprintln!("hello-service[{pid}]: version {version} listening on {description}");
    if mode == Mode::FailReady {
        eprintln!("hello-service[{pid}]: mode fail-ready: not sending READY=1");
        return;
    }
    if let Err(error) = ferry_handoff::ready() {
        eprintln!("hello-service[{pid}]: {error}");
    }
}

async fn accept_failed(error: std::io::Error) {
    // Out of descriptors or a connection reset before accept: keep serving.
    eprintln!("hello-service: accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Serve one connection. On drain: keep answering (with `Connection: close`) for a grace
/// period, then ask hyper to finish the request in flight and close.
fn spawn_connection<I>(io: I, state: Arc<State>, guard: mpsc::Sender<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _guard = guard;
        let mut draining = state.draining.clone();
        let service_state = state.clone();
        let service = hyper::service::service_fn(move |request| {
            let state = service_state.clone();
            async move { Ok::<_, Infallible>(respond(&state, request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = draining.wait_for(|draining| *draining) => {}
        }
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep(DRAIN_IDLE_GRACE) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    });
}

async fn respond(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/" => (StatusCode::OK, format!("{}\n", state.version)),
        "/health" => match state.mode {
            Mode::Normal | Mode::Crash => (StatusCode::OK, "ok\n".to_owned()),
            Mode::FailReady => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
            Mode::Unhealthy => (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy\n".to_owned()),
        },
        "/job" => {
            let milliseconds = query_milliseconds(&request);
            match (milliseconds, std::env::var_os("HELLO_UPDATE_LOCK")) {
                (Some(milliseconds), Some(path)) => match UpdateLock::take(&path).await {
                    Ok(held) => {
                        let milliseconds = milliseconds.min(MAXIMUM_SLOW_MILLISECONDS);
                        tokio::time::sleep(Duration::from_millis(milliseconds)).await;
                        drop(held);
                        (StatusCode::OK, format!("{}\n", state.version))
                    }
                    Err(error) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot lock {}: {error}\n", PathBuf::from(path).display()),
                    ),
                },
                (None, _) => (StatusCode::BAD_REQUEST, "expected /job?ms=N\n".to_owned()),
                (_, None) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "HELLO_UPDATE_LOCK is not set\n".to_owned(),
                ),
            }
        }
        "/slow" => {
            let milliseconds = query_milliseconds(&request);
            match milliseconds {
                Some(milliseconds) => {
                    let milliseconds = milliseconds.min(MAXIMUM_SLOW_MILLISECONDS);
                    tokio::time::sleep(Duration::from_millis(milliseconds)).await;
                    (StatusCode::OK, format!("{}\n", state.version))
                }
                None => (StatusCode::BAD_REQUEST, "expected /slow?ms=N\n".to_owned()),
            }
        }
        path if path.starts_with("/env/") => {
            let name = &path["/env/".len()..];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '_');
            match std::env::var(format!("HELLO_{name}")) {
                Ok(value) if valid => (StatusCode::OK, format!("{value}\n")),
                _ => (StatusCode::NOT_FOUND, "not set\n".to_owned()),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if *state.draining.borrow() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn query_milliseconds(request: &Request<Incoming>) -> Option<u64> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|value| value.parse::<u64>().ok())
}

/// A shared flock on the update-lock file, released when dropped (the descriptor closes).
struct UpdateLock {
    _file: std::fs::File,
}

impl UpdateLock {
    /// Take the lock, waiting (without blocking the runtime) while the agent holds it for a
    /// swap.
    async fn take(path: &std::ffi::OsStr) -> std::io::Result<UpdateLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        loop {
            // SAFETY: flock(2) on a descriptor owned by `file` for this whole call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
                return Ok(UpdateLock { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The trimmed contents of `<dir of the real executable>/../share/hello-service/<name>`, so a
/// package that ships `/usr/share/hello-service/version` answers the packaged version.
fn read_share_file(name: &str) -> Option<String> {
    let executable = std::env::current_exe().ok()?;
    let executable = std::fs::canonicalize(&executable).unwrap_or(executable);
    let path: PathBuf = executable
        .parent()?
        .join("../share/hello-service")
        .join(name);
    let contents = std::fs::read_to_string(path).ok()?;
    Some(contents.trim().to_owned())
}
