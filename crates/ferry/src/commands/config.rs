//! `ferry config push|show|history|rollback`: configuration bundles, shipped without
//! repackaging. The work (documents, signing, the CAS push) is in `ferry-config`; this file
//! parses flags and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_release::TrustedKeys;
use serde_json::json;

use super::store_args::{ChannelArgs as Target, KeyArgs, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Sign FILEs into the channel's next config bundle (an .env file becomes the service's
    /// EnvironmentFile; `KEY=@file:/path` names a secret already on the host).
    Push(PushArgs),
    /// Print the channel's current bundle.
    Show(ShowArgs),
    /// List the channel's bundles, oldest first (`*` = current).
    History(HistoryArgs),
    /// Push an earlier bundle again, as a new serial.
    Rollback(RollbackArgs),
}

#[derive(Debug, clap::Args)]
struct PushArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: KeyArgs,
    /// The files of the bundle (each lands in the agent's config directory under its name).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Create the file:// store directory if it does not exist.
    #[arg(long)]
    create_store: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    target: Target,
    /// Verify the signature with these public keys (repeat for rotation; default FERRY_TRUST).
    #[arg(long, value_delimiter = ',', value_name = "PUBKEY")]
    trust: Vec<PathBuf>,
    /// Print only this file's content.
    #[arg(long, value_name = "NAME")]
    file: Option<String>,
    /// Print the whole bundle as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    target: Target,
    /// Only the newest N bundles.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RollbackArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: KeyArgs,
    /// The serial whose files to push again (default: the newest earlier bundle that differs).
    #[arg(long, value_name = "SERIAL")]
    to: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Push(args) => push(args),
        ConfigCommand::Show(args) => show(args),
        ConfigCommand::History(args) => history(args),
        ConfigCommand::Rollback(args) => rollback(args),
    }
}

fn describe(target: &Target) -> String {
    format!(
        "config {}/{} in {}",
        target.app, target.channel, target.store.store
    )
}

fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let files = ferry_config::bundle_from_files(&args.files).context("cannot build the bundle")?;
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.target.store.open(args.create_store)?;
    let pushed = runtime()?
        .block_on(ferry_config::push(
            &store,
            &signer,
            &args.target.app,
            &args.target.channel,
            files,
            None,
        ))
        .with_context(|| format!("cannot push {}", describe(&args.target)))?;
    print_pushed(&pushed, args.json);
    Ok(ExitCode::SUCCESS)
}

fn print_pushed(pushed: &ferry_config::Pushed, as_json: bool) {
    let bundle = &pushed.bundle;
    if as_json {
        println!(
            "{}",
            json!({
                "app": bundle.app,
                "channel": bundle.channel,
                "serial": bundle.serial,
                "files": bundle.files.iter().map(|file| &file.name).collect::<Vec<_>>(),
                "copied_from": bundle.copied_from,
                "superseded_by": pushed.superseded_by,
            })
        );
        return;
    }
    println!(
        "pushed config {}/{} serial {}: {}",
        bundle.app,
        bundle.channel,
        bundle.serial,
        bundle.summary()
    );
    if let Some(newer) = pushed.superseded_by {
        println!("note: a concurrent push (serial {newer}) is the current bundle now");
    }
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.target.store.open(false)?;
    let current = runtime()?
        .block_on(ferry_config::read_current(
            &store,
            &args.target.app,
            &args.target.channel,
        ))
        .with_context(|| format!("cannot read {}", describe(&args.target)))?;
    let Some((mut bundle, bytes, _)) = current else {
        anyhow::bail!(
            "no config was ever pushed for {}/{} (ferry config push …)",
            args.target.app,
            args.target.channel
        );
    };
    let mut trust = args.trust.clone();
    if trust.is_empty() {
        trust = env::trust_from_env().unwrap_or_default();
    }
    let signer = if trust.is_empty() {
        tracing::warn!("signature not checked (pass --trust PUBKEY to check it)");
        None
    } else {
        let trusted = TrustedKeys::from_files(&trust).context("cannot load the trusted keys")?;
        let (verified, key_id) = ferry_config::verify_bundle(
            &bytes,
            &trusted,
            &args.target.app,
            &args.target.channel,
            None,
        )
        .with_context(|| format!("{} is not trusted", describe(&args.target)))?;
        bundle = verified;
        Some(key_id.to_string())
    };
    if let Some(name) = &args.file {
        let Some(file) = bundle.files.iter().find(|file| &file.name == name) else {
            anyhow::bail!(
                "serial {} has no file {name:?} (it has: {})",
                bundle.serial,
                bundle.summary()
            );
        };
        print!("{}", file.content);
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        let mut value = serde_json::to_value(&bundle)?;
        value["verified_by"] = json!(signer);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "config {}/{} serial {} pushed {}{}{}",
        bundle.app,
        bundle.channel,
        bundle.serial,
        ferry_release::format_time(bundle.pushed_at),
        bundle
            .copied_from
            .map(|serial| format!(" (rollback to serial {serial})"))
            .unwrap_or_default(),
        signer
            .map(|key| format!(", signature by {key} verified"))
            .unwrap_or_default(),
    );
    for file in &bundle.files {
        println!("\n== {} ({:04o}) ==", file.name, file.mode);
        print!("{}", file.content);
        if !file.content.ends_with('\n') && !file.content.is_empty() {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = args.target.store.open(false)?;
    let (entries, current) = runtime()?
        .block_on(async {
            let target = ferry_config::config_target(&args.target.app, &args.target.channel);
            let entries =
                ferry_store::pointer::history::<ferry_config::Bundle>(&store, &target, args.last)
                    .await?;
            let current =
                ferry_config::read_current(&store, &args.target.app, &args.target.channel).await?;
            Ok::<_, ferry_config::Error>((entries, current))
        })
        .with_context(|| format!("cannot read the history of {}", describe(&args.target)))?;
    let current = current.map(|(bundle, _, _)| bundle.serial);
    if args.json {
        let list: Vec<_> = entries
            .iter()
            .map(|entry| {
                json!({
                    "serial": entry.document.serial,
                    "pushed_at": ferry_release::format_time(entry.document.pushed_at),
                    "key_id": entry.key_id.map(|id| id.to_string()),
                    "current": Some(entry.document.serial) == current,
                    "copied_from": entry.document.copied_from,
                    "files": entry.document.files.iter().map(|file| &file.name).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!(
            "no config pushed for {}/{}",
            args.target.app, args.target.channel
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("  {:>6}  {:<20}  {:<16}  files", "serial", "pushed", "key");
    for entry in &entries {
        let mark = if Some(entry.document.serial) == current {
            "*"
        } else {
            " "
        };
        let copied = entry
            .document
            .copied_from
            .map(|serial| format!(" (= serial {serial})"))
            .unwrap_or_default();
        println!(
            "{mark} {:>6}  {:<20}  {:<16}  {}{copied}",
            entry.document.serial,
            ferry_release::format_time(entry.document.pushed_at),
            entry
                .key_id
                .map(|id| id.to_string())
                .unwrap_or_else(|| "?".to_owned()),
            entry.document.summary(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.target.store.open(false)?;
    let (from, pushed) = runtime()?
        .block_on(ferry_config::rollback(
            &store,
            &signer,
            &args.target.app,
            &args.target.channel,
            args.to,
        ))
        .with_context(|| format!("cannot roll back {}", describe(&args.target)))?;
    println!(
        "rolled back config {}/{} to the files of serial {from} (new serial {})",
        pushed.bundle.app, pushed.bundle.channel, pushed.bundle.serial
    );
    Ok(ExitCode::SUCCESS)
}
