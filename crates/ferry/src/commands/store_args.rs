//! Flags shared by the store commands (`--store`, `--s3-endpoint`, `--app`, `--channel`,
//! `--key`) and the glue they all need: a tokio runtime, an opened store, a loaded key, and a
//! progress bar that only draws on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use ferry_release::{SigningKey, TrustedKeys};
use ferry_store::{Progress, Signer, Store, StoreOptions};

use crate::env;

/// Where the store is.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store: file:///path or s3://bucket/prefix (http(s):// stores are read-only).
    #[arg(long, env = env::FERRY_STORE, value_name = "URL")]
    pub store: String,
    /// A custom S3 endpoint (MinIO, Garage, a local server); AWS_ENDPOINT_URL works too.
    #[arg(long, env = env::FERRY_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// How long a CDN or cache in front of an S3 store may serve a pointer it wrote (its
    /// Cache-Control max-age); agents see a publish at most this much later (docs/scale.md).
    #[arg(long, env = env::FERRY_POINTER_MAX_AGE, value_name = "DURATION", default_value = "10s", value_parser = parse_max_age)]
    pub pointer_max_age: std::time::Duration,
}

fn parse_max_age(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error}; write e.g. 10s or 1m"))
}

impl StoreArgs {
    /// Open the store; `create` makes a missing file:// directory (`--create-store`). Without
    /// it a missing directory is an error: a typo'd path must not become a new, empty store
    /// that no agent reads.
    pub fn open(&self, create: bool) -> anyhow::Result<Store> {
        if !create {
            if let Some(path) = self.store.strip_prefix("file://") {
                if path.starts_with('/') && !Path::new(path).exists() {
                    anyhow::bail!(
                        "store directory {path} does not exist: check the --store URL for a typo, or pass --create-store to start a new store there"
                    );
                }
            }
        }
        self.open_with(StoreOptions {
            create_local_root: create,
            ..StoreOptions::default()
        })
    }

    /// Open the store for planning only: a missing file:// directory reads as empty.
    pub fn open_for_plan(&self) -> anyhow::Result<Store> {
        self.open_with(StoreOptions {
            missing_local_root_is_empty: true,
            ..StoreOptions::default()
        })
    }

    fn open_with(&self, local: StoreOptions) -> anyhow::Result<Store> {
        let options = StoreOptions {
            create_local_root: local.create_local_root,
            missing_local_root_is_empty: local.missing_local_root_is_empty,
            pointer_max_age: self.pointer_max_age,
            ..env::store_options(self.s3_endpoint.clone())
        };
        Store::open(&self.store, &options)
            .with_context(|| format!("cannot open store {}", self.store))
    }
}

/// One channel of one app in a store: the flags every channel command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ChannelArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The app.
    #[arg(long, env = env::FERRY_APP, value_parser = parse_name)]
    pub app: String,
    /// The channel.
    #[arg(long, env = env::FERRY_CHANNEL, default_value = "stable", value_parser = parse_name)]
    pub channel: String,
}

/// clap's check of an app or channel name: ferry's one name rule.
pub fn parse_name(text: &str) -> Result<String, String> {
    ferry_release::check_name(text).map(|()| text.to_owned())
}

/// The secret key that signs, and what the signer trusts of the state it builds on.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The minisign secret key (PREFIX.key from `ferry keygen`, or minisign.key), or
    /// `env:VAR` to read the key's text from the environment variable VAR (CI secrets); an
    /// encrypted key takes its password from FERRY_KEY_PASSWORD.
    #[arg(long, env = env::FERRY_KEY, value_name = "FILE")]
    pub key: PathBuf,
    /// Public keys besides your own whose pointer states you build on (repeat, or separate
    /// with commas); default: FERRY_TRUST. The current state must verify with one of them.
    #[arg(long = "trust", value_delimiter = ',', value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// The current state was signed by another trusted key and this signature starts a new
    /// one (a key rotation: the agents must already trust the new key).
    #[arg(long)]
    pub new_key: bool,
    /// Build on the highest verified history entry instead of the current pointer, replacing
    /// a pointer that does not verify (after someone wrote the store without the key).
    #[arg(long)]
    pub force_reset: bool,
}

impl KeyArgs {
    /// Load the key.
    pub fn load(&self) -> anyhow::Result<SigningKey> {
        load_key(&self.key)
    }

    /// The signer: `key` plus the trusted keys and the flags above.
    pub fn signer<'a>(&self, key: &'a SigningKey) -> anyhow::Result<Signer<'a>> {
        let paths = if self.trust.is_empty() {
            env::trust_from_env().unwrap_or_default()
        } else {
            self.trust.clone()
        };
        let trusted = TrustedKeys::from_files(&paths).context("cannot load the --trust keys")?;
        let mut signer = Signer::new(key, &trusted);
        signer.new_key = self.new_key;
        signer.force_reset = self.force_reset;
        if self.force_reset {
            tracing::warn!(key = %key.id(), "--force-reset: the channel continues from its highest verified serial");
        }
        Ok(signer)
    }
}

/// Load a secret key from a file, or with `env:VAR` from the environment variable VAR (the
/// file's text; for CI secrets that should never touch a disk).
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let password = std::env::var(env::FERRY_KEY_PASSWORD).ok();
    if let Some(variable) = path.to_str().and_then(|text| text.strip_prefix("env:")) {
        let text = std::env::var(variable).map_err(|_| {
            anyhow::anyhow!(
                "--key {}: the environment variable {variable} is not set (or not UTF-8); put the secret key file's text in it",
                path.display()
            )
        })?;
        return SigningKey::from_text(&text, path, password)
            .with_context(|| format!("cannot load the signing key from {variable}"));
    }
    SigningKey::from_file(path, password)
        .with_context(|| format!("cannot load signing key {}", path.display()))
}

/// A runtime for the async store calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub struct TerminalProgress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    enabled: bool,
}

impl TerminalProgress {
    pub fn new(quiet: bool) -> TerminalProgress {
        // A bar is info-level output: `-q` (or RUST_LOG=error) turns it off like the logs.
        let wanted = !quiet && tracing::enabled!(tracing::Level::INFO);
        TerminalProgress {
            bar: Mutex::new(None),
            enabled: wanted && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(bytes);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}
