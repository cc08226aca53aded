//! `ferry cloud-init`: print `#cloud-config` user-data that turns a fresh server into a ferry
//! host — the trusted keys and `/etc/ferry/agent.toml` as `write_files`, a bootstrap script
//! that fetches ferry's own .deb (pinned by sha256), installs it and enables the agent's unit.
//!
//! The agent package comes from `--agent-deb URL`, or by default from the store's own `ferry`
//! app channel: that pointer is verified here with the same `--trust` keys, so the user-data
//! pins the sha256 of a signed artifact and the server checks it before installing. No
//! credential is ever written: on the server the store is read with the instance profile.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_release::{ChannelPointer, MAX_DOCUMENT_BYTES, PointerCheck, TrustedKeys};

use super::store_args::{ChannelArgs, runtime};

/// Where the generated files go on the server.
const AGENT_CONFIG_PATH: &str = "/etc/ferry/agent.toml";
const TRUSTED_KEY_DIR: &str = "/etc/ferry/trusted";
const ROOT_KEY_DIR: &str = "/etc/ferry/root";
const BOOTSTRAP_SCRIPT_PATH: &str = "/var/lib/ferry/bootstrap/install-agent.sh";
/// The agent's systemd unit, shipped by packaging/ferry.toml.
const AGENT_UNIT: &str = "ferry-agent.service";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The output goes to stdout; check it with `cloud-init schema --config-file FILE`."
)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    /// Trusted public key files, written to the server (repeat for key rotation).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PUBKEY",
        required_unless_present = "trust_root"
    )]
    pub trust: Vec<PathBuf>,
    /// Root public keys of the app's keyring, written to the server and pinned by the agent
    /// as `trust-root` (docs/trust.md); then `--trust` may be left out.
    #[arg(long = "trust-root", value_delimiter = ',', value_name = "PUBKEY")]
    pub trust_root: Vec<PathBuf>,
    /// Install the agent from this .deb (https://, http://, s3:// or file://) instead of the
    /// store's own `--agent-app` channel.
    #[arg(long, value_name = "URL")]
    pub agent_deb: Option<String>,
    /// The sha256 the `--agent-deb` download must have (required for http://).
    #[arg(long, value_name = "HEX", requires = "agent_deb")]
    pub agent_deb_sha256: Option<String>,
    /// The app in the store that holds ferry's own package.
    #[arg(long, value_name = "APP", default_value = "ferry")]
    pub agent_app: String,
    /// The channel of `--agent-app` to install from.
    #[arg(long, value_name = "CHANNEL", default_value = "stable")]
    pub agent_channel: String,
    /// The agent's poll interval, e.g. `30s` (default: the agent's, 10s).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// How the agent installs releases: `dpkg`, or `unpack` with `--install-root`.
    #[arg(long, value_name = "METHOD", default_value = "dpkg")]
    pub install: String,
    /// unpack: the directory holding releases/<version>/ and the `current` link.
    #[arg(long, value_name = "DIR")]
    pub install_root: Option<PathBuf>,
    /// Restart this systemd unit after an install (default: none; a package's postinst
    /// restarts its own unit on upgrade).
    #[arg(long, value_name = "UNIT")]
    pub restart_unit: Option<String>,
    /// Health check after an install: GET this http:// URL, expect 2xx.
    #[arg(long, value_name = "URL")]
    pub health_http: Option<String>,
    /// Apply config bundles (`ferry config push`) into this directory (`[config] dir`).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Let the agent update itself from `--agent-app`/`--agent-channel` (`[self-update]`).
    #[arg(long)]
    pub self_update: bool,
    /// Write this agent file instead of one made from the flags, e.g. one with several
    /// `[[app]]` tables (docs/agent.md). Where it leaves out `store`, `s3-endpoint` or `trust`
    /// (at the top and in every app), those of the flags are filled in; it is checked like
    /// a generated one.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["install", "install_root", "restart_unit", "health_http", "config_dir", "interval", "self_update"]
    )]
    pub agent_config: Option<PathBuf>,
}

/// Where the bootstrap script fetches the agent package from, and what it must hash to.
#[derive(Debug, Clone, PartialEq)]
enum AgentSource {
    /// One artifact per Debian architecture (`all` as the fallback), from a verified pointer.
    Store {
        description: String,
        artifacts: BTreeMap<String, Fetch>,
    },
    /// One URL for every architecture.
    Url(Fetch),
}

#[derive(Debug, Clone, PartialEq)]
struct Fetch {
    location: String,
    sha256: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut keys = read_trusted_keys(&args.trust, TRUSTED_KEY_DIR)?;
    let roots = read_trusted_keys(&args.trust_root, ROOT_KEY_DIR)?;
    let agent_config = agent_config(&args, &keys, &roots)?;
    keys.extend(roots);
    let source = match &args.agent_deb {
        Some(url) => AgentSource::Url(url_fetch(url, args.agent_deb_sha256.as_deref())?),
        None => store_fetch(&args)?,
    };
    let user_data = render(&args, &keys, &agent_config, &source);
    print!("{user_data}");
    Ok(ExitCode::SUCCESS)
}

/// A trusted key file: its id (the file name on the server) and its text.
#[derive(Debug, Clone)]
struct KeyFile {
    id: String,
    text: String,
    /// The directory it goes to on the server.
    dir: &'static str,
}

fn read_trusted_keys(paths: &[PathBuf], dir: &'static str) -> anyhow::Result<Vec<KeyFile>> {
    let mut keys: Vec<KeyFile> = Vec::new();
    for path in paths {
        let text = ferry_release::read_local_text(path, 16 * 1024)
            .with_context(|| format!("cannot read trusted key {}", path.display()))?;
        let id = TrustedKeys::new()
            .add_text(&text, path)
            .with_context(|| format!("{} is not a minisign public key", path.display()))?
            .to_string();
        if !keys.iter().any(|key| key.id == id) {
            keys.push(KeyFile {
                id,
                text: format!("{}\n", text.trim()),
                dir,
            });
        }
    }
    Ok(keys)
}

fn trusted_key_path(key: &KeyFile) -> String {
    format!("{}/{}.pub", key.dir, key.id)
}

/// The agent's TOML file: an `AgentFile` written by the agent's own serialiser, checked with
/// the agent's own settings resolution before it is printed.
fn agent_config(args: &Args, keys: &[KeyFile], roots: &[KeyFile]) -> anyhow::Result<String> {
    use ferry_agent::config::{ConfigFile, HealthFile, InstallFile, RestartFile, SelfUpdateFile};
    if let Some(path) = &args.agent_config {
        return given_agent_config(args, path, keys, roots);
    }
    let install = match (args.install.as_str(), &args.install_root) {
        ("unpack", Some(root)) => InstallFile::Unpack {
            root: root.clone(),
            keep: None,
        },
        ("unpack", None) => bail!("--install unpack needs --install-root DIR"),
        ("dpkg", None) => InstallFile::Dpkg {
            dpkg: None,
            dpkg_args: Vec::new(),
            lock_timeout: None,
        },
        ("dpkg", Some(_)) => bail!("--install-root only applies to --install unpack"),
        (other, _) => bail!("--install {other:?} is not a method; use dpkg or unpack"),
    };
    let restart = match &args.restart_unit {
        Some(unit) => RestartFile::Systemd {
            unit: unit.clone(),
            timeout: None,
        },
        None => RestartFile::None { timeout: None },
    };
    let file = ferry_agent::AgentFile {
        store: Some(args.target.store.store.clone()),
        s3_endpoint: args.target.store.s3_endpoint.clone(),
        app: Some(args.target.app.clone()),
        channel: Some(args.target.channel.clone()),
        trust: keys
            .iter()
            .map(|key| PathBuf::from(trusted_key_path(key)))
            .collect(),
        trust_root: roots
            .iter()
            .map(|root| PathBuf::from(trusted_key_path(root)))
            .collect(),
        interval: args.interval.clone(),
        state_dir: Some(PathBuf::from("/var/lib/ferry")),
        install: Some(install),
        restart: Some(restart),
        health: args.health_http.as_ref().map(|url| HealthFile {
            http: Some(url.clone()),
            ..Default::default()
        }),
        config: args.config_dir.as_ref().map(|dir| ConfigFile {
            dir: dir.clone(),
            channel: None,
        }),
        self_update: args.self_update.then(|| SelfUpdateFile {
            app: Some(args.agent_app.clone()),
            channel: Some(args.agent_channel.clone()),
            method: "dpkg".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let origin = Path::new(AGENT_CONFIG_PATH);
    // A fixed host id: the server's own comes from its /etc/machine-id.
    let overrides = ferry_agent::Overrides {
        host_id: Some("cloud-init-check".to_owned()),
        ..Default::default()
    };
    ferry_agent::Settings::resolve(
        file.clone(),
        overrides,
        origin,
        Path::new("/etc/machine-id"),
    )
    .context("the agent config these flags make is not valid")?;
    Ok(format!(
        "# Written by `ferry cloud-init`; docs/agent.md lists every key.\n{}",
        file.to_toml()?
    ))
}

/// `--agent-config FILE`: the operator's own agent file (one app or several), with the
/// flags' store and keys filled in where it names none, checked by the agent's resolution.
fn given_agent_config(
    args: &Args,
    path: &Path,
    keys: &[KeyFile],
    roots: &[KeyFile],
) -> anyhow::Result<String> {
    let mut file = ferry_agent::AgentFile::read(path)?;
    if file.store.is_none() {
        file.store = Some(args.target.store.store.clone());
    }
    if file.s3_endpoint.is_none() {
        file.s3_endpoint.clone_from(&args.target.store.s3_endpoint);
    }
    let names_keys =
        |file: &ferry_agent::AgentFile| !file.trust.is_empty() || !file.trust_root.is_empty();
    if !names_keys(&file) && !file.apps.iter().any(names_keys) {
        file.trust = keys
            .iter()
            .map(|key| PathBuf::from(trusted_key_path(key)))
            .collect();
        file.trust_root = roots
            .iter()
            .map(|root| PathBuf::from(trusted_key_path(root)))
            .collect();
    }
    let overrides = ferry_agent::Overrides {
        host_id: Some("cloud-init-check".to_owned()),
        boot_id: Some("cloud-init-check".to_owned()),
        ..Default::default()
    };
    let apps = ferry_agent::Settings::resolve_all(
        file.clone(),
        overrides,
        Path::new(AGENT_CONFIG_PATH),
        Path::new("/etc/machine-id"),
    )
    .with_context(|| format!("{} is not a valid agent file", path.display()))?;
    Ok(format!(
        "# Written by `ferry cloud-init` from {} ({} app{}); docs/agent.md lists every key.\n{}",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned()
        ),
        apps.len(),
        if apps.len() == 1 { "" } else { "s" },
        file.to_toml()?
    ))
}

fn url_fetch(url: &str, sha256: Option<&str>) -> anyhow::Result<Fetch> {
    let sha256 = match sha256 {
        Some(hex) => {
            let hex = hex.trim().to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                bail!("--agent-deb-sha256 {hex:?} is not a sha256 (64 hex digits)");
            }
            Some(hex)
        }
        None => None,
    };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("https" | "s3" | "file") => {}
        Some("http") if sha256.is_some() => {}
        Some("http") => bail!(
            "--agent-deb {url} is plain http: pass --agent-deb-sha256 so the server can check the download"
        ),
        _ => bail!("--agent-deb {url:?} must be an https://, http://, s3:// or file:// URL"),
    }
    if sha256.is_none() {
        tracing::warn!(
            url,
            "no --agent-deb-sha256: the server installs whatever the URL serves (only TLS protects it)"
        );
    }
    Ok(Fetch {
        location: url.to_owned(),
        sha256,
    })
}

/// Read and verify the `--agent-app` channel; one fetch per architecture it offers.
fn store_fetch(args: &Args) -> anyhow::Result<AgentSource> {
    let store = args.target.store.open(false)?;
    let trusted = if args.trust.is_empty() {
        // Only root keys: the agent package's channel is judged by the ferry app's keyring.
        let roots =
            TrustedKeys::from_files(&args.trust_root).context("cannot load --trust-root")?;
        let keyring = runtime()?
            .block_on(ferry_store::refresh_keyring(&store, &args.agent_app, None, &roots))
            .with_context(|| format!("the keyring of {} does not verify from --trust-root", args.agent_app))?
            .with_context(|| {
                format!(
                    "{} has no keyring to check ferry's own package with: pass --trust, or --agent-deb URL --agent-deb-sha256 HEX",
                    args.agent_app
                )
            })?;
        keyring.trusted_for(&args.agent_channel)?
    } else {
        TrustedKeys::from_files(&args.trust).context("cannot load the trusted keys")?
    };
    let path = ChannelPointer::path(&args.agent_app, &args.agent_channel);
    let object = runtime()?
        .block_on(store.get(&path, MAX_DOCUMENT_BYTES as u64))
        .with_context(|| format!("cannot read {}", store.location(&path)))?;
    let Some(object) = object else {
        bail!(
            "the store has no channel {app}/{channel} with ferry's own package: publish it first \
             (ferry pack --config packaging/ferry.toml; ferry publish --app {app} --channel {channel} …) \
             or pass --agent-deb URL",
            app = args.agent_app,
            channel = args.agent_channel
        );
    };
    let check = PointerCheck {
        app: &args.agent_app,
        channel: &args.agent_channel,
        highest_seen: None,
        now: ferry_release::now_utc(),
    };
    let verified =
        ferry_release::verify_pointer(&object.bytes, &trusted, &check).with_context(|| {
            format!(
                "the agent package's channel {} is not trusted",
                store.location(&path)
            )
        })?;
    let release = verified.pointer.release;
    let mut artifacts = BTreeMap::new();
    for (architecture, artifact) in &release.artifacts {
        artifacts.insert(
            architecture.clone(),
            Fetch {
                location: join_store_url(&args.target.store.store, &artifact.path),
                sha256: Some(artifact.sha256.clone()),
            },
        );
    }
    if artifacts.is_empty() {
        bail!(
            "release {} of {} has no artifact",
            release.version,
            args.agent_app
        );
    }
    Ok(AgentSource::Store {
        description: format!(
            "{}/{} {} (serial {})",
            args.agent_app, args.agent_channel, release.version, verified.pointer.serial
        ),
        artifacts,
    })
}

fn join_store_url(store: &str, path: &str) -> String {
    format!("{}/{path}", store.trim_end_matches('/'))
}

/// Quote a string for POSIX sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A `content:` value: a literal block when the text allows one, else a quoted scalar.
fn yaml_content(text: &str, indent: usize) -> String {
    let literal_ok = text.ends_with('\n')
        && !text.ends_with("\n\n")
        && !text.starts_with([' ', '\n'])
        && text.chars().all(|character| {
            character == '\n' || (!character.is_control() && character != '\u{feff}')
        });
    if !literal_ok {
        return yaml_string(text);
    }
    let pad = " ".repeat(indent);
    let mut block = String::from("|\n");
    for line in text.lines() {
        if line.is_empty() {
            block.push('\n');
        } else {
            let _ = writeln!(block, "{pad}{line}");
        }
    }
    block.trim_end_matches('\n').to_owned()
}

fn fetch_command(fetch: &Fetch, s3_endpoint: Option<&str>) -> String {
    let target = "\"$cache/agent.deb.part\"";
    let location = &fetch.location;
    if let Some(path) = location.strip_prefix("file://") {
        format!("cp -- {} {target}", shell_quote(path))
    } else if location.starts_with("s3://") {
        let endpoint = s3_endpoint
            .map(|endpoint| format!("--endpoint-url {} ", shell_quote(endpoint)))
            .unwrap_or_default();
        format!(
            "aws s3 cp --only-show-errors {endpoint}{} {target}",
            shell_quote(location)
        )
    } else {
        let protocols = if location.starts_with("https://") {
            "=https"
        } else {
            "=http,https"
        };
        format!(
            "curl --fail --silent --show-error --location --proto {} --retry 3 --output {target} {}",
            shell_quote(protocols),
            shell_quote(location)
        )
    }
}

/// The script that installs the agent package. With FERRY_BOOTSTRAP_ROOT=DIR it installs into
/// DIR (dpkg --root, systemctl --root) and starts nothing: for image builds and tests.
fn bootstrap_script(args: &Args, source: &AgentSource) -> String {
    let s3_endpoint = args.target.store.s3_endpoint.as_deref();
    let mut script = String::from(
        "#!/bin/sh\n\
         # Installs the ferry agent package and enables its unit; written by `ferry cloud-init`.\n\
         # FERRY_BOOTSTRAP_ROOT=DIR installs into DIR instead of / (image builds, tests):\n\
         # dpkg --root, the unit enabled with systemctl --root, nothing started.\n\
         set -eu\n\
         root=\"${FERRY_BOOTSTRAP_ROOT:-}\"\n\
         cache=\"$root/var/cache/ferry/bootstrap\"\n\
         mkdir -p \"$cache\"\n\
         rm -f \"$cache/agent.deb.part\"\n",
    );
    match source {
        AgentSource::Url(fetch) => {
            let _ = writeln!(script, "# from {}", fetch.location);
            let _ = writeln!(
                script,
                "expected_sha256={}",
                shell_quote(fetch.sha256.as_deref().unwrap_or(""))
            );
            let _ = writeln!(
                script,
                "fetch() {{\n  {}\n}}",
                fetch_command(fetch, s3_endpoint)
            );
        }
        AgentSource::Store {
            description,
            artifacts,
        } => {
            let _ = writeln!(
                script,
                "# from the store's channel {description}, sha256 pinned from its signed pointer"
            );
            script.push_str("architecture=\"$(dpkg --print-architecture)\"\n");
            script.push_str("case \"$architecture\" in\n");
            // `all` (an architecture-independent package) is the fallback, so it comes last.
            let ordered = artifacts
                .iter()
                .filter(|(name, _)| *name != "all")
                .chain(artifacts.iter().filter(|(name, _)| *name == "all"));
            for (architecture, fetch) in ordered {
                let pattern = if architecture == "all" {
                    "*".to_owned()
                } else {
                    shell_quote(architecture)
                };
                let _ = writeln!(
                    script,
                    "  {pattern}) expected_sha256={}\n    fetch() {{ {}; }} ;;",
                    shell_quote(fetch.sha256.as_deref().unwrap_or("")),
                    fetch_command(fetch, s3_endpoint)
                );
            }
            if !artifacts.contains_key("all") {
                let _ = writeln!(
                    script,
                    "  *) echo \"ferry bootstrap: {} has no package for $architecture\" >&2; exit 1 ;;",
                    description.replace(['"', '`', '$', '\\'], "")
                );
            }
            script.push_str("esac\n");
        }
    }
    script.push_str(
        "attempt=1\n\
         until fetch; do\n\
         \x20 if [ \"$attempt\" -ge 5 ]; then echo \"ferry bootstrap: cannot download the agent package\" >&2; exit 1; fi\n\
         \x20 attempt=$((attempt + 1)); sleep 5\n\
         done\n\
         if [ -n \"$expected_sha256\" ]; then\n\
         \x20 actual_sha256=\"$(sha256sum \"$cache/agent.deb.part\" | cut -d' ' -f1)\"\n\
         \x20 if [ \"$actual_sha256\" != \"$expected_sha256\" ]; then\n\
         \x20   rm -f \"$cache/agent.deb.part\"\n\
         \x20   echo \"ferry bootstrap: the agent package has sha256 $actual_sha256, expected $expected_sha256; not installing\" >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         fi\n\
         mv \"$cache/agent.deb.part\" \"$cache/agent.deb\"\n\
         # --force-confold: the agent.toml written by cloud-init stays; the package's copy is\n\
         # kept beside it as agent.toml.dpkg-dist.\n\
         if [ -n \"$root\" ]; then\n\
         \x20 mkdir -p \"$root/var/lib/dpkg/info\" \"$root/var/lib/dpkg/updates\" \"$root/var/log\"\n\
         \x20 [ -e \"$root/var/lib/dpkg/status\" ] || : > \"$root/var/lib/dpkg/status\"\n\
         \x20 DEBIAN_FRONTEND=noninteractive dpkg --root=\"$root\" --log=\"$root/var/log/dpkg.log\" \\\n\
         \x20   --force-script-chrootless --force-depends --force-not-root --force-confdef --force-confold \\\n\
         \x20   --install \"$cache/agent.deb\"\n",
    );
    let _ = write!(
        script,
        "  systemctl --root=\"$root\" enable {AGENT_UNIT}\n\
         else\n\
         \x20 DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold --install \"$cache/agent.deb\" \\\n\
         \x20   || DEBIAN_FRONTEND=noninteractive apt-get install --fix-broken --yes\n\
         \x20 systemctl daemon-reload\n\
         \x20 systemctl enable --now {AGENT_UNIT}\n\
         fi\n"
    );
    script
}

fn render(args: &Args, keys: &[KeyFile], agent_config: &str, source: &AgentSource) -> String {
    let mut out = String::from("#cloud-config\n");
    let _ = writeln!(
        out,
        "# ferry {}: the agent for {}/{} from {}.\n\
         # No credentials inside: the server reads the store with its instance profile.",
        env!("CARGO_PKG_VERSION"),
        args.target.app,
        args.target.channel,
        args.target.store.store
    );
    let needs_awscli = match source {
        AgentSource::Url(fetch) => fetch.location.starts_with("s3://"),
        AgentSource::Store { artifacts, .. } => artifacts
            .values()
            .any(|fetch| fetch.location.starts_with("s3://")),
    };
    let needs_curl =
        matches!(source, AgentSource::Url(fetch) if fetch.location.starts_with("http"));
    let mut packages = Vec::new();
    if needs_awscli {
        packages.push("awscli");
    }
    if needs_curl {
        packages.extend(["curl", "ca-certificates"]);
    }
    if !packages.is_empty() {
        out.push_str("packages:\n");
        for package in packages {
            let _ = writeln!(out, "  - {package}");
        }
    }
    out.push_str("write_files:\n");
    let mut file = |path: &str, permissions: &str, content: &str| {
        let _ = writeln!(out, "  - path: {}", yaml_string(path));
        let _ = writeln!(out, "    owner: \"root:root\"");
        let _ = writeln!(out, "    permissions: {}", yaml_string(permissions));
        let _ = writeln!(out, "    content: {}", yaml_content(content, 6));
    };
    for key in keys {
        file(&trusted_key_path(key), "0644", &key.text);
    }
    file(AGENT_CONFIG_PATH, "0644", agent_config);
    file(
        BOOTSTRAP_SCRIPT_PATH,
        "0755",
        &bootstrap_script(args, source),
    );
    out.push_str("runcmd:\n");
    let _ = writeln!(out, "  - [\"sh\", {}]", yaml_string(BOOTSTRAP_SCRIPT_PATH));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME `x`"), "'$HOME `x`'");
    }

    #[test]
    fn yaml_content_uses_a_literal_block_only_when_safe() {
        assert_eq!(yaml_content("a = 1\n\nb\n", 6), "|\n      a = 1\n\n      b");
        // No final newline, a leading space, a control character: quoted instead.
        assert_eq!(yaml_content("abc", 6), "\"abc\"");
        assert_eq!(yaml_content(" x\n", 6), "\" x\\n\"");
        assert_eq!(yaml_content("a\tb\n", 6), "\"a\\tb\\n\"");
    }

    #[test]
    fn store_urls_join_artifact_paths() {
        assert_eq!(
            join_store_url("s3://bucket/prefix/", "artifacts/x.deb"),
            "s3://bucket/prefix/artifacts/x.deb"
        );
        let fetch = Fetch {
            location: "s3://bucket/p/artifacts/x.deb".to_owned(),
            sha256: None,
        };
        assert_eq!(
            fetch_command(&fetch, Some("http://127.0.0.1:9000")),
            "aws s3 cp --only-show-errors --endpoint-url 'http://127.0.0.1:9000' \
             's3://bucket/p/artifacts/x.deb' \"$cache/agent.deb.part\""
        );
    }
}
