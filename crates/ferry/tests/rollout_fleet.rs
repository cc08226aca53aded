//! Staged rollout on a fleet of 50 hosts on this machine — each its own `ferry run` with
//! hello-service and its own `ferry agent` (interval 1 s, jitter 0.5 s), all following one
//! channel in the S3-compatible test server (moto) — driven by the real CLI.
//!
//! 1. `ferry publish --waves 20%:0,50%:8s,100%:16s`: the hosts move in three groups of the
//!    right sizes (10, 15 and 25 hosts, chosen by their rollout percentile), none before its
//!    wave opens and each within a poll interval + jitter (+ the time an update takes on a
//!    loaded machine) after it; `ferry watch` follows and exits 0 when all are done.
//! 2. A release whose `/health` answers 500, published with `20%:0,100%:30s`: the first
//!    wave's hosts fail it and roll back on their own; `ferry watch --max-failures 5%` sees
//!    the failures and signs a pause (exit 2); no host outside the first wave ever unpacks
//!    the release, and every host that tried it runs the previous version again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::fleet::{
    AgentFile, GroupGuard, Publisher, http_get, start_hello_supervisor, stop_fleet, stripped_copy,
    toml_string,
};
use ferry_testutil::rollout::Ferry;
use ferry_testutil::s3::S3Server;
use ferry_testutil::{ChildGuard, Dir, free_port, workspace_binary};
use time::OffsetDateTime;

const APP: &str = "hello";
const CHANNEL: &str = "stable";
const ONE: &str = "1.0.0-1";
const TWO: &str = "2.0.0-1";
const BAD: &str = "3.0.0-1";
const WAVES: &str = "20%:0,50%:8s,100%:16s";
/// Hosts per wave of WAVES: 20% / 30% / 50% of 50.
const WAVE_SIZES: [usize; 3] = [10, 15, 25];
const FAILING_WAVES: &str = "20%:0,100%:30s";
/// The agents' poll interval plus their largest jitter.
const POLL: Duration = Duration::from_millis(1500);
/// What an update may take after the poll that starts it (download, unpack, swap, health
/// check) on a loaded 2-core machine with ten hosts updating at once.
const UPDATE_SLACK: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(120);

struct Host {
    id: String,
    dir: PathBuf,
    port: u16,
    wave: usize,
    supervisor: Option<GroupGuard>,
    agent: Option<GroupGuard>,
}

impl Host {
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn unpacked(&self, version: &str) -> bool {
        self.dir.join("srv/releases").join(version).exists()
    }
}

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
    fn report(&self, host: &Host) -> Option<serde_json::Value> {
        let path = ferry_store::host_report_path(APP, &host.id);
        let object = self
            .runtime
            .block_on(self.store.get(&path, 1 << 20))
            .unwrap_or_else(|error| panic!("read {path}: {error}"))?;
        serde_json::from_slice(&object.bytes).ok()
    }

    fn pointer(&self) -> ferry_release::ChannelPointer {
        self.runtime
            .block_on(ferry_store::read_pointer(&self.store, APP, CHANNEL))
            .expect("read the pointer")
            .expect("a pointer")
            .pointer
    }

    /// Wait until every host's report satisfies `done`; panics with the stragglers.
    fn converge(&self, phase: &str, done: impl Fn(&Host, &serde_json::Value) -> bool) {
        let started = Instant::now();
        let mut waiting: Vec<usize> = (0..self.hosts.len()).collect();
        while !waiting.is_empty() && started.elapsed() < DEADLINE {
            waiting.retain(|&index| {
                let host = &self.hosts[index];
                !self.report(host).is_some_and(|report| done(host, &report))
            });
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(&index) = waiting.first() {
            let host = &self.hosts[index];
            panic!(
                "{phase}: {} hosts did not get there within {DEADLINE:?}, e.g. {} reports {:?}\n--- agent.log\n{}\n--- run.log\n{}",
                waiting.len(),
                host.id,
                self.report(host),
                host.log_tail("agent.log"),
                host.log_tail("run.log")
            );
        }
        eprintln!("{phase}: {:.1} s", started.elapsed().as_secs_f64());
    }
}

fn ferry_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// 50 host ids whose rollout percentiles put exactly WAVE_SIZES hosts in each wave of WAVES.
fn pick_hosts() -> Vec<(String, usize)> {
    let rollout = ferry_release::Rollout::parse(WAVES).unwrap();
    let mut chosen = Vec::new();
    let mut counts = [0usize; 3];
    for index in 0..100_000 {
        let id = format!("host-{index:03}");
        let percentile =
            ferry_release::host_percentile(&ferry_release::rollout_seed(&id, APP, CHANNEL));
        let wave = rollout.wave_of(percentile).unwrap();
        if counts[wave] < WAVE_SIZES[wave] {
            counts[wave] += 1;
            chosen.push((id, wave));
        }
        if counts == WAVE_SIZES {
            return chosen;
        }
    }
    panic!("could not pick the hosts")
}

fn write_agent_file(host: &Host, store: &str, trust: &Path, supervised: bool) -> PathBuf {
    let (restart, health, name) = if supervised {
        (
            format!(
                "method = \"supervisor\"\ncontrol = {}\ntimeout = \"60s\"",
                toml_string(&host.dir.join("control.sock").display().to_string())
            ),
            format!(
                "http = \"http://127.0.0.1:{}/health\"\ntimeout = \"2s\"\nretry = \"200ms\"",
                host.port
            ),
            "agent.toml",
        )
    } else {
        (
            "method = \"none\"".to_string(),
            String::new(),
            "provision.toml",
        )
    };
    let file = AgentFile {
        store,
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
    let path = host.dir.join(name);
    std::fs::write(&path, file.text()).expect("write the agent file");
    path
}

fn start_agent(host: &Host, config: &Path, s3: &S3Server, once: bool) -> GroupGuard {
    let mut command = Command::new(ferry_binary());
    command.arg("agent").arg("--config").arg(config);
    if once {
        command.arg("--once");
    }
    let log = if once { "provision.log" } else { "agent.log" };
    command
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.dir.join(log)).expect("create the agent log"));
    s3.apply(&mut command);
    GroupGuard::spawn(&mut command)
}

fn start_supervisor(host: &Host) -> GroupGuard {
    start_hello_supervisor(&ferry_binary(), &host.dir, host.port)
}

fn provision(hosts: &[Host], store: &str, trust: &Path, s3: &S3Server) {
    let mut runs: Vec<(usize, GroupGuard)> = hosts
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let config = write_agent_file(host, store, trust, false);
            (index, start_agent(host, &config, s3, true))
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while !runs.is_empty() {
        let mut still = Vec::new();
        for (index, mut run) in runs {
            match run.try_wait() {
                Some(status) => assert!(
                    status.success(),
                    "{}: provisioning failed ({status}):\n{}",
                    hosts[index].id,
                    hosts[index].log_tail("provision.log")
                ),
                None => still.push((index, run)),
            }
        }
        runs = still;
        assert!(Instant::now() < deadline, "provisioning did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_supervisors(hosts: &mut [Host]) {
    for host in hosts.iter_mut() {
        host.supervisor = Some(start_supervisor(host));
    }
    for attempt in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let mut restarted = false;
        for host in hosts.iter_mut() {
            if let Some(status) = host.supervisor.as_mut().and_then(GroupGuard::try_wait) {
                assert!(
                    attempt < 2,
                    "{}: ferry run keeps exiting ({status})",
                    host.id
                );
                // Lost its port to another process between free_port and bind: a new one.
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

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[test]
fn fifty_hosts_roll_out_in_waves_and_watch_halts_a_failing_release() {
    let dir = Dir::new("rollout-fleet");
    let s3 = S3Server::start();
    for (name, value) in s3.environment() {
        // SAFETY: no other thread runs yet; nextest runs each test in its own process.
        unsafe { std::env::set_var(name, value) };
    }
    let store = s3.store_url("rollout");
    let publisher = Publisher::new(
        &ferry_binary(),
        &dir.join("release"),
        &store,
        s3.environment(),
        APP,
        CHANNEL,
    );
    publisher.keygen();
    let ferry = Ferry::new(&ferry_binary(), s3.environment());
    let key = dir.join("release/release.key").display().to_string();
    let built = workspace_binary("hello-service");
    assert!(
        built.is_file(),
        "{} is missing: run `cargo build -p hello-service` (scripts/test does)",
        built.display()
    );
    let binary = stripped_copy(&built, &dir.join("hello-service"));
    let one = publisher.pack(&binary, ONE, None);
    let two = publisher.pack(&binary, TWO, None);
    let bad = publisher.pack(&binary, BAD, Some("unhealthy"));
    let publish = |package: &Path, waves: &[&str]| -> String {
        let mut arguments: Vec<String> = vec![
            "publish".into(),
            "--store".into(),
            store.clone(),
            "--app".into(),
            APP.into(),
            "--key".into(),
            key.clone(),
        ];
        arguments.extend(waves.iter().map(|text| text.to_string()));
        arguments.push(package.display().to_string());
        ferry.ok(&arguments)
    };
    publish(&one, &["--now"]);

    let mut hosts: Vec<Host> = pick_hosts()
        .into_iter()
        .map(|(id, wave)| {
            let host_dir = dir.join(&id);
            std::fs::create_dir_all(&host_dir).unwrap();
            Host {
                id,
                dir: host_dir,
                port: free_port(),
                wave,
                supervisor: None,
                agent: None,
            }
        })
        .collect();
    let trust = publisher.public_key();
    provision(&hosts, &store, &trust, &s3);
    start_supervisors(&mut hosts);
    for host in &mut hosts {
        let config = write_agent_file(host, &store, &trust, true);
        host.agent = Some(start_agent(host, &config, &s3, false));
    }
    let fleet = Fleet {
        hosts,
        store: ferry_store::Store::open(
            &store,
            &ferry_store::StoreOptions {
                s3_endpoint: Some(s3.endpoint()),
                ..Default::default()
            },
        )
        .unwrap(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    fleet.converge("every host reports v1", |_, report| {
        report["version"] == ONE && report["state"] == "ok"
    });

    // ---- 1. Three waves.
    let said = publish(&two, &["--waves", WAVES, "--max-clock-skew", "2s"]);
    assert!(said.contains(WAVES), "{said}");
    let pointer = fleet.pointer();
    let published_at = pointer.published_at;
    let watch_arguments: Vec<String> = vec![
        "watch".into(),
        "--store".into(),
        store.clone(),
        "--app".into(),
        APP.into(),
        "--key".into(),
        key.clone(),
        "--max-failures".into(),
        "5%".into(),
        "--interval".into(),
        "500ms".into(),
        "--timeout".into(),
        "100s".into(),
    ];
    let mut watch = ChildGuard::spawn(
        ferry
            .command(&watch_arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let offsets = [0u64, 8, 16];
    let mut committed: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    let started = Instant::now();
    while committed.len() < fleet.hosts.len() && started.elapsed() < DEADLINE {
        for host in &fleet.hosts {
            if committed.contains_key(&host.id) {
                continue;
            }
            let Some(report) = fleet.report(host) else {
                continue;
            };
            let now = ferry_release::now_utc();
            let opens = published_at + time::Duration::seconds(offsets[host.wave] as i64);
            if report["state"] == "updating" || report["version"] == TWO {
                assert!(
                    now + time::Duration::seconds(1) >= opens,
                    "{} (wave {}) started updating at {now}, before its wave opens at {opens}: {report}",
                    host.id,
                    host.wave + 1
                );
            }
            if report["version"] == TWO {
                let at = report["last-change-at"]
                    .as_str()
                    .and_then(parse_time)
                    .unwrap_or_else(|| panic!("{}: no last-change-at in {report}", host.id));
                committed.insert(host.id.clone(), at);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        committed.len(),
        fleet.hosts.len(),
        "not every host took v2 within {DEADLINE:?}"
    );
    let mut lags: [Vec<f64>; 3] = Default::default();
    for host in &fleet.hosts {
        let at = committed[&host.id];
        let opens = published_at + time::Duration::seconds(offsets[host.wave] as i64);
        let lag = (at - opens).as_seconds_f64();
        assert!(
            lag >= 0.0,
            "{} (wave {}) committed v2 {lag:.1} s before its wave opened",
            host.id,
            host.wave + 1
        );
        assert!(
            lag <= (POLL + UPDATE_SLACK).as_secs_f64() + 1.0,
            "{} (wave {}) committed v2 {lag:.1} s after its wave opened\n{}",
            host.id,
            host.wave + 1,
            host.log_tail("agent.log")
        );
        lags[host.wave].push(lag);
    }
    for (wave, lags) in lags.iter().enumerate() {
        assert_eq!(lags.len(), WAVE_SIZES[wave], "wave {} size", wave + 1);
        let max = lags.iter().cloned().fold(0.0, f64::max);
        let mean = lags.iter().sum::<f64>() / lags.len() as f64;
        eprintln!(
            "wave {} (+{} s): {} hosts committed {mean:.1} s after it opened on average, {max:.1} s at most",
            wave + 1,
            offsets[wave],
            lags.len()
        );
    }
    // The three groups do not overlap in order: every host of a wave committed no earlier
    // than its wave opened (checked above), and the waves open 8 s apart.
    let status = watch_exit(&mut watch, Duration::from_secs(30));
    assert_eq!(status.0, Some(0), "ferry watch: {}", status.1);
    assert!(status.1.contains("rolled out 2.0.0-1"), "{}", status.1);

    // `ferry status` agrees.
    let json: serde_json::Value =
        serde_json::from_str(&ferry.ok(&["status", "--store", &store, "--app", APP, "--json"]))
            .unwrap();
    assert_eq!(json["totals"]["hosts"], 50);
    assert_eq!(json["totals"]["updated"], 50);
    let sizes: Vec<u64> = json["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|wave| wave["hosts"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![10, 15, 25]);
    eprintln!("{}", ferry.ok(&["status", "--store", &store, "--app", APP]));

    // ---- 2. A failing release, halted by `ferry watch`.
    publish(&bad, &["--waves", FAILING_WAVES, "--max-clock-skew", "5s"]);
    let bad_pointer = fleet.pointer();
    let second_wave_opens = bad_pointer.published_at + time::Duration::seconds(30);
    let watch = ferry.output(&watch_arguments);
    let said = String::from_utf8_lossy(&watch.stdout).into_owned();
    assert_eq!(
        watch.status.code(),
        Some(2),
        "ferry watch should halt with exit 2: {said}\n{}",
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(said.contains("HALTED") && said.contains("paused"), "{said}");
    assert!(
        ferry_release::now_utc() < second_wave_opens,
        "the halt came after the second wave opened; the test proves nothing"
    );
    let paused = fleet.pointer();
    assert!(paused.paused, "the channel is paused");
    assert_eq!(paused.release.version, BAD);

    // Past the second wave's opening (plus a poll), nobody outside the first wave took it.
    while ferry_release::now_utc() < second_wave_opens + time::Duration::seconds(3) {
        std::thread::sleep(Duration::from_millis(250));
    }
    for host in &fleet.hosts {
        if host.wave != 0 {
            assert!(
                !host.unpacked(BAD),
                "{} (wave {}) unpacked the failing release",
                host.id,
                host.wave + 1
            );
        }
    }
    // Every host that tried it is back on v2, and every host answers v2.
    fleet.converge(
        "hosts that tried the bad release are back on v2",
        |host, report| {
            let tried = host.unpacked(BAD);
            let marked = report["bad"]
                .as_array()
                .is_some_and(|bad| bad.iter().any(|entry| entry["version"] == BAD));
            report["version"] == TWO && report["step"] == "idle" && (!tried || marked)
        },
    );
    let mut tried = 0;
    for host in &fleet.hosts {
        let answer = http_get(host.port, "/");
        assert_eq!(
            answer.as_ref().map(|(code, body)| (*code, body.trim())),
            Some((200, TWO)),
            "{} answers {answer:?}",
            host.id
        );
        if host.unpacked(BAD) {
            tried += 1;
            assert_eq!(host.wave, 0, "{} is not in the first wave", host.id);
        }
    }
    assert!(tried >= 3, "only {tried} hosts tried the failing release");
    eprintln!(
        "{tried} first-wave hosts tried the failing release and rolled back; watch said:\n{said}"
    );
}

/// Wait for a spawned `ferry watch` to exit; its code and stdout.
fn watch_exit(watch: &mut ChildGuard, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = watch.child().try_wait().expect("wait for ferry watch") {
            let mut out = String::new();
            if let Some(mut stdout) = watch.child().stdout.take() {
                use std::io::Read;
                let _ = stdout.read_to_string(&mut out);
            }
            return (status.code(), out);
        }
        assert!(Instant::now() < deadline, "ferry watch did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}
