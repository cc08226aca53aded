//! `ferry releases`: the history of a channel, oldest first — serial, version, time and the
//! key that signed each state; `*` marks the state the pointer holds now; each version's
//! patches (size and share of the full package) when deltas were published.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::store_args::{ChannelArgs, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    /// Show only the newest N states.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.target.store.open(false)?;
    let runtime = runtime()?;
    let (entries, current) = runtime
        .block_on(async {
            let entries =
                ferry_store::history(&store, &args.target.app, &args.target.channel, args.last)
                    .await?;
            let current =
                ferry_store::read_pointer(&store, &args.target.app, &args.target.channel).await?;
            Ok::<_, ferry_store::Error>((entries, current))
        })
        .with_context(|| {
            format!(
                "cannot read the history of {}/{} in {}",
                args.target.app,
                args.target.channel,
                store.url()
            )
        })?;
    // Each version's patches (docs/delta.md), read once per version.
    let mut patches: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    // And who published it, from what (the release document's provenance).
    let mut provenance: std::collections::BTreeMap<String, ferry_release::Provenance> =
        Default::default();
    for entry in &entries {
        if patches.contains_key(&entry.version) {
            continue;
        }
        if let Ok(Some(release)) = runtime.block_on(ferry_store::read_release_document(
            &store,
            &args.target.app,
            &entry.version,
        )) {
            if let Some(found) = release.provenance {
                provenance.insert(entry.version.clone(), found);
            }
        }
        let index = runtime
            .block_on(ferry_delta::read_index(
                &store,
                &args.target.app,
                &entry.version,
            ))
            .ok()
            .flatten();
        let described = index
            .as_ref()
            .map(ferry_delta::describe_patches)
            .unwrap_or_default();
        patches.insert(entry.version.clone(), described);
    }
    let current_serial = current.map(|current| current.pointer.serial);
    if args.json {
        let list: Vec<_> = entries
            .iter()
            .map(|entry| {
                json!({
                    "serial": entry.serial,
                    "version": entry.version,
                    "published_at": ferry_release::format_time(entry.published_at),
                    "key_id": entry.key_id.map(|id| id.to_string()),
                    "current": Some(entry.serial) == current_serial,
                    "artifacts": entry.pointer.release.artifacts,
                    "waves": entry.pointer.rollout.to_spec(),
                    "paused": entry.pointer.paused,
                    "patches": patches.get(&entry.version).cloned().unwrap_or_default(),
                    "provenance": provenance.get(&entry.version),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        anyhow::bail!(
            "channel {}/{} has no history in {}: nothing was published there; check --app and --channel (the app defaults to the package name at publish)",
            args.target.app,
            args.target.channel,
            store.url()
        );
    }
    println!(
        "  {:>6}  {:<24} {:<20}  {:<16}  ROLLOUT",
        "SERIAL", "VERSION", "PUBLISHED", "KEY"
    );
    for entry in &entries {
        let marker = if Some(entry.serial) == current_serial {
            "*"
        } else {
            " "
        };
        let key = entry
            .key_id
            .map_or_else(|| "?".to_owned(), |id| id.to_string());
        let rollout = format!(
            "{}{}",
            entry.pointer.rollout.to_spec(),
            if entry.pointer.paused { " PAUSED" } else { "" }
        );
        let described = patches.get(&entry.version).cloned().unwrap_or_default();
        let patches = if described.is_empty() {
            String::new()
        } else {
            format!("  patches: {}", described.join(", "))
        };
        println!(
            "{marker} {:>6}  {:<24} {:<20}  {key:<16}  {rollout}{patches}",
            entry.serial,
            entry.version,
            ferry_release::format_time(entry.published_at)
        );
        if let Some(found) = provenance.get(&entry.version) {
            println!("           by {}", crate::provenance::describe(found));
        }
    }
    Ok(ExitCode::SUCCESS)
}
