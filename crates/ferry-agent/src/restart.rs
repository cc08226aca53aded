//! Restart methods: tell the service a new release is installed. `supervisor` asks
//! `ferry run` for a zero-downtime swap, `systemd` runs `systemctl reload-or-restart`,
//! `signal` signals a PID read from a pidfile or systemd's MainPID (never a process name),
//! `exec` runs a command, `none` does nothing. Blocking; the agent calls it off the runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// How the service is told about a new release.
#[derive(Debug, Clone, PartialEq)]
pub enum Restart {
    /// `ferry run --control SOCKET`: a zero-downtime swap.
    Supervisor {
        /// Control socket.
        control: PathBuf,
        /// How long the swap may take.
        timeout: Duration,
    },
    /// `systemctl reload-or-restart UNIT`.
    Systemd {
        /// The unit.
        unit: String,
        /// How long systemctl may take.
        timeout: Duration,
    },
    /// A signal to the PID in a pidfile or to the unit's MainPID.
    Signal {
        /// Where the PID comes from.
        target: SignalTarget,
        /// The signal number.
        signal: i32,
        /// The signal's name, for logs.
        signal_name: String,
    },
    /// A command.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// How long it may run.
        timeout: Duration,
    },
    /// Nothing (the install restarts the service, e.g. a postinst).
    None,
}

/// Where the signal method finds the PID. Never a process name.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalTarget {
    /// A pidfile.
    Pidfile(PathBuf),
    /// `systemctl show -p MainPID UNIT`.
    Unit(String),
}

/// Restart the service. Returns the service's new PID when the method knows it.
pub fn restart(method: &Restart) -> Result<Option<u32>, Error> {
    match method {
        Restart::Supervisor { control, timeout } => supervisor_reload(control, *timeout).map(Some),
        Restart::Systemd { unit, timeout } => {
            run_command(
                "systemd",
                &["systemctl".into(), "reload-or-restart".into(), unit.clone()],
                *timeout,
            )?;
            Ok(None)
        }
        Restart::Signal {
            target,
            signal,
            signal_name,
        } => {
            let pid = signal_target_pid(target)?;
            send_signal(pid, *signal).map_err(|message| Error::Restart {
                method: "signal",
                message: format!("cannot send {signal_name} to PID {pid}: {message}"),
            })?;
            Ok(Some(pid))
        }
        Restart::Exec { command, timeout } => {
            run_command("exec", command, *timeout)?;
            Ok(None)
        }
        Restart::None => Ok(None),
    }
}

/// Ask `ferry run` for a zero-downtime swap; answered when the swap is done (or failed,
/// in which case the old process is still serving).
fn supervisor_reload(control: &Path, timeout: Duration) -> Result<u32, Error> {
    ferry_supervisor::control::reload(control, timeout).map_err(|error| Error::Restart {
        method: "supervisor",
        message: format!("{}: {error}", control.display()),
    })
}

/// The PID a signal goes to.
pub fn signal_target_pid(target: &SignalTarget) -> Result<u32, Error> {
    match target {
        SignalTarget::Pidfile(path) => read_pidfile(path).map_err(|message| Error::Restart {
            method: "signal",
            message,
        }),
        SignalTarget::Unit(unit) => {
            let output = Command::new("systemctl")
                .args(["show", "-p", "MainPID", "--value", unit])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::Restart {
                    method: "signal",
                    message: format!("cannot run systemctl show {unit}: {e}"),
                })?;
            let text = String::from_utf8_lossy(&output.stdout);
            match text.trim().parse::<u32>() {
                Ok(pid) if pid > 1 && output.status.success() => Ok(pid),
                _ => Err(Error::Restart {
                    method: "signal",
                    message: format!("unit {unit} has no main PID (is it running?)"),
                }),
            }
        }
    }
}

/// Read a PID from a pidfile; refuses 0, 1 and garbage.
pub fn read_pidfile(path: &Path) -> Result<u32, String> {
    let text = ferry_release::read_local_text(path, 4096)
        .map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 1 && pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!(
            "pidfile {} does not hold a PID: {:?}",
            path.display(),
            text.trim()
        )),
    }
}

/// Send `signal` to `pid` (0 only checks that the process exists).
pub fn send_signal(pid: u32, signal: i32) -> Result<(), String> {
    // SAFETY: kill(2) has no memory-safety preconditions; pid was checked to be > 1.
    let result = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Run a command with a deadline; error unless it exits 0.
pub fn run_command(
    method: &'static str,
    command: &[String],
    timeout: Duration,
) -> Result<(), Error> {
    let (program, args) = command.split_first().ok_or(Error::Restart {
        method,
        message: "empty command".into(),
    })?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Error::Restart {
            method,
            message: format!("cannot run {program}: {e}"),
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::Restart {
                    method,
                    message: format!("`{}` exited with {status}", command.join(" ")),
                });
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Restart {
                    method,
                    message: format!("`{}` did not finish within {timeout:?}", command.join(" ")),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Error::Restart {
                    method,
                    message: format!("waiting for {program}: {e}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_succeeds_fails_and_times_out() {
        assert!(
            restart(&Restart::Exec {
                command: vec!["true".into()],
                timeout: Duration::from_secs(5)
            })
            .is_ok()
        );
        let error = restart(&Restart::Exec {
            command: vec!["false".into()],
            timeout: Duration::from_secs(5),
        })
        .unwrap_err();
        assert!(error.to_string().contains("exited"), "{error}");
        let error = restart(&Restart::Exec {
            command: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_millis(100),
        })
        .unwrap_err();
        assert!(error.to_string().contains("did not finish"), "{error}");
    }

    #[test]
    fn signal_goes_to_the_pidfile_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfile = dir.path().join("app.pid");
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        let method = Restart::Signal {
            target: SignalTarget::Pidfile(pidfile.clone()),
            signal: libc::SIGTERM,
            signal_name: "TERM".into(),
        };
        assert_eq!(restart(&method).unwrap(), Some(child.id()));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));

        std::fs::write(&pidfile, "1\n").unwrap();
        assert!(
            restart(&method)
                .unwrap_err()
                .to_string()
                .contains("does not hold a PID")
        );
        std::fs::write(&pidfile, "garbage").unwrap();
        assert!(restart(&method).is_err());
    }
}
