//! One booted-host test's world: a `file://` store bound into every host at the same path
//! (so URLs mean the same inside and out), a release key, ferry's own .deb packed from the
//! binary under test, and hello-service packages with real systemd units.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_release::{HostReport, HostState};
use ferry_testutil::Dir;
use ferry_testutil::fleet::{PackExtras, Publisher, stripped_copy};
use ferry_testutil::hosts::{Bind, BootedHost, HostConfig, Image, image_or_skip};

use crate::support::{ferry, ok, pack_ferry, pack_ferry_as};

/// The port hello-service answers on inside every host.
pub const PORT: u16 = 8080;
/// Where the trusted key is on every host.
pub const TRUST: &str = "/etc/ferry/trusted/release.pub";
/// The agent's config on every host.
pub const AGENT_CONFIG: &str = "/etc/ferry/agent.toml";
/// How long an agent gets to take a release (it polls every second).
pub const ROLLOUT: Duration = Duration::from_secs(90);

/// How hello-service's unit runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Under `ferry run` (`Type=notify`, reload = zero-downtime swap): docs/run.md's unit.
    Supervised,
    /// hello-service alone (`Type=notify`, no reload).
    Plain,
}

/// The recommended unit for a service under `ferry run`, as docs/run.md shows it.
pub const SUPERVISED_UNIT: &str = "\
[Unit]
Description=hello-service under ferry run (zero-downtime reloads)
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/ferry run --listen http=127.0.0.1:8080 --control /run/hello/control.sock --ready-timeout 30 --drain-timeout 30 -- /usr/bin/hello-service
ExecReload=/usr/bin/ferry reload --control /run/hello/control.sock --timeout 90s
KillMode=mixed
TimeoutStopSec=45
RuntimeDirectory=hello
Restart=on-failure

[Install]
WantedBy=multi-user.target
";

const PLAIN_UNIT: &str = "\
[Unit]
Description=hello-service (plain unit)
After=network.target

[Service]
Type=notify
ExecStart=/usr/bin/hello-service --listen 127.0.0.1:8080
Restart=on-failure

[Install]
WantedBy=multi-user.target
";

pub struct World {
    pub dir: Dir,
    pub image: Image,
    pub publisher: Publisher,
    pub store: String,
    store_dir: PathBuf,
    debs: PathBuf,
    hello: PathBuf,
}

impl World {
    /// The world, or `None` when booted hosts cannot run here (the reason is printed).
    pub fn new(test: &str) -> Option<World> {
        let image = image_or_skip(test)?;
        let dir = Dir::new(test);
        let ferry_binary = Path::new(env!("CARGO_BIN_EXE_ferry"));
        let (publisher, store) =
            Publisher::on_directory_store(ferry_binary, dir.path(), "hello", "stable");
        let store_dir = dir.join("store");
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        let ferry_deb = pack_ferry(&dir.join("ferry-build"), "zstd");
        std::fs::copy(&ferry_deb, debs.join("ferry.deb")).unwrap();
        let hello = stripped_copy(
            &ferry_testutil::workspace_binary("hello-service"),
            &dir.join("hello-service"),
        );
        Some(World {
            dir,
            image,
            publisher,
            store,
            store_dir,
            debs,
            hello,
        })
    }

    /// The host's layout: the store at its own path, ferry's .deb at /srv/debs, the key.
    pub fn config(&self, name: &str) -> HostConfig {
        let key = std::fs::read(self.publisher.public_key()).unwrap();
        HostConfig {
            name: name.into(),
            binds: vec![
                Bind {
                    source: self.store_dir.clone(),
                    target: self.store_dir.display().to_string(),
                    read_only: false,
                },
                Bind {
                    source: self.debs.clone(),
                    target: "/srv/debs".into(),
                    read_only: true,
                },
            ],
            files: vec![(TRUST.into(), key, 0o644)],
            cloud_init: false,
        }
    }

    /// Boot a host laid out by `config`.
    pub fn boot(&self, config: HostConfig) -> BootedHost {
        let dir = self.dir.join("hosts").join(&config.name);
        BootedHost::boot(&self.image, &dir, config)
    }

    /// Boot a host and provision it the way `ferry cloud-init`'s script does (dpkg -i of
    /// ferry's .deb, the config, `systemctl enable --now ferry-agent`), minus cloud-init.
    pub fn provisioned(&self, name: &str, agent_toml: &str) -> BootedHost {
        let mut config = self.config(name);
        config
            .files
            .push((AGENT_CONFIG.into(), agent_toml.as_bytes().to_vec(), 0o644));
        let host = self.boot(config);
        host.sh(
            "dpkg --force-confdef --force-confold -i /srv/debs/ferry.deb >/dev/null \
             && systemctl enable --now ferry-agent.service 2>/dev/null",
        );
        host.wait_until(
            "ferry-agent.service active",
            Duration::from_secs(30),
            "systemctl is-active ferry-agent.service",
        );
        host
    }

    /// The agent config for `app` hello on this store: dpkg, `restart` and `health` bodies.
    pub fn agent_toml(&self, restart: &str, extra: &str) -> String {
        format!(
            "store = {store:?}\napp = \"hello\"\nchannel = \"stable\"\ntrust = [{TRUST:?}]\n\
             interval = \"1s\"\njitter = \"200ms\"\nbackoff-max = \"3s\"\n\
             state-dir = \"/var/lib/ferry\"\n\n[install]\nmethod = \"dpkg\"\n\n\
             [restart]\n{restart}\n\n[health]\nhttp = \"http://127.0.0.1:{PORT}/health\"\n\
             timeout = \"10s\"\n{extra}",
            store = self.store
        )
    }

    /// Pack hello-service `version` (`mode` e.g. `unhealthy`) with `unit`; `on_upgrade`
    /// overrides the package's default; `postinst` adds a maintainer script.
    pub fn hello(
        &self,
        version: &str,
        mode: Option<&str>,
        unit: Unit,
        on_upgrade: Option<&str>,
    ) -> PathBuf {
        let mut systemd = toml::Table::new();
        if let Some(action) = on_upgrade {
            systemd.insert("on-upgrade".into(), action.into());
        }
        let text = match unit {
            Unit::Supervised => SUPERVISED_UNIT,
            Unit::Plain => PLAIN_UNIT,
        };
        let units = PackExtras {
            files: vec![("hello.service".into(), text.into())],
            systemd,
            depends: if unit == Unit::Supervised {
                vec!["ferry".into()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        self.publisher.pack_with(&self.hello, version, mode, &units)
    }

    /// A supervised hello `version` whose postinst is `postinst` (with `#FERRY#` where the
    /// generated systemd part goes).
    pub fn hello_with_postinst(&self, version: &str, postinst: &str) -> PathBuf {
        let units = PackExtras {
            files: vec![("hello.service".into(), SUPERVISED_UNIT.into())],
            depends: vec!["ferry".into()],
            scripts: vec![("postinst".into(), postinst.into())],
            ..Default::default()
        };
        self.publisher.pack_with(&self.hello, version, None, &units)
    }

    /// Publish a hello package to hello/stable (every host at once).
    pub fn publish(&self, deb: &Path) {
        self.publisher.publish(deb);
    }

    /// Pack ferry as `version` and publish it to the store's ferry/stable channel.
    pub fn publish_ferry(&self, version: Option<&str>) -> PathBuf {
        let build = self
            .dir
            .join(format!("ferry-{}", version.unwrap_or("build")));
        let deb = match version {
            Some(version) => pack_ferry_as(&build, "zstd", Some(version), None),
            None => pack_ferry(&build, "zstd"),
        };
        ok(ferry()
            .args([
                "publish",
                "--quiet",
                "--store",
                &self.store,
                "--app",
                "ferry",
                "--key",
            ])
            .arg(self.dir.join("work/release.key"))
            .arg(&deb));
        deb
    }

    /// The host's report in the store (hosts report under their machine id).
    pub fn report(&self, host: &BootedHost) -> Option<HostReport> {
        let id = host_id(host);
        let path = self
            .store_dir
            .join(ferry_release::layout::host_report("hello", &id));
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Wait until the host reports `version` committed (`ok`); returns the report.
    pub fn wait_committed(&self, host: &BootedHost, version: &str) -> HostReport {
        self.wait_report(host, &format!("{version} committed"), |report| {
            report.state == HostState::Ok && report.version.as_deref() == Some(version)
        })
    }

    /// Wait until the host's report satisfies `check`.
    pub fn wait_report(
        &self,
        host: &BootedHost,
        what: &str,
        check: impl Fn(&HostReport) -> bool,
    ) -> HostReport {
        let started = std::time::Instant::now();
        loop {
            let report = self.report(host);
            if let Some(report) = report.as_ref().filter(|report| check(report)) {
                return report.clone();
            }
            assert!(
                started.elapsed() < ROLLOUT,
                "host {}: {what} did not happen within {ROLLOUT:?}; last report: {report:#?}",
                host.name()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The host id the agent uses: the machine id.
pub fn host_id(host: &BootedHost) -> String {
    host.sh("cat /etc/machine-id").trim().to_owned()
}
