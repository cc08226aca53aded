//! The application's update lock (`update-lock = "/run/hello/update.lock"`): while the
//! application holds a lock (`flock(2)`, shared or exclusive) on that file, the agent does not
//! install or restart it. The application makes the file (owned by its own user); the agent
//! only opens it, read-only, so it never leaves a root-owned file in the application's
//! directory. No file means no application that could hold it. The agent takes the lock exclusively before it installs, holds it
//! through the restart and the health check, and lets go after; so a long job that holds it
//! finishes first, and a job that starts during the swap waits for the swap to end.
//!
//! The agent waits at most `update-lock-timeout` (default 10m); then it either goes ahead
//! (`update-lock-expired = "proceed"`) or leaves the release for the next poll
//! (`"skip"`, the default), as the application's owner chose.
//!
//! And the operator's hold (`ferry agent hold APP`): a file in the state directory that keeps
//! every update of the app on this host waiting until `ferry agent release APP`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;

/// What the agent does when the lock is still held after the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Install and restart anyway.
    Proceed,
    /// Leave the release for the next poll, which waits again.
    Skip,
}

/// `update-lock` and its two companions, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateLock {
    /// The file the application locks.
    pub path: PathBuf,
    /// How long the agent waits for it.
    pub timeout: Duration,
    /// What happens after that.
    pub expired: Expired,
}

/// The lock, held by the agent until dropped.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// What waiting for the lock ended with.
#[derive(Debug)]
pub enum Acquired {
    /// The agent holds it (or there was nothing to hold: the file's directory does not exist,
    /// so the application is not running).
    Held(Option<Held>),
    /// Still held by the application after the timeout, and `expired = "proceed"`.
    Expired,
    /// Still held after the timeout, and `expired = "skip"`: the reason to report.
    Skipped(String),
}

fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock(2) on a descriptor this function's caller owns for its whole call.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        Some(libc::EINTR) => Ok(false),
        _ => Err(error),
    }
}

impl UpdateLock {
    fn open(&self) -> Result<Option<File>, Error> {
        match OpenOptions::new().read(true).open(&self.path) {
            Ok(file) => Ok(Some(file)),
            // The application has not made the file: nothing runs that could hold it.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(lock = %self.path.display(), "the update lock file does not exist; nothing holds it");
                Ok(None)
            }
            Err(error) => Err(Error::io("open the update lock", &self.path, error)),
        }
    }

    /// Take the lock if it is free now: `Some` (holding it, or nothing to hold), `None` while
    /// the application holds it.
    pub fn try_acquire(&self) -> Result<Option<Option<Held>>, Error> {
        let Some(file) = self.open()? else {
            return Ok(Some(None));
        };
        Ok(try_lock(&file)
            .map_err(|e| Error::io("lock", &self.path, e))?
            .then_some(Some(Held { _file: file })))
    }

    /// Wait for the lock: poll it every 100 ms until the timeout.
    pub async fn acquire(&self) -> Result<Acquired, Error> {
        let Some(file) = self.open()? else {
            return Ok(Acquired::Held(None));
        };
        let started = Instant::now();
        let mut announced = false;
        loop {
            if try_lock(&file).map_err(|e| Error::io("lock", &self.path, e))? {
                if announced {
                    tracing::info!(lock = %self.path.display(), waited_ms = started.elapsed().as_millis() as u64, "the application released its update lock");
                }
                return Ok(Acquired::Held(Some(Held { _file: file })));
            }
            if !announced {
                tracing::info!(
                    lock = %self.path.display(), timeout_s = self.timeout.as_secs(),
                    "the application holds its update lock; waiting before installing"
                );
                announced = true;
            }
            if started.elapsed() >= self.timeout {
                let waited = humantime::format_duration(self.timeout);
                return Ok(match self.expired {
                    Expired::Proceed => {
                        tracing::warn!(lock = %self.path.display(), "the update lock is still held after {waited}; going ahead (update-lock-expired = \"proceed\")");
                        Acquired::Expired
                    }
                    Expired::Skip => Acquired::Skipped(format!(
                        "waiting for the application's update lock {} (still held after {waited}; tried again at the next poll)",
                        self.path.display()
                    )),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An operator's hold, as `ferry agent hold` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hold {
    /// user@host of who held it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why, as given.
    #[serde(default)]
    pub reason: String,
}

impl Hold {
    /// The file holding `app`/`channel`'s hold in `state_dir`.
    pub fn path(state_dir: &Path, app: &str, channel: &str) -> PathBuf {
        state_dir.join(format!("{app}.{channel}.hold.json"))
    }

    /// The hold in force, if any (an unreadable file counts as a hold: the operator meant one).
    pub fn read(path: &Path) -> Option<Hold> {
        let text = match ferry_release::read_local_text(path, 64 * 1024) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                return Some(Hold {
                    by: "unknown".into(),
                    at: String::new(),
                    reason: format!("{} is unreadable: {error}", path.display()),
                });
            }
        };
        Some(serde_json::from_str(&text).unwrap_or_else(|_| Hold {
            by: "unknown".into(),
            at: String::new(),
            reason: format!("{} is not a hold ferry wrote", path.display()),
        }))
    }

    /// The hold as one line for reports.
    pub fn describe(&self) -> String {
        let mut text = format!("held by {}", self.by);
        if !self.at.is_empty() {
            text.push_str(&format!(" since {}", self.at));
        }
        if !self.reason.is_empty() {
            text.push_str(&format!(": {}", self.reason));
        }
        text
    }

    /// Write the hold (atomically).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(dir: &Path, timeout_ms: u64, expired: Expired) -> UpdateLock {
        UpdateLock {
            path: dir.join("update.lock"),
            timeout: Duration::from_millis(timeout_ms),
            expired,
        }
    }

    fn hold_shared(path: &Path) -> File {
        let file = File::create(path).unwrap();
        // SAFETY: flock on a descriptor owned here.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) }, 0);
        file
    }

    #[tokio::test]
    async fn a_free_lock_is_taken_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock(dir.path(), 1000, Expired::Skip);
        File::create(&lock.path).unwrap();
        let Acquired::Held(Some(held)) = lock.acquire().await.unwrap() else {
            panic!("expected the lock");
        };
        let other = File::open(&lock.path).unwrap();
        assert!(!try_lock(&other).unwrap(), "held by the agent");
        drop(held);
        assert!(try_lock(&other).unwrap(), "released");
    }

    #[tokio::test]
    async fn the_agent_waits_for_the_application_then_takes_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock(dir.path(), 10_000, Expired::Skip);
        let application = hold_shared(&lock.path);
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(application);
        });
        let started = Instant::now();
        assert!(matches!(
            lock.acquire().await.unwrap(),
            Acquired::Held(Some(_))
        ));
        assert!(started.elapsed() >= Duration::from_millis(300));
        release.await.unwrap();
    }

    #[tokio::test]
    async fn after_the_timeout_it_skips_or_proceeds_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let _application = hold_shared(&dir.path().join("update.lock"));
        let skipped = lock(dir.path(), 200, Expired::Skip)
            .acquire()
            .await
            .unwrap();
        assert!(
            matches!(&skipped, Acquired::Skipped(reason) if reason.contains("still held after")),
            "{skipped:?}"
        );
        let proceeded = lock(dir.path(), 200, Expired::Proceed)
            .acquire()
            .await
            .unwrap();
        assert!(matches!(proceeded, Acquired::Expired), "{proceeded:?}");
    }

    #[tokio::test]
    async fn no_file_means_nothing_holds_it_and_the_agent_makes_none() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock(dir.path(), 100, Expired::Skip);
        assert!(matches!(
            lock.acquire().await.unwrap(),
            Acquired::Held(None)
        ));
        assert!(matches!(lock.try_acquire().unwrap(), Some(None)));
        assert!(
            !lock.path.exists(),
            "the agent created the application's lock file"
        );
    }

    #[tokio::test]
    async fn try_acquire_says_when_the_application_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock(dir.path(), 100, Expired::Skip);
        let application = hold_shared(&lock.path);
        assert!(lock.try_acquire().unwrap().is_none());
        drop(application);
        assert!(matches!(lock.try_acquire().unwrap(), Some(Some(_))));
    }
}
