//! `ferry quickstart`: the whole loop on one machine, on the embedded `file://` store, in a
//! fresh directory — keygen, pack, publish, an agent installing under `ferry run`, a swap to
//! v2 under load, a rollback — narrated step by step with the command to type by hand.
//!
//! It drives the real `ferry` binary (this one) as separate processes, exactly as a user
//! would, so what it shows is what the commands do.

mod client;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use client::{LoadClient, Tally};

const APP: &str = "hello";
const CHANNEL: &str = "stable";
const VERSION_ONE: &str = "1.0.0-1";
const VERSION_TWO: &str = "2.0.0-1";
/// How long one step may take before the quickstart gives up and says where to look.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the client keeps counting on each version, so a few thousand replies are seen.
const SOAK: Duration = Duration::from_secs(3);
const CLIENT_WORKERS: usize = 8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work in this directory (created; must be empty) instead of a fresh temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the service, supervisor and agent running afterwards, to explore.
    #[arg(long)]
    keep: bool,
    /// The port the service listens on (127.0.0.1); default: a free one.
    #[arg(long)]
    port: Option<u16>,
    /// The example service's binary; default: this `ferry` itself, which runs the example
    /// service when started as `hello-service` (no build, no source tree needed).
    #[arg(long, value_name = "PATH")]
    example_binary: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let ferry = std::env::current_exe().context("cannot find the running ferry binary")?;
    let (dir, temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if std::fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "{} is not empty (pick an empty or new directory for --dir)",
                    dir.display()
                );
            }
            (std::fs::canonicalize(dir)?, false)
        }
        None => {
            let dir = std::env::temp_dir().join(format!("ferry-quickstart-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir, true)
        }
    };
    let example = match &args.example_binary {
        Some(path) => path.clone(),
        None => example_from(&ferry, &dir)?,
    };
    let port = match args.port {
        Some(port) => port,
        None => free_port()?,
    };
    let mut session = Session::new(ferry, example, dir.clone(), port)?;
    let outcome = session.play();
    let kept = args.keep && outcome.is_ok();
    if kept {
        session.leave_running();
    } else {
        session.stop_processes();
    }
    match outcome {
        Ok(tally) => {
            println!();
            println!("==> done in {:.1} s", started.elapsed().as_secs_f64());
            print!("{}", session.timings());
            println!(
                "    requests answered: {} ({}), errors: {}, kept-alive connections re-opened after an idle close: {}",
                tally.ok(),
                describe_versions(&tally),
                tally.error_count(),
                tally.reconnects
            );
            if tally.error_count() > 0 {
                println!("    errors by kind: {:?}", tally.errors);
            }
            if kept {
                println!(
                    "    everything is still running in {} (see above to stop it)",
                    dir.display()
                );
            } else if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                println!("    the files are left in {}", dir.display());
            }
            Ok(if tally.error_count() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(error) => {
            eprintln!(
                "the quickstart failed; its files and logs are kept in {}",
                dir.display()
            );
            for log in ["run.log", "agent.log"] {
                let path = dir.join("logs").join(log);
                if let Ok(text) = std::fs::read_to_string(&path) {
                    eprintln!("--- last lines of {}", path.display());
                    let lines: Vec<&str> = text.lines().collect();
                    for line in &lines[lines.len().saturating_sub(15)..] {
                        eprintln!("{line}");
                    }
                }
            }
            Err(error)
        }
    }
}

/// The example service is this ferry itself (it runs the service when started as
/// `hello-service`): a copy, stripped when binutils' `strip` is there, so the packages and
/// their patches stay small.
fn example_from(ferry: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let bin = dir.join("example");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let copy = bin.join("hello-service");
    std::fs::copy(ferry, &copy)
        .with_context(|| format!("cannot copy {} to {}", ferry.display(), copy.display()))?;
    let stripped = Command::new("strip")
        .arg("--strip-unneeded")
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !stripped {
        tracing::debug!("strip is not available; packing the example service unstripped");
    }
    Ok(copy)
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

struct Session {
    ferry: PathBuf,
    example: PathBuf,
    dir: PathBuf,
    address: SocketAddr,
    store: String,
    children: Vec<(&'static str, Child)>,
    timings: Vec<(String, Duration)>,
}

impl Session {
    fn new(ferry: PathBuf, example: PathBuf, dir: PathBuf, port: u16) -> anyhow::Result<Session> {
        for sub in ["keys", "build", "logs", "host", "store"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let store = format!("file://{}", dir.join("store").display());
        Ok(Session {
            ferry,
            example,
            dir,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            store,
            children: Vec::new(),
            timings: Vec::new(),
        })
    }

    fn play(&mut self) -> anyhow::Result<Tally> {
        println!(
            "ferry quickstart: the whole loop on this machine, in {}",
            self.dir.display()
        );
        println!(
            "store: {} (a plain directory; s3://bucket/prefix works the same)",
            self.store
        );

        self.step("make a signing key pair", |session| {
            let prefix = session.dir.join("keys/release");
            session.ferry_command(&["keygen".as_ref(), prefix.as_os_str()])
        })?;

        self.step(
            &format!("pack the example service as version {VERSION_ONE}"),
            |session| session.pack(VERSION_ONE),
        )?;
        self.step(
            &format!("publish {VERSION_ONE} to channel {CHANNEL}"),
            |session| session.publish(VERSION_ONE),
        )?;

        self.step(
            "start the supervisor: it holds the port and runs whatever `current` is",
            |session| {
                let current = session.dir.join("host/srv/current/usr/bin/hello-service");
                let listen = format!("http={}", session.address);
                let control = session.dir.join("host/hello.sock");
                let arguments: Vec<&std::ffi::OsStr> = vec![
                    "run".as_ref(),
                    "--listen".as_ref(),
                    listen.as_ref(),
                    "--control".as_ref(),
                    control.as_os_str(),
                    "--".as_ref(),
                    current.as_os_str(),
                ];
                session.spawn("run", &arguments)
            },
        )?;

        self.step(
            "start the agent: it polls the channel, installs, swaps, health-checks",
            |session| {
                let config = session.write_agent_config()?;
                session.spawn(
                    "agent",
                    &["agent".as_ref(), "--config".as_ref(), config.as_os_str()],
                )
            },
        )?;

        self.step(
            &format!("wait until {} answers {VERSION_ONE}", self.address),
            |session| session.wait_for_version(VERSION_ONE),
        )?;

        println!();
        println!(
            "==> from now on {CLIENT_WORKERS} clients keep asking {} for its version and count every reply",
            self.address
        );
        let load = LoadClient::start(self.address, CLIENT_WORKERS);
        let result = self.under_load(&load);
        let tally = load.finish();
        result?;
        Ok(tally)
    }

    fn under_load(&mut self, load: &LoadClient) -> anyhow::Result<()> {
        std::thread::sleep(SOAK);
        self.step(&format!("pack {VERSION_TWO}"), |session| {
            session.pack(VERSION_TWO)
        })?;
        self.step(
            &format!("publish {VERSION_TWO}: the agent swaps the process, the port never closes"),
            |session| {
                session.publish(VERSION_TWO)?;
                session.wait_for_version(VERSION_TWO)
            },
        )?;
        std::thread::sleep(SOAK);
        self.step(
            &format!("roll back: a new signed pointer naming {VERSION_ONE} again"),
            |session| {
                session.on_channel("rollback", &[])?;
                session.wait_for_version(VERSION_ONE)
            },
        )?;
        std::thread::sleep(SOAK);
        let seen = load.snapshot();
        println!(
            "    so far: {} replies ({}), {} errors",
            seen.ok(),
            describe_versions(&seen),
            seen.error_count()
        );
        Ok(())
    }

    fn step(
        &mut self,
        title: &str,
        action: impl FnOnce(&mut Session) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        println!();
        println!("==> {title}");
        let started = Instant::now();
        action(self).with_context(|| format!("step failed: {title}"))?;
        let took = started.elapsed();
        println!("    ok ({:.2} s)", took.as_secs_f64());
        self.timings.push((title.to_owned(), took));
        Ok(())
    }

    fn pack(&mut self, version: &str) -> anyhow::Result<()> {
        let build = self.dir.join("build");
        std::fs::write(build.join("version"), format!("{version}\n"))?;
        let config = build.join("ferry.toml");
        let example = toml_string(&self.example.display().to_string());
        std::fs::write(
            &config,
            format!(
                r#"[package]
name = "{APP}"
version = "{version}"
maintainer = "ferry quickstart <quickstart@example.com>"
description = "Hello service from the ferry quickstart"
section = "net"

[[files]]
source = {example}
dest = "/usr/bin/hello-service"
mode = "0755"

[[files]]
source = "version"
dest = "/usr/share/hello-service/version"
"#
            ),
        )?;
        let out = self.dir.join("build/out");
        self.ferry_command(&[
            "pack".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    }

    fn package_path(&self, version: &str) -> anyhow::Result<PathBuf> {
        let out = self.dir.join("build/out");
        let prefix = format!("{APP}_{version}_");
        for entry in
            std::fs::read_dir(&out).with_context(|| format!("cannot read {}", out.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(path);
            }
        }
        bail!("ferry pack wrote no {prefix}*.deb into {}", out.display())
    }

    fn publish(&mut self, version: &str) -> anyhow::Result<()> {
        let package = self.package_path(version)?;
        self.on_channel("publish", &[package.as_os_str()])
    }

    /// `ferry SUBCOMMAND` on the quickstart's store, app and channel, signed with its key.
    fn on_channel(&self, subcommand: &str, extra: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let key = self.dir.join("keys/release.key");
        let store = self.store.clone();
        let mut arguments: Vec<&std::ffi::OsStr> = vec![
            subcommand.as_ref(),
            "--store".as_ref(),
            store.as_ref(),
            "--app".as_ref(),
            APP.as_ref(),
            "--channel".as_ref(),
            CHANNEL.as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
        ];
        arguments.extend_from_slice(extra);
        self.ferry_command(&arguments)
    }

    fn write_agent_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("host/agent.toml");
        use ferry_agent::config::{HealthFile, InstallFile, RestartFile};
        let file = ferry_agent::AgentFile {
            store: Some(self.store.clone()),
            app: Some(APP.into()),
            channel: Some(CHANNEL.into()),
            trust: vec![self.dir.join("keys/release.pub")],
            interval: Some("1s".into()),
            state_dir: Some(self.dir.join("host/state")),
            host_id: Some("quickstart".into()),
            install: Some(InstallFile::Unpack {
                root: self.dir.join("host/srv"),
                keep: None,
            }),
            restart: Some(RestartFile::Supervisor {
                control: self.dir.join("host/hello.sock"),
                timeout: None,
            }),
            health: Some(HealthFile {
                http: Some(format!("http://{}/health", self.address)),
                timeout: Some("20s".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = format!(
            "# The agent's whole configuration for this host.\n{}",
            file.to_toml()?
        );
        std::fs::write(&path, text)?;
        println!("    {}:", path.display());
        for line in std::fs::read_to_string(&path)?.lines().skip(1) {
            println!("      {line}");
        }
        Ok(path)
    }

    /// Run `ferry ARGS…` to completion, showing the command; its output is indented.
    fn ferry_command(&self, arguments: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        println!("    $ {}", self.by_hand(arguments));
        let output = Command::new(&self.ferry)
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.ferry.display()))?;
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
        {
            println!("      {line}");
        }
        if !output.status.success() {
            bail!(
                "`ferry {}` failed ({})",
                arguments[0].to_string_lossy(),
                output.status
            );
        }
        Ok(())
    }

    /// Start `ferry ARGS…` in the background with its output in `logs/NAME.log`.
    fn spawn(&mut self, name: &'static str, arguments: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let log_path = self.dir.join("logs").join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        println!(
            "    $ {} &    # logs: {}",
            self.by_hand(arguments),
            log_path.display()
        );
        let child = Command::new(&self.ferry)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `ferry {name}`"))?;
        self.children.push((name, child));
        Ok(())
    }

    fn by_hand(&self, arguments: &[&std::ffi::OsStr]) -> String {
        let mut line = String::from("ferry");
        for argument in arguments {
            let text = argument.to_string_lossy();
            if text.is_empty() || text.contains([' ', '"', '\'']) {
                let _ = write!(line, " '{text}'");
            } else {
                let _ = write!(line, " {text}");
            }
        }
        line
    }

    fn wait_for_version(&mut self, version: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            self.check_children()?;
            if client::current_version(self.address).as_deref() == Some(version) {
                println!("    $ curl http://{}/   →   {version}", self.address);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the service at {} did not answer {version} within {} s (see logs/agent.log and logs/run.log)",
                    self.address,
                    STEP_DEADLINE.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_children(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("`ferry {name}` exited unexpectedly ({status}); see logs/{name}.log");
            }
        }
        Ok(())
    }

    fn stop_processes(&mut self) {
        // The agent first, so it does not act on a supervisor that is going away.
        for (_, child) in self.children.iter_mut().rev() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    fn leave_running(&mut self) {
        println!();
        println!("==> left running (--keep):");
        for (name, child) in &self.children {
            println!("    ferry {name}: pid {}", child.id());
        }
        println!(
            "    try: curl http://{}/   ·   ferry agent status --config {}",
            self.address,
            self.dir.join("host/agent.toml").display()
        );
        let pids: Vec<String> = self
            .children
            .iter()
            .map(|(_, child)| child.id().to_string())
            .collect();
        println!("    stop: kill {}", pids.join(" "));
        // Dropping a std Child neither kills nor waits for it.
        self.children.clear();
    }

    fn timings(&self) -> String {
        let mut text = String::new();
        for (title, took) in &self.timings {
            let _ = writeln!(text, "    {:>6.2} s  {title}", took.as_secs_f64());
        }
        text
    }
}

fn toml_string(text: &str) -> String {
    // A TOML basic string is JSON-compatible for the characters a path can hold.
    serde_json::to_string(text).expect("a string serializes")
}

fn describe_versions(tally: &Tally) -> String {
    tally
        .ok_by_version
        .iter()
        .map(|(version, count)| format!("{version}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
