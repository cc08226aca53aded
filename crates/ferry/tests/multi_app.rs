//! One agent for several apps on a host (`[[app]]` tables in agent.toml), update windows,
//! urgent releases, `apply = "on-reboot"` and the operator's hold — all through the real
//! `ferry` binary on a `file://` store, with each app's hello-service run by its own
//! `ferry run` supervisor where a running service is the point.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_agent::config::InstallFile;
use ferry_testutil::Dir;
use ferry_testutil::fleet::wait_until_logged as wait_until;
use ferry_testutil::fleet::{
    GroupGuard, Publisher, http_get, http_health, run_bounded, start_hello_supervisor,
    stripped_copy, supervisor_restart,
};

const CHANNEL: &str = "stable";
const HOST: &str = "multi-host";

fn ferry_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

fn hello_binary(dir: &Dir) -> PathBuf {
    let built = ferry_testutil::workspace_binary("hello-service");
    assert!(
        built.is_file(),
        "{} is missing: run `cargo build -p hello-service` (scripts/test does)",
        built.display()
    );
    stripped_copy(&built, &dir.join("hello-service"))
}

/// One app of the host: its publisher (own key, own build directory), install root,
/// supervisor directory and port.
struct App {
    name: &'static str,
    publisher: Publisher,
    dir: PathBuf,
    port: u16,
}

impl App {
    fn new(dir: &Dir, store: &str, name: &'static str) -> App {
        let publisher = Publisher::new(
            &ferry_binary(),
            &dir.join(format!("publish-{name}")),
            store,
            vec![],
            name,
            CHANNEL,
        );
        publisher.keygen();
        let app_dir = dir.join(name);
        std::fs::create_dir_all(&app_dir).unwrap();
        App {
            name,
            publisher,
            dir: app_dir,
            port: ferry_testutil::free_port(),
        }
    }

    /// Its `[[app]]` table: unpack into its root, swap through its supervisor, health by
    /// HTTP; `extra` is applied last.
    fn table(&self, extra: impl FnOnce(&mut ferry_agent::AgentFile)) -> ferry_agent::AgentFile {
        let mut file = ferry_agent::AgentFile {
            app: Some(self.name.into()),
            channel: Some(CHANNEL.into()),
            trust: vec![self.publisher.public_key()],
            install: Some(InstallFile::Unpack {
                root: self.dir.join("srv"),
                keep: None,
            }),
            restart: Some(supervisor_restart(&self.dir.join("control.sock"))),
            health: Some(http_health(self.port, "3s")),
            ..Default::default()
        };
        extra(&mut file);
        file
    }

    fn answers(&self) -> Option<String> {
        match http_get(self.port, "/") {
            Some((200, body)) => Some(body.trim().to_owned()),
            _ => None,
        }
    }

    fn report(&self, store_dir: &Path) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(
            store_dir.join(format!("apps/{}/hosts/{HOST}.json", self.name)),
        )
        .ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn utc_clock(at: time::OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
}

#[test]
fn one_agent_serves_three_apps_each_on_its_own_terms() {
    let dir = Dir::new("multi-app");
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = format!("file://{}", store_dir.display());
    let binary = hello_binary(&dir);
    let web = App::new(&dir, &store, "web");
    let worker = App::new(&dir, &store, "worker");
    let batch = App::new(&dir, &store, "batch");

    let _supervisors: Vec<GroupGuard> = [&web, &worker, &batch]
        .iter()
        .map(|app| start_hello_supervisor(&ferry_binary(), &app.dir, app.port))
        .collect();
    for app in [&web, &worker, &batch] {
        let deb = app.publisher.pack(&binary, "1.0.0-1", None);
        app.publisher.publish(&deb);
    }
    // Taken after the packs and publishes, so their time does not eat into the margin.
    // batch may only be installed in a window a little later (whole seconds, UTC); the
    // other two at any time.
    let now = time::OffsetDateTime::now_utc();
    let opens = (now + time::Duration::seconds(25))
        .replace_nanosecond(0)
        .unwrap();
    let closes = opens + time::Duration::seconds(8);
    let window = format!("{}-{} UTC", utc_clock(opens), utc_clock(closes));

    let file = ferry_agent::AgentFile {
        store: Some(store.clone()),
        interval: Some("200ms".into()),
        jitter: Some("0s".into()),
        backoff_max: Some("1s".into()),
        state_dir: Some(dir.join("state")),
        host_id: Some(HOST.into()),
        apps: vec![
            web.table(|_| {}),
            worker.table(|_| {}),
            batch.table(|file| file.window = Some(vec![window.clone()])),
        ],
        ..Default::default()
    };
    let config = dir.join("agent.toml");
    std::fs::write(&config, file.to_toml().unwrap()).unwrap();

    let metrics_port = ferry_testutil::free_port();
    let log = dir.join("agent.log");
    let mut command = ferry_testutil::ferry_command(&ferry_binary());
    command
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--metrics")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _agent = GroupGuard::spawn(&mut command);

    // web and worker take 1.0.0-1; batch verifies and downloads it, then waits.
    for app in [&web, &worker] {
        wait_until(
            &format!("{} to answer 1.0.0-1", app.name),
            Duration::from_secs(60),
            &log,
            || app.answers().as_deref() == Some("1.0.0-1"),
        );
    }
    wait_until(
        "batch to report that it waits for its window",
        Duration::from_secs(30),
        &log,
        || {
            batch.report(&store_dir).is_some_and(|report| {
                report["waiting"]
                    .as_str()
                    .is_some_and(|text| text.contains("waiting for the update window until"))
            })
        },
    );
    let waiting = batch.report(&store_dir).unwrap();
    assert_eq!(waiting["version"], serde_json::Value::Null, "{waiting}");
    assert_eq!(
        waiting["last-download"]["version"], "1.0.0-1",
        "downloaded and verified ahead of the window: {waiting}"
    );

    // A healthy 2.0.0-1 for web, an unhealthy one for worker.
    web.publisher
        .publish(&web.publisher.pack(&binary, "2.0.0-1", None));
    worker
        .publisher
        .publish(&worker.publisher.pack(&binary, "2.0.0-1", Some("unhealthy")));
    wait_until(
        "web to answer 2.0.0-1",
        Duration::from_secs(60),
        &log,
        || web.answers().as_deref() == Some("2.0.0-1"),
    );
    wait_until(
        "worker to roll back from its unhealthy 2.0.0-1",
        Duration::from_secs(60),
        &log,
        || {
            worker
                .report(&store_dir)
                .is_some_and(|report| report["state"] == "rolled-back")
        },
    );
    assert_eq!(worker.answers().as_deref(), Some("1.0.0-1"));
    let worker_report = worker.report(&store_dir).unwrap();
    assert_eq!(worker_report["version"], "1.0.0-1", "{worker_report}");
    assert_eq!(
        worker_report["bad"][0]["version"], "2.0.0-1",
        "{worker_report}"
    );

    // batch goes in once its window opens, and not before.
    wait_until(
        "batch to commit 1.0.0-1 once its window opened",
        Duration::from_secs(90),
        &log,
        || {
            batch
                .report(&store_dir)
                .is_some_and(|report| report["version"] == "1.0.0-1")
        },
    );
    assert_eq!(batch.answers().as_deref(), Some("1.0.0-1"));
    let installed = batch.report(&store_dir).unwrap();
    let changed = time::OffsetDateTime::parse(
        installed["last-change-at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        changed >= opens,
        "batch was installed at {changed}, before its window opened at {opens}"
    );
    assert_eq!(installed["state"], "ok", "{installed}");
    assert_eq!(
        installed.get("waiting"),
        None,
        "no longer waiting: {installed}"
    );
    assert_eq!(
        web.report(&store_dir).unwrap()["version"],
        "2.0.0-1",
        "web's report"
    );

    // One metrics endpoint, a line per app.
    let (status, body) = http_get(metrics_port, "/metrics").expect("the metrics endpoint");
    assert_eq!(status, 200);
    for (app, installs) in [("web", 2), ("worker", 1), ("batch", 1)] {
        let line =
            format!("ferry_agent_installs_total{{app=\"{app}\",channel=\"stable\"}} {installs}");
        assert!(body.contains(&line), "expected {line:?} in:\n{body}");
    }
    assert!(
        body.contains("ferry_agent_rollbacks_total{app=\"worker\",channel=\"stable\"} 1"),
        "{body}"
    );

    // `ferry agent status` lists every app.
    let output = run_bounded(
        ferry_testutil::ferry_command(&ferry_binary())
            .args(["agent", "status", "--json", "--config"])
            .arg(&config),
        Duration::from_secs(20),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let versions: Vec<(String, String)> = reports
        .iter()
        .map(|report| {
            (
                report["app"].as_str().unwrap().to_owned(),
                report["version"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("web".to_owned(), "2.0.0-1".to_owned()),
            ("worker".to_owned(), "1.0.0-1".to_owned()),
            ("batch".to_owned(), "1.0.0-1".to_owned()),
        ]
    );
}

/// A single-app host that restarts nothing (unpack, restart `none`): `ferry agent --once`
/// cycles, each a whole decision.
struct OnceHost {
    dir: Dir,
    publisher: Publisher,
    binary: PathBuf,
    store_dir: PathBuf,
}

impl OnceHost {
    fn new(name: &str, extra: &str) -> OnceHost {
        let dir = Dir::new(name);
        let (publisher, store) =
            Publisher::on_directory_store(&ferry_binary(), dir.path(), "hello", CHANNEL);
        let binary = hello_binary(&dir);
        let file = ferry_agent::AgentFile {
            store: Some(store),
            app: Some("hello".into()),
            channel: Some(CHANNEL.into()),
            trust: vec![publisher.public_key()],
            state_dir: Some(dir.join("state")),
            host_id: Some(HOST.into()),
            install: Some(InstallFile::Unpack {
                root: dir.join("srv"),
                keep: None,
            }),
            ..Default::default()
        };
        let text = format!("{extra}\n{}", file.to_toml().unwrap());
        std::fs::write(dir.join("agent.toml"), text).unwrap();
        let store_dir = dir.join("store");
        OnceHost {
            dir,
            publisher,
            binary,
            store_dir,
        }
    }

    fn publish(&self, version: &str, extra: &[&str]) {
        let deb = self.publisher.pack(&self.binary, version, None);
        let key = self.dir.join("work/release.key");
        let store = format!("file://{}", self.store_dir.display());
        let output = run_bounded(
            ferry_testutil::ferry_command(&ferry_binary())
                .args(["publish", "--app", "hello", "--store", &store, "--key"])
                .arg(&key)
                .args(extra)
                .arg(&deb),
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "publish: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ferry(&self, arguments: &[&str], environment: &[(&str, &str)]) -> std::process::Output {
        let mut command = ferry_testutil::ferry_command(&ferry_binary());
        command.args(arguments);
        command.arg("--config").arg(self.dir.join("agent.toml"));
        for (name, value) in environment {
            command.env(name, value);
        }
        run_bounded(&mut command, Duration::from_secs(60))
    }

    fn once(&self, environment: &[(&str, &str)]) {
        let output = self.ferry(&["agent", "--once"], environment);
        assert!(
            output.status.success(),
            "ferry agent --once: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn status(&self) -> serde_json::Value {
        let output = self.ferry(&["agent", "status", "--json"], &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn installed(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("srv/current/usr/share/hello-service/version"))
            .ok()
            .map(|text| text.trim().to_owned())
    }
}

#[test]
fn an_urgent_release_goes_in_outside_the_window_and_a_normal_one_waits() {
    // A window that is closed now: twelve hours from now, for an hour.
    let now = time::OffsetDateTime::now_utc();
    let opens = now + time::Duration::hours(12);
    let window = format!(
        "window = [\"{}-{} UTC\"]",
        utc_clock(opens),
        utc_clock(opens + time::Duration::hours(1))
    );
    let host = OnceHost::new("window-urgent", &window);
    host.publish("1.0.0-1", &[]);
    host.once(&[]);
    assert_eq!(host.installed(), None, "the window is closed");
    let status = host.status();
    let waiting = status["waiting"].as_str().unwrap_or_default();
    assert!(
        waiting.contains("waiting for the update window until") && waiting.contains("UTC"),
        "{status}"
    );
    host.publish("1.0.0-2", &["--urgent"]);
    host.once(&[]);
    assert_eq!(
        host.installed().as_deref(),
        Some("1.0.0-2"),
        "urgent: installed now"
    );
    assert_eq!(host.status().get("waiting"), None);
    // The next ordinary release waits for the window again.
    host.publish("1.0.0-3", &[]);
    host.once(&[]);
    assert_eq!(host.installed().as_deref(), Some("1.0.0-2"));
}

#[test]
fn on_reboot_installs_at_the_first_cycle_of_the_next_boot() {
    let host = OnceHost::new("on-reboot", "apply = \"on-reboot\"");
    host.publish("1.0.0-1", &[]);
    // Nothing installed yet, so nothing to restart: the first release goes in at once.
    host.once(&[("FERRY_BOOT_ID", "boot-one")]);
    assert_eq!(host.installed().as_deref(), Some("1.0.0-1"));
    host.publish("2.0.0-1", &[]);
    for _ in 0..2 {
        host.once(&[("FERRY_BOOT_ID", "boot-one")]);
        assert_eq!(
            host.installed().as_deref(),
            Some("1.0.0-1"),
            "same boot: waits"
        );
    }
    let status = host.status();
    assert!(
        status["waiting"]
            .as_str()
            .is_some_and(|text| text.contains("installs at the next boot")),
        "{status}"
    );
    host.once(&[("FERRY_BOOT_ID", "boot-two")]);
    assert_eq!(
        host.installed().as_deref(),
        Some("2.0.0-1"),
        "after the reboot"
    );
}

#[test]
fn an_operator_hold_keeps_a_host_on_its_release_until_released() {
    let host = OnceHost::new("hold", "");
    host.publish("1.0.0-1", &[]);
    host.once(&[]);
    assert_eq!(host.installed().as_deref(), Some("1.0.0-1"));

    let output = host.ferry(&["agent", "hold", "hello", "--reason", "disk check"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ferry agent release hello"),
        "says how to undo it"
    );
    host.publish("2.0.0-1", &[]);
    host.once(&[]);
    assert_eq!(host.installed().as_deref(), Some("1.0.0-1"), "held");
    let status = host.status();
    assert!(
        status["held"]
            .as_str()
            .is_some_and(|text| text.contains("disk check")),
        "{status}"
    );

    // `ferry status` shows the held host, from its report in the store.
    let store = format!("file://{}", host.store_dir.display());
    let output = run_bounded(
        ferry_testutil::ferry_command(&ferry_binary())
            .args(["status", "--store", &store, "--app", "hello"]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("1 held") && text.contains("HELD ("), "{text}");

    let output = host.ferry(&["agent", "hold", "nope"], &[]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("serves no app nope"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = host.ferry(&["agent", "release", "hello"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    host.once(&[]);
    assert_eq!(host.installed().as_deref(), Some("2.0.0-1"), "released");
    assert_eq!(host.status().get("held"), None);
}

#[test]
fn multi_app_files_refuse_what_would_be_ambiguous() {
    let dir = Dir::new("multi-app-errors");
    let write = |text: &str| {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let output = run_bounded(
            ferry_testutil::ferry_command(&ferry_binary())
                .args(["agent", "status", "--config"])
                .arg(&path)
                .env("FERRY_HOST_ID", "h"),
            Duration::from_secs(20),
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let base = "store = \"file:///srv/ferry\"\ntrust = [\"/etc/ferry/release.pub\"]\n";
    let app = |name: &str, extra: &str| {
        format!(
            "[[app]]\napp = \"{name}\"\n{extra}[app.install]\nmethod = \"unpack\"\nroot = \"/srv/{name}\"\n"
        )
    };
    let twice = write(&format!("{base}{}{}", app("web", ""), app("web", "")));
    assert!(
        twice.contains("two [[app]] tables serve app web"),
        "{twice}"
    );
    let typo = write(&format!("{base}{}", app("web", "chanel = \"beta\"\n")));
    assert!(
        typo.contains("in the [[app]] table \"web\"") && typo.contains("chanel"),
        "{typo}"
    );
    let window = write(&format!(
        "{base}{}",
        app("web", "window = [\"Mon-Fry 02:00-05:00\"]\n")
    ));
    assert!(window.contains("not a day"), "{window}");
    let shared = write(&format!(
        "{base}{}{}",
        app("web", "cache-dir = \"/var/cache/x\"\n"),
        app("worker", "cache-dir = \"/var/cache/x\"\n")
    ));
    assert!(shared.contains("share `cache-dir`"), "{shared}");
}

#[test]
fn an_app_whose_store_is_missing_at_start_holds_up_no_other_app() {
    let dir = Dir::new("multi-app-missing-store");
    let binary = hello_binary(&dir);
    let (alpha, alpha_store) =
        Publisher::on_directory_store(&ferry_binary(), &dir.join("alpha"), "alpha", CHANNEL);
    // beta's store directory is not there yet (a file system not mounted yet).
    let beta_store_dir = dir.join("beta-store");
    let beta_store = format!("file://{}", beta_store_dir.display());
    let unpack = |name: &str| InstallFile::Unpack {
        root: dir.join(format!("srv-{name}")),
        keep: None,
    };
    let file = ferry_agent::AgentFile {
        trust: vec![alpha.public_key()],
        interval: Some("200ms".into()),
        jitter: Some("0s".into()),
        backoff_max: Some("500ms".into()),
        state_dir: Some(dir.join("state")),
        host_id: Some(HOST.into()),
        apps: vec![
            ferry_agent::AgentFile {
                app: Some("alpha".into()),
                store: Some(alpha_store.clone()),
                install: Some(unpack("alpha")),
                ..Default::default()
            },
            ferry_agent::AgentFile {
                app: Some("beta".into()),
                store: Some(beta_store.clone()),
                install: Some(unpack("beta")),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let config = dir.join("agent.toml");
    std::fs::write(&config, file.to_toml().unwrap()).unwrap();
    alpha.publish(&alpha.pack(&binary, "1.0.0-1", None));

    let log = dir.join("agent.log");
    let mut command = ferry_testutil::ferry_command(&ferry_binary());
    command
        .args(["agent", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _agent = GroupGuard::spawn(&mut command);
    let installed = |name: &str| {
        std::fs::read_to_string(dir.join(format!(
            "srv-{name}/current/usr/share/hello-service/version"
        )))
        .ok()
        .map(|text| text.trim().to_owned())
    };
    wait_until(
        "alpha to install while beta's store is missing",
        Duration::from_secs(60),
        &log,
        || installed("alpha").as_deref() == Some("1.0.0-1"),
    );
    assert_eq!(installed("beta"), None);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cannot open the store, retrying"), "{text}");

    // The store appears: beta takes its release by itself.
    let deb = alpha.pack(&binary, "2.0.0-1", None);
    let output = run_bounded(
        ferry_testutil::ferry_command(&ferry_binary())
            .args([
                "publish",
                "--app",
                "beta",
                "--create-store",
                "--store",
                &beta_store,
                "--key",
            ])
            .arg(dir.join("alpha/work/release.key"))
            .arg(&deb),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_until(
        "beta to install once its store is there",
        Duration::from_secs(60),
        &log,
        || installed("beta").as_deref() == Some("2.0.0-1"),
    );
    assert_eq!(installed("alpha").as_deref(), Some("1.0.0-1"));
}
