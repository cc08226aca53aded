//! `ferry sign`: add your signature to the pointer `ferry publish --stage` left for a channel
//! whose keyring asks for several (docs/trust.md); once enough allowed keys have signed, the
//! channel moves to it with the usual compare-and-swap. Each signature is a plain minisign
//! signature of the same payload, checkable with `minisign -V`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_release::{Keyring, TrustedKeys};
use ferry_store::{PointerDocument, Store};

use super::store_args::{ChannelArgs, load_key, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    /// Your secret key (a key of the keyring allowed on this channel).
    #[arg(long, env = env::FERRY_KEY, value_name = "FILE")]
    pub key: PathBuf,
    /// Verify the keyring from these pinned root keys first (as agents do).
    #[arg(long = "trust-root", value_name = "PUBKEY")]
    pub trust_root: Vec<PathBuf>,
}

/// The app's keyring: verified from `trust_root` when given, else as stored.
pub fn keyring_of(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    app: &str,
    trust_root: &[PathBuf],
) -> anyhow::Result<Option<Keyring>> {
    if trust_root.is_empty() {
        return Ok(runtime.block_on(ferry_store::read_keyring(store, app))?);
    }
    let pinned = TrustedKeys::from_files(trust_root).context("cannot load --trust-root")?;
    runtime
        .block_on(ferry_store::refresh_keyring(store, app, None, &pinned))
        .with_context(|| format!("the keyring of {app} does not verify from the pinned roots"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (app, channel) = (&args.target.app, &args.target.channel);
    let store = args.target.store.open(false)?;
    let runtime = runtime()?;
    let key = load_key(&args.key)?;
    let keyring = keyring_of(&runtime, &store, app, &args.trust_root)?
        .with_context(|| format!("{app} has no keyring: ferry sign collects signatures for keyring thresholds (ferry keyring init)"))?;
    let allowed = keyring.trusted_for(channel)?;
    if !allowed.ids().contains(&key.id()) {
        bail!(
            "key {} may not sign {app}/{channel}: it is not in the keyring for that channel, or it is revoked (ferry keyring show)",
            key.id()
        );
    }
    let (pointer, mut envelope) = runtime
        .block_on(ferry_store::read_staged(&store, app, channel))?
        .with_context(|| {
            format!(
                "nothing is staged for {app}/{channel} (ferry publish --stage stages a release)"
            )
        })?;
    if pointer.app != *app || pointer.channel != *channel {
        bail!(
            "the staged pointer names {}/{}, not {app}/{channel}",
            pointer.app,
            pointer.channel
        );
    }
    envelope.add_signature(&key, &pointer.comment())?;
    // Count the valid signatures of allowed keys.
    let need = keyring.threshold(channel);
    let counted = ferry_release::verify_envelope_signers(
        &envelope.to_bytes(),
        &allowed.clone().with_threshold(1),
        "the staged pointer",
    )
    .map(|(_, signers)| signers.len())
    .context("the staged pointer's signatures do not verify")?;
    let version = &pointer.release.version;
    if counted < need {
        runtime.block_on(ferry_store::write_staged(&store, &pointer, &envelope))?;
        println!(
            "signed {app} {version} for {app}/{channel} serial {} with key {}: {counted} of {need} signatures; another allowed key signs with `ferry sign --app {app} --channel {channel}`",
            pointer.serial,
            key.id()
        );
        return Ok(ExitCode::SUCCESS);
    }
    runtime
        .block_on(ferry_store::commit_staged(&store, &pointer, &envelope))
        .with_context(|| format!("cannot move {app}/{channel} to the staged pointer"))?;
    println!(
        "published {app} {version} to {app}/{channel} serial {} with {counted} of {need} signatures",
        pointer.serial
    );
    Ok(ExitCode::SUCCESS)
}
