//! The agent's TOML file as the operator writes it: every key, typo-proof
//! (`deny_unknown_fields`), read through the bounded reader, and written back by the one
//! writer ferry has for agent files ([`AgentFile::to_toml`]). `config.rs` resolves it, with
//! the command line and environment, into settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A command as a list of words, or as one string split at whitespace (as systemd's
/// `ExecStart=` is); a word with spaces needs the list form.
fn command_words<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        List(Vec<String>),
        Line(String),
    }
    Ok(match Words::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom(
            "expected a command: a list like [\"/usr/bin/tool\", \"--flag\"] or a string like \"/usr/bin/tool --flag\"",
        )
    })? {
        Words::List(words) => words,
        Words::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
    })
}

/// The agent's TOML file, exactly as written by the operator.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentFile {
    /// The store URL: `file:///srv/ferry`, `s3://bucket/prefix`, or `https://cdn/ferry` (a
    /// static server or CDN in front of the store, read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Where host reports are written when `store` is read-only (an `https://` CDN): the
    /// `s3://` or `file://` store behind it. Default: `store` itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_store: Option<String>,
    /// A custom S3 endpoint (MinIO, a local test server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The application name, as published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The channel to follow (default `stable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Paths of trusted minisign public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<PathBuf>,
    /// Paths of pinned root keys: the app's keyring (signed by them) says which release keys
    /// may sign which channel, and how many (docs/trust.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_root: Vec<PathBuf>,
    /// Time between polls (default `10s`), e.g. `"30s"`, `"500ms"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Random extra delay added to each interval, up to this much (default a tenth of the interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// The longest wait between retries while the store fails (default `5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<String>,
    /// Rewrite the host report this often even when nothing changed (default `5m`, jittered
    /// by up to a tenth; `"off"` for never), so `ferry status` can tell a dead host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    /// Where the journal lives (default `/var/lib/ferry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Where downloaded artifacts are kept (default `<state-dir>/cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// This host's id (default: the contents of `/etc/machine-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The Debian architecture to install (default: this machine's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Write status reports to `apps/<app>/hosts/<host-id>.json` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<bool>,
    /// Spread the fleet's reports over this many shard objects instead of one object per
    /// host (default 0: one per host). For fleets of tens of thousands, where `ferry status`
    /// would otherwise read every host's object; every agent of the app uses the same number
    /// (docs/scale.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_shards: Option<u32>,
    /// How many artifacts to keep in the cache, the current one included (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_artifacts: Option<usize>,
    /// How to install a release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallFile>,
    /// How to make the service pick up a new release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartFile>,
    /// How to tell whether the new release works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthFile>,
    /// Config bundles: where their files go (see docs/config.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigFile>,
    /// The agent updating itself from ferry's own channel (see docs/provisioning.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_update: Option<SelfUpdateFile>,
    /// When installs may happen, e.g. `["Mon-Fri 02:00-05:00 Europe/Berlin"]` (default: any
    /// time; `[]` in an `[[app]]` table says "any time" over a top-level list). Outside every
    /// window a release is downloaded and verified, then waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Vec<String>>,
    /// `"now"` (default) or `"on-reboot"`: install a new release only at the first cycle
    /// after the host boots again, for services that must not be restarted while up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply: Option<String>,
    /// A file the application locks (flock) while it must not be restarted; the agent waits
    /// for it before installing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_lock: Option<PathBuf>,
    /// How long to wait for the update lock (default `10m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_lock_timeout: Option<String>,
    /// After that: `"skip"` (default; try again at the next poll) or `"proceed"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_lock_expired: Option<String>,
    /// Several apps served by this one agent: the `[[app]]` tables, each with the keys of a
    /// single-app file; the keys at the top are defaults every app inherits.
    #[serde(skip)]
    pub apps: Vec<AgentFile>,
}

/// `[config]`: config bundles.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// The directory the bundle's files are written into.
    pub dir: PathBuf,
    /// The config channel (default: the agent's channel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `[self-update]`: the agent follows ferry's own channel.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelfUpdateFile {
    /// The app holding ferry's package (default `ferry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Its channel (default `stable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `dpkg` or `unpack`.
    pub method: String,
    /// unpack: the directory holding releases/<version>/ and `current`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// The binary to re-execute into (default `/usr/bin/ferry`, or `<root>/current/usr/bin/ferry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// dpkg: the program (default `dpkg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpkg: Option<PathBuf>,
    /// dpkg: extra arguments before the action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpkg_args: Vec<String>,
}

/// `[install]`, chosen by its `method` key; each method takes only its own keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(
    tag = "method",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum InstallFile {
    /// `method = "unpack"`: data.tar into `<root>/releases/<version>/`, `current` switched.
    Unpack {
        /// The directory holding `releases/<version>/` and the `current` link.
        root: PathBuf,
        /// How many releases to keep under `releases/` (default 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep: Option<usize>,
    },
    /// `method = "dpkg"`: `dpkg -i`.
    Dpkg {
        /// The program to run (default `dpkg`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dpkg: Option<PathBuf>,
        /// Extra arguments put before the action, e.g. `["--root=/sandbox"]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dpkg_args: Vec<String>,
        /// How long to wait for the dpkg lock (default `5m`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock_timeout: Option<String>,
    },
}

/// `[restart]`, chosen by its `method` key; each method takes only its own keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(
    tag = "method",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum RestartFile {
    /// `method = "supervisor"`: a zero-downtime swap by `ferry run --control SOCKET`.
    Supervisor {
        /// The control socket of `ferry run --control`.
        control: PathBuf,
        /// How long the swap may take (default `60s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// `method = "systemd"`: `systemctl reload-or-restart UNIT`.
    Systemd {
        /// The unit.
        unit: String,
        /// How long systemctl may take (default `60s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// `method = "signal"`: a signal to the PID in `pidfile` or to `unit`'s MainPID.
    Signal {
        /// The pidfile to read the PID from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pidfile: Option<PathBuf>,
        /// The unit whose MainPID gets the signal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        /// The signal's name (default `HUP`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        /// Accepted as for every method; sending a signal takes no time to wait for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// `method = "exec"`: run a command.
    Exec {
        /// The command and its arguments: a list, or one string split at whitespace
        /// (`command = "/usr/bin/hello-reload --graceful"`).
        #[serde(deserialize_with = "command_words")]
        command: Vec<String>,
        /// How long it may run (default `60s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// `method = "none"`: nothing (the package's postinst restarts the service, say).
    None {
        /// Accepted as for every method; there is nothing to wait for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
}

/// `[health]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthFile {
    /// GET this `http://` URL and expect a 2xx answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// With `http`: the body must contain this text; `{version}` stands for the release's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// Connect to this `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Run this command and expect exit status 0 (a list, or one string split at whitespace).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "command_words"
    )]
    pub command: Vec<String>,
    /// The service's process must still be alive after this long (e.g. `"5s"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_for: Option<String>,
    /// For `running-for` with a restart method that does not report a PID: read it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// The deadline for the check to pass (default `20s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Time between attempts within the deadline (default `250ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Passes in a row needed (default 3), so one answer from a draining old process does
    /// not count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes: Option<u32>,
}

/// An agent file is a few KiB; anything past this is not one.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl AgentFile {
    /// The file as TOML text: the one writer of agent files (cloud-init, the quickstart and
    /// the test fleets build an `AgentFile` and call this; no hand-built TOML).
    pub fn to_toml(&self) -> Result<String, Error> {
        let error = |error: toml::ser::Error| Error::Config {
            path: PathBuf::from("agent.toml"),
            message: format!("cannot write the agent file: {error}"),
        };
        if self.apps.is_empty() {
            return toml::to_string(self).map_err(error);
        }
        let mut table = toml::Table::try_from(self).map_err(error)?;
        let apps = self
            .apps
            .iter()
            .map(|app| toml::Table::try_from(app).map(toml::Value::Table))
            .collect::<Result<Vec<_>, _>>()
            .map_err(error)?;
        table.insert("app".into(), toml::Value::Array(apps));
        toml::to_string(&table).map_err(error)
    }

    /// Parse the TOML text of an agent file; `origin` names it in errors. `app` is either
    /// the app's name (a single-app file) or a list of `[[app]]` tables.
    pub fn parse(text: &str, origin: &Path) -> Result<AgentFile, Error> {
        let error = |message: String| Error::Config {
            path: origin.to_path_buf(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|source| error(source.to_string()))?;
        let Some(toml::Value::Array(items)) = table.remove("app") else {
            // Parsed again as the typed file, for errors that point at the line.
            return toml::from_str(text).map_err(|source| error(source.to_string()));
        };
        let mut file: AgentFile =
            toml::Value::Table(table)
                .try_into()
                .map_err(|source: toml::de::Error| {
                    error(format!("at the top: {}", source.message()))
                })?;
        for (index, item) in items.into_iter().enumerate() {
            let name = item.get("app").and_then(toml::Value::as_str).map_or_else(
                || format!("number {}", index + 1),
                |name| format!("{name:?}"),
            );
            let app: AgentFile = item.try_into().map_err(|source: toml::de::Error| {
                error(format!("in the [[app]] table {name}: {}", source.message()))
            })?;
            file.apps.push(app);
        }
        Ok(file)
    }

    /// This `[[app]]` table with every key it leaves out taken from the top of the file.
    /// `[self-update]` is not inherited: it belongs to the agent, not to an app.
    pub fn inherit(mut self, top: &AgentFile) -> AgentFile {
        macro_rules! inherit {
            ($($field:ident),*) => {
                $(if self.$field.is_none() { self.$field = top.$field.clone(); })*
            };
        }
        inherit!(
            store,
            report_store,
            s3_endpoint,
            channel,
            interval,
            jitter,
            backoff_max,
            heartbeat,
            state_dir,
            host_id,
            architecture,
            report,
            report_shards,
            keep_artifacts,
            install,
            restart,
            health,
            config,
            apply,
            update_lock,
            update_lock_timeout,
            update_lock_expired,
            window
        );
        for (mine, theirs) in [
            (&mut self.trust, &top.trust),
            (&mut self.trust_root, &top.trust_root),
        ] {
            if mine.is_empty() {
                mine.clone_from(theirs);
            }
        }
        self
    }

    /// Read and parse an agent file.
    pub fn read(path: &Path) -> Result<AgentFile, Error> {
        let text = ferry_release::read_local_text(path, MAX_CONFIG_BYTES).map_err(|cause| {
            let next = if cause.kind() == std::io::ErrorKind::NotFound {
                " (write one, docs/agent.md lists every key; `ferry cloud-init` writes one for a new server; or pass --config PATH)"
            } else {
                ""
            };
            Error::Config {
                path: path.to_path_buf(),
                message: format!("cannot read it: {cause}{next}"),
            }
        })?;
        AgentFile::parse(&text, path)
    }
}
