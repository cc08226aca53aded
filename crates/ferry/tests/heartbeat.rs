//! Heartbeats: agents rewrite their report every `heartbeat`, so a host whose agent died
//! shows as stale in `ferry status --json` within `--stale-after` although its last report
//! said "ok" on the current release, and `ferry watch` does not count it as updated. And
//! report shards (`report-shards`): many agents writing one shard object at once through
//! compare-and-swap lose no host, on `file://` and S3 alike.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::Dir;
use ferry_testutil::fleet::{GroupGuard, Publisher, run_bounded};

fn agent_file(dir: &Path, store: &str, trust: &Path, host: &str) -> PathBuf {
    sharded_agent_file(dir, store, trust, host, None)
}

fn sharded_agent_file(
    dir: &Path,
    store: &str,
    trust: &Path,
    host: &str,
    shards: Option<u32>,
) -> PathBuf {
    let file = ferry_agent::AgentFile {
        report_shards: shards,
        // Sharded hosts write only when their state changes, so a lost write would show.
        heartbeat: Some(if shards.is_some() { "off" } else { "1s" }.into()),
        store: Some(store.into()),
        app: Some("hello".into()),
        channel: Some("stable".into()),
        trust: vec![trust.to_path_buf()],
        host_id: Some(host.into()),
        interval: Some("200ms".into()),
        jitter: Some("50ms".into()),
        state_dir: Some(dir.join(host).join("state")),
        cache_dir: Some(dir.join(host).join("cache")),
        install: Some(ferry_agent::config::InstallFile::Unpack {
            root: dir.join(host).join("srv"),
            keep: None,
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(&path, file.to_toml().unwrap()).unwrap();
    path
}

fn status(store: &str) -> serde_json::Value {
    status_with(store, &[])
}

fn status_with(store: &str, environment: &[(&'static str, String)]) -> serde_json::Value {
    let mut command = support::ferry();
    for (name, value) in environment {
        command.env(name, value);
    }
    let output = support::ok(command.args([
        "status",
        "--json",
        "--stale-after",
        "3s",
        "--store",
        store,
        "--app",
        "hello",
    ]));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn host<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|host| host["host"] == id)
        .unwrap_or_else(|| panic!("no host {id} in {status}"))
}

#[test]
fn a_dead_host_goes_stale_and_is_not_counted_as_updated() {
    let dir = Dir::new("heartbeat");
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let (publisher, store) = Publisher::on_directory_store(ferry, dir.path(), "hello", "stable");
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "1.0.0", None));
    let spawn = |host: &str| {
        let config = agent_file(dir.path(), &store, &publisher.public_key(), host);
        let mut command = Command::new(ferry);
        command
            .args(["agent", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        GroupGuard::spawn(&mut command)
    };
    let alive = spawn("alive");
    let mut gone = spawn("gone");
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&store)["totals"]["updated"] != 2 {
        assert!(
            Instant::now() < deadline,
            "both hosts never committed: {}",
            status(&store)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(host(&status(&store), "gone")["stale"], false);

    // `gone` dies; its last report still says ok on 1.0.0.
    gone.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen = status(&store);
        if host(&seen, "gone")["stale"] == true {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the dead host never went stale: {seen}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(host(&seen, "gone")["version"], "1.0.0");
    assert_eq!(host(&seen, "gone")["state"], "ok");
    assert_eq!(
        host(&seen, "alive")["stale"],
        false,
        "the live host keeps beating: {seen}"
    );
    assert_eq!(seen["totals"]["updated"], 1);

    // `ferry watch` does not call the rollout done while a host is silent.
    let key = dir.join("work/release.key");
    let mut watch = support::ferry();
    watch
        .args(["watch", "--store", &store, "--app", "hello", "--key"])
        .arg(&key)
        .args([
            "--stale-after",
            "3s",
            "--timeout",
            "3s",
            "--interval",
            "500ms",
        ]);
    let output = run_bounded(&mut watch, Duration::from_secs(60));
    assert_eq!(
        output.status.code(),
        Some(4),
        "watch: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1/2 hosts on 1.0.0"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(alive);
}

fn many_agents_share_report_shards_without_losing_a_host(s3: bool) {
    let dir = Dir::new(if s3 { "shards-s3" } else { "shards-dir" });
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let store = ferry_testutil::s3::TestStore::new(dir.path(), s3, "shards");
    let publisher = Publisher::new(
        ferry,
        &dir.join("work"),
        &store.url,
        store.environment.clone(),
        "hello",
        "stable",
    );
    publisher.keygen();
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "1.0.0", None));
    // 12 sharded hosts over 2 shards (six writers each, all at once at start and on every
    // state change; no heartbeats, so nothing would put back a lost write), and one host of
    // before with its own report object.
    let hosts: Vec<String> = (0..12).map(|index| format!("s{index:02}")).collect();
    let spawn = |host: &str, shards: Option<u32>| {
        let config = sharded_agent_file(
            dir.path(),
            &store.url,
            &publisher.public_key(),
            host,
            shards,
        );
        let mut command = Command::new(ferry);
        command
            .args(["agent", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .envs(
                store
                    .environment
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        GroupGuard::spawn(&mut command)
    };
    let mut agents: Vec<GroupGuard> = hosts.iter().map(|host| spawn(host, Some(2))).collect();
    agents.push(spawn("unsharded", None));
    let all = hosts.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = status_with(&store.url, &store.environment);
        if seen["totals"]["updated"] == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every host reported 1.0.0: {seen}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "2.0.0", None));
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        let seen = status_with(&store.url, &store.environment);
        if seen["totals"]["updated"] == all {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "not every host reported 2.0.0: {seen}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let listed: Vec<&str> = seen["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host["host"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), all, "one entry per host: {seen}");
    for host in &hosts {
        assert!(listed.contains(&host.as_str()), "{host} is missing: {seen}");
        assert_eq!(host_entry_version(&seen, host), "2.0.0");
    }
    // The sharded hosts are in two shard objects, and have no object of their own.
    let objects = list_objects(&store, "apps/hello");
    let shards: Vec<&String> = objects
        .iter()
        .filter(|path| path.contains("/hosts-shards/2/"))
        .collect();
    assert_eq!(shards.len(), 2, "{objects:?}");
    let own: Vec<&String> = objects
        .iter()
        .filter(|path| path.contains("/hosts/"))
        .collect();
    assert_eq!(
        own.len(),
        1,
        "only the unsharded host has its own object: {objects:?}"
    );
    drop(agents);
}

fn host_entry_version(status: &serde_json::Value, id: &str) -> String {
    host(status, id)["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every object path under `prefix`, as the store lists it.
fn list_objects(store: &ferry_testutil::s3::TestStore, prefix: &str) -> Vec<String> {
    match &store.server {
        Some(server) => {
            let mut command = Command::new("aws");
            command
                .args([
                    "--endpoint-url",
                    &server.endpoint(),
                    "s3",
                    "ls",
                    "--recursive",
                ])
                .arg(format!("{}/{prefix}/", store.url));
            server.apply(&mut command);
            let output = support::ok(&mut command);
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
                .collect()
        }
        None => {
            let root = PathBuf::from(store.url.strip_prefix("file://").unwrap());
            let mut found = Vec::new();
            let mut pending = vec![root.join(prefix)];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                    if entry.file_type().unwrap().is_dir() {
                        pending.push(entry.path());
                    } else {
                        found.push(entry.path().display().to_string());
                    }
                }
            }
            found
        }
    }
}

#[test]
fn many_agents_share_report_shards_on_a_directory() {
    many_agents_share_report_shards_without_losing_a_host(false);
}

#[test]
fn many_agents_share_report_shards_on_s3() {
    many_agents_share_report_shards_without_losing_a_host(true);
}
