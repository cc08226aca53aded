//! `ferry try`: install a package on a throwaway Debian host before publishing it. The host
//! is booted with systemd as PID 1 (systemd-nspawn, ferry-host), gets the package with real
//! `dpkg -i`, starts its units, runs the health check inside, prints what happened and is
//! always removed. Exit 0 only when the package installed, its units are active and the
//! health check passed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_host::{Bind, Host, HostConfig, Image};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Needs root and systemd-nspawn (Debian package systemd-container); the \
                        image is built once with mmdebstrap.\n\
                        Example: ferry try hello_1.0.0_amd64.deb --with ferry_0.1.0-1_amd64.deb \
                        --health http://127.0.0.1:8080/health"
)]
pub struct Args {
    /// The package to try.
    #[arg(value_name = "PACKAGE.deb", required_unless_present = "build_image")]
    pub package: Option<PathBuf>,
    /// Install this package first, e.g. ferry's own for units that run `ferry run`
    /// (repeatable; the host has no network, so dependencies come this way).
    #[arg(long = "with", value_name = "DEB")]
    pub with: Vec<PathBuf>,
    /// The systemd units to check (default: the .service units the package ships).
    #[arg(long = "unit", value_name = "UNIT")]
    pub units: Vec<String>,
    /// GET this URL inside the host after the install; healthy on 2xx.
    #[arg(long, value_name = "URL")]
    pub health: Option<String>,
    /// How long the units and the health check get to come up.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "60s")]
    pub timeout: Duration,
    /// The host image (a Debian bookworm root filesystem, built here when missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "FERRY_IMAGE",
        default_value = "/var/cache/ferry/images/bookworm"
    )]
    pub image: PathBuf,
    /// The Debian mirror the image is built from.
    #[arg(long, value_name = "URL", env = "FERRY_IMAGE_MIRROR", default_value = ferry_host::DEFAULT_MIRROR)]
    pub mirror: String,
    /// Only build (or bring up to date) the image, then exit.
    #[arg(long)]
    pub build_image: bool,
}

/// Where the packages appear inside the host.
const PACKAGES_DIR: &str = "/run/ferry-try";
/// How long dpkg may take.
const DPKG_LIMIT: Duration = Duration::from_secs(300);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(error) = ferry_host::unavailable() {
        return Err(error).context("ferry try cannot boot a host here");
    }
    let image = Image::ensure(&args.image, &args.mirror, &mut |message| {
        eprintln!("{message}")
    })
    .context("cannot prepare the host image")?;
    if args.build_image {
        println!("image ready: {}", image.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    let package = args.package.clone().context("no PACKAGE.deb given")?;
    let tried = Package::read(&package)?;
    let mut extras = Vec::new();
    for path in &args.with {
        extras.push(Package::read(path)?);
    }
    let units = if args.units.is_empty() {
        tried.units.clone()
    } else {
        args.units.clone()
    };

    let work = tempfile::Builder::new()
        .prefix("ferry-try-")
        .tempdir()
        .context("cannot create a work directory for the host")?;
    let mut binds = Vec::new();
    for (index, item) in extras.iter().chain([&tried]).enumerate() {
        binds.push(Bind {
            source: item.path.clone(),
            target: format!("{PACKAGES_DIR}/{index}-{}", item.file_name),
            read_only: true,
        });
    }
    let config = HostConfig {
        name: "ferry-try".into(),
        binds,
        ..Default::default()
    };
    let mut host = Host::create(&image, &work.path().join("host"), config)?;
    let started = Instant::now();
    host.boot()?;
    println!(
        "ferry try: {} {} on a fresh Debian {} host (booted in {:.1} s)",
        tried.name,
        tried.version,
        ferry_host::SUITE,
        started.elapsed().as_secs_f64()
    );
    let healthy = try_on(&host, &args, &extras, &tried, &units)?;
    host.shutdown();
    drop(work);
    if healthy {
        println!(
            "result: {} {} installed and healthy",
            tried.name, tried.version
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "result: {} {} FAILED on a fresh host",
            tried.name, tried.version
        );
        Ok(ExitCode::from(1))
    }
}

/// Install, start, check; print each step. Ok(false) when the package failed on the host.
fn try_on(
    host: &Host,
    args: &Args,
    extras: &[Package],
    tried: &Package,
    units: &[String],
) -> anyhow::Result<bool> {
    for (index, item) in extras.iter().chain([tried]).enumerate() {
        let inside = format!("{PACKAGES_DIR}/{index}-{}", item.file_name);
        let finished = host.run(&["dpkg", "-i", &inside], DPKG_LIMIT)?;
        if !finished.success() {
            println!("  install   FAILED  dpkg -i {}", item.file_name);
            print_indented(&finished.describe());
            return Ok(false);
        }
        println!("  install   ok      dpkg -i {}", item.file_name);
    }
    let deadline = Instant::now() + args.timeout;
    let mut ok = true;
    for unit in units {
        let active = host.run(&["systemctl", "is-active", unit], Duration::from_secs(10))?;
        if active.stdout.trim() != "active" {
            // Not started by its package (e.g. `start = false`): start it, as a first boot would.
            let _ = host.run(
                &["systemctl", "start", "--no-block", unit],
                Duration::from_secs(30),
            )?;
        }
        let state = wait_active(host, unit, deadline)?;
        let pid = host
            .run(
                &["systemctl", "show", "-p", "MainPID", "--value", unit],
                Duration::from_secs(10),
            )?
            .stdout;
        if state == "active" {
            println!("  unit      ok      {unit}: active, MainPID {}", pid.trim());
        } else {
            ok = false;
            println!("  unit      FAILED  {unit}: {state}");
            print_indented(&unit_journal(host, unit));
        }
    }
    if let (true, Some(url)) = (ok, &args.health) {
        let started = Instant::now();
        loop {
            let finished = host.run(
                &[
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-m",
                    "5",
                    url,
                ],
                Duration::from_secs(10),
            )?;
            let code = finished.stdout.trim().to_owned();
            if code.starts_with('2') {
                println!(
                    "  health    ok      {url}: {code} after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            if Instant::now() >= deadline {
                ok = false;
                let seen = if code.is_empty() || code == "000" {
                    finished.stderr.trim().to_owned()
                } else {
                    format!("HTTP {code}")
                };
                println!("  health    FAILED  {url}: {seen} (for {:?})", args.timeout);
                for unit in units {
                    print_indented(&unit_journal(host, unit));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(ok)
}

/// Wait until `unit` is active, failed, or the deadline passed; its last state.
fn wait_active(host: &Host, unit: &str, deadline: Instant) -> anyhow::Result<String> {
    loop {
        let state = host
            .run(&["systemctl", "is-active", unit], Duration::from_secs(10))?
            .stdout
            .trim()
            .to_owned();
        if state == "active" || state == "failed" || Instant::now() >= deadline {
            return Ok(state);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unit_journal(host: &Host, unit: &str) -> String {
    match host.run(
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-n",
            "30",
            "-u",
            unit,
        ],
        Duration::from_secs(20),
    ) {
        Ok(finished) => format!("journal of {unit}:\n{}", finished.stdout.trim_end()),
        Err(error) => format!("(cannot read the journal of {unit}: {error})"),
    }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("            {line}");
    }
}

/// A .deb to install: its name, version and the service units it ships.
struct Package {
    path: PathBuf,
    file_name: String,
    name: String,
    version: String,
    units: Vec<String>,
}

impl Package {
    fn read(path: &Path) -> anyhow::Result<Package> {
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let deb = ferry_deb::DebReader::open(&path)
            .with_context(|| format!("{} is not a readable .deb", path.display()))?;
        let name = deb.control().package().unwrap_or_default().to_owned();
        let version = deb.control().version().unwrap_or_default().to_owned();
        if name.is_empty() {
            bail!("{} has no Package field", path.display());
        }
        let mut units = Vec::new();
        let mut archive = deb
            .into_data_archive()
            .with_context(|| format!("cannot read the files of {}", path.display()))?;
        let entries = archive
            .entries()
            .with_context(|| format!("cannot read the files of {}", path.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot read the files of {}", path.display()))?;
            let entry_path = entry.path().map(|path| path.to_string_lossy().into_owned());
            if let Ok(entry_path) = entry_path {
                let in_unit_dir = ["lib/systemd/system/", "usr/lib/systemd/system/"]
                    .iter()
                    .any(|dir| entry_path.trim_start_matches("./").starts_with(dir));
                if in_unit_dir && entry_path.ends_with(".service") && !entry_path.contains('@') {
                    if let Some(unit) = entry_path.rsplit('/').next() {
                        units.push(unit.to_owned());
                    }
                }
            }
        }
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "package.deb".into());
        Ok(Package {
            path,
            file_name,
            name,
            version,
            units,
        })
    }
}
