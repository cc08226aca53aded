//! `ferry publish FILE.deb…`: upload the packages (content-addressed), sign and write the
//! release, then point the channel at it with the next serial. `--dry-run` shows the plan and
//! writes nothing: the same plan is computed either way, only its execution is skipped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_store::{ArtifactInput, PublishOptions, PublishPlan, plan_publish};
use serde_json::json;

use super::store_args::{KeyArgs, StoreArgs, TerminalProgress, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .deb files: one version, one file per architecture.
    #[arg(required = true, value_name = "FILE.deb")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The app (namespace in the store); default: the package name.
    #[arg(long, env = env::FERRY_APP)]
    pub app: Option<String>,
    /// The channel to point at the release.
    #[arg(long, env = env::FERRY_CHANNEL, default_value = "stable")]
    pub channel: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Notes stored in the release document.
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Make the pointer expire after this long (e.g. `30d`); agents then refuse it until a
    /// new publish. Off by default.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub expires_in: Option<Duration>,
    /// Publish even on a store that ignores conditional writes (only safe when no other
    /// publish can run at the same time).
    #[arg(long)]
    pub single_publisher: bool,
    /// Staged rollout: PERCENT%:DELAY waves, delays counted from this publish, e.g.
    /// `5%:0,25%:10m,100%:1h` (percents increasing up to 100%, delays never decreasing).
    /// Default: every host at once.
    #[arg(long, value_name = "WAVES", conflicts_with = "now")]
    pub waves: Option<String>,
    /// Every host at once, no waves (also what happens without --waves; say it to make an
    /// urgent fix explicit).
    #[arg(long)]
    pub now: bool,
    /// The largest clock difference between a host and true time you allow; consecutive
    /// waves must be at least twice this far apart so that skewed clocks never reorder them.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "5m")]
    pub max_clock_skew: Duration,
    /// Urgent (a security fix): agents install this release even outside their update
    /// windows (`window` in agent.toml). Waves, pauses and the applications' update locks
    /// still apply.
    #[arg(long)]
    pub urgent: bool,
    /// Print what would be done; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Create the file:// store directory if it does not exist (the first publish into a new
    /// store); without it a missing directory is refused as a likely typo.
    #[arg(long)]
    pub create_store: bool,
    /// Upload the release and stage the new pointer without moving the channel, for a
    /// channel whose keyring asks for several signatures: others add theirs with
    /// `ferry sign`, and the channel moves once enough have signed (docs/trust.md).
    #[arg(long, conflicts_with = "dry_run")]
    pub stage: bool,
    /// Patches from this many of the channel's earlier releases to this one (per
    /// architecture), so agents that have one of them download a few percent of the package
    /// (docs/delta.md); 0 makes none.
    #[arg(long, value_name = "N", default_value = "3")]
    pub deltas: usize,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The checkout whose git state goes into the release's provenance (default: the
    /// current directory); `ferry deploy` sets it to its manifest's directory.
    #[arg(skip)]
    pub source_dir: Option<PathBuf>,
}

fn read_package(file: &Path) -> anyhow::Result<ArtifactInput> {
    let reader = ferry_deb::DebReader::open(file)
        .with_context(|| format!("cannot read {} as a .deb", file.display()))?;
    // Read it to the end as an agent will: a package cut short or corrupt past its control
    // file is refused here, not by every host after it was published.
    let whole =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    ferry_deb::check_complete(std::io::BufReader::with_capacity(1 << 20, whole)).with_context(
        || {
            format!(
                "{} is not a complete .deb (was it cut short?); build it again",
                file.display()
            )
        },
    )?;
    let control = reader.control();
    let field = |value: Option<&str>, name: &str| {
        value
            .map(str::to_owned)
            .with_context(|| format!("{} has no {name} field in its control file", file.display()))
    };
    Ok(ArtifactInput {
        file: file.to_path_buf(),
        package: field(control.package(), "Package")?,
        version: field(control.version(), "Version")?,
        architecture: field(control.architecture(), "Architecture")?,
    })
}

fn plan_json(plan: &PublishPlan) -> serde_json::Value {
    let artifacts: Vec<_> = plan
        .artifacts
        .iter()
        .map(|artifact| {
            json!({
                "file": artifact.file,
                "architecture": artifact.architecture,
                "sha256": artifact.reference.sha256,
                "size": artifact.reference.size,
                "path": artifact.reference.path,
                "upload": artifact.upload,
                "upload_signature": artifact.upload_signature,
            })
        })
        .collect();
    json!({
        "app": plan.options.app,
        "channel": plan.options.channel,
        "package": plan.package,
        "version": plan.version,
        "artifacts": artifacts,
        "release_exists": plan.release_exists,
        "current_serial": plan.current_serial,
        "channel_unchanged": plan.channel_unchanged,
        "waves": plan.options.rollout.to_spec(),
    })
}

/// The patches of a delta index, for `--json`.
fn delta_json(index: &ferry_release::DeltaIndex) -> Vec<serde_json::Value> {
    index
        .artifacts
        .iter()
        .flat_map(|(architecture, artifact)| {
            artifact.patches.iter().map(move |patch| {
                json!({
                    "architecture": architecture,
                    "from": patch.base_version,
                    "size": patch.size,
                    "full_size": artifact.target.size,
                    "path": patch.path,
                })
            })
        })
        .collect()
}

fn print_plan(plan: &PublishPlan, store: &str) {
    println!(
        "publish {} {} to {store} app {} channel {}",
        plan.package, plan.version, plan.options.app, plan.options.channel
    );
    for artifact in &plan.artifacts {
        let action = if artifact.upload {
            "upload"
        } else {
            "already stored"
        };
        println!(
            "  {:<8} {} ({} bytes) {action}: {}",
            artifact.architecture,
            artifact.file.display(),
            artifact.reference.size,
            artifact.reference.path
        );
    }
    let release = if plan.release_exists {
        "already stored (identical)"
    } else {
        "write"
    };
    println!(
        "  release apps/{}/releases/{}.json: {release}",
        plan.options.app, plan.version
    );
    println!("  waves: {}", plan.options.rollout.to_spec());
    if plan.channel_unchanged {
        println!(
            "  channel {}: already at {}, unchanged",
            plan.options.channel, plan.version
        );
    } else {
        let next = match plan.current_serial {
            None => "1".to_owned(),
            Some(serial) => ferry_release::next_serial(serial)
                .map_or_else(|| "none left".to_owned(), |next| next.to_string()),
        };
        println!(
            "  channel {}: serial {} → {next} (or the next free one)",
            plan.options.channel,
            plan.current_serial
                .map_or("none".into(), |serial| serial.to_string())
        );
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inputs: Vec<ArtifactInput> = args
        .files
        .iter()
        .map(|file| read_package(file))
        .collect::<anyhow::Result<_>>()?;
    let rollout = match (&args.waves, args.now) {
        (Some(spec), false) => {
            let rollout = ferry_release::Rollout::parse(spec)?;
            rollout.check_clock_skew(args.max_clock_skew.as_secs())?;
            rollout
        }
        _ => ferry_release::Rollout::default(),
    };
    let key = args.key.load()?;
    let mut signer = args.key.signer(&key)?;
    let app = match &args.app {
        Some(app) => app.clone(),
        None => inputs[0].package.clone(),
    };
    let options = PublishOptions {
        app,
        channel: args.channel.clone(),
        notes: args.notes.clone(),
        rollout,
        expires_at: args
            .expires_in
            .map(|duration| ferry_release::now_utc() + duration),
        single_publisher: args.single_publisher,
        provenance: Some(crate::provenance::collect(
            &key.id().to_string(),
            args.source_dir.as_deref().unwrap_or(Path::new(".")),
        )),
        urgent: args.urgent,
    };
    let store = if args.dry_run {
        args.store.open_for_plan()?
    } else {
        args.store.open(args.create_store)?
    };
    let runtime = runtime()?;
    // With a keyring, a key it allows on the channel may build on a state any listed key
    // wrote (a revoked key's state is superseded by the next serial), and a channel that
    // needs several signatures is published by staging.
    let keyring = runtime
        .block_on(ferry_store::read_keyring(&store, &options.app))
        .with_context(|| format!("cannot read the keyring of {}", options.app))?;
    if let Some(keyring) = &keyring {
        let allowed = keyring.trusted_for(&options.channel)?;
        if allowed.ids().contains(&key.id()) {
            signer.trusted.extend(&keyring.listed_keys()?);
            signer.new_key = true;
        }
        let need = keyring.threshold(&options.channel);
        if need > 1 && !args.stage && !args.dry_run {
            anyhow::bail!(
                "{}/{} needs {need} signatures (keyring serial {}): publish with --stage, then other keys run `ferry sign --app {} --channel {}`",
                options.app,
                options.channel,
                keyring.serial,
                options.app,
                options.channel
            );
        }
    }
    let plan = runtime
        .block_on(plan_publish(&store, &signer, &inputs, &options))
        .with_context(|| format!("cannot plan the publish to {}", store.url()))?;
    if args.dry_run {
        if args.json {
            let mut value = plan_json(&plan);
            value["dry_run"] = json!(true);
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print_plan(&plan, store.url());
            println!("dry run: nothing written");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Patches first, so an agent that sees the new pointer finds them.
    let delta_inputs: Vec<_> = plan
        .artifacts
        .iter()
        .map(|artifact| {
            (
                artifact.architecture.clone(),
                artifact.file.clone(),
                artifact.reference.clone(),
            )
        })
        .collect();
    let delta_options = ferry_delta::DeltaOptions {
        count: args.deltas,
        ..Default::default()
    };
    let deltas = runtime
        .block_on(ferry_delta::publish_deltas(
            &store,
            &key,
            &plan.options.app,
            &plan.options.channel,
            &plan.version,
            &delta_inputs,
            &delta_options,
        ))
        .with_context(|| format!("cannot make the patches of {}", plan.version))?;
    let progress = TerminalProgress::new(false);
    if args.stage {
        let (app, channel, version) = (
            plan.options.app.clone(),
            plan.options.channel.clone(),
            plan.version.clone(),
        );
        let (pointer, _) = runtime
            .block_on(plan.stage(&store, &signer, &progress))
            .with_context(|| format!("staging {version} on {app}/{channel} failed"))?;
        let need = keyring
            .as_ref()
            .map_or(1, |keyring| keyring.threshold(&channel));
        println!(
            "staged {app} {version} for {app}/{channel} serial {} (key {}, 1 of {need} signatures); the channel has not moved: other keys run `ferry sign --store {} --app {app} --channel {channel}`",
            pointer.serial,
            key.id(),
            store.url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = runtime
        .block_on(plan.execute(&store, &signer, &progress))
        .with_context(|| format!("publish of {} to {} failed", inputs[0].version, store.url()))?;
    if args.json {
        let mut value = plan_json(&outcome.plan);
        value["dry_run"] = json!(false);
        value["serial"] = json!(outcome.advanced.as_ref().map(|advanced| advanced.serial));
        value["superseded_by"] = json!(
            outcome
                .advanced
                .as_ref()
                .and_then(|advanced| advanced.superseded_by)
        );
        value["key_id"] = json!(key.id().to_string());
        value["provenance"] = json!(outcome.plan.release.provenance);
        value["deltas"] = json!(deltas.as_ref().map(delta_json).unwrap_or_default());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let plan = &outcome.plan;
        match &outcome.advanced {
            Some(advanced) => {
                println!(
                    "published {} {} to {}/{} serial {} (key {}), waves {}",
                    plan.package,
                    plan.version,
                    plan.options.app,
                    plan.options.channel,
                    advanced.serial,
                    key.id(),
                    plan.options.rollout.to_spec()
                );
                if let Some(provenance) = &plan.release.provenance {
                    println!("  by {}", crate::provenance::describe(provenance));
                }
                if let Some(newer) = advanced.superseded_by {
                    println!(
                        "note: a concurrent publish (serial {newer}) reached the channel after this one"
                    );
                }
            }
            None => println!(
                "{} {} already published on {}/{}; nothing changed",
                plan.package, plan.version, plan.options.app, plan.options.channel
            ),
        }
        if let Some(index) = &deltas {
            for (architecture, artifact) in &index.artifacts {
                for patch in &artifact.patches {
                    println!(
                        "  patch {architecture} from {}: {} bytes ({:.1} % of {})",
                        patch.base_version,
                        patch.size,
                        100.0 * patch.size as f64 / artifact.target.size as f64,
                        artifact.target.size
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
