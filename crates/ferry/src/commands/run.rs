//! `ferry run`: supervise a service with one stable PID — hold its listening sockets, start
//! it with them (systemd socket-activation protocol), and swap in a new process on SIGHUP or
//! a control-socket request without dropping a connection. The work is in ferry-supervisor.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_supervisor::{BoundListener, Config, ListenSpec, Supervisor};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reload: `kill -HUP <pid>` or `{\"command\":\"reload\"}` on the control socket.\n\
                  Example: ferry run --listen http=127.0.0.1:8080 --control /run/hello.sock -- /usr/bin/hello-service"
)]
pub struct Args {
    /// A socket to bind once and pass to every process generation: NAME=IP:PORT,
    /// NAME=[IPv6]:PORT or NAME=/path/to/unix.sock (repeatable; fds 3, 4, … in this order).
    #[arg(long = "listen", value_name = "NAME=ADDR")]
    pub listen: Vec<String>,
    /// Serve the control socket (reload / status, one JSON line each way) at this path.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Seconds a new process may take to become ready before the reload fails.
    #[arg(long, value_name = "S", default_value = "30")]
    pub ready_timeout: f64,
    /// Seconds an old process may take to finish in-flight requests after SIGTERM before SIGKILL.
    #[arg(long, value_name = "S", default_value = "30")]
    pub drain_timeout: f64,
    /// For apps without sd_notify: ready once this http://host:port/path answers 2xx.
    #[arg(long, value_name = "URL")]
    pub health: Option<String>,
    /// For apps without sd_notify or a health URL: ready when still running after S seconds.
    #[arg(long, value_name = "S")]
    pub ready_delay: Option<f64>,
    /// The command to supervise and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .with_context(|| format!("{flag} {value}: expected a positive number of seconds"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut command = args.command.into_iter();
    let program = command.next().context("no COMMAND given after `--`")?;
    let mut config = Config::new(program, command.collect());
    config.ready_timeout = seconds("--ready-timeout", args.ready_timeout)?;
    config.drain_timeout = seconds("--drain-timeout", args.drain_timeout)?;
    config.ready_delay = args
        .ready_delay
        .map(|value| seconds("--ready-delay", value))
        .transpose()?;
    config.health_url = args.health;
    config.control_path = args.control;
    config.systemd_notify_socket = std::env::var_os(crate::env::NOTIFY_SOCKET);
    if args.listen.is_empty() {
        tracing::warn!("no --listen given: the app gets no sockets (LISTEN_FDS=0)");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed first: SIGHUP's default action would kill the supervisor.
        let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

        let mut listeners = Vec::new();
        for text in &args.listen {
            let spec: ListenSpec = text.parse().with_context(|| format!("--listen {text}"))?;
            let listener =
                BoundListener::bind(&spec).with_context(|| format!("--listen {text}"))?;
            tracing::info!(name = %listener.name, address = %listener.description, "listening");
            listeners.push(listener);
        }
        let (supervisor, handle) = Supervisor::new(config, listeners)?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reload requested");
                if !handle.request_reload() {
                    tracing::warn!("SIGHUP ignored: too many reloads are already queued");
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        supervisor.run(shutdown).await.context("ferry run")?;
        Ok(ExitCode::SUCCESS)
    })
}
