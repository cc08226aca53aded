//! Health checks after a restart, retried until they pass or a deadline runs out: an HTTP
//! GET expecting 2xx (and optionally a text such as the version in the body), a TCP connect,
//! a command's exit status, or the service's process still being alive after a while.
//!
//! The HTTP probe is a tiny HTTP/1.1 client over a tokio socket: it only ever talks to the
//! service on this host over plain http://, and a full client would cost the agent memory
//! on every idle poll for no gain.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// The health check after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// What to check.
    pub probe: Probe,
    /// Deadline for the check to pass.
    pub timeout: Duration,
    /// Time between attempts.
    pub retry: Duration,
    /// Passes in a row needed to call the service healthy.
    pub successes: u32,
}

/// One health probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// GET an http:// URL, expect 2xx and optionally a body substring.
    Http {
        /// The URL.
        url: String,
        /// Substring expected in the body; `{version}` is replaced by the release's version.
        expect_body: Option<String>,
    },
    /// A TCP connect.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A command's exit status.
    Command {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// The service's process is still alive after this long.
    Running {
        /// How long.
        duration: Duration,
        /// Where to read the PID when the restart method does not report it.
        pidfile: Option<PathBuf>,
    },
    /// No health check: a successful restart commits.
    None,
}

/// Largest response the HTTP probe reads.
const MAX_RESPONSE: usize = 1 << 20;

/// Run the configured check until it passes or `health.timeout` runs out. `version` fills
/// `{version}` in the expected body; `pid` is the service PID the restart reported.
pub async fn check(health: &Health, version: &str, pid: Option<u32>) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + health.timeout;
    if let Probe::Running { duration, pidfile } = &health.probe {
        tokio::time::sleep(*duration).await;
        let pid = match (pid, pidfile) {
            (_, Some(pidfile)) => crate::restart::read_pidfile(pidfile)
                .map_err(|message| Error::Unhealthy { message })?,
            (Some(pid), None) => pid,
            (None, None) => {
                return Err(Error::Unhealthy {
                    message: "`running-for` needs a PID: use the supervisor or signal restart method, or set [health] pidfile".into(),
                });
            }
        };
        return crate::restart::send_signal(pid, 0).map_err(|error| Error::Unhealthy {
            message: format!("process {pid} is not running after {duration:?}: {error}"),
        });
    }
    // Several passes in a row: right after a swap the old process may still accept a
    // connection or two before it starts draining, and one lucky answer from it must not
    // commit a release whose own process is unhealthy.
    let mut attempts = 0u32;
    let mut passes = 0u32;
    let mut last_failure = String::new();
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(
            remaining.max(Duration::from_millis(10)),
            probe_once(&health.probe, version),
        )
        .await;
        match attempt {
            Ok(Ok(())) => {
                passes += 1;
                if passes >= health.successes.max(1) {
                    return Ok(());
                }
            }
            Ok(Err(message)) => {
                passes = 0;
                last_failure = message;
            }
            Err(_) => {
                passes = 0;
                last_failure = "no answer before the deadline".to_string();
            }
        }
        if tokio::time::Instant::now() + health.retry >= deadline {
            if last_failure.is_empty() {
                last_failure =
                    format!("only {passes} passes in a row, {} needed", health.successes);
            }
            return Err(Error::Unhealthy {
                message: format!(
                    "{last_failure} (after {attempts} attempts in {:?})",
                    health.timeout
                ),
            });
        }
        if passes == 0 {
            tracing::debug!(attempt = attempts, failure = %last_failure, "health check not passing yet");
        }
        tokio::time::sleep(health.retry).await;
    }
}

async fn probe_once(probe: &Probe, version: &str) -> Result<(), String> {
    match probe {
        Probe::Http { url, expect_body } => {
            let (status, body) = http_get(url).await?;
            if !(200..300).contains(&status) {
                return Err(format!("GET {url} answered {status}"));
            }
            if let Some(expected) = expect_body {
                let expected = expected.replace("{version}", version);
                if !String::from_utf8_lossy(&body).contains(&expected) {
                    return Err(format!(
                        "GET {url} answered without {expected:?} in the body"
                    ));
                }
            }
            Ok(())
        }
        Probe::Tcp { address } => TcpStream::connect(address.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("cannot connect to {address}: {e}")),
        Probe::Command { command } => {
            let (program, args) = command.split_first().ok_or("empty health command")?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`{}` exited with {status}", command.join(" ")))
            }
        }
        Probe::Running { .. } | Probe::None => Ok(()),
    }
}

/// Split `http://host:port/path` into the address to connect to, the Host header and the path.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url} has no host"));
    }
    let address = if authority
        .rsplit(':')
        .next()
        .is_some_and(|port| port.parse::<u16>().is_ok())
        && authority.contains(':')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((address, authority.to_string(), path.to_string()))
}

/// A GET with `Connection: close`; returns the status and the (de-chunked) body.
pub async fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (address, host, path) = split_url(url)?;
    let mut stream = TcpStream::connect(address.as_str())
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ferry-agent\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {address}: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("cannot read the answer of {url}: {e}"))?;
    parse_response(&response).ok_or_else(|| format!("{url} answered something that is not HTTP"))
}

fn parse_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let header_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..header_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let body = &response[header_end + 4..];
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-route HTTP server answering every connection with `response`.
    async fn serve(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        format!("http://{address}/health")
    }

    fn http(url: String, expect_body: Option<&str>) -> Health {
        Health {
            probe: Probe::Http {
                url,
                expect_body: expect_body.map(str::to_string),
            },
            timeout: Duration::from_millis(600),
            retry: Duration::from_millis(50),
            successes: 2,
        }
    }

    #[tokio::test]
    async fn http_probe_wants_2xx_and_the_expected_body() {
        let ok = serve("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n1.2.3\n").await;
        check(&http(ok.clone(), None), "1.2.3", None).await.unwrap();
        check(&http(ok.clone(), Some("{version}")), "1.2.3", None)
            .await
            .unwrap();
        let error = check(&http(ok, Some("{version}")), "2.0.0", None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("2.0.0"), "{error}");
        let chunked = serve("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n1.2\r\n3\r\n.3\n\r\n0\r\n\r\n").await;
        check(&http(chunked, Some("1.2.3")), "1.2.3", None)
            .await
            .unwrap();
        let failing =
            serve("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
        let error = check(&http(failing, None), "1", None).await.unwrap_err();
        assert!(error.to_string().contains("500"), "{error}");
    }

    /// Regression: right after a swap, one answer from the draining old process committed an
    /// unhealthy release. One pass followed by failures must not count.
    #[tokio::test]
    async fn one_lucky_answer_from_an_old_process_is_not_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let response = if served == 0 {
                    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                } else {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
                };
                served += 1;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        let health = Health {
            probe: Probe::Http {
                url: format!("http://{address}/health"),
                expect_body: None,
            },
            timeout: Duration::from_millis(500),
            retry: Duration::from_millis(50),
            successes: 3,
        };
        let error = check(&health, "1", None).await.unwrap_err();
        assert!(error.to_string().contains("500"), "{error}");
    }

    #[tokio::test]
    async fn tcp_and_command_probes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let health = |probe| Health {
            probe,
            timeout: Duration::from_millis(300),
            retry: Duration::from_millis(50),
            successes: 1,
        };
        check(
            &health(Probe::Tcp {
                address: address.clone(),
            }),
            "1",
            None,
        )
        .await
        .unwrap();
        drop(listener);
        assert!(
            check(&health(Probe::Tcp { address }), "1", None)
                .await
                .is_err()
        );
        check(
            &health(Probe::Command {
                command: vec!["true".into()],
            }),
            "1",
            None,
        )
        .await
        .unwrap();
        assert!(
            check(
                &health(Probe::Command {
                    command: vec!["false".into()]
                }),
                "1",
                None
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn running_probe_checks_the_process_is_alive() {
        let health = Health {
            probe: Probe::Running {
                duration: Duration::from_millis(100),
                pidfile: None,
            },
            timeout: Duration::from_secs(1),
            retry: Duration::from_millis(50),
            successes: 1,
        };
        let mut alive = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        check(&health, "1", Some(alive.id())).await.unwrap();
        let _ = alive.kill();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        assert!(check(&health, "1", Some(pid)).await.is_err());
        let _ = alive.wait();
    }
}
