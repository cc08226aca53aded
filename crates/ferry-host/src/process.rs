//! Running a program with a deadline.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A program that ran to its end (or was killed at its deadline).
#[derive(Debug)]
pub struct Finished {
    /// How it ended; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Its status and the last lines of its output, for an error message.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "killed at its deadline".to_owned(),
        };
        let mut text = self.stderr.trim().to_owned();
        if text.is_empty() {
            text = self.stdout.trim().to_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if tail.is_empty() {
            status
        } else {
            format!("{status}:\n{tail}")
        }
    }

    /// `Ok(self)` when it exited 0, else a [`Error::Command`] about `what`.
    pub fn check(self, what: impl Into<String>) -> Result<Finished> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Command {
                what: what.into(),
                detail: self.describe(),
            })
        }
    }
}

/// Run `command` with stdin closed and both outputs captured; kill it after `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<Finished> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Error::Command {
            what: format!("{:?}", command.get_program()),
            detail: format!("cannot start it: {error}"),
        })?;
    // Drain both pipes on threads so a chatty program cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
