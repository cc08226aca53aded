//! Every path of the store layout (DESIGN.md "Store layout"), in one place. Publishers, agents,
//! status readers and bundles all build their paths here, so the layout cannot drift between
//! the one who writes an object and the one who reads it.

/// Where content-addressed artifacts live.
pub const ARTIFACTS: &str = "artifacts";
/// Where ferry keeps small objects of its own (the conditional-write probe verdict, the
/// `file://` swap lock).
pub const FERRY_PRIVATE: &str = ".ferry";
/// The folder holding every app.
pub const APPS: &str = "apps";

/// `artifacts/<sha256>.deb`.
pub fn artifact(sha256: &str) -> String {
    format!("{ARTIFACTS}/{sha256}.deb")
}

/// `artifacts/<sha256>.deb.minisig`, the artifact's detached signature.
pub fn artifact_signature(sha256: &str) -> String {
    format!("{}.minisig", artifact(sha256))
}

/// `artifacts/patches/<sha256>.bsdiff`, a content-addressed patch between two artifacts.
pub fn patch(sha256: &str) -> String {
    format!("{ARTIFACTS}/patches/{sha256}.bsdiff")
}

/// `apps/<app>/deltas/<version>.json`, the signed index of a release's patches.
pub fn deltas(app: &str, version: &str) -> String {
    format!("{APPS}/{app}/deltas/{version}.json")
}

/// `apps/<app>/keyring.json`, the app's current keyring (docs/trust.md).
pub fn keyring(app: &str) -> String {
    format!("{APPS}/{app}/keyring.json")
}

/// `apps/<app>/keyring/<serial>.json`, every keyring ever written (agents walk them).
pub fn keyring_history(app: &str, serial: u64) -> String {
    format!("{APPS}/{app}/keyring/{serial}.json")
}

/// `apps/<app>/staged/<channel>.json`, a pointer waiting for more signatures.
pub fn staged_pointer(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/staged/{channel}.json")
}

/// `apps/<app>/releases/<version>.json`.
pub fn release(app: &str, version: &str) -> String {
    format!("{APPS}/{app}/releases/{version}.json")
}

/// `apps/<app>/channels/<channel>.json`, the pointer agents poll.
pub fn channel(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/channels/{channel}.json")
}

/// `apps/<app>/channels/<channel>/history`, every state the pointer was in.
pub fn channel_history_prefix(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/channels/{channel}/history")
}

/// `apps/<app>/channels/<channel>/history/<serial>.json`.
pub fn channel_history(app: &str, channel: &str, serial: u64) -> String {
    format!("{}/{serial}.json", channel_history_prefix(app, channel))
}

/// `apps/<app>/hosts`, the folder of host reports.
pub fn hosts_prefix(app: &str) -> String {
    format!("{APPS}/{app}/hosts")
}

/// `apps/<app>/hosts/<host-id>.json`, one host's report.
pub fn host_report(app: &str, host_id: &str) -> String {
    format!("{}/{host_id}.json", hosts_prefix(app))
}

/// `apps/<app>/hosts-shards`, the folder of report shards (docs/scale.md).
pub fn host_shards_prefix(app: &str) -> String {
    format!("{APPS}/{app}/hosts-shards")
}

/// `apps/<app>/hosts-shards/<of>/<shard>.json`, one shard of `of`.
pub fn host_shard(app: &str, of: u32, shard: u32) -> String {
    format!("{}/{of}/{shard}.json", host_shards_prefix(app))
}

/// `apps/<app>/locks/<channel>.json`, the deploy lock of a channel (`ferry deploy`).
pub fn deploy_lock(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/locks/{channel}.json")
}

/// `apps/<app>/config/<channel>.json`, the config pointer agents poll.
pub fn config(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/config/{channel}.json")
}

/// `apps/<app>/config/<channel>`, every bundle ever pushed.
pub fn config_history_prefix(app: &str, channel: &str) -> String {
    format!("{APPS}/{app}/config/{channel}")
}

/// `apps/<app>/config/<channel>/<serial>.json`, one immutable bundle.
pub fn config_history(app: &str, channel: &str, serial: u64) -> String {
    format!("{}/{serial}.json", config_history_prefix(app, channel))
}

/// How long a cache (a CDN, nginx in front of the bucket) may keep an object, by its place in
/// the layout. Publishers set it as `Cache-Control` on S3 writes; docs/scale.md has the same
/// rules for a static server in front of a `file://` store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Never rewritten: content-addressed artifacts and patches, every history entry,
    /// release manifests and delta indexes. Cached for a year.
    Immutable,
    /// Rewritten in place: channel and config pointers, the current keyring, staged pointers.
    /// Cached for the short pointer max-age only.
    Mutable,
    /// Not for caches at all: host reports and ferry's own objects.
    Private,
}

/// The caching class of a store path (relative to the store root).
pub fn caching(path: &str) -> Caching {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [ARTIFACTS, ..] => Caching::Immutable,
        [FERRY_PRIVATE, ..] => Caching::Private,
        [APPS, _, "hosts" | "hosts-shards" | "locks", ..] => Caching::Private,
        [APPS, _, "releases" | "deltas", _] => Caching::Immutable,
        [APPS, _, "channels", _, "history", _] => Caching::Immutable,
        [APPS, _, "config", _, _] => Caching::Immutable,
        [APPS, _, "keyring", _] => Caching::Immutable,
        _ => Caching::Mutable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_path_has_the_caching_its_writes_allow() {
        let sha = "ab".repeat(32);
        for immutable in [
            artifact(&sha),
            artifact_signature(&sha),
            patch(&sha),
            deltas("web", "1.0.0-1"),
            keyring_history("web", 3),
            release("web", "1.0.0-1"),
            channel_history("web", "stable", 7),
            config_history("web", "stable", 2),
        ] {
            assert_eq!(caching(&immutable), Caching::Immutable, "{immutable}");
        }
        for mutable in [
            keyring("web"),
            staged_pointer("web", "stable"),
            channel("web", "stable"),
            config("web", "stable"),
        ] {
            assert_eq!(caching(&mutable), Caching::Mutable, "{mutable}");
        }
        for private in [
            host_report("web", "h1"),
            host_shard("web", 256, 7),
            deploy_lock("web", "stable"),
            format!("{FERRY_PRIVATE}/probe/1"),
        ] {
            assert_eq!(caching(&private), Caching::Private, "{private}");
        }
    }

    #[test]
    fn paths_follow_the_documented_layout() {
        assert_eq!(artifact("ab"), "artifacts/ab.deb");
        assert_eq!(artifact_signature("ab"), "artifacts/ab.deb.minisig");
        assert_eq!(release("hello", "1.0"), "apps/hello/releases/1.0.json");
        assert_eq!(
            channel("hello", "stable"),
            "apps/hello/channels/stable.json"
        );
        assert_eq!(
            channel_history("hello", "stable", 7),
            "apps/hello/channels/stable/history/7.json"
        );
        assert_eq!(host_report("hello", "web-1"), "apps/hello/hosts/web-1.json");
        assert_eq!(config("hello", "stable"), "apps/hello/config/stable.json");
        assert_eq!(
            config_history("hello", "stable", 3),
            "apps/hello/config/stable/3.json"
        );
    }
}
