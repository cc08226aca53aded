//! `ferry promote --from beta --to stable`: point one channel at the release another channel
//! names now (a new serial on the target channel, signed with your key).

use std::process::ExitCode;

use anyhow::Context;
use ferry_store::PublishOptions;

use super::store_args::{KeyArgs, StoreArgs, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The app.
    #[arg(long, env = env::FERRY_APP)]
    pub app: String,
    /// The channel whose release is promoted.
    #[arg(long, value_name = "CHANNEL")]
    pub from: String,
    /// The channel to point at it.
    #[arg(long, value_name = "CHANNEL")]
    pub to: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Write even on a store that ignores conditional writes.
    #[arg(long)]
    pub single_publisher: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.from != args.to,
        "--from and --to are both {:?}; name two channels",
        args.from
    );
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.store.open(false)?;
    let runtime = runtime()?;
    let advanced =
        runtime
            .block_on(async {
                // The release is taken from the source channel and re-signed into the target:
                // the source must verify like any state a publish builds on.
                let source_target = ferry_store::channel_target(&args.app, &args.from);
                let Some(source) = ferry_store::pointer::read_verified::<
                    ferry_release::ChannelPointer,
                >(&store, &source_target, &signer.trusted)
                .await?
                else {
                    return Err(ferry_store::Error::InvalidRequest(format!(
                        "channel {}/{} has never been published; nothing to promote",
                        args.app, args.from
                    )));
                };
                let options = PublishOptions {
                    app: args.app.clone(),
                    channel: args.to.clone(),
                    notes: String::new(),
                    rollout: Default::default(),
                    expires_at: None,
                    single_publisher: args.single_publisher,
                    provenance: None,
                    urgent: false,
                };
                ferry_store::repoint_channel(&store, &signer, &options, source.document.release)
                    .await
            })
            .with_context(|| format!("cannot promote {}/{} to {}", args.app, args.from, args.to))?;
    println!(
        "promoted {} {} from {} to {} (serial {})",
        args.app, advanced.pointer.release.version, args.from, args.to, advanced.serial
    );
    Ok(ExitCode::SUCCESS)
}
