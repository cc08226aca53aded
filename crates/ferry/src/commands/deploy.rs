//! `ferry deploy`: from a checkout to the fleet in one command. Check the git tree, take the
//! channel's deploy lock, run the `pre` hooks, pack, publish (waves as configured), watch the
//! rollout and halt it (pause or roll back) when too many hosts fail, release the lock, run
//! the `post` hooks. Settings come from `[deploy]` in ferry.toml, flags win; the exit status
//! tells CI how it ended (see `EXIT STATUS` in `--help`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use ferry_pack::{DeploySection, Manifest};
use ferry_store::lock::{Acquired, DeployLock};

use super::store_args::{ChannelArgs, KeyArgs, StoreArgs, runtime};
use super::{pack, publish, watch};
use crate::env;

/// Nothing was published: the git tree is dirty or another deploy holds the channel.
const EXIT_REFUSED: u8 = 6;

#[derive(Debug, clap::Args)]
#[command(
    disable_version_flag = true,
    after_help = "EXIT STATUS:\n  \
    0  rolled out: every reporting host runs the release (or failed it within --max-failures)\n  \
    1  error (bad settings, a pre hook, pack or publish failed; a post hook failed)\n  \
    2  halted: too many hosts failed and the rollout was paused\n  \
    3  halted: too many hosts failed and the channel was rolled back (--rollback)\n  \
    4  timed out: --timeout passed before the rollout finished\n  \
    5  superseded: the channel was pointed at another release while watching\n  \
    6  refused, nothing published: the git tree has uncommitted changes (--allow-dirty) or\n     \
    another deploy holds the channel's lock (--break-lock)"
)]
pub struct Args {
    /// The manifest; its `[deploy]` table holds the settings below.
    #[arg(long, default_value = "ferry.toml")]
    pub config: PathBuf,
    /// The store (default: `[deploy] store`).
    #[arg(long, env = env::FERRY_STORE, value_name = "URL")]
    pub store: Option<String>,
    /// A custom S3 endpoint (default: `[deploy] s3-endpoint`).
    #[arg(long, env = env::FERRY_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The app (default: `[deploy] app`, else the package name).
    #[arg(long, env = env::FERRY_APP)]
    pub app: Option<String>,
    /// The channel (default: `[deploy] channel`, else `stable`).
    #[arg(long, env = env::FERRY_CHANNEL)]
    pub channel: Option<String>,
    /// The secret key file, or `env:VAR` (default: `[deploy] key`).
    #[arg(long, env = env::FERRY_KEY, value_name = "FILE")]
    pub key: Option<String>,
    /// The package version (overrides `[package] version`).
    #[arg(long)]
    pub version: Option<String>,
    /// Rollout waves, e.g. `5%:0,25%:10m,100%:1h` (default: `[deploy] waves`, else all at once).
    #[arg(long, value_name = "WAVES")]
    pub waves: Option<String>,
    /// Halt above this many failed hosts (default: `[deploy] max-failures`, else `5%`).
    #[arg(long, value_name = "LIMIT")]
    pub max_failures: Option<String>,
    /// Halt by rolling back instead of pausing (default: `[deploy] rollback`).
    #[arg(long)]
    pub rollback: bool,
    /// Give up watching after this long (default: `[deploy] timeout`, else `1h`).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Time between reads of the host reports while watching.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "2s")]
    pub interval: Duration,
    /// Publish and stop: do not watch the rollout.
    #[arg(long)]
    pub no_watch: bool,
    /// Deploy from a git tree with uncommitted changes (recorded as dirty in the release).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Take the channel's deploy lock over from another deploy.
    #[arg(long)]
    pub break_lock: bool,
    /// Create the file:// store directory if it does not exist.
    #[arg(long)]
    pub create_store: bool,
    /// Print the plan; run, pack and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// POST a JSON event for each step of the rollout to this webhook (repeat for several),
    /// as `ferry watch --notify`; also `[deploy] notify`.
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
}

/// The settings after flags, environment and `[deploy]` are merged.
struct Plan {
    manifest_dir: PathBuf,
    store: String,
    s3_endpoint: Option<String>,
    app: Option<String>,
    channel: String,
    key: PathBuf,
    waves: Option<String>,
    max_failures: String,
    rollback: bool,
    timeout: Duration,
    stale_after: Duration,
    deltas: usize,
    out: PathBuf,
    pre: Vec<String>,
    post: Vec<String>,
    allow_dirty: bool,
    notify: Vec<String>,
}

fn resolve(args: &Args, section: DeploySection, manifest_dir: &Path) -> anyhow::Result<Plan> {
    let duration = |text: Option<&String>, key: &str, default: &str| -> anyhow::Result<Duration> {
        let text = text.map_or(default, String::as_str);
        humantime::parse_duration(text)
            .with_context(|| format!("`[deploy] {key}` = {text:?} is not a duration (e.g. \"1h\")"))
    };
    let store = args.store.clone().or(section.store).with_context(|| {
        format!(
            "no store to deploy to: set `store` in the [deploy] table of {} or pass --store",
            args.config.display()
        )
    })?;
    let key = args.key.clone().or(section.key).with_context(|| {
        format!(
            "no signing key: set `key` in the [deploy] table of {} (a file, or env:VAR) or pass --key",
            args.config.display()
        )
    })?;
    // A key file named in the manifest is relative to it; env:VAR and flags are taken as given.
    let key = if args.key.is_none() && !key.starts_with("env:") {
        manifest_dir.join(key)
    } else {
        PathBuf::from(key)
    };
    Ok(Plan {
        manifest_dir: manifest_dir.to_owned(),
        store,
        s3_endpoint: args.s3_endpoint.clone().or(section.s3_endpoint),
        app: args.app.clone().or(section.app),
        channel: args
            .channel
            .clone()
            .or(section.channel)
            .unwrap_or_else(|| "stable".into()),
        key,
        waves: args.waves.clone().or(section.waves),
        max_failures: args
            .max_failures
            .clone()
            .or(section.max_failures)
            .unwrap_or_else(|| "5%".into()),
        rollback: args.rollback || section.rollback.unwrap_or(false),
        timeout: match args.timeout {
            Some(timeout) => timeout,
            None => duration(section.timeout.as_ref(), "timeout", "1h")?,
        },
        stale_after: duration(section.stale_after.as_ref(), "stale-after", "1h")?,
        deltas: section.deltas.unwrap_or(3),
        out: manifest_dir.join(section.out.unwrap_or_else(|| PathBuf::from("target/ferry"))),
        pre: section.pre,
        post: section.post,
        allow_dirty: args.allow_dirty || section.allow_dirty.unwrap_or(false),
        notify: if args.notify.is_empty() {
            section.notify
        } else {
            args.notify.clone()
        },
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&args.config)?;
    let manifest_dir = match args.config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let package = manifest.package.name.clone();
    let version = args
        .version
        .clone()
        .or(manifest.package.version.clone())
        .with_context(|| {
            format!(
                "{} has no [package] version: set it or pass --version",
                args.config.display()
            )
        })?;
    let plan = resolve(
        &args,
        manifest.deploy.clone().unwrap_or_default(),
        &manifest_dir,
    )?;
    let app = plan.app.clone().unwrap_or_else(|| package.clone());
    let git = crate::provenance::git(&plan.manifest_dir);

    println!(
        "deploy {package} {version} to {} app {app} channel {}",
        plan.store, plan.channel
    );
    match &git {
        Some(git) => println!(
            "  source: commit {}{}{}",
            &git.commit[..git.commit.len().min(12)],
            if git.dirty {
                " with uncommitted changes"
            } else {
                ""
            },
            git.branch
                .as_deref()
                .map(|branch| format!(" on {branch}"))
                .unwrap_or_default()
        ),
        None => println!("  source: not a git checkout (no commit recorded)"),
    }
    println!(
        "  waves: {}",
        plan.waves.as_deref().unwrap_or("100%:0 (all at once)")
    );
    if args.no_watch {
        println!("  then: publish only, no watching");
    } else {
        println!(
            "  then: watch up to {}, halt by {} above {} failed hosts",
            humantime::format_duration(plan.timeout),
            if plan.rollback { "rollback" } else { "pause" },
            plan.max_failures
        );
    }
    for hook in &plan.pre {
        println!("  pre:  {hook}");
    }
    for hook in &plan.post {
        println!("  post: {hook}");
    }
    for url in &plan.notify {
        println!("  notify: {url}");
    }
    if git.as_ref().is_some_and(|git| git.dirty) && !plan.allow_dirty {
        eprintln!(
            "refusing to deploy: {} has uncommitted changes (`git status` lists them); commit them, or pass --allow-dirty (the release then records the tree as dirty)",
            plan.manifest_dir.display()
        );
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if args.dry_run {
        println!("dry run: nothing run, packed or written");
        return Ok(ExitCode::SUCCESS);
    }

    let store_args = StoreArgs {
        store: plan.store.clone(),
        s3_endpoint: plan.s3_endpoint.clone(),
        pointer_max_age: pointer_max_age()?,
    };
    let store = store_args.open(args.create_store)?;
    let runtime = runtime()?;
    let now = ferry_release::now_utc();
    let lock = DeployLock {
        owner: crate::provenance::by(),
        version: version.clone(),
        since: ferry_release::format_time(now),
        // Past the longest the watch may take, so a killed deploy frees the channel by itself.
        expires_at: ferry_release::format_time(now + plan.timeout + Duration::from_secs(600)),
    };
    let acquired = runtime
        .block_on(ferry_store::lock::acquire(
            &store,
            &app,
            &plan.channel,
            &lock,
            args.break_lock,
        ))
        .with_context(|| format!("cannot take the deploy lock of {app}/{}", plan.channel))?;
    match acquired {
        Acquired::Held(other) => {
            eprintln!(
                "refusing to deploy: {} is deploying {} to {app}/{} since {} (the lock expires {}); wait for it, or pass --break-lock if that deploy is dead",
                other.owner, other.version, plan.channel, other.since, other.expires_at
            );
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Acquired::Taken {
            replaced: Some(old),
            ..
        } => eprintln!(
            "took over the deploy lock of {} ({} since {})",
            old.owner, old.version, old.since
        ),
        Acquired::Taken { replaced: None, .. } => {}
    }
    let result = deploy_locked(&args, &plan, &store_args, &app, &version);
    if let Err(error) = runtime.block_on(ferry_store::lock::release(
        &store,
        &app,
        &plan.channel,
        &lock,
    )) {
        eprintln!(
            "warning: cannot release the deploy lock (it lapses by itself at {}): {error:#}",
            lock.expires_at
        );
    }
    let code = result?;
    let outcome = match code {
        watch::EXIT_ROLLED_OUT if args.no_watch => "published",
        watch::EXIT_ROLLED_OUT => "rolled-out",
        watch::EXIT_PAUSED => "paused",
        watch::EXIT_ROLLED_BACK => "rolled-back",
        watch::EXIT_TIMED_OUT => "timed-out",
        watch::EXIT_SUPERSEDED => "superseded",
        _ => "failed",
    };
    for hook in &plan.post {
        run_hook(hook, &plan, &app, &version, Some(outcome))
            .with_context(|| format!("the rollout ended {outcome}, then a post hook failed"))?;
    }
    Ok(ExitCode::from(code))
}

/// Hooks, pack, publish, watch: everything that happens under the lock.
fn deploy_locked(
    args: &Args,
    plan: &Plan,
    store_args: &StoreArgs,
    app: &str,
    version: &str,
) -> anyhow::Result<u8> {
    for hook in &plan.pre {
        run_hook(hook, plan, app, version, None)
            .context("a pre hook failed; nothing was published")?;
    }
    let packed = pack::build(&pack::Args {
        config: args.config.clone(),
        out: plan.out.clone(),
        compression: pack::CompressionArg::Zstd,
        level: None,
        arch: None,
        version: Some(version.to_owned()),
        json: false,
    })?;
    println!("packed {}", packed.path.display());
    let key = KeyArgs {
        key: plan.key.clone(),
        trust: Vec::new(),
        new_key: false,
        force_reset: false,
    };
    publish::run(publish::Args {
        files: vec![packed.path.clone()],
        store: store_args.clone(),
        app: Some(app.to_owned()),
        channel: plan.channel.clone(),
        key: key.clone(),
        notes: String::new(),
        expires_in: None,
        single_publisher: false,
        waves: plan.waves.clone(),
        now: false,
        max_clock_skew: Duration::from_secs(300),
        dry_run: false,
        create_store: args.create_store,
        stage: false,
        deltas: plan.deltas,
        json: false,
        urgent: false,
        source_dir: Some(plan.manifest_dir.clone()),
    })?;
    if args.no_watch {
        return Ok(watch::EXIT_ROLLED_OUT);
    }
    watch::watch(&watch::Args {
        target: ChannelArgs {
            store: store_args.clone(),
            app: app.to_owned(),
            channel: plan.channel.clone(),
        },
        key,
        max_failures: plan.max_failures.clone(),
        rollback: plan.rollback,
        release: Some(version.to_owned()),
        timeout: plan.timeout,
        interval: args.interval,
        stale_after: plan.stale_after,
        single_publisher: false,
        notify: plan.notify.clone(),
    })
}

/// The pointer max-age publish uses: FERRY_POINTER_MAX_AGE, else the default.
fn pointer_max_age() -> anyhow::Result<Duration> {
    match std::env::var(env::FERRY_POINTER_MAX_AGE) {
        Ok(text) => humantime::parse_duration(&text).with_context(|| {
            format!(
                "{} = {text:?} is not a duration",
                env::FERRY_POINTER_MAX_AGE
            )
        }),
        Err(_) => Ok(ferry_store::DEFAULT_POINTER_MAX_AGE),
    }
}

/// Run one hook with `sh -c` in the manifest's directory; its output goes to ours.
fn run_hook(
    hook: &str,
    plan: &Plan,
    app: &str,
    version: &str,
    result: Option<&str>,
) -> anyhow::Result<()> {
    eprintln!("running hook: {hook}");
    let mut command = Command::new("sh");
    command
        .args(["-c", hook])
        .current_dir(&plan.manifest_dir)
        .env("FERRY_DEPLOY_APP", app)
        .env("FERRY_DEPLOY_CHANNEL", &plan.channel)
        .env("FERRY_DEPLOY_VERSION", version)
        .env("FERRY_DEPLOY_STORE", &plan.store)
        .stdin(Stdio::null());
    if let Some(result) = result {
        command.env("FERRY_DEPLOY_RESULT", result);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run the hook `{hook}` with sh"))?;
    anyhow::ensure!(status.success(), "the hook `{hook}` exited with {status}");
    Ok(())
}
