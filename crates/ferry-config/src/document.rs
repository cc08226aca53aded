//! The config bundle document and where it lives in the store:
//! `apps/<app>/config/<channel>.json` (the pointer agents poll, a copy of the newest bundle)
//! and `apps/<app>/config/<channel>/<serial>.json` (every bundle ever pushed, immutable).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Error;
use ferry_release::{KeyId, TrustedKeys};

/// The schema number of bundle documents; readers refuse others.
pub const SCHEMA: u32 = 1;
/// The most files one bundle may hold.
pub const MAX_BUNDLE_FILES: usize = 64;

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// The file name on the host, inside the agent's config directory (no `/`).
    pub name: String,
    /// Permission bits, e.g. `0o640`.
    pub mode: u32,
    /// The UTF-8 text (secrets by reference only: `KEY=@file:/path` in `.env` files).
    pub content: String,
}

/// A config bundle: the files of one app and channel at one serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// Grows with every push (a rollback is a new, higher serial).
    pub serial: u64,
    /// The files, sorted by name, names unique.
    pub files: Vec<BundleFile>,
    /// When this serial was pushed.
    #[serde(with = "time::serde::rfc3339")]
    pub pushed_at: OffsetDateTime,
    /// Set on a rollback: the serial whose files this one repeats.
    #[serde(default)]
    pub copied_from: Option<u64>,
}

impl Bundle {
    /// Check the invariants a reader relies on: schema, names, no duplicates, count.
    pub fn validate(&self, what: &str) -> Result<(), Error> {
        let malformed = |message: String| Error::Malformed {
            what: what.to_owned(),
            message,
        };
        if self.schema != SCHEMA {
            return Err(malformed(format!(
                "schema {} is not {SCHEMA} (a newer ferry wrote it?)",
                self.schema
            )));
        }
        if self.files.len() > MAX_BUNDLE_FILES {
            return Err(malformed(format!(
                "{} files, at most {MAX_BUNDLE_FILES}",
                self.files.len()
            )));
        }
        for (index, file) in self.files.iter().enumerate() {
            check_name(&file.name)
                .map_err(|message| malformed(format!("file {:?}: {message}", file.name)))?;
            if file.mode > 0o777 {
                return Err(malformed(format!(
                    "file {:?}: mode {:o} is not a permission",
                    file.name, file.mode
                )));
            }
            if self.files[..index]
                .iter()
                .any(|other| other.name == file.name)
            {
                return Err(malformed(format!("file {:?} appears twice", file.name)));
            }
        }
        Ok(())
    }

    /// A one-line summary for logs and listings: `hello.env (0640, 52 B), app.toml (…)`.
    pub fn summary(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|file| {
                format!(
                    "{} ({:04o}, {} B)",
                    file.name,
                    file.mode,
                    file.content.len()
                )
            })
            .collect();
        files.join(", ")
    }
}

/// A file name a bundle may hold: the name rule every store path segment follows — one flat
/// directory on the host, nothing hidden, no path tricks.
pub(crate) use ferry_release::check_name;

/// The pointer agents poll: `apps/<app>/config/<channel>.json`.
pub fn bundle_path(app: &str, channel: &str) -> String {
    ferry_release::layout::config(app, channel)
}

/// One immutable bundle: `apps/<app>/config/<channel>/<serial>.json`.
pub fn history_path(app: &str, channel: &str, serial: u64) -> String {
    ferry_release::layout::config_history(app, channel, serial)
}

/// The folder holding every bundle of a channel.
pub fn history_prefix(app: &str, channel: &str) -> String {
    ferry_release::layout::config_history_prefix(app, channel)
}

/// Verify a stored bundle (envelope bytes): signature by a trusted key, app, channel, schema,
/// names, and a serial not below `highest_seen`.
pub fn verify_bundle(
    bytes: &[u8],
    trusted: &TrustedKeys,
    app: &str,
    channel: &str,
    highest_seen: Option<u64>,
) -> Result<(Bundle, KeyId), Error> {
    let what = format!("{app}/{channel}");
    let (payload, key_id) =
        ferry_release::verify_envelope(bytes, trusted, &format!("config bundle {what}"))?;
    let bundle: Bundle = serde_json::from_str(&payload).map_err(|error| Error::Malformed {
        what: what.clone(),
        message: error.to_string(),
    })?;
    bundle.validate(&what)?;
    if bundle.app != app || bundle.channel != channel {
        return Err(Error::Malformed {
            what,
            message: format!(
                "it is for {}/{}, not {app}/{channel}",
                bundle.app, bundle.channel
            ),
        });
    }
    if let Some(highest_seen) = highest_seen {
        if bundle.serial < highest_seen {
            return Err(Error::SerialRegressed {
                app: app.to_owned(),
                channel: channel.to_owned(),
                serial: bundle.serial,
                highest_seen,
            });
        }
    }
    Ok((bundle, key_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_flat_and_visible() {
        assert!(check_name("hello.env").is_ok());
        assert!(check_name("app-1_x+y.toml").is_ok());
        for bad in ["", ".env", "../x", "a/b", "a b", "ü"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validate_refuses_duplicates_and_bad_modes() {
        let file = |name: &str, mode: u32| BundleFile {
            name: name.to_owned(),
            mode,
            content: String::new(),
        };
        let mut bundle = Bundle {
            schema: SCHEMA,
            app: "hello".to_owned(),
            channel: "stable".to_owned(),
            serial: 1,
            files: vec![file("a.env", 0o640), file("a.env", 0o640)],
            pushed_at: OffsetDateTime::UNIX_EPOCH,
            copied_from: None,
        };
        assert!(
            bundle
                .validate("t")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        bundle.files = vec![file("a.env", 0o4755)];
        assert!(
            bundle
                .validate("t")
                .unwrap_err()
                .to_string()
                .contains("mode")
        );
        bundle.files = vec![file("a.env", 0o600)];
        bundle.validate("t").unwrap();
    }
}
