//! Heartbeats: agents rewrite their report every `heartbeat`, so a host whose agent died
//! shows as stale in `ferry status --json` within `--stale-after` although its last report
//! said "ok" on the current release, and `ferry watch` does not count it as updated.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::Dir;
use ferry_testutil::fleet::{GroupGuard, Publisher, run_bounded};

fn agent_file(dir: &Path, store: &str, trust: &Path, host: &str) -> PathBuf {
    let file = ferry_agent::AgentFile {
        store: Some(store.into()),
        app: Some("hello".into()),
        channel: Some("stable".into()),
        trust: vec![trust.to_path_buf()],
        host_id: Some(host.into()),
        interval: Some("200ms".into()),
        jitter: Some("50ms".into()),
        heartbeat: Some("1s".into()),
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
    let output = support::ok(support::ferry().args([
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
