//! `ferry agent`: run the update agent on a server (`--once` for one cycle), or
//! `ferry agent status` to print the local journal's state. The work is in `ferry-agent`;
//! this file resolves settings (flags > `FERRY_*` > file > defaults), opens the store,
//! installs the signal handlers and the optional metrics endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_agent::metrics::Metrics;
use ferry_agent::{AgentFile, Outcome, Overrides, RunOptions, Settings};

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
    /// Print this host's update state from the local journal.
    Status(StatusArgs),
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

fn settings(common: &CommonArgs) -> anyhow::Result<Settings> {
    let file = AgentFile::read(&common.config)?;
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
    };
    Ok(Settings::resolve(
        file,
        overrides,
        &common.config,
        Path::new("/etc/machine-id"),
    )?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentCommand::Status(status)) => run_status(&args.common, status),
        None => run_agent(args.common, args.once, args.metrics),
    }
}

fn run_status(common: &CommonArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(common)?;
    let report = ferry_agent::agent::local_status(&settings)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
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
    Ok(ExitCode::SUCCESS)
}

fn run_agent(
    common: CommonArgs,
    once: bool,
    metrics_address: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let settings = settings(&common)?;
    // One thread is plenty for a poll every few seconds and keeps the idle agent small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let options = env::store_options(settings.s3_endpoint.clone());
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // A store that is down when the agent starts (a file:// directory not mounted yet) is
        // waited for like one that goes down later: the agent must not exit and leave the host
        // unmanaged.
        let mut delay = std::time::Duration::from_millis(500);
        let store = loop {
            match ferry_store::Store::open(&settings.store, &options) {
                Ok(store) => break store,
                Err(error) if error.is_transient() && !once => {
                    tracing::warn!(
                        store = %settings.store, retry_in_ms = delay.as_millis() as u64,
                        "cannot open the store, retrying (the service is not touched): {error}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut shutdown => return Ok(ExitCode::SUCCESS),
                    }
                    delay = (delay * 2).min(settings.backoff_max.max(delay));
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot open the store {}", settings.store));
                }
            }
        };
        let metrics = Arc::new(Metrics::default());
        if let Some(address) = metrics_address {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for --metrics on {address}"))?;
            tracing::info!(%address, "serving metrics");
            tokio::spawn(ferry_agent::metrics::serve(
                listener,
                metrics.clone(),
                settings.app.clone(),
                settings.channel.clone(),
            ));
        }
        let report_store = match &settings.report_store {
            Some(url) => Some(
                ferry_store::Store::open(url, &options)
                    .with_context(|| format!("cannot open the report-store {url}"))?,
            ),
            None => None,
        };
        if store.is_read_only() && report_store.is_none() && settings.report {
            tracing::warn!(
                store = %settings.store,
                "host reports are off: the store is read-only (http/https); set report-store to the s3:// or file:// store behind it so ferry status sees this host"
            );
        }
        let options = RunOptions {
            once,
            metrics: Some(metrics),
            report_store,
        };
        let outcome = ferry_agent::run(settings, store, shutdown, options).await?;
        Ok(match outcome {
            Some(Outcome::Refused { .. }) => ExitCode::from(3),
            Some(Outcome::RolledBack { .. }) => ExitCode::from(4),
            _ => ExitCode::SUCCESS,
        })
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
