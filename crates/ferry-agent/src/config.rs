//! The agent's configuration: the file (see `agent_file.rs`), the overrides the binary takes
//! from flags and `FERRY_*` variables, and the resolved
//! [`Settings`] with every default filled in, so the rest of the agent never sees an `Option`
//! it has to interpret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;
pub use crate::agent_file::{
    AgentFile, ConfigFile, HealthFile, InstallFile, RestartFile, SelfUpdateFile,
};
pub use crate::health::{Health, Probe};
pub use crate::install::Install;
pub use crate::restart::{Restart, SignalTarget};

/// What the command line and the environment override. Each field is `None` when neither set it.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--store` / `FERRY_STORE`.
    pub store: Option<String>,
    /// `--s3-endpoint` / `FERRY_S3_ENDPOINT` / `AWS_ENDPOINT_URL`.
    pub s3_endpoint: Option<String>,
    /// `FERRY_APP`.
    pub app: Option<String>,
    /// `FERRY_CHANNEL`.
    pub channel: Option<String>,
    /// `FERRY_TRUST` (a list).
    pub trust: Option<Vec<PathBuf>>,
    /// `FERRY_AGENT_INTERVAL`.
    pub interval: Option<String>,
    /// `FERRY_STATE_DIR`.
    pub state_dir: Option<PathBuf>,
    /// `FERRY_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    /// `FERRY_HOST_ID`.
    pub host_id: Option<String>,
    /// `FERRY_ARCHITECTURE`.
    pub architecture: Option<String>,
    /// `FERRY_BOOT_ID`: this boot's id (default: the kernel's
    /// `/proc/sys/kernel/random/boot_id`), which `apply = "on-reboot"` compares.
    pub boot_id: Option<String>,
}

/// When a verified release is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Apply {
    /// As soon as its wave, the window and the update lock allow.
    #[default]
    Now,
    /// At the first cycle after the host boots again.
    OnReboot,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Store URL.
    pub store: String,
    /// Where reports go when not to `store` (`report-store`).
    pub report_store: Option<String>,
    /// Custom S3 endpoint, if any.
    pub s3_endpoint: Option<String>,
    /// Application name.
    pub app: String,
    /// Channel followed.
    pub channel: String,
    /// Trusted public key files (at least one, unless `trust_root` is set).
    pub trust: Vec<PathBuf>,
    /// Pinned root key files of the app's keyring (docs/trust.md).
    pub trust_root: Vec<PathBuf>,
    /// Time between polls.
    pub interval: Duration,
    /// Upper bound of the random extra delay per poll.
    pub jitter: Duration,
    /// Cap of the error backoff.
    pub backoff_max: Duration,
    /// How often the report is rewritten when nothing changed (`None`: never).
    pub heartbeat: Option<Duration>,
    /// Journal directory.
    pub state_dir: PathBuf,
    /// Artifact cache directory.
    pub cache_dir: PathBuf,
    /// This host's id.
    pub host_id: String,
    /// Debian architecture installed.
    pub architecture: String,
    /// Whether status reports are written to the store.
    pub report: bool,
    /// Reports go into this many shard objects (0: one object per host).
    pub report_shards: u32,
    /// Artifacts kept in the cache.
    pub keep_artifacts: usize,
    /// Install method.
    pub install: Install,
    /// Restart method.
    pub restart: Restart,
    /// Health check.
    pub health: Health,
    /// Config bundles, when `[config]` is set.
    pub config: Option<crate::config_bundle::ConfigSettings>,
    /// Self-update, when `[self-update]` is set.
    pub self_update: Option<crate::self_update::SelfUpdateSettings>,
    /// Update windows (empty: any time).
    pub window: crate::window::Windows,
    /// Install now, or at the next boot.
    pub apply: Apply,
    /// The application's update lock, when `update-lock` is set.
    pub update_lock: Option<crate::update_lock::UpdateLock>,
    /// This boot's id (for `apply = "on-reboot"`).
    pub boot_id: String,
}

fn config_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse a duration like `10s`, `500ms`, `5m`, naming the key in the error.
pub fn parse_duration(text: &str, key: &str, origin: &Path) -> Result<Duration, Error> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        config_error(
            origin,
            format!(
                "`{key}` = {text:?} is not a duration ({error}); write e.g. \"10s\" or \"500ms\""
            ),
        )
    })
}

fn duration_or(
    text: Option<&String>,
    key: &str,
    default: Duration,
    origin: &Path,
) -> Result<Duration, Error> {
    match text {
        Some(text) => parse_duration(text, key, origin),
        None => Ok(default),
    }
}

/// This machine's Debian architecture name.
pub fn host_architecture() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
    .to_string()
}

/// Read the host id from a machine-id file.
pub fn read_machine_id(path: &Path) -> Result<String, Error> {
    let text = ferry_release::read_local_text(path, 4096).map_err(|cause| {
        Error::io(
            "read the host id (set `host-id` or FERRY_HOST_ID)",
            path,
            cause,
        )
    })?;
    let id = text.trim().to_string();
    if id.is_empty() {
        return Err(config_error(
            path,
            "the machine id is empty; set `host-id` or FERRY_HOST_ID",
        ));
    }
    Ok(id)
}

/// A signal name (`HUP`, `SIGUSR2`) or number to its number.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "KILL" => libc::SIGKILL,
        other => {
            return other
                .parse()
                .ok()
                .filter(|number| (1..=64).contains(number));
        }
    };
    Some(number)
}

/// ferry's one name rule (`ferry_release::check_name`), which publishers apply too.
fn valid_name(text: &str) -> bool {
    ferry_release::check_name(text).is_ok()
}

/// Where the kernel says which boot this is.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl Settings {
    /// Resolve a file into the settings of every app it holds: one for a single-app file,
    /// one per `[[app]]` table otherwise (each table's keys over the top-level ones).
    /// `FERRY_APP` and `FERRY_CHANNEL` name one app, so they apply only to a single-app file.
    pub fn resolve_all(
        mut file: AgentFile,
        overrides: Overrides,
        origin: &Path,
        machine_id: &Path,
    ) -> Result<Vec<Settings>, Error> {
        if file.apps.is_empty() {
            return Ok(vec![Settings::resolve(
                file, overrides, origin, machine_id,
            )?]);
        }
        if file.app.is_some() {
            return Err(config_error(
                origin,
                "`app` names an app at the top and there are [[app]] tables too; move it into its own [[app]] table",
            ));
        }
        if overrides.app.is_some() || overrides.channel.is_some() {
            return Err(config_error(
                origin,
                "FERRY_APP or FERRY_CHANNEL is set, but this file serves several apps ([[app]] tables); unset them and set `app`/`channel` in each table",
            ));
        }
        let apps = std::mem::take(&mut file.apps);
        let self_update = file.self_update.take();
        let mut all: Vec<Settings> = Vec::with_capacity(apps.len());
        for (index, app) in apps.into_iter().enumerate() {
            let name = app
                .app
                .clone()
                .unwrap_or_else(|| format!("number {}", index + 1));
            let in_table = |error: Error| match error {
                Error::Config { path, message } => Error::Config {
                    path,
                    message: format!("in the [[app]] table {name:?}: {message}"),
                },
                other => other,
            };
            if app.self_update.is_some() {
                return Err(in_table(config_error(
                    origin,
                    "[self-update] updates the agent itself: put it at the top of the file, not in an [[app]] table",
                )));
            }
            let explicit_cache = app.cache_dir.is_some();
            let mut merged = app.inherit(&file);
            // Each app prunes its own cache, so by default each gets a directory of its own.
            if !explicit_cache {
                let state_dir = overrides
                    .state_dir
                    .clone()
                    .or(merged.state_dir.clone())
                    .unwrap_or_else(|| PathBuf::from("/var/lib/ferry"));
                let base = overrides
                    .cache_dir
                    .clone()
                    .or(file.cache_dir.clone())
                    .unwrap_or_else(|| state_dir.join("cache"));
                let channel = merged.channel.clone().unwrap_or_else(|| "stable".into());
                let app_name = merged.app.clone().unwrap_or_default();
                merged.cache_dir = Some(base.join(format!("{app_name}.{channel}")));
            }
            if index == 0 {
                merged.self_update = self_update.clone();
            }
            let overrides = Overrides {
                cache_dir: None,
                ..overrides.clone()
            };
            let settings =
                Settings::resolve(merged, overrides, origin, machine_id).map_err(in_table)?;
            if let Some(other) = all.iter().find(|other| other.app == settings.app) {
                return Err(config_error(
                    origin,
                    format!(
                        "two [[app]] tables serve app {} ({}/{} and {}/{}); one agent serves each app once (its host report and keyring are the app's)",
                        other.app, other.app, other.channel, settings.app, settings.channel
                    ),
                ));
            }
            if let (Some(mine), Some(other)) = (
                &settings.config,
                all.iter().find(|other| {
                    other
                        .config
                        .as_ref()
                        .zip(settings.config.as_ref())
                        .is_some_and(|(theirs, mine)| theirs.dir == mine.dir)
                }),
            ) {
                return Err(config_error(
                    origin,
                    format!(
                        "apps {} and {} share the [config] dir {}; a bundle removes the files the last one had, so give each app its own",
                        other.app,
                        settings.app,
                        mine.dir.display()
                    ),
                ));
            }
            if let Some(other) = all
                .iter()
                .find(|other| other.cache_dir == settings.cache_dir)
            {
                return Err(config_error(
                    origin,
                    format!(
                        "apps {} and {} share `cache-dir` {}; each app prunes its own cache, so give each its own",
                        other.app,
                        settings.app,
                        settings.cache_dir.display()
                    ),
                ));
            }
            all.push(settings);
        }
        Ok(all)
    }

    /// Resolve a file plus overrides into settings. `origin` names the file in errors;
    /// `machine_id` is where the host id is read when neither the file nor the overrides set it.
    pub fn resolve(
        file: AgentFile,
        overrides: Overrides,
        origin: &Path,
        machine_id: &Path,
    ) -> Result<Settings, Error> {
        let store = overrides.store.or(file.store).ok_or_else(|| {
            config_error(
                origin,
                "`store` is missing (e.g. store = \"file:///srv/ferry\"); or set FERRY_STORE",
            )
        })?;
        let app = overrides
            .app
            .or(file.app)
            .ok_or_else(|| config_error(origin, "`app` is missing; or set FERRY_APP"))?;
        if !valid_name(&app) {
            return Err(config_error(
                origin,
                format!("`app` = {app:?} is not a valid name (letters, digits, - _ . +)"),
            ));
        }
        let channel = overrides
            .channel
            .or(file.channel)
            .unwrap_or_else(|| "stable".to_string());
        if !valid_name(&channel) {
            return Err(config_error(
                origin,
                format!("`channel` = {channel:?} is not a valid name (letters, digits, - _ . +)"),
            ));
        }
        let base = origin.parent().unwrap_or(Path::new("."));
        let trust: Vec<PathBuf> = overrides
            .trust
            .unwrap_or(file.trust)
            .into_iter()
            .map(|path| {
                if path.is_relative() {
                    base.join(path)
                } else {
                    path
                }
            })
            .collect();
        let trust_root: Vec<PathBuf> = file
            .trust_root
            .iter()
            .map(|path| {
                if path.is_relative() {
                    base.join(path)
                } else {
                    path.clone()
                }
            })
            .collect();
        if trust.is_empty() && trust_root.is_empty() {
            return Err(config_error(
                origin,
                "`trust` lists no public key; add trust = [\"/etc/ferry/release.pub\"] (or trust-root = [\"/etc/ferry/root.pub\"] for a keyring)",
            ));
        }
        let interval_text = overrides.interval.or(file.interval);
        let interval = duration_or(
            interval_text.as_ref(),
            "interval",
            Duration::from_secs(10),
            origin,
        )?;
        if interval.is_zero() {
            return Err(config_error(origin, "`interval` must be more than zero"));
        }
        let jitter = duration_or(file.jitter.as_ref(), "jitter", interval / 10, origin)?;
        let backoff_max = duration_or(
            file.backoff_max.as_ref(),
            "backoff-max",
            Duration::from_secs(300),
            origin,
        )?;
        let report_shards = file.report_shards.unwrap_or(0);
        if report_shards > ferry_release::MAX_REPORT_SHARDS {
            return Err(config_error(
                origin,
                format!(
                    "`report-shards` = {report_shards} is more than {}; 1024 serves 100,000 hosts",
                    ferry_release::MAX_REPORT_SHARDS
                ),
            ));
        }
        let heartbeat = match file.heartbeat.as_deref() {
            Some("off") => None,
            other => {
                let text = other.map(str::to_owned);
                let every =
                    duration_or(text.as_ref(), "heartbeat", Duration::from_secs(300), origin)?;
                if every.is_zero() {
                    return Err(config_error(
                        origin,
                        "`heartbeat` must be more than zero, or \"off\"",
                    ));
                }
                Some(every)
            }
        };
        let state_dir = overrides
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/ferry"));
        let cache_dir = overrides
            .cache_dir
            .or(file.cache_dir)
            .unwrap_or_else(|| state_dir.join("cache"));
        let host_id = match overrides.host_id.or(file.host_id) {
            Some(id) => id,
            None => read_machine_id(machine_id)?,
        };
        if !valid_name(&host_id) {
            return Err(config_error(
                origin,
                format!("host id {host_id:?} is not a valid name (letters, digits, - _ . +)"),
            ));
        }
        let architecture = overrides
            .architecture
            .or(file.architecture)
            .unwrap_or_else(host_architecture);
        let keep_artifacts = file.keep_artifacts.unwrap_or(3);
        if keep_artifacts < 2 {
            return Err(config_error(
                origin,
                "`keep-artifacts` must be at least 2 (the current release and the one to roll back to)",
            ));
        }

        let install_file = file.install.ok_or_else(|| {
            config_error(
                origin,
                "the [install] table is missing (method = \"unpack\" or \"dpkg\")",
            )
        })?;
        let install = resolve_install(install_file, origin)?;
        let restart = match file.restart {
            Some(restart) => resolve_restart(restart, origin)?,
            None => Restart::None,
        };
        let health = match file.health {
            Some(health) => resolve_health(health, origin)?,
            None => Health {
                probe: Probe::None,
                timeout: Duration::from_secs(20),
                retry: Duration::from_millis(250),
                successes: 1,
            },
        };
        let config = match file.config {
            Some(config) => {
                let channel = config.channel.unwrap_or_else(|| channel.clone());
                if !valid_name(&channel) {
                    return Err(config_error(
                        origin,
                        format!("[config] `channel` = {channel:?} is not a valid name"),
                    ));
                }
                if !config.dir.is_absolute() {
                    return Err(config_error(
                        origin,
                        format!("[config] `dir` = {:?} must be an absolute path", config.dir),
                    ));
                }
                Some(crate::config_bundle::ConfigSettings {
                    dir: config.dir,
                    channel,
                })
            }
            None => None,
        };
        let self_update = match file.self_update {
            Some(self_update) => {
                let app = self_update.app.unwrap_or_else(|| "ferry".to_owned());
                let channel = self_update.channel.unwrap_or_else(|| "stable".to_owned());
                if !valid_name(&app) || !valid_name(&channel) {
                    return Err(config_error(
                        origin,
                        format!("[self-update] {app:?}/{channel:?} is not a valid app/channel"),
                    ));
                }
                let file = match self_update.method.as_str() {
                    "unpack" => InstallFile::Unpack {
                        root: self_update.root.ok_or_else(|| {
                            config_error(origin, "[self-update] method \"unpack\" needs `root`")
                        })?,
                        keep: None,
                    },
                    "dpkg" => InstallFile::Dpkg {
                        dpkg: self_update.dpkg,
                        dpkg_args: self_update.dpkg_args,
                        lock_timeout: None,
                    },
                    other => {
                        return Err(config_error(
                            origin,
                            format!(
                                "[self-update] method {other:?} is unknown; use \"unpack\" or \"dpkg\""
                            ),
                        ));
                    }
                };
                let install = resolve_install(file, origin)
                    .map_err(|error| config_error(origin, format!("[self-update]: {error}")))?;
                let binary = self_update.binary.unwrap_or_else(|| match &install {
                    Install::Unpack { root, .. } => root.join("current/usr/bin/ferry"),
                    Install::Dpkg { .. } => PathBuf::from("/usr/bin/ferry"),
                });
                let config_path =
                    std::path::absolute(origin).unwrap_or_else(|_| origin.to_path_buf());
                Some(crate::self_update::SelfUpdateSettings {
                    app,
                    channel,
                    install,
                    binary,
                    config_path,
                })
            }
            None => None,
        };
        let window = crate::window::Windows::parse(file.window.as_deref().unwrap_or_default())
            .map_err(|error| config_error(origin, format!("`window` {error}")))?;
        let apply = match file.apply.as_deref() {
            None | Some("now") => Apply::Now,
            Some("on-reboot") => Apply::OnReboot,
            Some(other) => {
                return Err(config_error(
                    origin,
                    format!("`apply` = {other:?} is unknown; use \"now\" or \"on-reboot\""),
                ));
            }
        };
        let update_lock = match file.update_lock {
            Some(path) => {
                if !path.is_absolute() {
                    return Err(config_error(
                        origin,
                        format!("`update-lock` = {:?} must be an absolute path", path),
                    ));
                }
                let expired = match file.update_lock_expired.as_deref() {
                    None | Some("skip") => crate::update_lock::Expired::Skip,
                    Some("proceed") => crate::update_lock::Expired::Proceed,
                    Some(other) => {
                        return Err(config_error(
                            origin,
                            format!(
                                "`update-lock-expired` = {other:?} is unknown; use \"skip\" (try again at the next poll) or \"proceed\""
                            ),
                        ));
                    }
                };
                Some(crate::update_lock::UpdateLock {
                    path,
                    timeout: duration_or(
                        file.update_lock_timeout.as_ref(),
                        "update-lock-timeout",
                        Duration::from_secs(600),
                        origin,
                    )?,
                    expired,
                })
            }
            None if file.update_lock_timeout.is_some() || file.update_lock_expired.is_some() => {
                return Err(config_error(
                    origin,
                    "`update-lock-timeout` and `update-lock-expired` need `update-lock` = \"/run/APP/update.lock\"",
                ));
            }
            None => None,
        };
        let boot_id = match overrides.boot_id {
            Some(id) => id,
            None => ferry_release::read_local_text(Path::new(BOOT_ID), 256)
                .map(|text| text.trim().to_owned())
                .unwrap_or_default(),
        };
        if apply == Apply::OnReboot && boot_id.is_empty() {
            return Err(config_error(
                origin,
                format!(
                    "`apply` = \"on-reboot\" needs this boot's id, and {BOOT_ID} cannot be read; set FERRY_BOOT_ID"
                ),
            ));
        }
        Ok(Settings {
            window,
            apply,
            update_lock,
            boot_id,
            config,
            self_update,
            store,
            report_store: file.report_store,
            s3_endpoint: overrides.s3_endpoint.or(file.s3_endpoint),
            app,
            channel,
            trust,
            trust_root,
            interval,
            jitter,
            backoff_max,
            heartbeat,
            state_dir,
            cache_dir,
            host_id,
            architecture,
            report: file.report.unwrap_or(true),
            report_shards,
            keep_artifacts,
            install,
            restart,
            health,
        })
    }
}

fn resolve_install(file: InstallFile, origin: &Path) -> Result<Install, Error> {
    match file {
        InstallFile::Unpack { root, keep } => {
            let keep = keep.unwrap_or(3);
            if keep < 2 {
                return Err(config_error(
                    origin,
                    "[install] `keep` must be at least 2 (the current release and the one to roll back to)",
                ));
            }
            Ok(Install::Unpack { root, keep })
        }
        InstallFile::Dpkg {
            dpkg,
            dpkg_args,
            lock_timeout,
        } => Ok(Install::Dpkg {
            program: dpkg.unwrap_or_else(|| PathBuf::from("dpkg")),
            extra_args: dpkg_args,
            lock_timeout: duration_or(
                lock_timeout.as_ref(),
                "install.lock-timeout",
                Duration::from_secs(300),
                origin,
            )?,
        }),
    }
}

fn resolve_restart(file: RestartFile, origin: &Path) -> Result<Restart, Error> {
    let timeout = |text: Option<String>| {
        duration_or(
            text.as_ref(),
            "restart.timeout",
            Duration::from_secs(60),
            origin,
        )
    };
    match file {
        RestartFile::Supervisor {
            control,
            timeout: given,
        } => Ok(Restart::Supervisor {
            control,
            timeout: timeout(given)?,
        }),
        RestartFile::Systemd {
            unit,
            timeout: given,
        } => Ok(Restart::Systemd {
            unit,
            timeout: timeout(given)?,
        }),
        RestartFile::Signal {
            pidfile,
            unit,
            signal,
            timeout: given,
        } => {
            timeout(given)?; // still checked: a typo in it is an error, as before
            let target = match (pidfile, unit) {
                (Some(pidfile), None) => SignalTarget::Pidfile(pidfile),
                (None, Some(unit)) => SignalTarget::Unit(unit),
                _ => {
                    return Err(config_error(
                        origin,
                        "[restart] method \"signal\" needs exactly one of `pidfile` or `unit` (never a process name)",
                    ));
                }
            };
            let signal_name = signal.unwrap_or_else(|| "HUP".to_string());
            let signal = signal_number(&signal_name).ok_or_else(|| {
                config_error(
                    origin,
                    format!(
                        "[restart] signal {signal_name:?} is unknown (use e.g. \"HUP\", \"USR2\")"
                    ),
                )
            })?;
            Ok(Restart::Signal {
                target,
                signal,
                signal_name,
            })
        }
        RestartFile::Exec {
            command,
            timeout: given,
        } => {
            if command.is_empty() {
                return Err(config_error(
                    origin,
                    "[restart] method \"exec\" needs `command` = [\"program\", \"arg\", …]",
                ));
            }
            Ok(Restart::Exec {
                command,
                timeout: timeout(given)?,
            })
        }
        RestartFile::None { timeout: given } => {
            timeout(given)?;
            Ok(Restart::None)
        }
    }
}

fn resolve_health(file: HealthFile, origin: &Path) -> Result<Health, Error> {
    let timeout = duration_or(
        file.timeout.as_ref(),
        "health.timeout",
        Duration::from_secs(20),
        origin,
    )?;
    let retry = duration_or(
        file.retry.as_ref(),
        "health.retry",
        Duration::from_millis(250),
        origin,
    )?;
    let mut probes = Vec::new();
    if let Some(url) = file.http {
        if !url.starts_with("http://") {
            return Err(config_error(
                origin,
                format!("[health] http = {url:?} must be an http:// URL"),
            ));
        }
        probes.push(Probe::Http {
            url,
            expect_body: file.expect_body,
        });
    } else if file.expect_body.is_some() {
        return Err(config_error(origin, "[health] `expect-body` needs `http`"));
    }
    if let Some(address) = file.tcp {
        probes.push(Probe::Tcp { address });
    }
    if !file.command.is_empty() {
        probes.push(Probe::Command {
            command: file.command,
        });
    }
    if let Some(duration) = file.running_for {
        probes.push(Probe::Running {
            duration: parse_duration(&duration, "health.running-for", origin)?,
            pidfile: file.pidfile,
        });
    }
    if probes.len() > 1 {
        return Err(config_error(
            origin,
            "[health] set only one of `http`, `tcp`, `command`, `running-for`",
        ));
    }
    let successes = file.successes.unwrap_or(3);
    if successes == 0 {
        return Err(config_error(
            origin,
            "[health] `successes` must be at least 1",
        ));
    }
    Ok(Health {
        probe: probes.pop().unwrap_or(Probe::None),
        timeout,
        retry,
        successes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
store = "s3://bucket/prefix"
app = "hello"
channel = "stable"
trust = ["/etc/ferry/release.pub"]
interval = "10s"
state-dir = "/var/lib/ferry"
[install]
method = "unpack"
root = "/srv/hello"
[restart]
method = "supervisor"
control = "/run/ferry/hello.sock"
[health]
http = "http://127.0.0.1:8080/health"
timeout = "20s"
"#;

    #[test]
    fn a_key_of_another_method_is_refused_by_name() {
        let text = ISSUE_EXAMPLE.replace("method = \"unpack\"", "method = \"dpkg\"");
        let error = resolve(&text, Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("root"), "{error}");
        let text = ISSUE_EXAMPLE.replace(
            "control = \"/run/ferry/hello.sock\"",
            "control = \"/run/ferry/hello.sock\"\nunit = \"hello.service\"",
        );
        let error = resolve(&text, Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("unit"), "{error}");
    }

    #[test]
    fn an_agent_file_written_by_to_toml_reads_back_the_same() {
        let origin = Path::new("/etc/ferry/agent.toml");
        let file = AgentFile::parse(ISSUE_EXAMPLE, origin).unwrap();
        let text = file.to_toml().unwrap();
        assert_eq!(AgentFile::parse(&text, origin).unwrap(), file, "{text}");
        assert!(
            !text.contains("s3-endpoint"),
            "unset keys are left out:\n{text}"
        );
    }

    /// Names publish could write that no agent would follow (or the reverse) were a bug: the
    /// two sides used to apply different rules.
    #[test]
    fn every_name_publish_accepts_the_agent_accepts_and_vice_versa() {
        let mut names: Vec<String> = vec![
            String::new(),
            ".".into(),
            "..".into(),
            ".hidden".into(),
            "x".repeat(128),
            "x".repeat(129),
            "hello world".into(),
            "ü".into(),
            "1.4.2-1+b1".into(),
        ];
        for code in (0u8..128).chain([0xe9, 0xff]) {
            let c = char::from(code);
            names.push(format!("a{c}b"));
            names.push(format!("{c}ab"));
            names.push(c.to_string());
        }
        for name in names {
            for as_app in [true, false] {
                let (app, channel) = if as_app {
                    (name.as_str(), "stable")
                } else {
                    ("hello", name.as_str())
                };
                let published = ferry_store::validate_target(app, channel).is_ok();
                let followed = resolve(
                    ISSUE_EXAMPLE,
                    Overrides {
                        app: Some(app.to_owned()),
                        channel: Some(channel.to_owned()),
                        ..Overrides::default()
                    },
                )
                .is_ok();
                assert_eq!(
                    published, followed,
                    "app {app:?} channel {channel:?}: publish says {published}, the agent {followed}"
                );
            }
        }
    }

    fn resolve(text: &str, overrides: Overrides) -> Result<Settings, Error> {
        let origin = Path::new("/etc/ferry/agent.toml");
        let file = AgentFile::parse(text, origin)?;
        let overrides = Overrides {
            host_id: overrides.host_id.clone().or(Some("host-1".into())),
            ..overrides
        };
        Settings::resolve(
            file,
            overrides,
            origin,
            Path::new("/nonexistent/machine-id"),
        )
    }

    #[test]
    fn the_issue_example_resolves_with_defaults() {
        let settings = resolve(ISSUE_EXAMPLE, Overrides::default()).unwrap();
        assert_eq!(settings.store, "s3://bucket/prefix");
        assert_eq!(settings.interval, Duration::from_secs(10));
        assert_eq!(settings.jitter, Duration::from_secs(1));
        assert_eq!(settings.cache_dir, PathBuf::from("/var/lib/ferry/cache"));
        assert_eq!(
            settings.install,
            Install::Unpack {
                root: "/srv/hello".into(),
                keep: 3
            }
        );
        assert_eq!(
            settings.restart,
            Restart::Supervisor {
                control: "/run/ferry/hello.sock".into(),
                timeout: Duration::from_secs(60)
            }
        );
        assert_eq!(
            settings.health.probe,
            Probe::Http {
                url: "http://127.0.0.1:8080/health".into(),
                expect_body: None
            }
        );
        assert!(settings.report);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = resolve(
            &format!("{ISSUE_EXAMPLE}\nintreval = \"5s\"\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("intreval"), "{error}");
        let error = resolve(
            &ISSUE_EXAMPLE.replace("root =", "rot ="),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("rot"), "{error}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            store: Some("file:///srv/ferry".into()),
            channel: Some("beta".into()),
            interval: Some("250ms".into()),
            trust: Some(vec!["/k.pub".into()]),
            ..Overrides::default()
        };
        let settings = resolve(ISSUE_EXAMPLE, overrides).unwrap();
        assert_eq!(settings.store, "file:///srv/ferry");
        assert_eq!(settings.channel, "beta");
        assert_eq!(settings.interval, Duration::from_millis(250));
        assert_eq!(settings.jitter, Duration::from_millis(25));
        assert_eq!(settings.trust, vec![PathBuf::from("/k.pub")]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = resolve(
            &ISSUE_EXAMPLE.replace("\"10s\"", "\"often\""),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("interval"), "{error}");
        let error = resolve(
            &ISSUE_EXAMPLE.replace("\"supervisor\"", "\"killall\""),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("killall"), "{error}");
        let error = resolve(
            &ISSUE_EXAMPLE.replace("app = \"hello\"", "app = \"../x\""),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("app"), "{error}");
        let error = resolve(
            &ISSUE_EXAMPLE.replace("root = \"/srv/hello\"", ""),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("root"), "{error}");
    }

    #[test]
    fn the_host_id_comes_from_the_machine_id_file() {
        let dir = tempfile::tempdir().unwrap();
        let machine_id = dir.path().join("machine-id");
        std::fs::write(&machine_id, "0123abcd\n").unwrap();
        let file = AgentFile::parse(ISSUE_EXAMPLE, Path::new("agent.toml")).unwrap();
        let settings = Settings::resolve(
            file.clone(),
            Overrides::default(),
            Path::new("agent.toml"),
            &machine_id,
        )
        .unwrap();
        assert_eq!(settings.host_id, "0123abcd");
        let error = Settings::resolve(
            file,
            Overrides::default(),
            Path::new("agent.toml"),
            &dir.path().join("missing"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("host-id"), "{error}");
    }

    #[test]
    fn signal_method_needs_a_pidfile_or_unit_and_a_known_signal() {
        let text = ISSUE_EXAMPLE.replace(
            "method = \"supervisor\"\ncontrol = \"/run/ferry/hello.sock\"",
            "method = \"signal\"\npidfile = \"/run/hello.pid\"\nsignal = \"usr2\"",
        );
        let settings = resolve(&text, Overrides::default()).unwrap();
        assert_eq!(
            settings.restart,
            Restart::Signal {
                target: SignalTarget::Pidfile("/run/hello.pid".into()),
                signal: libc::SIGUSR2,
                signal_name: "usr2".into()
            }
        );
        let text = text.replace("pidfile = \"/run/hello.pid\"", "");
        assert!(resolve(&text, Overrides::default()).is_err());
    }

    #[test]
    fn relative_trust_paths_are_relative_to_the_file() {
        let text = ISSUE_EXAMPLE.replace("/etc/ferry/release.pub", "keys/release.pub");
        let settings = resolve(&text, Overrides::default()).unwrap();
        assert_eq!(
            settings.trust,
            vec![PathBuf::from("/etc/ferry/keys/release.pub")]
        );
    }
}
