//! `ferry keyring`: the app's keyring (docs/trust.md) — which release keys may sign which
//! channels, how many signatures each channel needs, which keys are revoked, and the root
//! keys that sign the next keyring. Every change is a new keyring with the next serial,
//! signed with the root keys given (`--root-key`, a threshold of the current roots).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_release::{Keyring, KeyringKey, SCHEMA, SigningKey, TrustedKeys};
use ferry_store::Store;

use super::store_args::{StoreArgs, load_key, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyringCommand,
}

/// The store and app every subcommand works on.
#[derive(Debug, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The app whose keyring this is.
    #[arg(long, env = env::FERRY_APP)]
    pub app: String,
}

/// The root keys that sign the change.
#[derive(Debug, clap::Args)]
pub struct RootKeys {
    /// A root secret key (repeat up to the root threshold).
    #[arg(long = "root-key", value_name = "FILE", required = true)]
    pub root_keys: Vec<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyringCommand {
    /// Write the first keyring: its root keys, no release keys yet.
    Init {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// How many root keys must sign the next keyring.
        #[arg(long, default_value = "1")]
        root_threshold: usize,
    },
    /// Allow a release key to sign channels.
    Add {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// A name for the key (`alice`, `ci`).
        #[arg(long)]
        name: String,
        /// Its public key file.
        #[arg(long, value_name = "PUBKEY")]
        pubkey: PathBuf,
        /// The channels it may sign (`*`: all).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        channels: Vec<String>,
    },
    /// Take a key out of the keyring.
    Remove {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
    /// Revoke a key: agents refuse pointers it signed alone from their next poll.
    Revoke {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
    /// Set how many signatures a channel's pointer needs (`*`: every other channel).
    Threshold {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// The channel.
        #[arg(long)]
        channel: String,
        /// Signatures needed.
        #[arg(long)]
        count: usize,
    },
    /// Replace the root keys; the keyring is signed by the current ones, so agents follow.
    RotateRoot {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        roots: RootKeys,
        /// A new root public key (repeat).
        #[arg(long = "new-root", value_name = "PUBKEY", required = true)]
        new_roots: Vec<PathBuf>,
        /// How many new root keys must sign the next keyring.
        #[arg(long, default_value = "1")]
        new_root_threshold: usize,
    },
    /// Print the keyring.
    Show {
        #[command(flatten)]
        target: Target,
        /// Verify it from these pinned root keys (as an agent would).
        #[arg(long = "trust-root", value_name = "PUBKEY")]
        trust_root: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The base64 line of a public key file's text (what a keyring lists).
fn base64_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("untrusted comment:"))
        .unwrap_or_default()
        .to_owned()
}

/// The base64 line of a public key file, checked to be a minisign key.
fn public_line(path: &Path) -> anyhow::Result<String> {
    let text = ferry_release::read_local_text(path, 16 * 1024)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    TrustedKeys::new()
        .add_text(&text, path)
        .with_context(|| format!("{} is not a minisign public key", path.display()))?;
    Ok(base64_line(&text))
}

fn public_of(key: &SigningKey) -> anyhow::Result<String> {
    Ok(base64_line(&key.public_key_text()?))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    match args.command {
        KeyringCommand::Show {
            target,
            trust_root,
            json,
        } => {
            let store = target.store.open(false)?;
            let keyring = if trust_root.is_empty() {
                runtime.block_on(ferry_store::read_keyring(&store, &target.app))?
            } else {
                let pinned =
                    TrustedKeys::from_files(&trust_root).context("cannot load --trust-root")?;
                runtime
                    .block_on(ferry_store::refresh_keyring(
                        &store,
                        &target.app,
                        None,
                        &pinned,
                    ))
                    .with_context(|| {
                        format!(
                            "the keyring of {} does not verify from the pinned roots",
                            target.app
                        )
                    })?
            };
            let Some(keyring) = keyring else {
                bail!(
                    "{} has no keyring in {} (ferry keyring init writes one)",
                    target.app,
                    store.url()
                );
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&keyring)?);
            } else {
                print_keyring(&keyring);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyringCommand::Init {
            target,
            roots,
            root_threshold,
        } => {
            let store = target.store.open(false)?;
            let keys = load_roots(&roots)?;
            if runtime
                .block_on(ferry_store::read_keyring(&store, &target.app))?
                .is_some()
            {
                bail!(
                    "{} already has a keyring; change it with ferry keyring add/revoke/rotate-root",
                    target.app
                );
            }
            let publics = keys
                .iter()
                .map(public_of)
                .collect::<anyhow::Result<Vec<_>>>()?;
            if root_threshold == 0 || root_threshold > publics.len() {
                bail!(
                    "--root-threshold {root_threshold} needs between 1 and {} root keys",
                    publics.len()
                );
            }
            let keyring = Keyring {
                schema: SCHEMA,
                app: target.app.clone(),
                serial: 1,
                roots: publics,
                root_threshold,
                keys: Vec::new(),
                thresholds: BTreeMap::new(),
                published_at: ferry_release::now_utc(),
            };
            let signers: Vec<&SigningKey> = keys.iter().collect();
            write(&runtime, &store, &keyring, &signers)
        }
        KeyringCommand::Add {
            target,
            roots,
            name,
            pubkey,
            channels,
        } => change(&runtime, &target, &roots, |keyring| {
            let public_key = public_line(&pubkey)?;
            if keyring.keys.iter().any(|key| key.name == name) {
                bail!("the keyring already has a key named {name:?} (remove it first)");
            }
            keyring.keys.push(KeyringKey {
                name: name.clone(),
                public_key,
                channels: channels.clone(),
                revoked: false,
            });
            Ok(())
        }),
        KeyringCommand::Remove {
            target,
            roots,
            name,
        } => change(&runtime, &target, &roots, |keyring| {
            let before = keyring.keys.len();
            keyring.keys.retain(|key| key.name != name);
            if keyring.keys.len() == before {
                bail!("the keyring has no key named {name:?}");
            }
            Ok(())
        }),
        KeyringCommand::Revoke {
            target,
            roots,
            name,
        } => change(&runtime, &target, &roots, |keyring| {
            let key = keyring
                .keys
                .iter_mut()
                .find(|key| key.name == name)
                .with_context(|| format!("the keyring has no key named {name:?}"))?;
            key.revoked = true;
            Ok(())
        }),
        KeyringCommand::Threshold {
            target,
            roots,
            channel,
            count,
        } => change(&runtime, &target, &roots, |keyring| {
            if count == 0 {
                bail!("--count must be at least 1");
            }
            keyring.thresholds.insert(channel.clone(), count);
            Ok(())
        }),
        KeyringCommand::RotateRoot {
            target,
            roots,
            new_roots,
            new_root_threshold,
        } => change(&runtime, &target, &roots, |keyring| {
            let publics = new_roots
                .iter()
                .map(|path| public_line(path))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if new_root_threshold == 0 || new_root_threshold > publics.len() {
                bail!(
                    "--new-root-threshold {new_root_threshold} needs between 1 and {} new roots",
                    publics.len()
                );
            }
            keyring.roots = publics;
            keyring.root_threshold = new_root_threshold;
            Ok(())
        }),
    }
}

fn load_roots(roots: &RootKeys) -> anyhow::Result<Vec<SigningKey>> {
    roots.root_keys.iter().map(|path| load_key(path)).collect()
}

/// Read the keyring, check the given root keys are enough to sign its successor, apply
/// `edit`, and write it with the next serial.
fn change(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    roots: &RootKeys,
    edit: impl FnOnce(&mut Keyring) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let store = target.store.open(false)?;
    let keys = load_roots(roots)?;
    let mut keyring = runtime
        .block_on(ferry_store::read_keyring(&store, &target.app))?
        .with_context(|| format!("{} has no keyring yet: ferry keyring init", target.app))?;
    let current_roots = keyring.root_keys()?;
    let signing: Vec<_> = keys
        .iter()
        .filter(|key| current_roots.ids().contains(&key.id()))
        .collect();
    if signing.len() < keyring.root_threshold {
        bail!(
            "the keyring of {} must be signed by {} of its root keys; {} of the --root-key files are roots",
            target.app,
            keyring.root_threshold,
            signing.len()
        );
    }
    edit(&mut keyring)?;
    keyring.serial =
        ferry_release::next_serial(keyring.serial).context("the keyring serial is exhausted")?;
    keyring.published_at = ferry_release::now_utc();
    write(runtime, &store, &keyring, &signing)
}

fn write(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    keyring: &Keyring,
    keys: &[&SigningKey],
) -> anyhow::Result<ExitCode> {
    runtime
        .block_on(ferry_store::write_keyring(store, keyring, keys))
        .with_context(|| format!("cannot write the keyring of {}", keyring.app))?;
    println!(
        "keyring of {} is now serial {} (signed by {} root key{})",
        keyring.app,
        keyring.serial,
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_keyring(keyring: &Keyring) {
    println!(
        "keyring of {}: serial {}, {} of {} root keys sign the next one",
        keyring.app,
        keyring.serial,
        keyring.root_threshold,
        keyring.roots.len()
    );
    for key in &keyring.keys {
        let id = TrustedKeys::new()
            .add_text(&key.public_key, Path::new(&key.name))
            .map(|id| id.to_string())
            .unwrap_or_else(|_| "?".into());
        println!(
            "  {:<12} {id}  channels {}{}",
            key.name,
            key.channels.join(","),
            if key.revoked { "  REVOKED" } else { "" }
        );
    }
    for (channel, count) in &keyring.thresholds {
        println!("  channel {channel}: {count} signatures");
    }
}
