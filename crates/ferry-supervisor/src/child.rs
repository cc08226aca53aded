//! One supervised process: its PID (= process group), its exit status once it exits, and
//! signalling that is safe against PID reuse — the process is reaped only after its group has
//! been cleaned up, so until then its PID cannot name anyone else.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

/// How a child ended, in words (`status 1`, `signal 9`).
pub(crate) type ExitDescription = String;

#[derive(Debug)]
pub(crate) struct Child {
    pub pid: libc::pid_t,
    pub generation: u64,
    pub started: Instant,
    exit: watch::Receiver<Option<ExitDescription>>,
    /// Set (under the lock) right before the PID is reaped; signals are sent under the same
    /// lock, so a signal can never reach a process that reused the PID.
    reaped: Arc<Mutex<bool>>,
}

impl Child {
    /// Watch `pid` (a fresh child in its own process group) on a blocking thread: wait for it
    /// to exit without reaping, SIGKILL whatever is left of its group, then reap it.
    pub fn watch(pid: libc::pid_t, generation: u64) -> Child {
        let (sender, exit) = watch::channel(None);
        let reaped = Arc::new(Mutex::new(false));
        let reaped_by_watcher = reaped.clone();
        tokio::task::spawn_blocking(move || {
            let description = wait_and_reap(pid, &reaped_by_watcher);
            tracing::debug!(pid, generation, %description, "process exited");
            let _ = sender.send(Some(description));
        });
        Child {
            pid,
            generation,
            started: Instant::now(),
            exit,
            reaped,
        }
    }

    /// Resolves with the exit description once the process has exited and was reaped.
    pub async fn exited(&self) -> ExitDescription {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or_default(),
            // The watcher thread is gone without a word; treat as exited.
            Err(_) => "unknown status".to_owned(),
        }
    }

    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Send `signal` to the main process (only while it has not been reaped).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2); the PID is ours until the watcher reaps it.
        self.while_unreaped(|pid| unsafe {
            libc::kill(pid, signal);
        });
    }

    /// Send `signal` to the whole process group.
    pub fn signal_group(&self, signal: libc::c_int) {
        // SAFETY: killpg(2); the group id is the unreaped child's PID.
        self.while_unreaped(|pid| unsafe {
            libc::killpg(pid, signal);
        });
    }

    /// Run `send` with the child's PID unless it was reaped (then the PID may be reused).
    fn while_unreaped(&self, send: impl FnOnce(libc::pid_t)) {
        let reaped = self
            .reaped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !*reaped {
            send(self.pid);
        }
    }
}

fn wait_and_reap(pid: libc::pid_t, reaped: &Mutex<bool>) -> ExitDescription {
    // SAFETY: waitid/killpg/waitpid on our own child, with valid out-pointers.
    unsafe {
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let result = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            if result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // The leader is a zombie now: its group id cannot be reused, so this reaches only the
        // app's own leftovers (what systemd's KillMode=mixed does for the main service).
        libc::killpg(pid, libc::SIGKILL);
        let mut reaped = reaped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *reaped = true;
        let mut status = 0;
        loop {
            let result = libc::waitpid(pid, &mut status, 0);
            if result == pid {
                break;
            }
            if result < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return "unknown status (already reaped)".to_owned();
            }
        }
        if libc::WIFEXITED(status) {
            format!("status {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("wait status {status}")
        }
    }
}
