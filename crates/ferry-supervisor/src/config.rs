//! What a supervisor needs to know, resolved once by the caller (flags, environment) into
//! plain values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Settings for one supervised service.
#[derive(Clone, Debug)]
pub struct Config {
    /// The program to run (a path, or a name looked up in `PATH` once at start).
    pub program: PathBuf,
    /// Its arguments.
    pub arguments: Vec<OsString>,
    /// How long a new process may take to become ready before the reload fails.
    pub ready_timeout: Duration,
    /// How long an old process may take to drain after SIGTERM before it is SIGKILLed.
    pub drain_timeout: Duration,
    /// When set, a process is ready once this `http://host:port/path` answers 2xx
    /// (for apps that do not send `READY=1`).
    pub health_url: Option<String>,
    /// When set (and no health URL), a process that is still running after this long counts
    /// as ready even without `READY=1`.
    pub ready_delay: Option<Duration>,
    /// Where to serve the control socket (reload / status), if anywhere.
    pub control_path: Option<PathBuf>,
    /// systemd's own `NOTIFY_SOCKET`: `READY=1` is forwarded there once the first process is
    /// ready (for `Type=notify` units).
    pub systemd_notify_socket: Option<OsString>,
    /// First delay before restarting a process that exited on its own; doubles per failure.
    pub restart_backoff_initial: Duration,
    /// The longest restart delay.
    pub restart_backoff_maximum: Duration,
}

impl Config {
    /// A configuration with the default timeouts for `program arguments…`.
    pub fn new(program: impl Into<PathBuf>, arguments: Vec<OsString>) -> Config {
        Config {
            program: program.into(),
            arguments,
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            health_url: None,
            ready_delay: None,
            control_path: None,
            systemd_notify_socket: None,
            restart_backoff_initial: Duration::from_millis(100),
            restart_backoff_maximum: Duration::from_secs(10),
        }
    }

    /// The restart delay after `failures` consecutive failures (1 = the first).
    pub fn restart_delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.restart_backoff_initial
            .saturating_mul(factor)
            .min(self.restart_backoff_maximum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_up_to_the_maximum() {
        let config = Config::new("x", Vec::new());
        assert_eq!(config.restart_delay(1), Duration::from_millis(100));
        assert_eq!(config.restart_delay(2), Duration::from_millis(200));
        assert_eq!(config.restart_delay(4), Duration::from_millis(800));
        assert_eq!(config.restart_delay(40), Duration::from_secs(10));
    }
}
