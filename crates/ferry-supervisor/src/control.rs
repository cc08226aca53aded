//! The control socket: a Unix stream socket where a client (the agent) writes ONE JSON line
//! and reads ONE JSON line back.
//!
//! - `{"command":"reload"}` → answered only when the swap finished:
//!   `{"ok":true,"pid":1234}` or `{"ok":false,"error":"new process exited before ready (status 1)"}`.
//!   A reload asked while another runs waits its turn.
//! - `{"command":"status"}` → `{"ok":true,"pid":1234,"generation":3}`
//!   (`{"ok":false,"error":…}` while no process is up, e.g. restarting after a crash).
//!
//! [`Server`] serves it inside the supervisor; [`reload`] and [`status`] are a blocking,
//! std-only client.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::{Error, Handle};

/// The longest request line accepted.
const MAXIMUM_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request line.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Swap in a new process.
    Reload,
    /// Report the serving PID and generation.
    Status,
}

/// A reply line.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The serving PID (after a reload: the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many processes became ready so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    fn failure(error: impl ToString) -> Reply {
        Reply {
            ok: false,
            error: Some(error.to_string()),
            ..Reply::default()
        }
    }
}

/// The serving side; removes its socket file when dropped.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bind `path` (replacing a stale socket file, refusing a live one) with mode 0600 and
    /// answer requests through `handle`.
    pub fn start(path: &Path, handle: Handle) -> Result<Server, Error> {
        let control_error = |source| Error::Control {
            path: path.to_owned(),
            source,
        };
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(control_error(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(control_error(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another supervisor is answering on it",
                )));
            }
            std::fs::remove_file(path).map_err(control_error)?;
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(control_error)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(control_error)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            if let Err(error) = answer(stream, handle).await {
                                tracing::debug!("control connection: {error}");
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!("control socket accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Server {
            path: path.to_owned(),
            task,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: tokio::net::UnixStream, handle: Handle) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(reader.take(MAXIMUM_REQUEST));
    let mut line = String::new();
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Reply::failure("no request line within 10 s"),
        Ok(Err(error)) => Reply::failure(format!("cannot read the request: {error}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(error) => Reply::failure(format!(
                "invalid request {:?}: {error}; expected {{\"command\":\"reload\"}} or {{\"command\":\"status\"}}",
                line.trim()
            )),
            Ok(Request::Reload) => match handle.reload().await {
                Ok(pid) => Reply {
                    ok: true,
                    pid: Some(pid),
                    ..Reply::default()
                },
                Err(error) => Reply::failure(error),
            },
            Ok(Request::Status) => {
                let status = handle.status();
                match status.pid {
                    Some(pid) => Reply {
                        ok: true,
                        pid: Some(pid),
                        generation: Some(status.generation),
                        error: None,
                    },
                    None => Reply::failure(
                        "no process is running right now (starting or restarting after a failure)",
                    ),
                }
            }
        },
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes()).await?;
    writer.shutdown().await
}

/// Ask the supervisor at `path` to reload; blocks until the swap finished (at most
/// `timeout`). Returns the new PID, or [`Error::Refused`] with the supervisor's reason (the
/// old process then keeps serving).
pub fn reload(path: &Path, timeout: Duration) -> Result<u32, Error> {
    let reply = exchange(path, &Request::Reload, timeout)?;
    reply.pid.ok_or_else(|| Error::ControlProtocol {
        path: path.to_owned(),
        message: "a successful reload without a pid".to_owned(),
    })
}

/// The serving PID and generation of the supervisor at `path`.
pub fn status(path: &Path, timeout: Duration) -> Result<crate::Status, Error> {
    let reply = exchange(path, &Request::Status, timeout)?;
    let pid = reply.pid.ok_or_else(|| Error::ControlProtocol {
        path: path.to_owned(),
        message: "a status without a pid".to_owned(),
    })?;
    Ok(crate::Status {
        pid: Some(pid),
        generation: reply.generation.unwrap_or(0),
    })
}

fn exchange(path: &Path, request: &Request, timeout: Duration) -> Result<Reply, Error> {
    let control_error = |source| Error::Control {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(control_error)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(control_error)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(control_error)?;
    let mut line = serde_json::to_string(request).map_err(|error| Error::ControlProtocol {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(control_error)?;
    let mut answer = String::new();
    BufReader::new((&stream).take(MAXIMUM_REQUEST))
        .read_line(&mut answer)
        .map_err(control_error)?;
    if answer.trim().is_empty() {
        return Err(Error::ControlProtocol {
            path: path.to_owned(),
            message: "the connection closed without an answer".to_owned(),
        });
    }
    let reply: Reply =
        serde_json::from_str(answer.trim()).map_err(|error| Error::ControlProtocol {
            path: path.to_owned(),
            message: format!("{error} in {:?}", answer.trim()),
        })?;
    if !reply.ok {
        return Err(Error::Refused {
            path: path.to_owned(),
            message: reply.error.unwrap_or_else(|| "no reason given".to_owned()),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_match_the_contract() {
        assert_eq!(
            serde_json::to_string(&Request::Reload).unwrap(),
            r#"{"command":"reload"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"restart"}"#).is_err());
        let reply = Reply {
            ok: true,
            pid: Some(12),
            ..Reply::default()
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"ok":true,"pid":12}"#
        );
    }
}
