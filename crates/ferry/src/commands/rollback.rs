//! `ferry rollback`: point a channel back at an earlier release. This is a new pointer state
//! with a higher serial (agents refuse lower serials), naming the release before the current
//! one, or `--to VERSION`.

use std::process::ExitCode;

use super::store_args::{KeyArgs, StoreArgs, runtime};
use crate::env;
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The app.
    #[arg(long, env = env::FERRY_APP)]
    pub app: String,
    /// The channel.
    #[arg(long, env = env::FERRY_CHANNEL, default_value = "stable")]
    pub channel: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The version to go back to (default: the one before the current).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Write even on a store that ignores conditional writes.
    #[arg(long)]
    pub single_publisher: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.store.open(false)?;
    let runtime = runtime()?;
    let (from, advanced) = runtime
        .block_on(ferry_store::rollback_channel(
            &store,
            &signer,
            &args.app,
            &args.channel,
            args.to.as_deref(),
            args.single_publisher,
        ))
        .with_context(|| {
            format!(
                "cannot roll back {}/{} in {}",
                args.app,
                args.channel,
                store.url()
            )
        })?;
    println!(
        "rolled back {}/{} from {from} to {} (serial {})",
        args.app, args.channel, advanced.pointer.release.version, advanced.serial
    );
    Ok(ExitCode::SUCCESS)
}
