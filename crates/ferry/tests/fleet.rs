//! The fleet, end to end: 50 hosts on this machine, each its own `ferry run` supervising
//! hello-service on its own 127.0.0.1 port and its own `ferry agent` (own host id, unpack
//! root, journal), all following one channel in the S3-compatible test server (moto).
//! The release engineer's side is the real CLI: `ferry keygen`, `ferry pack`,
//! `ferry publish`, `ferry rollback`.
//!
//! It proves the claim "publish once, every server converges, nothing drops, rollback is
//! instant" on a fleet: publish v1 → every host answers v1; publish v2 → every host reports
//! v2 in the store and answers v2; `ferry rollback` → every host is back on v1; a release
//! that fails its health check → every host rolls back on its own, keeps answering, and its
//! report says the release was rolled back and marked bad. v2 reaches every host as a patch
//! from v1, a small fraction of the package. Every service is asked for its
//! version throughout, on fresh connections, and not one request may fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::fleet::{
    AgentFile, GroupGuard, Publisher, http_get, start_hello_supervisor, stop_fleet, stripped_copy,
    toml_string,
};
use ferry_testutil::s3::S3Server;
use ferry_testutil::{Dir, free_port, workspace_binary};

/// The fleet's size: 50 (the floor); `FERRY_FLEET_HOSTS` raises it.
const HOSTS: usize = 50;
const APP: &str = "hello";
const CHANNEL: &str = "stable";
const PREFIX: &str = "fleet";
const VERSION_ONE: &str = "1.0.0-1";
const VERSION_TWO: &str = "2.0.0-1";
const VERSION_BAD: &str = "3.0.0-1";
/// How long one phase (every host converging) may take before the test fails. Generous: the
/// suite runs on a loaded 2-core machine; a healthy run converges in a few seconds.
const PHASE_DEADLINE: Duration = Duration::from_secs(120);

/// One host: its directory, port, supervisor and agent.
struct Host {
    id: String,
    dir: PathBuf,
    port: u16,
    supervisor: Option<GroupGuard>,
    agent: Option<GroupGuard>,
    /// Requests to `/` that got no 200 answer.
    failed_requests: Vec<String>,
}

impl Host {
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Ask the service for its version; a failure is recorded against the host.
    fn version(&mut self) -> Option<String> {
        match http_get(self.port, "/") {
            Some((200, body)) => Some(body.trim().to_string()),
            other => {
                self.failed_requests.push(format!("{other:?}"));
                None
            }
        }
    }
}

/// The whole fleet; dropping it stops every process (agents first), even when a test fails.
struct Fleet {
    hosts: Vec<Host>,
    store: ferry_store::Store,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let agents = self
            .hosts
            .iter_mut()
            .filter_map(|host| host.agent.take())
            .collect();
        let supervisors = self
            .hosts
            .iter_mut()
            .filter_map(|host| host.supervisor.take())
            .collect();
        stop_fleet(agents, supervisors);
    }
}

impl Fleet {
    /// The host's status report from the store, as JSON (`None` until the agent wrote one).
    fn report(&self, host: &Host) -> Option<serde_json::Value> {
        let path = format!("apps/{APP}/hosts/{}.json", host.id);
        let object = self
            .runtime
            .block_on(self.store.get(&path, 1 << 20))
            .unwrap_or_else(|error| panic!("read {path} from the store: {error}"))?;
        Some(serde_json::from_slice(&object.bytes).expect("a host report is JSON"))
    }

    /// Wait until every host satisfies `done(report, answered version)`, asking every
    /// unfinished host's service and report each round. Returns the time it took.
    fn converge(
        &mut self,
        phase: &str,
        done: impl Fn(&serde_json::Value, &str) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let mut waiting: BTreeSet<usize> = (0..self.hosts.len()).collect();
        while !waiting.is_empty() && started.elapsed() < PHASE_DEADLINE {
            for index in waiting.clone() {
                let Some(answered) = self.hosts[index].version() else {
                    continue;
                };
                if self
                    .report(&self.hosts[index])
                    .is_some_and(|report| done(&report, &answered))
                {
                    waiting.remove(&index);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(&index) = waiting.iter().next() {
            // What the stragglers say, grouped: e.g. `state ok, version 3.0.0-1: 4 hosts`.
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            for &waiting_index in &waiting {
                let summary = match self.report(&self.hosts[waiting_index]) {
                    Some(report) => {
                        format!("state {}, version {}", report["state"], report["version"])
                    }
                    None => "no report".to_string(),
                };
                *seen.entry(summary).or_default() += 1;
            }
            let host = &self.hosts[index];
            panic!(
                "{phase}: {} of {} hosts did not converge within {PHASE_DEADLINE:?}; they report {seen:?}; e.g. {} (port {}) answers {:?}, reports {}\n--- agent.log\n{}\n--- run.log\n{}",
                waiting.len(),
                self.hosts.len(),
                host.id,
                host.port,
                http_get(host.port, "/"),
                self.report(host)
                    .map(|report| report.to_string())
                    .unwrap_or_else(|| "nothing".into()),
                host.log_tail("agent.log"),
                host.log_tail("run.log"),
            );
        }
        let took = started.elapsed();
        eprintln!(
            "{phase}: all {} hosts in {:.1} s",
            self.hosts.len(),
            took.as_secs_f64()
        );
        took
    }

    /// Every host answers `version` right now, and no request has failed so far.
    fn assert_all_answer(&mut self, version: &str) {
        for host in &mut self.hosts {
            let answered = host.version();
            assert_eq!(
                answered.as_deref(),
                Some(version),
                "{} (port {}) answers {answered:?}",
                host.id,
                host.port
            );
        }
        let failed: Vec<String> = self
            .hosts
            .iter()
            .filter(|host| !host.failed_requests.is_empty())
            .map(|host| format!("{}: {:?}", host.id, host.failed_requests))
            .collect();
        assert!(
            failed.is_empty(),
            "requests to the services failed: {failed:?}"
        );
    }
}

fn ferry_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

fn hello_service(dir: &Dir) -> PathBuf {
    let built = workspace_binary("hello-service");
    assert!(
        built.is_file(),
        "{} is missing: run `cargo build -p hello-service` (scripts/test does)",
        built.display()
    );
    stripped_copy(&built, &dir.join("hello-service"))
}

/// `ferry run` in front of the host's `current` release. It binds the port before any
/// release is installed; the agent's first install starts the service through it.
fn start_supervisor(host: &Host) -> GroupGuard {
    start_hello_supervisor(&ferry_binary(), &host.dir, host.port)
}

/// The host's agent file: restart through the host's `ferry run`, check `/health`.
fn write_agent_file(host: &Host, fleet_store: &str, trust: &Path) -> PathBuf {
    let restart = format!(
        "method = \"supervisor\"\ncontrol = {}\ntimeout = \"60s\"",
        toml_string(&host.dir.join("control.sock").display().to_string())
    );
    let health = format!(
        "http = \"http://127.0.0.1:{}/health\"\ntimeout = \"5s\"\nretry = \"200ms\"",
        host.port
    );
    let file = AgentFile {
        store: fleet_store,
        app: APP,
        channel: CHANNEL,
        trust,
        interval: "1s",
        jitter: "500ms",
        host_id: &host.id,
        state_dir: &host.dir.join("state"),
        root: &host.dir.join("srv"),
        restart: &restart,
        health: &health,
    };
    let path = host.dir.join("agent.toml");
    std::fs::write(&path, file.text()).expect("write the agent file");
    path
}

fn start_agent(host: &Host, config: &Path, s3: &S3Server) -> GroupGuard {
    let mut command = Command::new(ferry_binary());
    command
        .arg("agent")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.dir.join("agent.log")).expect("create agent.log"));
    s3.apply(&mut command);
    GroupGuard::spawn(&mut command)
}

/// Start every host's supervisor; a supervisor that exits at once lost its port to another
/// process between `free_port` and its bind, and is started again on a new port.
fn start_supervisors(hosts: &mut [Host]) {
    for host in hosts.iter_mut() {
        host.supervisor = Some(start_supervisor(host));
    }
    for attempt in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let mut restarted = false;
        for host in hosts.iter_mut() {
            let exited = host.supervisor.as_mut().and_then(GroupGuard::try_wait);
            if let Some(status) = exited {
                assert!(
                    attempt < 2,
                    "{}: ferry run keeps exiting ({status}):\n{}",
                    host.id,
                    host.log_tail("run.log")
                );
                host.port = free_port();
                host.supervisor = Some(start_supervisor(host));
                restarted = true;
            }
        }
        if !restarted {
            break;
        }
    }
}

#[test]
fn fifty_hosts_converge_on_publish_rollback_and_a_failing_release() {
    let dir = Dir::new("fleet");
    let s3 = S3Server::start();
    for (name, value) in s3.environment() {
        // SAFETY: no other thread runs yet; nextest runs each test in a process of its own.
        unsafe { std::env::set_var(name, value) };
    }
    let store = s3.store_url(PREFIX);
    let publisher = Publisher::new(
        &ferry_binary(),
        &dir.join("release"),
        &store,
        s3.environment(),
        APP,
        CHANNEL,
    );
    publisher.keygen();
    let binary = hello_service(&dir);
    let one = publisher.pack(&binary, VERSION_ONE, None);
    let two = publisher.pack(&binary, VERSION_TWO, None);
    let bad = publisher.pack(&binary, VERSION_BAD, Some("unhealthy"));
    publisher.publish(&one);

    let count = std::env::var("FERRY_FLEET_HOSTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(HOSTS);
    let mut hosts: Vec<Host> = (0..count)
        .map(|index| {
            let id = format!("host-{index:03}");
            let host_dir = dir.join(&id);
            std::fs::create_dir_all(&host_dir).expect("create the host directory");
            Host {
                id,
                dir: host_dir,
                port: free_port(),
                supervisor: None,
                agent: None,
                failed_requests: Vec::new(),
            }
        })
        .collect();
    start_supervisors(&mut hosts);
    for host in &mut hosts {
        let config = write_agent_file(host, &store, &publisher.public_key());
        host.agent = Some(start_agent(host, &config, &s3));
    }
    let options = ferry_store::StoreOptions {
        s3_endpoint: Some(s3.endpoint()),
        ..Default::default()
    };
    let mut fleet = Fleet {
        hosts,
        store: ferry_store::Store::open(&store, &options).expect("open the store"),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
    };

    // v1: each agent's first install, started through its supervisor (which holds the port
    // and waits for `current` to appear).
    fleet.converge("publish v1", |report, answered| {
        answered == VERSION_ONE && report["version"] == VERSION_ONE && report["state"] == "ok"
    });
    // Before its first install a host has no service yet (a request waits in the port's
    // queue and may time out): only requests from here on must all be answered.
    for host in &mut fleet.hosts {
        host.failed_requests.clear();
    }
    fleet.assert_all_answer(VERSION_ONE);

    // v2: a zero-downtime swap on every host; the store's host reports say v2.
    publisher.publish(&two);
    fleet.converge("publish v2", |report, answered| {
        answered == VERSION_TWO
            && report["version"] == VERSION_TWO
            && report["serial"] == 2
            && report["state"] == "ok"
    });
    // Every host rebuilt v2 from the patch `ferry publish` made from v1 (docs/delta.md).
    for host in &fleet.hosts {
        let report = fleet.report(host).expect("a report");
        let download = &report["last-download"];
        assert_eq!(download["version"], VERSION_TWO, "{}: {report}", host.id);
        assert_eq!(download["via"], "patch", "{}: {report}", host.id);
        let (bytes, full) = (
            download["bytes"].as_u64().unwrap(),
            download["full-bytes"].as_u64().unwrap(),
        );
        assert!(bytes * 10 < full, "{}: {bytes} of {full} bytes", host.id);
    }
    fleet.assert_all_answer(VERSION_TWO);

    // `ferry rollback`: a new pointer (serial 3) naming v1; every host follows.
    let output = publisher.rollback();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(VERSION_ONE) && said.contains("serial 3"),
        "ferry rollback said: {said}"
    );
    fleet.converge("ferry rollback", |report, answered| {
        answered == VERSION_ONE
            && report["version"] == VERSION_ONE
            && report["serial"] == 3
            && report["state"] == "ok"
    });
    fleet.assert_all_answer(VERSION_ONE);

    // A release whose /health answers 500: every host installs it, sees it fail, rolls back
    // to v1 on its own and says so; the services answer throughout.
    publisher.publish(&bad);
    fleet.converge("failing release rolled back", |report, answered| {
        let marked_bad = report["bad"].as_array().is_some_and(|bad| {
            bad.iter()
                .any(|entry| entry["version"] == VERSION_BAD && entry["serial"] == 4)
        });
        answered == VERSION_ONE
            && report["version"] == VERSION_ONE
            && report["highest-serial"] == 4
            && report["state"] == "rolled-back"
            && report["last-error"]
                .as_str()
                .is_some_and(|error| error.contains(VERSION_BAD) && error.contains("rolled back"))
            && marked_bad
    });
    fleet.assert_all_answer(VERSION_ONE);

    // The bad release stays refused: a few more polls later nobody has touched it again.
    std::thread::sleep(Duration::from_secs(3));
    for host in &fleet.hosts {
        let report = fleet.report(host).expect("a host report");
        assert_eq!(report["version"], VERSION_ONE, "{}: {report}", host.id);
        assert_eq!(report["state"], "rolled-back", "{}: {report}", host.id);
    }
    fleet.assert_all_answer(VERSION_ONE);
}
