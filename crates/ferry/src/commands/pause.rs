//! `ferry pause` / `ferry resume`: hold or release a channel's rollout. Each signs a new
//! pointer state (next serial, same release, same waves and time base) with `paused` set or
//! cleared; agents install nothing new from a paused channel, and hosts that already run the
//! release keep it.

use std::process::ExitCode;

use anyhow::Context;
use ferry_store::PauseOutcome;

use super::store_args::{ChannelArgs, KeyArgs, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Write even on a store that ignores conditional writes.
    #[arg(long)]
    pub single_publisher: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub common: Args,
    /// Count the waves again from now instead of from the original publish (without it, waves
    /// that opened during the pause let their hosts update at once).
    #[arg(long)]
    pub restart_waves: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    change(&args, true, false)
}

pub fn run_resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    change(&args.common, false, args.restart_waves)
}

fn change(args: &Args, paused: bool, restart_waves: bool) -> anyhow::Result<ExitCode> {
    let verb = if paused { "pause" } else { "resume" };
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.target.store.open(false)?;
    let outcome = runtime()?
        .block_on(ferry_store::set_paused(
            &store,
            &signer,
            &args.target.app,
            &args.target.channel,
            paused,
            restart_waves,
            args.single_publisher,
        ))
        .with_context(|| {
            format!(
                "cannot {verb} {}/{} in {}",
                args.target.app,
                args.target.channel,
                store.url()
            )
        })?;
    match outcome {
        PauseOutcome::Changed(advanced) => println!(
            "{} {}/{} at {} (serial {}, waves {} from {})",
            if paused { "paused" } else { "resumed" },
            args.target.app,
            args.target.channel,
            advanced.pointer.release.version,
            advanced.serial,
            advanced.pointer.rollout.to_spec(),
            ferry_release::format_time(advanced.pointer.published_at)
        ),
        PauseOutcome::Unchanged(pointer) => println!(
            "{}/{} is already {} (serial {}, {}); nothing written",
            args.target.app,
            args.target.channel,
            if paused { "paused" } else { "running" },
            pointer.serial,
            pointer.release.version
        ),
    }
    Ok(ExitCode::SUCCESS)
}
