//! `ferry rollback`: point a channel back at an earlier release. This is a new pointer state
//! with a higher serial (agents refuse lower serials), naming the release before the current
//! one, or `--to VERSION`.

use std::process::ExitCode;

use super::store_args::{ChannelArgs, KeyArgs, runtime};
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The version to go back to (default: the one before the current).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Write even on a store that ignores conditional writes.
    #[arg(long)]
    pub single_publisher: bool,
    /// Urgent: agents roll back even outside their update windows (as `publish --urgent`).
    #[arg(long)]
    pub urgent: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.target.store.open(false)?;
    let runtime = runtime()?;
    let (from, advanced) = runtime
        .block_on(ferry_store::rollback_channel(
            &store,
            &signer,
            &args.target.app,
            &args.target.channel,
            args.to.as_deref(),
            args.single_publisher,
            args.urgent,
        ))
        .with_context(|| {
            format!(
                "cannot roll back {}/{} in {}",
                args.target.app,
                args.target.channel,
                store.url()
            )
        })?;
    println!(
        "rolled back {}/{} from {from} to {} (serial {})",
        args.target.app, args.target.channel, advanced.pointer.release.version, advanced.serial
    );
    Ok(ExitCode::SUCCESS)
}
