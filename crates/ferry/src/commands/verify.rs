//! `ferry verify`: check a channel as an agent would — the pointer's signature (by a trusted
//! key), app, channel, serial and expiry, the release it names, and every artifact re-hashed
//! and checked against its `.minisig`. Exit code 0: verified; 2: rejected (tampered, untrusted,
//! replayed, missing pieces); 1: could not check (store unreachable, bad arguments).
//!
//! Like an agent, it refuses a serial lower than the highest it accepted before for that
//! store and channel; that serial is kept in a small JSON state file (`--state`,
//! `FERRY_VERIFY_STATE`, default `$XDG_STATE_HOME/ferry/verify-state.json` or
//! `~/.local/state/ferry/verify-state.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ferry_release::TrustedKeys;
use serde_json::json;

use super::store_args::{ChannelArgs, runtime};
use crate::env;

/// Exit code of a rejected channel.
const REJECTED: u8 = 2;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 verified, 2 rejected (tampered, untrusted, replayed, expired, missing), 1 could not check."
)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    /// Trusted public key files (repeat, or separate with commas, for key rotation); default:
    /// FERRY_TRUST (separated by `,` or `:`).
    #[arg(long, value_delimiter = ',', value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// Where the highest accepted serial per channel is remembered.
    #[arg(long, env = env::FERRY_VERIFY_STATE, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn default_state_path() -> anyhow::Result<PathBuf> {
    env::default_verify_state()
        .context("neither --state, FERRY_VERIFY_STATE, XDG_STATE_HOME nor HOME is set")
}

fn read_state(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    match ferry_release::read_local_file(path, 16 * 1024 * 1024) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "verify state file {} is corrupt (fix or delete it)",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(error) => {
            Err(error).with_context(|| format!("cannot read verify state file {}", path.display()))
        }
    }
}

fn write_state(path: &Path, state: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let context = || format!("cannot write verify state file {}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(context)?;
    }
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&temporary, serde_json::to_vec_pretty(state)?).with_context(context)?;
    std::fs::rename(&temporary, path).with_context(context)
}

fn is_rejection(error: &ferry_store::Error) -> bool {
    matches!(
        error,
        ferry_store::Error::Release(_)
            | ferry_store::Error::ArtifactMismatch { .. }
            | ferry_store::Error::NotFound { .. }
            | ferry_store::Error::TooLarge { .. }
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let trust = if args.trust.is_empty() {
        env::trust_from_env().unwrap_or_default()
    } else {
        args.trust.clone()
    };
    anyhow::ensure!(
        !trust.is_empty(),
        "no trusted public key: give --trust PREFIX.pub (or set FERRY_TRUST)"
    );
    let trusted = TrustedKeys::from_files(&trust).context("cannot load the trusted keys")?;
    let state_path = match &args.state {
        Some(path) => path.clone(),
        None => default_state_path()?,
    };
    let mut state = read_state(&state_path)?;
    let state_key = format!(
        "{}#{}/{}",
        args.target.store.store.trim_end_matches('/'),
        args.target.app,
        args.target.channel
    );
    let highest_seen = state.get(&state_key).copied();
    let store = args.target.store.open(false)?;
    let runtime = runtime()?;
    let result = runtime.block_on(ferry_store::verify_channel(
        &store,
        &trusted,
        &args.target.app,
        &args.target.channel,
        highest_seen,
        ferry_release::now_utc(),
    ));
    let report = match result {
        Ok(report) => report,
        Err(error) if is_rejection(&error) => {
            if args.json {
                println!(
                    "{}",
                    json!({"verified": false, "error": format!("{error}")})
                );
            }
            eprintln!(
                "REJECTED {}/{} in {}: {error}",
                args.target.app,
                args.target.channel,
                store.url()
            );
            return Ok(ExitCode::from(REJECTED));
        }
        Err(error) => {
            return Err(anyhow::Error::new(error)).with_context(|| {
                format!(
                    "cannot verify {}/{} in {}",
                    args.target.app,
                    args.target.channel,
                    store.url()
                )
            });
        }
    };
    let serial = report.pointer.serial;
    if highest_seen.is_none_or(|seen| serial > seen) {
        state.insert(state_key, serial);
        write_state(&state_path, &state)?;
    }
    if args.json {
        let artifacts: BTreeMap<_, _> = report.artifacts.iter().cloned().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "verified": true,
                "app": args.target.app,
                "channel": args.target.channel,
                "serial": serial,
                "version": report.pointer.release.version,
                "pointer_key": report.pointer_key.to_string(),
                "release_key": report.release_key.to_string(),
                "artifacts": artifacts,
            }))?
        );
    } else {
        println!(
            "verified {}/{} serial {}: version {} signed by {}",
            args.target.app,
            args.target.channel,
            serial,
            report.pointer.release.version,
            report.pointer_key
        );
        for (architecture, artifact) in &report.artifacts {
            println!(
                "  {architecture}: {} sha256 {} ({} bytes) ok",
                artifact.path, artifact.sha256, artifact.size
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
