//! Helpers for the staged-rollout, status and dashboard tests: run the real `ferry` binary
//! with a clean environment (no `FERRY_*`/`AWS_*` leaking in from outside, the test store's
//! credentials added), bounded in time, and read its output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::fleet::run_bounded;

/// The `ferry` binary with a fixed environment.
#[derive(Debug, Clone)]
pub struct Ferry {
    binary: PathBuf,
    environment: Vec<(&'static str, String)>,
}

impl Ferry {
    /// `binary` (the test's `CARGO_BIN_EXE_ferry`) with `environment` set on every run.
    pub fn new(binary: &Path, environment: Vec<(&'static str, String)>) -> Ferry {
        Ferry {
            binary: binary.to_path_buf(),
            environment,
        }
    }

    /// A command ready to spawn.
    pub fn command<S: AsRef<OsStr>>(&self, arguments: &[S]) -> Command {
        let mut command = crate::ferry_command(&self.binary);
        command.args(arguments);
        for (name, value) in &self.environment {
            command.env(name, value);
        }
        command
    }

    /// Run to completion (at most 120 s), whatever the exit status.
    pub fn output<S: AsRef<OsStr>>(&self, arguments: &[S]) -> Output {
        run_bounded(&mut self.command(arguments), Duration::from_secs(120))
    }

    /// Run and require success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, arguments: &[S]) -> String {
        let output = self.output(arguments);
        assert!(
            output.status.success(),
            "`ferry {}` failed ({}):\nstdout: {}\nstderr: {}",
            describe(arguments),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Run and require failure with `code`; returns stderr.
    pub fn fails<S: AsRef<OsStr>>(&self, arguments: &[S], code: i32) -> String {
        let output = self.output(arguments);
        assert_eq!(
            output.status.code(),
            Some(code),
            "`ferry {}`: stdout {} stderr {}",
            describe(arguments),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

fn describe<S: AsRef<OsStr>>(arguments: &[S]) -> String {
    arguments
        .iter()
        .map(|argument| argument.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
