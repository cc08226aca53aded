//! The scale benchmark behind `bench/scale.sh` (ignored in the test suite: it runs for
//! minutes). Two parts:
//!
//! 1. 10,000 pollers in this one process, each running the agent's own poll
//!    (`ferry_agent::poll::poll_pointer`: a conditional GET of the channel pointer and its full
//!    verification when it changed) every 10 s from a random phase, through nginx as a
//!    caching proxy (a CDN stand-in) in front of the S3 test server (moto). The publisher
//!    writes pointers with `Cache-Control: max-age=<TTL>`. Measured: the requests per second
//!    that reach the origin while idle (against the bound 2 × edges / TTL), the time from the
//!    publish to each poller seeing the new serial (p50, p99, max; bound interval + TTL + 2 s),
//!    and the pollers' CPU and memory.
//! 2. `ferry status --json` over generated reports: 10,000 per-host objects (the layout of
//!    before, the baseline of this run) against the same 10,000 hosts in 1024 report shards,
//!    then 100,000 hosts in 1024 shards.
//!
//! Knobs (environment): FERRY_BENCH_POLLERS (10000), FERRY_BENCH_INTERVAL_S (10),
//! FERRY_BENCH_TTL_S (5), FERRY_BENCH_IDLE_S (30), FERRY_BENCH_STATUS_HOSTS (100000),
//! FERRY_BENCH_BASELINE_HOSTS (10000).
//! The last line: `scale pollers=<n> origin_rps=<x> bound_rps=<x> p99_seen_s=<x>
//! bound_seen_s=<x> status_100k_s=<x>`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_agent::poll::{Polled, poll_pointer};
use ferry_release::{HostReport, HostShard, HostState, TrustedKeys};
use ferry_store::{Store, StoreOptions};
use ferry_testutil::Dir;
use ferry_testutil::fleet::{Publisher, cpu_time, memory_kib, run_bounded};
use ferry_testutil::nginx::Nginx;
use ferry_testutil::s3::{BUCKET, S3Server};
use futures::StreamExt;

const APP: &str = "hello";
const CHANNEL: &str = "stable";
const SHARDS: u32 = 1024;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the pollers share: the highest serial each has seen and when it first saw the target.
struct Pollers {
    highest: Vec<AtomicU64>,
    seen_target_ms: Vec<AtomicU64>,
    target: AtomicU64,
    polls: AtomicUsize,
    errors: AtomicUsize,
}

impl Pollers {
    fn at_least(&self, serial: u64) -> usize {
        self.highest
            .iter()
            .filter(|highest| highest.load(Ordering::Relaxed) >= serial)
            .count()
    }
}

async fn poller(
    index: usize,
    store: Store,
    trusted: Arc<TrustedKeys>,
    shared: Arc<Pollers>,
    interval: Duration,
    stop: Arc<AtomicU64>,
) {
    // An even spread of phases over the interval, as jittered agents settle into.
    let phase = interval.mul_f64((index as f64 * 0.618_033_988_75).fract());
    tokio::time::sleep(phase).await;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut etag: Option<String> = None;
    while stop.load(Ordering::Relaxed) == 0 {
        ticks.tick().await;
        let highest = shared.highest[index].load(Ordering::Relaxed);
        shared.polls.fetch_add(1, Ordering::Relaxed);
        match poll_pointer(&store, APP, CHANNEL, etag.as_deref(), highest, &trusted).await {
            Ok(Polled::Verified {
                document,
                etag: new,
                ..
            }) => {
                etag = new;
                let serial = document.pointer.serial;
                shared.highest[index].store(serial, Ordering::Relaxed);
                let target = shared.target.load(Ordering::Relaxed);
                if target > 0 && serial >= target {
                    let _ = shared.seen_target_ms[index].compare_exchange(
                        0,
                        now_ms(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            Ok(Polled::NotModified) => {}
            Ok(Polled::Stale { etag: new, .. }) => etag = new,
            Ok(Polled::Missing | Polled::Refused { .. }) | Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn pointer_polls(cache: &Nginx, from: usize) -> (usize, usize, usize) {
    let log = cache.log();
    let window = &log[from.min(log.len())..];
    let pointer = format!("/apps/{APP}/channels/{CHANNEL}.json");
    let polls = window.iter().filter(|line| line.path == pointer).count();
    let origin = window
        .iter()
        .filter(|line| line.path == pointer && line.reached_origin())
        .count();
    (polls, origin, log.len())
}

/// A host report as an agent on 2.0.0 writes it, with a few hosts in other states.
fn report(index: usize) -> HostReport {
    let (version, state) = match index % 50 {
        7 => ("1.0.0-1", HostState::RolledBack),
        0..=9 => ("1.0.0-1", HostState::Ok),
        _ => ("2.0.0-1", HostState::Ok),
    };
    HostReport {
        schema: ferry_release::HOST_REPORT_SCHEMA,
        app: APP.into(),
        channel: CHANNEL.into(),
        host_id: format!("host-{index:06}"),
        version: Some(version.into()),
        serial: Some(1),
        highest_serial: 1,
        state,
        step: "idle".into(),
        updated_at: Some(ferry_agent::report::now_text()),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        heartbeat_s: Some(300),
        ..Default::default()
    }
}

/// Write `hosts` reports under `prefix`: one object per host, or in [`SHARDS`] shards.
fn generate_reports(runtime: &tokio::runtime::Runtime, store: &Store, hosts: usize, sharded: bool) {
    runtime.block_on(async {
        let writes: Vec<(String, Vec<u8>)> = if sharded {
            let mut shards: Vec<HostShard> = (0..SHARDS)
                .map(|shard| HostShard::new(APP, shard, SHARDS))
                .collect();
            for index in 0..hosts {
                let report = report(index);
                let shard = HostShard::index_of(&report.host_id, SHARDS) as usize;
                shards[shard].reports.insert(report.host_id.clone(), report);
            }
            // Agents make only the shards their hosts fall in.
            shards
                .into_iter()
                .filter(|shard| !shard.reports.is_empty())
                .map(|shard| {
                    (
                        ferry_release::layout::host_shard(APP, SHARDS, shard.shard),
                        serde_json::to_vec(&shard).unwrap(),
                    )
                })
                .collect()
        } else {
            (0..hosts)
                .map(|index| {
                    let report = report(index);
                    (
                        ferry_release::layout::host_report(APP, &report.host_id),
                        serde_json::to_vec_pretty(&report).unwrap(),
                    )
                })
                .collect()
        };
        let results: Vec<_> = futures::stream::iter(writes)
            .map(|(path, bytes): (String, Vec<u8>)| async move {
                store.put_overwrite(&path, Bytes::from(bytes)).await
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for result in results {
            result.expect("write a generated report");
        }
    });
}

/// Time `ferry status --json` on `store`; checks it saw every host.
fn time_status(s3: &S3Server, store: &str, hosts: usize) -> f64 {
    let mut command = ferry_testutil::ferry_command(Path::new(env!("CARGO_BIN_EXE_ferry")));
    command.args(["status", "--json", "--store", store, "--app", APP]);
    s3.apply(&mut command);
    let started = Instant::now();
    let output = run_bounded(&mut command, Duration::from_secs(600));
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "ferry status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        Some(hosts),
        "ferry status did not see every host"
    );
    elapsed
}

fn open(url: &str, s3: &S3Server) -> Store {
    let options = StoreOptions {
        s3_endpoint: Some(s3.endpoint()),
        request_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    };
    Store::open(url, &options).unwrap()
}

#[test]
#[ignore = "a benchmark: run bench/scale.sh"]
fn scale() {
    let pollers = knob("FERRY_BENCH_POLLERS", 10_000) as usize;
    let interval = Duration::from_secs(knob("FERRY_BENCH_INTERVAL_S", 10));
    let ttl = knob("FERRY_BENCH_TTL_S", 5);
    let idle = Duration::from_secs(knob("FERRY_BENCH_IDLE_S", 30));
    let status_hosts = knob("FERRY_BENCH_STATUS_HOSTS", 100_000) as usize;
    let baseline_hosts = knob("FERRY_BENCH_BASELINE_HOSTS", 10_000) as usize;

    let dir = Dir::new("scale-bench");
    let s3 = S3Server::start();
    // The test process is the S3 client for generated reports; it needs the credentials.
    for (name, value) in s3.environment() {
        // SAFETY: set before this process starts any thread that reads the environment.
        unsafe { std::env::set_var(name, value) };
    }
    s3.allow_public_reads("fleet");
    let store_url = s3.store_url("fleet");
    let mut environment = s3.environment();
    environment.push(("FERRY_POINTER_MAX_AGE", format!("{ttl}s")));
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let publisher = Publisher::new(
        ferry,
        &dir.join("work"),
        &store_url,
        environment,
        APP,
        CHANNEL,
    );
    publisher.keygen();
    let one = publisher.pack(Path::new("/bin/true"), "1.0.0", None);
    let two = publisher.pack(Path::new("/bin/true"), "2.0.0", None);
    publisher.publish(&one);
    let cache = Nginx::cache_in_front_of(
        &format!("{}/{BUCKET}/fleet", s3.endpoint()),
        &dir.join("nginx"),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let edge = open(&cache.url(), &s3);
    let trusted = Arc::new(TrustedKeys::from_files(&[publisher.public_key()]).unwrap());
    let shared = Arc::new(Pollers {
        highest: (0..pollers).map(|_| AtomicU64::new(0)).collect(),
        seen_target_ms: (0..pollers).map(|_| AtomicU64::new(0)).collect(),
        target: AtomicU64::new(0),
        polls: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicU64::new(0));
    let memory_before = memory_kib(std::process::id()).map_or(0, |(rss, _)| rss);
    for index in 0..pollers {
        runtime.spawn(poller(
            index,
            edge.clone(),
            trusted.clone(),
            shared.clone(),
            interval,
            stop.clone(),
        ));
    }
    // Every poller has the first release's pointer.
    let deadline = Instant::now() + interval * 3;
    while shared.at_least(1) < pollers {
        assert!(
            Instant::now() < deadline,
            "only {} of {pollers} pollers saw serial 1 ({} errors)",
            shared.at_least(1),
            shared.errors.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Idle: what reaches the origin while nothing changes.
    let (_, _, log_start) = pointer_polls(&cache, 0);
    let cpu_start = cpu_time(std::process::id()).unwrap_or_default();
    let polls_start = shared.polls.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(idle);
    let window = started.elapsed().as_secs_f64();
    let cpu = cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_start);
    let polls = shared.polls.load(Ordering::Relaxed) - polls_start;
    let (edge_polls, origin_polls, _) = pointer_polls(&cache, log_start);
    let memory = memory_kib(std::process::id()).map_or(0, |(rss, _)| rss);
    let origin_rps = origin_polls as f64 / window;
    let edges = 1.0;
    let bound_rps = 2.0 * edges / ttl as f64;

    // Publish, and time until every poller has seen it.
    shared.target.store(2, Ordering::Relaxed);
    let published = now_ms();
    publisher.publish(&two);
    let bound_seen = interval.as_secs_f64() + ttl as f64 + 2.0;
    let deadline = Instant::now() + Duration::from_secs_f64(bound_seen * 3.0);
    while shared.at_least(2) < pollers && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(1, Ordering::Relaxed);
    let mut seen: Vec<f64> = shared
        .seen_target_ms
        .iter()
        .map(|at| at.load(Ordering::Relaxed))
        .filter(|&at| at > 0)
        .map(|at| at.saturating_sub(published) as f64 / 1000.0)
        .collect();
    seen.sort_by(f64::total_cmp);
    let missed = pollers - seen.len();
    let p99 = percentile(&seen, 0.99);
    runtime.shutdown_timeout(Duration::from_secs(5));

    println!();
    println!(
        "== {pollers} pollers, every {interval:?}, through one nginx cache (pointer max-age {ttl} s) in front of moto"
    );
    println!(
        "   idle {window:.1} s: {edge_polls} pointer polls at the edge ({:.0}/s), {origin_polls} reached the origin: {origin_rps:.2} req/s (bound 2 x edges / TTL = {bound_rps:.2}); ratio origin/edge {:.5}",
        edge_polls as f64 / window,
        origin_polls as f64 / edge_polls.max(1) as f64,
    );
    println!(
        "   pollers' CPU: {:.1} % of one core ({:.1} µs per poll, {polls} polls); memory +{:.1} MiB for {pollers} pollers",
        cpu.as_secs_f64() / window * 100.0,
        cpu.as_secs_f64() * 1e6 / polls.max(1) as f64,
        memory.saturating_sub(memory_before) as f64 / 1024.0,
    );
    println!(
        "   publish → seen: p50 {:.2} s, p99 {p99:.2} s, max {:.2} s (bound interval + TTL + 2 s = {bound_seen:.0} s){}; errors {}",
        percentile(&seen, 0.5),
        seen.last().copied().unwrap_or(f64::NAN),
        if missed > 0 {
            format!("; {missed} pollers never saw it")
        } else {
            String::new()
        },
        shared.errors.load(Ordering::Relaxed),
    );

    // Status over generated reports.
    let status_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut timings = Vec::new();
    for (label, prefix, hosts, sharded) in [
        ("per-host objects", "status-hosts", baseline_hosts, false),
        ("1024 shards", "status-shards-small", baseline_hosts, true),
        ("1024 shards", "status-shards", status_hosts, true),
    ] {
        let url = s3.store_url(prefix);
        let store = open(&url, &s3);
        let writing = Instant::now();
        generate_reports(&status_runtime, &store, hosts, sharded);
        let written = writing.elapsed().as_secs_f64();
        let took = time_status(&s3, &url, hosts);
        println!(
            "   ferry status --json over {hosts} hosts in {label}: {took:.2} s (writing them took {written:.1} s)"
        );
        timings.push(took);
    }
    println!(
        "   at {baseline_hosts} hosts, shards / per-host objects = {:.3}",
        timings[1] / timings[0]
    );
    assert_eq!(missed, 0, "some pollers never saw the new pointer");
    println!(
        "scale pollers={pollers} origin_rps={origin_rps:.2} bound_rps={bound_rps:.2} p99_seen_s={p99:.2} bound_seen_s={bound_seen:.0} status_100k_s={:.2}",
        timings[2]
    );
}
