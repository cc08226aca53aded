//! Copies of the serial floor that outlive the journal. The highest serial an agent accepted
//! is what stops a replayed old pointer from taking the host backwards; it must not live in
//! one file. Each accepted pointer's signed bytes are also written next to the installed files
//! (the unpack root) and into the artifact cache, and at start the agent takes the highest
//! serial among every copy that still verifies with its trusted keys — a forged or garbled copy
//! counts for nothing, and nothing is ever taken from the store.

use std::path::PathBuf;

use ferry_release::{ChannelPointer, MAX_DOCUMENT_BYTES, TrustedKeys};

use crate::config::Settings;
use crate::fsutil::write_atomic;
use crate::install::Install;

/// Where the copies of one app and channel's floor live.
#[derive(Debug, Clone)]
pub struct FloorRecords {
    paths: Vec<PathBuf>,
}

impl FloorRecords {
    /// The copies for `settings`: the cache directory, and the install root with `unpack`.
    pub fn new(settings: &Settings) -> FloorRecords {
        let name = format!("{}.{}.floor.json", settings.app, settings.channel);
        let mut paths = vec![settings.cache_dir.join(&name)];
        if let Install::Unpack { root, .. } = &settings.install {
            paths.push(root.join(".ferry").join(&name));
        }
        FloorRecords { paths }
    }

    /// The highest serial among the copies that verify as pointers of `app`/`channel` signed
    /// by a trusted key (expiry does not matter here: an expired pointer was still accepted).
    pub fn recover(&self, trusted: &TrustedKeys, app: &str, channel: &str) -> u64 {
        let mut highest = 0;
        for path in &self.paths {
            let Ok(bytes) = ferry_release::read_local_file(path, MAX_DOCUMENT_BYTES as u64) else {
                continue;
            };
            let what = format!("floor record {}", path.display());
            let verified = ferry_release::verify_envelope(&bytes, trusted, &what)
                .ok()
                .and_then(|(payload, _)| serde_json::from_str::<ChannelPointer>(&payload).ok())
                .filter(|pointer| {
                    pointer.app == app
                        && pointer.channel == channel
                        && ferry_release::serial_is_possible(pointer.serial)
                });
            match verified {
                Some(pointer) => highest = highest.max(pointer.serial),
                None => {
                    tracing::warn!(record = %path.display(), "floor record does not verify; ignored")
                }
            }
        }
        highest
    }

    /// Keep `envelope` (the signed pointer just accepted) in every copy. Best effort: a copy
    /// that cannot be written is logged, the journal still holds the floor.
    pub fn record(&self, envelope: &[u8]) {
        for path in &self.paths {
            if let Err(error) = write_atomic(path, envelope) {
                tracing::warn!(record = %path.display(), "cannot keep a copy of the serial floor: {error}");
            }
        }
    }
}
