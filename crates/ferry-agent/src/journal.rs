//! The journal: the agent's state on disk, rewritten atomically at every step, so that after
//! a crash or `kill -9` the agent knows exactly where it was and finishes the job.
//!
//! Resume rules (see [`Step`]): `Idle` needs nothing; `Downloading` starts over from the poll
//! (the partial file is resumed with Range); `Installing`, `Restarting` and `Checking` redo
//! that step and go on to the health check and commit; `RollingBack` redoes the rollback.
//! Committing is a single atomic write of the journal, so there is no half-committed state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::fsutil::write_atomic;

/// A release the agent works with: what the signed pointer named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The release version.
    pub version: String,
    /// The pointer serial it came with.
    pub serial: u64,
    /// The artifact's sha256 (hex).
    pub sha256: String,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The artifact's path in the store.
    pub path: String,
}

impl Release {
    /// The release a verified pointer names, with its artifact for this host.
    pub fn named_by(
        pointer: &ferry_release::ChannelPointer,
        artifact: &ferry_release::ArtifactRef,
    ) -> Release {
        Release {
            version: pointer.release.version.clone(),
            serial: pointer.serial,
            sha256: artifact.sha256.clone(),
            size: artifact.size,
            path: artifact.path.clone(),
        }
    }
}

/// A release refused after it failed on this host (the wire type of the host report).
pub use ferry_release::BadRelease;

/// Where the agent is in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Step {
    /// Nothing in flight.
    #[default]
    Idle,
    /// Fetching the artifact of `target` into the cache.
    Downloading {
        /// The release being fetched.
        target: Release,
    },
    /// Installing `target` (its artifact is in the cache).
    Installing {
        /// The release being installed.
        target: Release,
    },
    /// Restarting the service onto `target`.
    Restarting {
        /// The release installed.
        target: Release,
    },
    /// Checking the health of `target`.
    Checking {
        /// The release being checked.
        target: Release,
    },
    /// `target` failed; going back to the committed release.
    RollingBack {
        /// The release that failed.
        target: Release,
        /// Why.
        reason: String,
    },
}

impl Step {
    /// The step's name as logged and reported.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Idle => "idle",
            Step::Downloading { .. } => "downloading",
            Step::Installing { .. } => "installing",
            Step::Restarting { .. } => "restarting",
            Step::Checking { .. } => "checking",
            Step::RollingBack { .. } => "rolling-back",
        }
    }
}

/// Everything the agent persists. Fields this version does not know are ignored, so a
/// downgraded agent reads a newer agent's journal (what it cannot know it cannot honour,
/// but it keeps the host managed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    /// Format version of this file.
    pub schema: u32,
    /// The app followed.
    pub app: String,
    /// The channel followed.
    pub channel: String,
    /// The highest pointer serial accepted; lower ones are refused.
    pub highest_serial: u64,
    /// ETag of the last pointer fully handled (sent as If-None-Match).
    pub etag: Option<String>,
    /// The committed (installed and healthy) release.
    pub current: Option<Release>,
    /// Committed releases before `current`, newest first (rollback candidates).
    #[serde(default)]
    pub previous: Vec<Release>,
    /// Releases that failed here.
    #[serde(default)]
    pub bad: Vec<BadRelease>,
    /// The step in flight.
    pub step: Step,
    /// The last error, if the last cycle failed.
    pub last_error: Option<String>,
    /// How the last update ended.
    #[serde(default)]
    pub outcome: Option<ferry_release::HostState>,
    /// The last time a release was committed or rolled back (RFC 3339).
    pub last_change_at: Option<String>,
    /// How the last release was fetched (patch or full, bytes).
    #[serde(default)]
    pub last_download: Option<ferry_release::DownloadRecord>,
    /// Why the published release is not installed yet (a wave, a window, the update lock,
    /// the next boot), while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// `apply = "on-reboot"`: the release waiting for the next boot, and the boot it was
    /// first seen in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_boot: Option<PendingBoot>,
}

/// A release seen while `apply = "on-reboot"`: installed once the boot id differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PendingBoot {
    /// The artifact's SHA-256.
    pub sha256: String,
    /// The boot it was first seen in.
    pub boot_id: String,
}

/// A journal is a few KiB; a larger file is not one of ours.
pub const MAX_JOURNAL_BYTES: u64 = 4 * 1024 * 1024;

/// Current journal format.
pub const SCHEMA: u32 = 1;

impl State {
    /// A fresh state for an app and channel.
    pub fn new(app: &str, channel: &str) -> State {
        State {
            schema: SCHEMA,
            app: app.to_string(),
            channel: channel.to_string(),
            highest_serial: 0,
            etag: None,
            current: None,
            previous: Vec::new(),
            bad: Vec::new(),
            step: Step::Idle,
            last_error: None,
            outcome: None,
            last_change_at: None,
            last_download: None,
            waiting: None,
            pending_boot: None,
        }
    }

    /// Whether this artifact was marked bad here.
    pub fn is_bad(&self, sha256: &str) -> bool {
        self.bad.iter().any(|bad| bad.sha256 == sha256)
    }

    /// Make `release` the committed one, moving the old one into `previous` (kept to `keep`).
    pub fn commit(&mut self, release: Release, keep: usize) {
        if let Some(old) = self.current.take()
            && old.sha256 != release.sha256
        {
            self.previous.retain(|p| p.sha256 != old.sha256);
            self.previous.insert(0, old);
        }
        self.previous.retain(|p| p.sha256 != release.sha256);
        self.previous.truncate(keep.saturating_sub(1));
        self.current = Some(release);
        self.step = Step::Idle;
        self.last_error = None;
    }

    /// Every artifact the journal still refers to (cache entries that must be kept).
    pub fn referenced_artifacts(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .current
            .iter()
            .chain(self.previous.iter())
            .map(|r| r.sha256.clone())
            .collect();
        match &self.step {
            Step::Idle => {}
            Step::Downloading { target }
            | Step::Installing { target }
            | Step::Restarting { target }
            | Step::Checking { target }
            | Step::RollingBack { target, .. } => list.push(target.sha256.clone()),
        }
        list
    }
}

/// Holds the journal's lock until dropped.
#[derive(Debug)]
pub struct JournalLock {
    _file: std::fs::File,
}

/// The journal file of one app and channel.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal of `app`/`channel` under `state_dir`.
    pub fn new(state_dir: &Path, app: &str, channel: &str) -> Journal {
        Journal {
            path: state_dir.join(format!("{app}.{channel}.state.json")),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the journal's lock for as long as the returned guard lives, so two agents (a
    /// daemon and a hand-run `--once`) never update the same app at once. The lock is an
    /// `flock` on `<journal>.lock`, released by the kernel when the process dies.
    pub fn lock(&self) -> Result<JournalLock, Error> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = self.path.with_extension("lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open the lock file", &path, e))?;
        // SAFETY: flock(2) on a file descriptor we own; no memory is shared with the kernel.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::AlreadyRunning {
                path,
                holder: holder.trim().to_string(),
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(JournalLock { _file: file })
    }

    /// Read the state, or a fresh one if there is no journal yet.
    pub fn load(&self, app: &str, channel: &str) -> Result<State, Error> {
        let Some(state) = read_json::<State>(&self.path, "read the journal")? else {
            return Ok(State::new(app, channel));
        };
        if state.schema != SCHEMA {
            return Err(Error::Journal {
                path: self.path.clone(),
                message: format!("schema {} is not {SCHEMA}", state.schema),
            });
        }
        if state.app != app || state.channel != channel {
            return Err(Error::Journal {
                path: self.path.clone(),
                message: format!(
                    "it belongs to {}/{}, not {app}/{channel}",
                    state.app, state.channel
                ),
            });
        }
        Ok(state)
    }

    /// Read the state if a journal exists.
    pub fn load_existing(&self, app: &str, channel: &str) -> Result<Option<State>, Error> {
        if !self.path.exists() {
            return Ok(None);
        }
        self.load(app, channel).map(Some)
    }

    /// Write the state atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        write_json(&self.path, state)
    }
}

/// Read a JSON journal (the release, config or self-update one); `None` when there is none
/// yet. A journal that cannot be parsed is an error, never silently reset.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    action: &'static str,
) -> Result<Option<T>, Error> {
    let bytes = match ferry_release::read_local_file(path, MAX_JOURNAL_BYTES) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(action, path, error)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| Error::Journal {
            path: path.to_owned(),
            message: error.to_string(),
        })
}

/// Write a JSON journal atomically and durably (temp file, fsync, rename, fsync the directory).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|error| Error::Journal {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str, serial: u64) -> Release {
        Release {
            version: version.into(),
            serial,
            sha256: format!("{version:0>64}"),
            size: 10,
            path: format!("artifacts/{version}.deb"),
        }
    }

    #[test]
    fn a_missing_journal_is_a_fresh_state_and_a_saved_one_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path(), "hello", "stable");
        assert_eq!(
            journal.load("hello", "stable").unwrap(),
            State::new("hello", "stable")
        );
        let mut state = State::new("hello", "stable");
        state.step = Step::RollingBack {
            target: release("2", 2),
            reason: "unhealthy".into(),
        };
        state.highest_serial = 2;
        journal.save(&state).unwrap();
        assert_eq!(journal.load("hello", "stable").unwrap(), state);
    }

    #[test]
    fn a_corrupt_or_foreign_journal_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path(), "hello", "stable");
        std::fs::write(journal.path(), "{\"schema\":1,").unwrap();
        assert!(matches!(
            journal.load("hello", "stable"),
            Err(Error::Journal { .. })
        ));
        journal.save(&State::new("other", "stable")).unwrap();
        let error = journal.load("hello", "stable").unwrap_err();
        assert!(error.to_string().contains("other/stable"), "{error}");
    }

    #[test]
    fn a_second_agent_cannot_take_the_lock_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path(), "hello", "stable");
        let first = journal.lock().unwrap();
        let error = journal.lock().unwrap_err();
        assert!(
            error.to_string().contains(&std::process::id().to_string()),
            "{error}"
        );
        drop(first);
        journal.lock().unwrap();
    }

    #[test]
    fn commit_keeps_previous_releases_newest_first_and_bounded() {
        let mut state = State::new("hello", "stable");
        for serial in 1..=4 {
            state.commit(release(&serial.to_string(), serial), 3);
        }
        assert_eq!(state.current.as_ref().unwrap().version, "4");
        let previous: Vec<_> = state.previous.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(previous, ["3", "2"]);
        // Rolling back to 3 (a new serial naming an older release) does not duplicate it.
        state.commit(
            Release {
                serial: 5,
                ..release("3", 3)
            },
            3,
        );
        let previous: Vec<_> = state.previous.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(previous, ["4", "2"]);
    }
}
