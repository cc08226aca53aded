//! `ferry agent`: run the update agent on a server (`--once` for one cycle), for one app or
//! for every `[[app]]` of its file; `ferry agent status` prints the local journals' state,
//! `ferry agent hold APP` / `release APP` stop and restart an app's updates on this host.
//! The work is in `ferry-agent`; this file resolves settings (flags > `FERRY_*` > file >
//! defaults), opens the stores (one client per store URL), installs the signal handlers and
//! the optional metrics endpoint.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;
use ferry_agent::metrics::Metrics;
use ferry_agent::{AgentFile, Overrides, Settings};

use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    common: CommonArgs,
    /// Run one cycle (finish an interrupted update, poll, maybe update) and exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "ADDRESS")]
    metrics: Option<SocketAddr>,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Print this host's update state from the local journal (every app of the file).
    Status(StatusArgs),
    /// Hold updates of APP on this host: the agent downloads new releases but installs
    /// nothing for it until `ferry agent release APP` (shown by `ferry status`).
    Hold(HoldArgs),
    /// Let the held updates of APP on this host go on.
    Release(HoldArgs),
}

#[derive(Debug, clap::Args)]
struct HoldArgs {
    /// The app, as named in agent.toml.
    app: String,
    /// Its channel, when the file follows the app on several.
    #[arg(long)]
    channel: Option<String>,
    /// Why (shown by `ferry agent status` and `ferry status`).
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// The agent's config file.
    #[arg(long, short, global = true, value_name = "FILE", env = env::FERRY_AGENT_CONFIG, default_value = "/etc/ferry/agent.toml")]
    config: PathBuf,
    /// The store URL (overrides `store` in the file).
    #[arg(long, global = true, value_name = "URL", env = env::FERRY_STORE)]
    store: Option<String>,
    /// A custom S3 endpoint (overrides `s3-endpoint` in the file).
    #[arg(long, global = true, value_name = "URL", env = env::FERRY_S3_ENDPOINT)]
    s3_endpoint: Option<String>,
}

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The settings of every app of the file, and whether it has `[[app]]` tables.
fn settings_of_file(common: &CommonArgs) -> anyhow::Result<(Vec<Settings>, bool)> {
    let file = AgentFile::read(&common.config)?;
    let several = !file.apps.is_empty();
    let overrides = Overrides {
        store: common.store.clone(),
        s3_endpoint: common.s3_endpoint.clone(),
        app: non_empty(env::FERRY_APP),
        channel: non_empty(env::FERRY_CHANNEL),
        trust: env::trust_from_env(),
        interval: non_empty(env::FERRY_AGENT_INTERVAL),
        state_dir: non_empty(env::FERRY_STATE_DIR).map(PathBuf::from),
        cache_dir: non_empty(env::FERRY_CACHE_DIR).map(PathBuf::from),
        host_id: non_empty(env::FERRY_HOST_ID),
        architecture: non_empty(env::FERRY_ARCHITECTURE),
        boot_id: non_empty(env::FERRY_BOOT_ID),
    };
    let all = Settings::resolve_all(
        file,
        overrides,
        &common.config,
        Path::new("/etc/machine-id"),
    )?;
    Ok((all, several))
}

fn settings(common: &CommonArgs) -> anyhow::Result<Vec<Settings>> {
    Ok(settings_of_file(common)?.0)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentCommand::Status(status)) => run_status(&args.common, status),
        Some(AgentCommand::Hold(hold)) => run_hold(&args.common, hold, true),
        Some(AgentCommand::Release(hold)) => run_hold(&args.common, hold, false),
        None => run_agent(args.common, args.once, args.metrics),
    }
}

fn run_status(common: &CommonArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (all, several) = settings_of_file(common)?;
    let reports = all
        .iter()
        .map(ferry_agent::agent::local_status)
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        // A single-app file: its report, as always; `[[app]]` tables: a list of reports.
        let text = match reports.as_slice() {
            [one] if !several => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    for (index, report) in reports.iter().enumerate() {
        if index > 0 {
            println!();
        }
        print_status(report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(report: &ferry_agent::StatusReport) {
    println!("app:            {}/{}", report.app, report.channel);
    println!("host:           {}", report.host_id);
    println!(
        "installed:      {}",
        match (&report.version, report.serial) {
            (Some(version), Some(serial)) => format!("{version} (serial {serial})"),
            _ => "nothing yet".to_string(),
        }
    );
    println!("state:          {} (step: {})", report.state, report.step);
    println!("highest serial: {}", report.highest_serial);
    if let Some(held) = &report.held {
        println!("held:           {held}");
    }
    if let Some(waiting) = &report.waiting {
        println!("waiting:        {waiting}");
    }
    if let Some(at) = &report.last_change_at {
        println!("last change:    {at}");
    }
    if let Some(error) = &report.last_error {
        println!("last error:     {error}");
    }
    for bad in &report.bad {
        println!(
            "marked bad:     {} (serial {}, {}): {}",
            bad.version, bad.serial, bad.at, bad.reason
        );
    }
}

fn run_hold(common: &CommonArgs, args: HoldArgs, hold: bool) -> anyhow::Result<ExitCode> {
    let all = settings(common)?;
    let matching: Vec<&Settings> = all
        .iter()
        .filter(|settings| settings.app == args.app)
        .filter(|settings| {
            args.channel
                .as_ref()
                .is_none_or(|channel| &settings.channel == channel)
        })
        .collect();
    let settings = match matching.as_slice() {
        [one] => *one,
        [] => anyhow::bail!(
            "{} serves no app {}{} (it serves: {}); name one of those",
            common.config.display(),
            args.app,
            args.channel
                .as_ref()
                .map(|c| format!(" on channel {c}"))
                .unwrap_or_default(),
            all.iter()
                .map(|settings| format!("{}/{}", settings.app, settings.channel))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => anyhow::bail!(
            "{} follows {} on several channels; say which with --channel",
            common.config.display(),
            args.app
        ),
    };
    let path =
        ferry_agent::update_lock::Hold::path(&settings.state_dir, &settings.app, &settings.channel);
    let name = format!("{}/{}", settings.app, settings.channel);
    if hold {
        std::fs::create_dir_all(&settings.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                settings.state_dir.display()
            )
        })?;
        let entry = ferry_agent::update_lock::Hold {
            by: crate::provenance::by(),
            at: ferry_agent::agent::now_text(),
            reason: args.reason.clone(),
        };
        entry.write(&path)?;
        println!(
            "held {name} on this host: the agent downloads new releases but installs none until `ferry agent release {}`",
            settings.app
        );
    } else {
        match std::fs::remove_file(&path) {
            Ok(()) => println!(
                "released {name} on this host: a waiting release is installed at the agent's next poll, unless its update window, update lock or apply = \"on-reboot\" still holds it back"
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                println!("{name} was not held on this host; nothing to release")
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The stores opened so far, by URL and S3 endpoint, shared by the apps' openers.
type SharedStores = Rc<RefCell<HashMap<(String, Option<String>), ferry_store::Store>>>;

fn run_agent(
    common: CommonArgs,
    once: bool,
    metrics_address: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let all = settings(&common)?;
    // One thread is plenty for a poll every few seconds, for one app or many, and keeps the
    // idle agent small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // One client (and connection pool) per store: apps on the same store share it. Each
        // app opens its store in its own loop, so one app's store missing at start (a
        // file:// directory not mounted yet) holds up only that app.
        let stores: SharedStores = Rc::default();
        let mut apps = Vec::with_capacity(all.len());
        for settings in all {
            let options = env::store_options(settings.s3_endpoint.clone());
            let report_store = match &settings.report_store {
                Some(url) => Some(
                    ferry_store::Store::open(url, &options)
                        .with_context(|| format!("cannot open the report-store {url}"))?,
                ),
                None => None,
            };
            let read_only = ["http://", "https://"]
                .iter()
                .any(|scheme| settings.store.starts_with(scheme));
            if read_only && report_store.is_none() && settings.report {
                tracing::warn!(
                    app = %settings.app, store = %settings.store,
                    "host reports are off: the store is read-only (http/https); set report-store to the s3:// or file:// store behind it so ferry status sees this host"
                );
            }
            let key = (settings.store.clone(), settings.s3_endpoint.clone());
            let shared = stores.clone();
            let open_store: ferry_agent::agent::OpenStore = Box::new(move || {
                if let Some(store) = shared.borrow().get(&key) {
                    return Ok(store.clone());
                }
                let store = ferry_store::Store::open(&key.0, &options)?;
                shared.borrow_mut().insert(key.clone(), store.clone());
                Ok(store)
            });
            apps.push(ferry_agent::AppRun {
                settings,
                open_store,
                report_store,
                metrics: Arc::new(Metrics::default()),
            });
        }
        if let Some(address) = metrics_address {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for --metrics on {address}"))?;
            tracing::info!(%address, "serving metrics");
            let targets = apps
                .iter()
                .map(|app| ferry_agent::metrics::Target {
                    app: app.settings.app.clone(),
                    channel: app.settings.channel.clone(),
                    metrics: app.metrics.clone(),
                })
                .collect();
            tokio::spawn(ferry_agent::metrics::serve(listener, targets));
        }
        let several = apps.len() > 1;
        let results = ferry_agent::run_apps(apps, shutdown, once).await;
        let mut code = ExitCode::SUCCESS;
        let mut failures = Vec::new();
        for (name, result) in results {
            match result {
                Ok(Some(ferry_agent::Outcome::Refused { .. })) => code = ExitCode::from(3),
                Ok(Some(ferry_agent::Outcome::RolledBack { .. })) => code = ExitCode::from(4),
                Ok(_) => {}
                Err(error) if several => failures.push(format!("{name}: {error}")),
                Err(error) => return Err(anyhow::Error::new(error)),
            }
        }
        if !failures.is_empty() {
            anyhow::bail!("{}", failures.join("\n"));
        }
        Ok(code)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
