//! The fleet-convergence benchmark behind `bench/fleet.sh` (ignored in the test suite: it
//! runs 1000 agents for several minutes). 1000 `ferry agent` processes on this machine poll
//! one channel in a local S3-compatible server (moto) every 10 s with jitter; it measures,
//! for a publish and then for a `ferry rollback`, the time from the pointer being written to
//! each host running the new version (p50, p99, max), the store's request rate (idle and
//! during the rollout, from moto's access log), and the agents' total CPU and memory.
//!
//! 1000 supervised services would not fit in memory, so each agent installs with `unpack`,
//! restarts nothing (`none`) and health-checks by running the new release's binary
//! (`hello-service --help`). "Running the new version" is the moment its agent logs
//! `release committed` for it. The zero-downtime swap itself is measured by bench/reload.sh.
//!
//! Knobs (environment): FERRY_BENCH_AGENTS (1000), FERRY_BENCH_INTERVAL_S (10),
//! FERRY_BENCH_IDLE_S (30, the idle measurement window).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::fleet::{
    AgentFile, GroupGuard, Publisher, cpu_time, memory_kib, stripped_copy, toml_string,
};
use ferry_testutil::{Dir, free_port, workspace_binary};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const APP: &str = "hello";
const CHANNEL: &str = "stable";
const BUCKET: &str = "ferry-bench";
const VERSION_ONE: &str = "1.0.0-1";
const VERSION_TWO: &str = "2.0.0-1";
/// The longest a rollout may take before the benchmark gives up.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(300);

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// moto on a free port with its access log (one line per request) kept in a file.
struct Moto {
    guard: GroupGuard,
    port: u16,
    log: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Moto {
        let log = dir.join("moto.log");
        let port = free_port();
        let mut command = Command::new("moto_server");
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create moto.log"));
        let guard = GroupGuard::spawn(&mut command);
        let deadline = Instant::now() + Duration::from_secs(30);
        while raw_request(port, "GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let answer = raw_request(port, "PUT", &format!("/{BUCKET}")).unwrap_or_default();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        Moto { guard, port, log }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access-log lines written so far.
    fn requests(&self) -> Vec<String> {
        let file = std::fs::File::open(&self.log).expect("open moto.log");
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains("\" ") && line.contains(" HTTP/1.1\""))
            .collect()
    }
}

fn raw_request(port: u16, method: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// What the store was asked in a window: method + object kind + status → count.
fn classify(lines: &[String]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for line in lines {
        let Some(request) = line.split('"').nth(1) else {
            continue;
        };
        let status = line
            .split('"')
            .nth(2)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?");
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("?");
        let path = parts.next().unwrap_or("?");
        let kind = if path.contains("/history/") {
            "pointer history"
        } else if path.contains("/channels/") {
            "pointer"
        } else if path.contains("/releases/") {
            "release document"
        } else if path.contains("/hosts/") {
            "host report"
        } else if path.contains("/artifacts/") {
            "artifact"
        } else {
            "other"
        };
        *kinds
            .entry(format!("{method} {kind} {status}"))
            .or_default() += 1;
    }
    kinds
}

/// Readings taken just before a rollout.
struct Before {
    /// Store requests logged so far.
    requests: usize,
    /// The agents' CPU time so far.
    cpu: Duration,
    /// moto's CPU time so far.
    moto_cpu: Duration,
    /// When the pointer was written (the publish command returned).
    published: OffsetDateTime,
    /// The same moment on the monotonic clock.
    started: Instant,
}

impl Before {
    fn take(agents: &[Agent], moto: &Moto, publish: impl FnOnce()) -> Before {
        let requests = moto.requests().len();
        let cpu = total_cpu(agents);
        let moto_cpu = cpu_time(moto.guard.id()).unwrap_or_default();
        let command_started = Instant::now();
        publish();
        println!();
        println!(
            "(the publishing command took {:.2} s)",
            command_started.elapsed().as_secs_f64()
        );
        Before {
            requests,
            cpu,
            moto_cpu,
            published: OffsetDateTime::now_utc(),
            started: Instant::now(),
        }
    }
}

struct Agent {
    log: PathBuf,
    guard: GroupGuard,
}

/// When an agent logged `message` (e.g. `release committed`) for `version` at `serial`.
fn logged_at(log: &Path, message: &str, version: &str, serial: u64) -> Option<OffsetDateTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let version_field = format!("version={version} ");
    let serial_field = format!("serial={serial} ");
    text.lines()
        .filter(|line| {
            line.contains(message) && line.contains(&version_field) && line.contains(&serial_field)
        })
        .find_map(|line| OffsetDateTime::parse(line.split_whitespace().next()?, &Rfc3339).ok())
}

/// How long the agent's poll took until the pointer was verified (mostly the store's answer
/// to the GET), from the `duration_ms` of its `pointer verified` line.
fn pointer_fetch_seconds(log: &Path, version: &str, serial: u64) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let version_field = format!("version={version} ");
    let serial_field = format!("serial={serial} ");
    let line = text.lines().find(|line| {
        line.contains("pointer verified")
            && line.contains(&version_field)
            && line.contains(&serial_field)
    })?;
    let milliseconds: f64 = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("duration_ms="))?
        .parse()
        .ok()?;
    Some(milliseconds / 1000.0)
}

/// When an agent committed `version` at `serial` (None: not yet).
fn commit_time(log: &Path, version: &str, serial: u64) -> Option<OffsetDateTime> {
    logged_at(log, "release committed", version, serial)
}

/// The agents' warnings and errors logged since `since`, grouped by their message's start.
fn warnings_since(agents: &[Agent], since: OffsetDateTime) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for agent in agents {
        let Ok(text) = std::fs::read_to_string(&agent.log) else {
            continue;
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(at), Some(level)) = (words.next(), words.next()) else {
                continue;
            };
            if !matches!(level, "WARN" | "ERROR")
                || OffsetDateTime::parse(at, &Rfc3339).is_ok_and(|at| at < since)
            {
                continue;
            }
            let message: String = words.collect::<Vec<_>>().join(" ");
            let head = message.split(':').next().unwrap_or_default();
            *seen.entry(format!("{level} {head}")).or_default() += 1;
        }
    }
    seen
}

/// The machine's load average (1, 5, 15 minutes), to judge how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn total_cpu(agents: &[Agent]) -> Duration {
    agents
        .iter()
        .filter_map(|agent| cpu_time(agent.guard.id()))
        .sum()
}

/// Wait until every agent committed `version` at `serial`; print the per-host latency from
/// `published` (when the pointer was written), the request rate and the agents' CPU.
fn measure_rollout(
    title: &str,
    agents: &[Agent],
    moto: &Moto,
    (version, serial): (&str, u64),
    before: Before,
    interval: Duration,
) {
    let Before {
        requests: requests_before,
        cpu: cpu_before,
        moto_cpu: moto_cpu_before,
        published,
        started,
    } = before;
    let mut done: Vec<Option<f64>> = vec![None; agents.len()];
    while done.iter().any(Option::is_none) && started.elapsed() < ROLLOUT_DEADLINE {
        for (index, agent) in agents.iter().enumerate() {
            if done[index].is_none()
                && let Some(at) = commit_time(&agent.log, version, serial)
            {
                done[index] = Some((at - published).as_seconds_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = started.elapsed();
    let cpu = total_cpu(agents).saturating_sub(cpu_before);
    let moto_cpu = cpu_time(moto.guard.id())
        .unwrap_or_default()
        .saturating_sub(moto_cpu_before);
    let requests = moto.requests();
    let window = &requests[requests_before.min(requests.len())..];
    let mut latencies: Vec<f64> = done.iter().flatten().copied().collect();
    latencies.sort_by(f64::total_cmp);
    let missing = agents.len() - latencies.len();
    let p99 = percentile(&latencies, 0.99);
    let goal = interval.as_secs_f64() + 3.0;
    // Where the time went: until the agent saw the new pointer, and from there to the commit.
    let (mut polls, mut updates, mut fetches) = (Vec::new(), Vec::new(), Vec::new());
    for agent in agents {
        fetches.extend(pointer_fetch_seconds(&agent.log, version, serial));
        let seen = logged_at(&agent.log, "pointer verified", version, serial);
        let committed = commit_time(&agent.log, version, serial);
        if let (Some(seen), Some(committed)) = (seen, committed) {
            polls.push((seen - published).as_seconds_f64());
            updates.push((committed - seen).as_seconds_f64());
        }
    }
    polls.sort_by(f64::total_cmp);
    updates.sort_by(f64::total_cmp);
    fetches.sort_by(f64::total_cmp);
    println!();
    println!(
        "== {title}: {} of {} hosts running {version} (serial {serial}); load average {}",
        latencies.len(),
        agents.len(),
        load_average()
    );
    if missing > 0 {
        println!("   {missing} hosts did NOT get there within {ROLLOUT_DEADLINE:?}");
    }
    println!(
        "   pointer written → running the new version, per host: p50 {:.2} s, p99 {:.2} s, max {:.2} s (min {:.2} s)",
        percentile(&latencies, 0.50),
        p99,
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.first().copied().unwrap_or(f64::NAN),
    );
    println!(
        "     of which: until the agent saw the pointer p50 {:.2} s, p99 {:.2} s; seen → committed (download, unpack, health, reports) p50 {:.2} s, p99 {:.2} s",
        percentile(&polls, 0.50),
        percentile(&polls, 0.99),
        percentile(&updates, 0.50),
        percentile(&updates, 0.99),
    );
    println!(
        "     the store's answer to the poll that saw the new pointer (GET → verified): p50 {:.2} s, p99 {:.2} s",
        percentile(&fetches, 0.50),
        percentile(&fetches, 0.99),
    );
    println!(
        "   goal p99 <= interval + 3 s = {goal:.0} s: p99 / goal = {:.2} ({})",
        p99 / goal,
        if p99 <= goal && missing == 0 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "   store requests until the last host converged ({:.1} s): {} = {:.1} req/s; by kind: {:?}",
        elapsed.as_secs_f64(),
        window.len(),
        window.len() as f64 / elapsed.as_secs_f64(),
        classify(window)
    );
    println!(
        "   CPU in that time: agents {:.1} s = {:.1}% of one core; moto {:.1}% of one core",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
        100.0 * moto_cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    println!(
        "   agents' warnings and errors since the publish: {:?}",
        warnings_since(agents, published)
    );
}

#[test]
#[ignore = "a benchmark: run bench/fleet.sh (1000 agents, several minutes)"]
fn fleet_convergence_benchmark() {
    let count = knob("FERRY_BENCH_AGENTS", 1000) as usize;
    let interval = Duration::from_secs(knob("FERRY_BENCH_INTERVAL_S", 10));
    let idle_window = Duration::from_secs(knob("FERRY_BENCH_IDLE_S", 30));
    let dir = Dir::new("fleet-bench");
    let moto = Moto::start(dir.path());
    let environment = vec![
        ("FERRY_S3_ENDPOINT", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "bench".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "bench".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let store = format!("s3://{BUCKET}/fleet");
    let ferry = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let publisher = Publisher::new(
        &ferry,
        &dir.join("release"),
        &store,
        environment.clone(),
        APP,
        CHANNEL,
    );
    publisher.keygen();
    let binary = stripped_copy(
        &workspace_binary("hello-service"),
        &dir.join("hello-service"),
    );
    let one = publisher.pack(&binary, VERSION_ONE, None);
    let two = publisher.pack(&binary, VERSION_TWO, None);
    publisher.publish(&one);

    println!(
        "fleet benchmark: {count} `ferry agent` processes, interval {interval:?} + jitter up to {:?}, store: moto (single-process Python S3 server) on 127.0.0.1",
        interval / 10
    );
    println!("method: each agent installs with `unpack` into its own root, restart method `none`,");
    println!(
        "        health = run the new release's binary (`hello-service --help`); no services run"
    );
    println!(
        "        (1000 supervised services would not fit in memory; the swap is measured by bench/reload.sh)."
    );
    println!(
        "        'running the new version' = the agent's `release committed` log line for it."
    );
    println!(
        "        package: {} bytes",
        std::fs::metadata(&two).map(|m| m.len()).unwrap_or(0)
    );

    // Start the agents spread over one interval, as hosts booted at random times would be.
    let started = Instant::now();
    let mut agents = Vec::with_capacity(count);
    for index in 0..count {
        let host = dir.join(format!("hosts/{index:04}"));
        std::fs::create_dir_all(&host).expect("create the host directory");
        let root = host.join("srv");
        let health = format!(
            "command = [{}, \"--help\"]\ntimeout = \"20s\"",
            toml_string(
                &root
                    .join("current/usr/bin/hello-service")
                    .display()
                    .to_string()
            )
        );
        let file = AgentFile {
            store: &store,
            app: APP,
            channel: CHANNEL,
            trust: &publisher.public_key(),
            interval: &format!("{}s", interval.as_secs()),
            jitter: &format!("{}ms", interval.as_millis() / 10),
            host_id: &format!("host-{index:04}"),
            state_dir: &host.join("state"),
            root: &root,
            restart: "method = \"none\"",
            health: &health,
        };
        let config = host.join("agent.toml");
        std::fs::write(&config, file.text()).expect("write agent.toml");
        let log = host.join("agent.log");
        let mut command = Command::new(&ferry);
        command
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create agent.log"));
        for (name, value) in &environment {
            command.env(name, value);
        }
        agents.push(Agent {
            log,
            guard: GroupGuard::spawn(&mut command),
        });
        let due = interval.mul_f64((index + 1) as f64 / count as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    println!();
    println!(
        "started {count} agents in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + ROLLOUT_DEADLINE;
    let mut pending: Vec<usize> = (0..count).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|&index| commit_time(&agents[index].log, VERSION_ONE, 1).is_none());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        pending.is_empty(),
        "{} agents did not install {VERSION_ONE} within {ROLLOUT_DEADLINE:?}; e.g. {}",
        pending.len(),
        std::fs::read_to_string(&agents[pending[0]].log).unwrap_or_default()
    );
    println!(
        "all {count} hosts installed {VERSION_ONE} after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Idle: every agent polls, the pointer has not changed.
    std::thread::sleep(interval + Duration::from_secs(2));
    let requests_before = moto.requests().len();
    let cpu_before = total_cpu(&agents);
    let moto_cpu_before = cpu_time(moto.guard.id()).unwrap_or_default();
    let idle_started = Instant::now();
    std::thread::sleep(idle_window);
    let idle_elapsed = idle_started.elapsed().as_secs_f64();
    let requests = moto.requests();
    let window = &requests[requests_before..];
    let cpu = total_cpu(&agents).saturating_sub(cpu_before);
    let moto_cpu = cpu_time(moto.guard.id())
        .unwrap_or_default()
        .saturating_sub(moto_cpu_before);
    let expected_rate = count as f64 / (interval.as_secs_f64() + interval.as_secs_f64() / 20.0);
    println!();
    println!(
        "== idle ({idle_elapsed:.0} s, nothing published); load average {}",
        load_average()
    );
    println!(
        "   store requests: {} = {:.1} req/s; expected ≈ N / (interval + mean jitter) = {expected_rate:.1} req/s; ratio {:.2}",
        window.len(),
        window.len() as f64 / idle_elapsed,
        window.len() as f64 / idle_elapsed / expected_rate
    );
    println!("   by kind: {:?}", classify(window));
    println!(
        "   agents' CPU: {:.2} s = {:.2}% of one core for all {count} ({:.2} ms per agent per poll)",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / idle_elapsed,
        1000.0 * cpu.as_secs_f64() / (window.len().max(1) as f64)
    );
    println!(
        "   moto's CPU: {:.1}% of one core",
        100.0 * moto_cpu.as_secs_f64() / idle_elapsed
    );
    let (rss, pss): (u64, u64) = agents
        .iter()
        .filter_map(|agent| memory_kib(agent.guard.id()))
        .fold((0, 0), |(rss, pss), (r, p)| (rss + r, pss + p));
    println!(
        "   agents' memory: RSS {:.0} MiB total ({:.1} MiB each), PSS {:.0} MiB total ({:.1} MiB each; shared pages split fairly)",
        rss as f64 / 1024.0,
        rss as f64 / 1024.0 / count as f64,
        pss as f64 / 1024.0,
        pss as f64 / 1024.0 / count as f64
    );

    // Publish v2, let it settle, then roll back to v1.
    let before = Before::take(&agents, &moto, || {
        publisher.publish(&two);
    });
    measure_rollout(
        "publish",
        &agents,
        &moto,
        (VERSION_TWO, 2),
        before,
        interval,
    );
    std::thread::sleep(interval + Duration::from_secs(2));
    let before = Before::take(&agents, &moto, || {
        publisher.rollback();
    });
    measure_rollout(
        "ferry rollback",
        &agents,
        &moto,
        (VERSION_ONE, 3),
        before,
        interval,
    );

    let (rss, pss): (u64, u64) = agents
        .iter()
        .filter_map(|agent| memory_kib(agent.guard.id()))
        .fold((0, 0), |(rss, pss), (r, p)| (rss + r, pss + p));
    println!();
    println!(
        "agents' memory at the end: RSS {:.0} MiB total, PSS {:.0} MiB total; agents' total CPU since start: {:.1} s",
        rss as f64 / 1024.0,
        pss as f64 / 1024.0,
        total_cpu(&agents).as_secs_f64()
    );
    let exited = agents
        .iter_mut()
        .filter_map(|agent| agent.guard.try_wait())
        .count();
    assert_eq!(exited, 0, "{exited} agents exited during the benchmark");
}
