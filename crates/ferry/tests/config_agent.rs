//! Config bundles applied by the real agent to a real service: hello-service under
//! `ferry run`, started through `sh` sourcing the bundle's `hello.env` (what systemd's
//! `EnvironmentFile=` does), restarted by the agent through the supervisor, health-checked
//! on `/health`. Checked through the service's own answers (`GET /env/GREETING`):
//! a pushed value arrives; a value that makes the service unhealthy is rolled back to the
//! previous one automatically; a missing host secret fails before anything is written; a
//! host secret reference is resolved on the host; release and config updates interleaved
//! (a new release and a new bundle in one cycle, then a failing release) end consistent;
//! a tampered bundle is refused. Every agent run is one `ferry agent --once`, so the test
//! waits on nothing but the agent's own cycle.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_testutil::fleet::{
    AgentFile, GroupGuard, Publisher, http_get, stripped_copy, supervisor_command, toml_string,
    wait_for,
};
use ferry_testutil::{Dir, free_port, workspace_binary};
use support::*;

struct Host {
    dir: PathBuf,
    port: u16,
    store: String,
    trust: PathBuf,
}

impl Host {
    fn config_dir(&self) -> PathBuf {
        self.dir.join("etc-hello")
    }

    fn agent_file(&self, supervised: bool) -> PathBuf {
        let (restart, health) = if supervised {
            (
                format!(
                    "method = \"supervisor\"\ncontrol = {}\ntimeout = \"60s\"",
                    toml_string(&self.dir.join("control.sock").display().to_string())
                ),
                format!(
                    "http = \"http://127.0.0.1:{}/health\"\ntimeout = \"5s\"\nretry = \"100ms\"",
                    self.port
                ),
            )
        } else {
            ("method = \"none\"".to_owned(), String::new())
        };
        let mut text = AgentFile {
            store: &self.store,
            app: "hello",
            channel: "stable",
            trust: &self.trust,
            interval: "1s",
            jitter: "100ms",
            host_id: "config-host",
            state_dir: &self.dir.join("state"),
            root: &self.dir.join("srv"),
            restart: &restart,
            health: &health,
        }
        .text();
        if supervised {
            text.push_str(&format!(
                "\n[config]\ndir = {}\n",
                toml_string(&self.config_dir().display().to_string())
            ));
        }
        let path = self.dir.join(if supervised {
            "agent.toml"
        } else {
            "provision.toml"
        });
        std::fs::write(&path, text).unwrap();
        path
    }

    /// One agent cycle; returns its exit code and stderr.
    fn agent_once(&self) -> (Option<i32>, String) {
        let output = ferry_testutil::fleet::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["agent", "--once", "--config"])
                .arg(self.dir.join("agent.toml"))
                .env_remove("RUST_LOG")
                .env("NO_COLOR", "1"),
            COMMAND_LIMIT,
        );
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).unwrap_or_else(|| panic!("nothing answers GET {path}"))
    }

    fn greeting(&self) -> String {
        let (status, body) = self.get("/env/GREETING");
        assert_eq!(status, 200, "GET /env/GREETING: {status} {body}");
        body.trim().to_owned()
    }

    fn config_journal(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("state/hello.stable.config.json"))
            .expect("the config journal");
        serde_json::from_str(&text).unwrap()
    }
}

/// `ferry run` in front of `sh`, which sources the bundle's env file and execs the current
/// release: every swap starts a process with the env file as it is at that moment.
fn start_supervisor(host: &Host) -> GroupGuard {
    let script = format!(
        "set -a; if [ -f '{env}' ]; then . '{env}'; fi; set +a; exec '{binary}'",
        env = host.config_dir().join("hello.env").display(),
        binary = host.dir.join("srv/current/usr/bin/hello-service").display()
    );
    let mut command = supervisor_command(
        Path::new(env!("CARGO_BIN_EXE_ferry")),
        &host.dir,
        host.port,
        "sh".as_ref(),
        &["-c", &script],
    );
    command.env_remove("HELLO_MODE");
    GroupGuard::spawn(&mut command)
}

fn push(host: &Host, key: &Path, dir: &Dir, name: &str, content: &str) -> u64 {
    let path = dir.join("push").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    let output = ok(ferry()
        .args([
            "config",
            "push",
            "--json",
            "--store",
            &host.store,
            "--app",
            "hello",
            "--channel",
            "stable",
            "--key",
        ])
        .arg(key)
        .arg(&path));
    let pushed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    pushed["serial"].as_u64().unwrap()
}

#[test]
fn config_bundles_reach_the_service_and_bad_ones_roll_back() {
    let dir = Dir::new("ferry-config-agent");
    let (publisher, store) = Publisher::on_directory_store(
        Path::new(env!("CARGO_BIN_EXE_ferry")),
        dir.path(),
        "hello",
        "stable",
    );
    let key = dir.join("work/release.key");
    let hello = stripped_copy(
        &workspace_binary("hello-service"),
        &dir.join("hello-service"),
    );
    publisher.publish(&publisher.pack(&hello, "1.0.0", None));

    let host = Host {
        dir: dir.join("host"),
        port: free_port(),
        store: store.clone(),
        trust: publisher.public_key(),
    };
    std::fs::create_dir_all(&host.dir).unwrap();
    // Provision: install 1.0.0 with no restart, then start the service.
    let provision = host.agent_file(false);
    ok(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["agent", "--once", "--config"])
        .arg(&provision)
        .env_remove("RUST_LOG"));
    host.agent_file(true);
    let _supervisor = start_supervisor(&host);
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        http_get(host.port, "/health").filter(|(status, _)| *status == 200)
    })
    .expect("hello-service answers /health under ferry run");
    assert_eq!(host.get("/env/GREETING").0, 404, "no config yet");

    // 1. A pushed value arrives.
    let first = push(&host, &key, &dir, "hello.env", "HELLO_GREETING=bonjour\n");
    let (code, log) = host.agent_once();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(host.greeting(), "bonjour", "{log}");
    assert_eq!(host.config_journal()["current"]["serial"], first);

    // 2. A value that makes the service unhealthy: rolled back to the previous one.
    let bad = push(
        &host,
        &key,
        &dir,
        "hello.env",
        "HELLO_GREETING=broken\nHELLO_MODE=unhealthy\n",
    );
    let (_, log) = host.agent_once();
    assert_eq!(host.greeting(), "bonjour", "the bad config stayed:\n{log}");
    assert_eq!(host.get("/health").0, 200);
    assert_eq!(
        std::fs::read_to_string(host.config_dir().join("hello.env")).unwrap(),
        "HELLO_GREETING=bonjour\n"
    );
    let journal = host.config_journal();
    assert_eq!(journal["current"]["serial"], first, "{journal}");
    assert!(
        journal["bad-serials"]
            .as_array()
            .unwrap()
            .contains(&bad.into()),
        "{journal}"
    );
    assert!(
        log.contains("config serial marked bad and rolled back"),
        "{log}"
    );
    // Polled again: the bad serial is not retried.
    let (_, log) = host.agent_once();
    assert!(!log.contains("rolling back"), "{log}");

    // 3. A secret that is not on the host: fails before any file is written, rolled back.
    push(
        &host,
        &key,
        &dir,
        "hello.env",
        "HELLO_GREETING=secret\nHELLO_TOKEN=@file:/nonexistent/ferry-test-token\n",
    );
    let (_, log) = host.agent_once();
    assert!(log.contains("/nonexistent/ferry-test-token"), "{log}");
    assert_eq!(host.greeting(), "bonjour");

    // 4. A secret that is: resolved on the host, never in the store.
    let token = dir.write("host-secrets/token", "t0ken-value\n");
    let serial = push(
        &host,
        &key,
        &dir,
        "hello.env",
        &format!(
            "HELLO_GREETING=hallo\nHELLO_TOKEN=@file:{}\n",
            token.display()
        ),
    );
    let (code, log) = host.agent_once();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(host.greeting(), "hallo");
    assert_eq!(host.get("/env/TOKEN").1.trim(), "t0ken-value");
    let stored =
        std::fs::read_to_string(dir.join(format!("store/apps/hello/config/stable/{serial}.json")))
            .unwrap();
    assert!(
        !stored.contains("t0ken-value"),
        "the secret reached the store"
    );

    // 5. Interleaved: a new release and a new bundle in the same cycle, both applied.
    publisher.publish(&publisher.pack(&hello, "2.0.0", None));
    push(&host, &key, &dir, "hello.env", "HELLO_GREETING=hej\n");
    let (code, log) = host.agent_once();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(host.get("/").1.trim(), "2.0.0", "{log}");
    assert_eq!(host.greeting(), "hej", "{log}");
    // A failing release rolls back to 2.0.0 and keeps the config.
    publisher.publish(&publisher.pack(&hello, "3.0.0", Some("unhealthy")));
    let (code, log) = host.agent_once();
    assert_eq!(
        code,
        Some(4),
        "the failing release was not rolled back:\n{log}"
    );
    assert_eq!(host.get("/").1.trim(), "2.0.0");
    assert_eq!(host.greeting(), "hej");
    // A failing config keeps the release.
    push(
        &host,
        &key,
        &dir,
        "hello.env",
        "HELLO_GREETING=nope\nHELLO_MODE=unhealthy\n",
    );
    host.agent_once();
    assert_eq!(host.get("/").1.trim(), "2.0.0");
    assert_eq!(host.greeting(), "hej");

    // 6. A tampered bundle is refused and changes nothing.
    push(&host, &key, &dir, "hello.env", "HELLO_GREETING=signed\n");
    let pointer = dir.join("store/apps/hello/config/stable.json");
    let text = std::fs::read_to_string(&pointer).unwrap();
    std::fs::write(
        &pointer,
        text.replace("HELLO_GREETING=signed", "HELLO_GREETING=forged"),
    )
    .unwrap();
    let (_, log) = host.agent_once();
    assert!(log.contains("REFUSED config bundle"), "{log}");
    assert_eq!(host.greeting(), "hej");
}
