//! Staged rollouts through the real binary on a `file://` store: `ferry publish --waves`
//! (validation, the signed pointer), `ferry pause` / `ferry resume` (new serials, same release
//! and time base, checked by `ferry verify`), a real `ferry agent --once` that installs nothing
//! from a paused channel or before its wave, and `ferry status` (table and `--json`) showing
//! what the agents reported.

use std::path::{Path, PathBuf};

use ferry_testutil::Dir;
use ferry_testutil::fleet::{AgentFile, Publisher};
use ferry_testutil::rollout::Ferry;

const APP: &str = "hello";
const CHANNEL: &str = "stable";

struct Fixture {
    dir: Dir,
    store: String,
    ferry: Ferry,
    publisher: Publisher,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = Dir::new("rollout");
        let store = format!("file://{}", dir.join("store").display());
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
        let publisher = Publisher::new(&binary, &dir.join("release"), &store, vec![], APP, CHANNEL);
        publisher.keygen();
        Fixture {
            ferry: Ferry::new(&binary, vec![]),
            dir,
            store,
            publisher,
        }
    }

    fn key(&self) -> String {
        self.dir.join("release/release.key").display().to_string()
    }

    /// A package whose payload is a small script (no service is run in these tests).
    fn pack(&self, version: &str) -> PathBuf {
        let payload = self.dir.write("payload", "#!/bin/sh\necho hello\n");
        self.publisher.pack(&payload, version, None)
    }

    fn publish(&self, package: &Path, extra: &[&str]) -> String {
        let mut arguments = vec![
            "publish".to_string(),
            "--store".into(),
            self.store.clone(),
            "--app".into(),
            APP.into(),
            "--key".into(),
            self.key(),
        ];
        arguments.extend(extra.iter().map(|text| text.to_string()));
        arguments.push(package.display().to_string());
        self.ferry.ok(&arguments)
    }

    fn channel_command(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut arguments = vec![
            command.to_string(),
            "--store".into(),
            self.store.clone(),
            "--app".into(),
            APP.into(),
        ];
        arguments.extend(extra.iter().map(|text| text.to_string()));
        arguments
    }

    fn pointer(&self) -> ferry_release::ChannelPointer {
        let store = ferry_store::Store::open(&self.store, &Default::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(ferry_store::read_pointer(&store, APP, CHANNEL))
            .unwrap()
            .expect("a pointer")
            .pointer
    }

    fn verify(&self) {
        let trust = self.dir.join("release/release.pub").display().to_string();
        let state = self.dir.join("verify-state.json").display().to_string();
        self.ferry
            .ok(&self.channel_command("verify", &["--trust", &trust, "--state", &state]));
    }

    /// One `ferry agent --once` as host `host`; returns its exit code.
    fn agent_once(&self, host: &str) -> i32 {
        self.agent_once_with_health(host, "")
    }

    /// Same, with this `[health]` table body.
    fn agent_once_with_health(&self, host: &str, health: &str) -> i32 {
        let host_dir = self.dir.join(host);
        std::fs::create_dir_all(&host_dir).unwrap();
        let trust = self.dir.join("release/release.pub");
        let file = AgentFile {
            store: &self.store,
            app: APP,
            channel: CHANNEL,
            trust: &trust,
            interval: "1s",
            jitter: "0s",
            host_id: host,
            state_dir: &host_dir.join("state"),
            root: &host_dir.join("srv"),
            restart: "method = \"none\"",
            health,
        };
        let config = host_dir.join("agent.toml");
        std::fs::write(&config, file.text()).unwrap();
        let output = self.ferry.output(&[
            "agent".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--once".as_ref(),
        ]);
        output.status.code().unwrap_or(-1)
    }

    fn installed(&self, host: &str) -> Option<String> {
        std::fs::read_to_string(
            self.dir
                .join(host)
                .join("srv/current/usr/share/hello-service/version"),
        )
        .ok()
        .map(|text| text.trim().to_string())
    }

    fn status_json(&self) -> serde_json::Value {
        let text = self.ferry.ok(&self.channel_command("status", &["--json"]));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
    }
}

/// A host id (`host-NNN`) in wave `wave` (0-based) of `rollout`.
fn host_in_wave(rollout: &ferry_release::Rollout, wave: usize, skip: usize) -> String {
    (0..100_000)
        .map(|index| format!("host-{index:03}"))
        .filter(|host| {
            let seed = ferry_release::rollout_seed(host, APP, CHANNEL);
            rollout.wave_of(ferry_release::host_percentile(&seed)) == Some(wave)
        })
        .nth(skip)
        .expect("a host in the wave")
}

#[test]
fn bad_waves_are_refused_before_anything_is_written() {
    let fixture = Fixture::new();
    let package = fixture.pack("1.0.0-1");
    for (waves, expected) in [
        ("50%:0,40%:1h,100%:2h", "must increase"),
        ("50%:0,90%:1h", "must reach 100%"),
        ("50%:1h,100%:10m", "must not decrease"),
        ("50%:0,100%:2m", "out of order"),
        ("half:0,100%:1h", "1 to 100"),
    ] {
        let mut arguments = vec![
            "publish".to_string(),
            "--store".into(),
            fixture.store.clone(),
            "--key".into(),
            fixture.key(),
            "--waves".into(),
            waves.into(),
        ];
        arguments.push(package.display().to_string());
        let stderr = fixture.ferry.fails(&arguments, 1);
        assert!(stderr.contains(expected), "{waves}: {stderr}");
        assert!(
            stderr.contains(waves),
            "{waves}: the error names the plan: {stderr}"
        );
    }
    assert!(
        !fixture.dir.join("store/apps").exists(),
        "a refused publish wrote something"
    );
    // --waves and --now contradict each other.
    let stderr = fixture.ferry.fails(
        &[
            "publish",
            "--store",
            &fixture.store,
            "--key",
            &fixture.key(),
            "--waves",
            "10%:0,100%:1h",
            "--now",
            &package.display().to_string(),
        ],
        2,
    );
    assert!(stderr.contains("--now"), "{stderr}");
}

#[test]
fn waves_pause_and_resume_are_signed_pointer_states_that_agents_obey() {
    let fixture = Fixture::new();
    let one = fixture.pack("1.0.0-1");
    let two = fixture.pack("2.0.0-1");

    // v1 at once; two hosts install it.
    let said = fixture.publish(&one, &["--now"]);
    assert!(said.contains("waves 100%:0"), "{said}");
    let waves = "10%:0,100%:1h";
    let rollout = ferry_release::Rollout::parse(waves).unwrap();
    let early = host_in_wave(&rollout, 0, 0);
    let late = host_in_wave(&rollout, 1, 0);
    for host in [&early, &late] {
        assert_eq!(fixture.agent_once(host), 0);
        assert_eq!(fixture.installed(host).as_deref(), Some("1.0.0-1"));
    }

    // v2 in waves: only the first wave's host takes it now.
    let said = fixture.publish(&two, &["--waves", waves]);
    assert!(said.contains("serial 2") && said.contains(waves), "{said}");
    let published = fixture.pointer();
    assert_eq!(published.rollout, rollout);
    assert!(!published.paused);
    fixture.verify();
    assert_eq!(fixture.agent_once(&late), 0);
    assert_eq!(
        fixture.installed(&late).as_deref(),
        Some("1.0.0-1"),
        "wave 2 opens in an hour"
    );

    // Paused: a new serial, same release and time base; nobody installs.
    let said = fixture
        .ferry
        .ok(&fixture.channel_command("pause", &["--key", &fixture.key()]));
    assert!(
        said.contains("paused") && said.contains("serial 3"),
        "{said}"
    );
    let paused = fixture.pointer();
    assert_eq!(paused.serial, 3);
    assert!(paused.paused);
    assert_eq!(paused.release, published.release);
    assert_eq!(
        paused.published_at, published.published_at,
        "pause keeps the time base"
    );
    assert_eq!(paused.rollout, published.rollout);
    fixture.verify();
    assert_eq!(fixture.agent_once(&early), 0);
    assert_eq!(
        fixture.installed(&early).as_deref(),
        Some("1.0.0-1"),
        "a paused channel installs nothing new, even in an open wave"
    );
    let said = fixture
        .ferry
        .ok(&fixture.channel_command("pause", &["--key", &fixture.key()]));
    assert!(said.contains("already paused"), "{said}");
    let listing = fixture.ferry.ok(&fixture.channel_command("releases", &[]));
    let paused_line = listing
        .lines()
        .find(|line| line.starts_with("*      3"))
        .unwrap_or_else(|| panic!("no current serial 3 in:\n{listing}"));
    assert!(
        paused_line.contains("2.0.0-1") && paused_line.contains("10%:0,100%:1h PAUSED"),
        "{listing}"
    );
    assert_eq!(fixture.pointer().serial, 3, "a second pause writes nothing");

    // The status shows the pause, both hosts on v1, and which wave each is in.
    let status = fixture.status_json();
    assert_eq!(status["schema"], 1);
    assert_eq!(status["pointer"]["paused"], true);
    assert_eq!(status["pointer"]["version"], "2.0.0-1");
    assert_eq!(status["pointer"]["waves"], waves);
    assert_eq!(status["totals"]["hosts"], 2);
    assert_eq!(status["totals"]["updated"], 0);
    let row = |host: &str| {
        status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("{host} missing in {status}"))
    };
    assert_eq!(row(&early)["wave"], 1);
    assert_eq!(row(&late)["wave"], 2);
    assert_eq!(row(&late)["version"], "1.0.0-1");
    assert_eq!(status["waves"][0]["open"], false, "paused: no wave is open");

    // Resumed: the first wave's host updates, the second still waits (same time base).
    let said = fixture
        .ferry
        .ok(&fixture.channel_command("resume", &["--key", &fixture.key()]));
    assert!(
        said.contains("resumed") && said.contains("serial 4"),
        "{said}"
    );
    let resumed = fixture.pointer();
    assert!(!resumed.paused);
    assert_eq!(resumed.published_at, published.published_at);
    fixture.verify();
    assert_eq!(fixture.agent_once(&early), 0);
    assert_eq!(fixture.installed(&early).as_deref(), Some("2.0.0-1"));
    assert_eq!(fixture.agent_once(&late), 0);
    assert_eq!(fixture.installed(&late).as_deref(), Some("1.0.0-1"));

    // The table: headers, both hosts, the per-version summary with the current one marked.
    let table = fixture.ferry.ok(&fixture.channel_command("status", &[]));
    for expected in [
        "channel hello/stable: 2.0.0-1 (serial 4), waves 10%:0,100%:1h",
        "hosts: 2 — 1 on 2.0.0-1, 0 failed it, 1 pending, 0 stale",
        "VERSION",
        "2.0.0-1 *",
        "WAVE  PERCENT",
        "HOST",
        "LAST SEEN",
        early.as_str(),
        late.as_str(),
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} missing in:\n{table}"
        );
    }
    eprintln!("ferry status:\n{table}");

    // --restart-waves counts the waves again from now.
    let said = fixture
        .ferry
        .ok(&fixture.channel_command("resume", &["--key", &fixture.key(), "--restart-waves"]));
    assert!(said.contains("serial 5"), "{said}");
    assert!(fixture.pointer().published_at >= published.published_at);
    fixture.verify();
}

#[test]
fn status_of_an_unpublished_channel_and_bad_arguments() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.dir.join("store")).unwrap();
    let status = fixture.status_json();
    assert!(status["pointer"].is_null());
    assert_eq!(status["totals"]["hosts"], 0);
    let stderr = fixture.ferry.fails(
        &fixture.channel_command("pause", &["--key", &fixture.key()]),
        1,
    );
    assert!(stderr.contains("never been published"), "{stderr}");
    let stderr = fixture.ferry.fails(
        &[
            "status",
            "--store",
            &format!("file://{}", fixture.dir.join("nowhere").display()),
            "--app",
            APP,
        ],
        1,
    );
    assert!(stderr.contains("nowhere"), "{stderr}");
    let stderr = fixture.ferry.fails(
        &fixture.channel_command(
            "watch",
            &["--key", &fixture.key(), "--max-failures", "lots"],
        ),
        1,
    );
    assert!(stderr.contains("invalid failure threshold"), "{stderr}");
}

#[test]
fn watch_rolls_back_a_failing_release_and_reports_timeouts() {
    let fixture = Fixture::new();
    let one = fixture.pack("1.0.0-1");
    let two = fixture.pack("2.0.0-1");
    fixture.publish(&one, &["--now"]);
    let waves = "50%:0,100%:1h";
    let rollout = ferry_release::Rollout::parse(waves).unwrap();
    let early = host_in_wave(&rollout, 0, 0);
    let late = host_in_wave(&rollout, 1, 0);
    for host in [&early, &late] {
        assert_eq!(fixture.agent_once(host), 0);
    }
    fixture.publish(&two, &["--waves", waves]);

    // Nothing failed yet and the second wave is an hour away: watch gives up after its
    // timeout with exit 4.
    let watch = |extra: &[&str]| {
        let mut arguments = vec!["--key", &fixture.key() as &str, "--interval", "200ms"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        arguments.extend(extra.iter().map(|text| text.to_string()));
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        fixture
            .ferry
            .output(&fixture.channel_command("watch", &arguments))
    };
    let output = watch(&["--timeout", "1s"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("timed out"));

    // The first wave's host fails its health check on 2.0.0-1 (the check reads the
    // installed version) and rolls back on its own.
    let current = fixture
        .dir
        .join(&early)
        .join("srv/current/usr/share/hello-service/version");
    let health = format!(
        "command = [\"sh\", \"-c\", \"! grep -q 2.0.0-1 {}\"]\ntimeout = \"1s\"",
        current.display()
    );
    assert_eq!(
        fixture.agent_once_with_health(&early, &health),
        4,
        "rolled back"
    );
    assert_eq!(fixture.installed(&early).as_deref(), Some("1.0.0-1"));

    // One failure of two hosts is above 0 hosts: watch rolls the channel back (exit 3).
    let output = watch(&["--max-failures", "0", "--rollback", "--timeout", "30s"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{said} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("HALTED: 1 of 2 hosts failed 2.0.0-1"),
        "{said}"
    );
    assert!(said.contains(&early), "{said}");
    assert!(
        said.contains("rolled back hello/stable from 2.0.0-1 to 1.0.0-1 (serial 3)"),
        "{said}"
    );
    let pointer = fixture.pointer();
    assert_eq!(pointer.release.version, "1.0.0-1");
    assert!(!pointer.paused);
    fixture.verify();

    // Watching 2.0.0-1 now: the channel names another release (exit 5); watching the
    // current one: every host runs it (exit 0).
    let output = watch(&["--release", "2.0.0-1"]);
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let output = watch(&[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("rolled out 1.0.0-1"));
}
