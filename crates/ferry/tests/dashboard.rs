//! `ferry dashboard` in a real headless Chromium (Debian's `chromium`, installed by
//! scripts/test): two real agents report into a `file://` store (one on 2.0.0-1, one still on
//! 1.0.0-1 because it is in a later wave), the dashboard serves the page, Chromium runs its
//! JavaScript, and the rendered DOM must show both hosts with their versions. A screenshot is
//! saved as a test artifact under `target/test-artifacts/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_testutil::fleet::{AgentFile, Publisher, http_get, run_bounded};
use ferry_testutil::rollout::Ferry;
use ferry_testutil::{ChildGuard, Dir};

const APP: &str = "hello";
const CHANNEL: &str = "stable";

fn host_in_wave(rollout: &ferry_release::Rollout, wave: usize) -> String {
    (0..100_000)
        .map(|index| format!("host-{index:03}"))
        .find(|host| {
            let seed = ferry_release::rollout_seed(host, APP, CHANNEL);
            rollout.wave_of(ferry_release::host_percentile(&seed)) == Some(wave)
        })
        .expect("a host in the wave")
}

fn agent_once(ferry: &Ferry, dir: &Dir, store: &str, host: &str) {
    let host_dir = dir.join(host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let trust = dir.join("release/release.pub");
    let file = AgentFile {
        store,
        app: APP,
        channel: CHANNEL,
        trust: &trust,
        interval: "1s",
        jitter: "0s",
        host_id: host,
        state_dir: &host_dir.join("state"),
        root: &host_dir.join("srv"),
        restart: "method = \"none\"",
        health: "",
    };
    let config = host_dir.join("agent.toml");
    std::fs::write(&config, file.text()).unwrap();
    ferry.ok(&[
        "agent".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--once".as_ref(),
    ]);
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Headless Chromium with a fresh profile, nothing talking to the network but the page.
fn chromium(profile: &Path, arguments: &[String]) -> std::process::Output {
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .stdin(Stdio::null());
    run_bounded(&mut command, Duration::from_secs(90))
}

#[test]
fn dashboard_shows_hosts_and_versions_in_headless_chromium() {
    assert!(
        Command::new("chromium")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success()),
        "this test needs Debian's chromium (scripts/test installs it: apt-get install chromium)"
    );
    let dir = Dir::new("dashboard");
    let store = format!("file://{}", dir.join("store").display());
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let ferry = Ferry::new(&binary, vec![]);
    let publisher = Publisher::new(&binary, &dir.join("release"), &store, vec![], APP, CHANNEL);
    publisher.keygen();
    let payload = dir.write("payload", "#!/bin/sh\necho hello\n");
    let one = publisher.pack(&payload, "1.0.0-1", None);
    let two = publisher.pack(&payload, "2.0.0-1", None);
    let key = dir.join("release/release.key").display().to_string();
    let publish = |package: &Path, waves: &str| {
        ferry.ok(&[
            "publish",
            "--store",
            &store,
            "--app",
            APP,
            "--key",
            &key,
            "--waves",
            waves,
            &package.display().to_string(),
        ]);
    };
    let waves = "50%:0,100%:1h";
    let rollout = ferry_release::Rollout::parse(waves).unwrap();
    let early = host_in_wave(&rollout, 0);
    let late = host_in_wave(&rollout, 1);
    publish(&one, "100%:0");
    agent_once(&ferry, &dir, &store, &early);
    agent_once(&ferry, &dir, &store, &late);
    publish(&two, waves);
    agent_once(&ferry, &dir, &store, &early);
    agent_once(&ferry, &dir, &store, &late);

    let mut server = ChildGuard::spawn(
        ferry
            .command(&[
                "dashboard",
                "--store",
                &store,
                "--listen",
                "127.0.0.1:0",
                "--refresh",
                "1s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = server.child().stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the dashboard's address");
    let address = line
        .trim()
        .strip_prefix("dashboard on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();

    // The JSON endpoint the page reads.
    let (code, body) = http_get(port, "/api/status").expect("the dashboard answers");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["apps"][0]["app"], APP);
    assert_eq!(json["apps"][0]["totals"]["hosts"], 2);
    let (code, _) = http_get(port, "/nothing-here").unwrap();
    assert_eq!(code, 404);

    // The page, rendered by Chromium after its script ran.
    let url = format!("http://{address}/");
    let output = chromium(
        &dir.join("profile-dom"),
        &[
            "--virtual-time-budget=10000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains(r#"data-loaded="yes""#),
        "the page's script did not load the status; chromium stderr: {}\nDOM: {dom}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        format!(r#"data-host="{early}""#),
        format!(r#"data-host="{late}""#),
        "hello/stable: 2.0.0-1 (serial 2)".to_string(),
        "2.0.0-1 (current)".to_string(),
        "1.0.0-1".to_string(),
        "2 hosts: 1 updated, 0 failed, 1 pending".to_string(),
    ] {
        assert!(
            dom.contains(&expected),
            "{expected:?} missing in the DOM:\n{dom}"
        );
    }
    // Each host's row shows its own version.
    for (host, version) in [(&early, "2.0.0-1"), (&late, "1.0.0-1")] {
        let start = dom
            .find(&format!(r#"data-host="{host}""#))
            .expect("host row");
        let row = &dom[start
            ..dom[start..]
                .find("</tr>")
                .map_or(dom.len(), |end| start + end)];
        assert!(
            row.contains(&format!("<td>{version}</td>")),
            "{host} should show {version}: {row}"
        );
    }

    let screenshot = artifacts_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = chromium(
        &dir.join("profile-screenshot"),
        &[
            "--virtual-time-budget=10000".into(),
            "--hide-scrollbars".into(),
            "--window-size=1280,800".into(),
            format!("--screenshot={}", screenshot.display()),
            url,
        ],
    );
    let image = std::fs::read(&screenshot).unwrap_or_else(|error| {
        panic!(
            "no screenshot at {} ({error}); chromium said: {}",
            screenshot.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        image.starts_with(b"\x89PNG") && image.len() > 10_000,
        "the screenshot is not a real PNG ({} bytes)",
        image.len()
    );
    eprintln!("screenshot: {}", screenshot.display());
}

/// 1,000 hosts, as a rollout in its second wave leaves them: most on the new release (taken
/// over the last minutes), some still on the old one, some that failed it, some silent. The
/// page must draw every host in the grid, a bar per wave, the timeline of hosts taking the
/// release with the failures marked, the release history with who published what, and a
/// host table that lists the hosts needing a look first instead of all 1,000.
#[test]
fn dashboard_draws_a_thousand_hosts_readably() {
    let dir = Dir::new("dashboard-1000");
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = format!("file://{}", store_dir.display());
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let ferry = Ferry::new(&binary, vec![]);
    let publisher = Publisher::new(&binary, &dir.join("release"), &store, vec![], APP, CHANNEL);
    publisher.keygen();
    let payload = dir.write("payload", "#!/bin/sh\necho hello\n");
    let key = dir.join("release/release.key").display().to_string();
    let mut published = ferry_release::now_utc();
    for (version, waves) in [("1.0.0-1", "100%:0"), ("2.0.0-1", "20%:0,100%:10m")] {
        published = ferry_release::now_utc();
        let package = publisher.pack(&payload, version, None);
        ferry.ok(&[
            "publish",
            "--store",
            &store,
            "--app",
            APP,
            "--key",
            &key,
            "--waves",
            waves,
            &package.display().to_string(),
        ]);
    }
    // The hosts took (or failed) 2.0.0-1 over the 4 s after it was published.
    std::thread::sleep(Duration::from_secs(5));
    let now = ferry_release::now_utc();
    let at =
        |seconds_ago: i64| ferry_release::format_time(now - time::Duration::seconds(seconds_ago));
    let after_publish = |index: usize| {
        ferry_release::format_time(published + time::Duration::seconds(1 + (index % 4) as i64))
    };
    let hosts_dir = store_dir.join("apps/hello/hosts");
    std::fs::create_dir_all(&hosts_dir).unwrap();
    let (mut updated, mut failed, mut silent) = (0, 0, 0);
    for index in 0..1000 {
        let host = format!("host-{index:04}");
        let mut report = ferry_release::HostReport {
            schema: ferry_release::HOST_REPORT_SCHEMA,
            app: APP.into(),
            channel: CHANNEL.into(),
            host_id: host.clone(),
            version: Some("1.0.0-1".into()),
            serial: Some(1),
            highest_serial: 2,
            state: ferry_release::HostState::Ok,
            step: "idle".into(),
            updated_at: Some(at(5)),
            last_change_at: Some(at(600)),
            agent_version: "0.1.0".into(),
            heartbeat_s: Some(60),
            ..Default::default()
        };
        match index % 20 {
            0 => {
                // Failed the new release and went back.
                failed += 1;
                report.state = ferry_release::HostState::RolledBack;
                report.last_error = Some("health check failed: GET /health answered 500".into());
                report.last_change_at = Some(after_publish(index));
                report.bad.push(ferry_release::BadRelease {
                    version: "2.0.0-1".into(),
                    sha256: "00".into(),
                    serial: 2,
                    reason: "health".into(),
                    at: at(30),
                });
            }
            1 => {
                // Silent for two hours: its agent died.
                silent += 1;
                report.updated_at = Some(at(7200));
            }
            2 => {
                // Held on 1.0.0-1 by an operator (`ferry agent hold`).
                report.held = Some("held by ops@box since 2026-12-02T04:00:00Z: disk check".into());
            }
            3..=5 => {} // still on 1.0.0-1, its wave not yet open or not polled yet
            _ => {
                updated += 1;
                report.version = Some("2.0.0-1".into());
                report.serial = Some(2);
                report.last_change_at = Some(after_publish(index));
            }
        }
        std::fs::write(
            hosts_dir.join(format!("{host}.json")),
            serde_json::to_vec(&report).unwrap(),
        )
        .unwrap();
    }

    let mut server = ChildGuard::spawn(
        ferry
            .command(&["dashboard", "--store", &store, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = server.child().stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("dashboard on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    let url = format!("http://{address}/");
    let output = chromium(
        &dir.join("profile-dom"),
        &[
            "--virtual-time-budget=10000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains(r#"data-loaded="yes""#),
        "the page did not load:\n{dom}"
    );
    for expected in [
        r#"data-cells="1000""#.to_string(),
        format!(r#"data-updated="{updated}""#),
        format!(r#"data-failed="{failed}""#),
        format!(r#"data-stale="{silent}""#),
        format!(r#"data-points="{updated}""#),
        format!(r#"data-failures="{failed}""#),
        r#"data-wave="1""#.to_string(),
        r#"data-wave="2""#.to_string(),
        "showing 200 of 1000 hosts: failed, stale and pending first".to_string(),
        "published by ".to_string(),
        ", 50 held".to_string(),
        "HELD: held by ops@box since 2026-12-02T04:00:00Z: disk check".to_string(),
    ] {
        assert!(dom.contains(&expected), "{expected:?} missing in the DOM");
    }
    // The release history names both releases and who published them.
    let releases = &dom[dom.find(r#"class="releases""#).expect("a releases table")..];
    let releases = &releases[..releases.find("</table>").unwrap()];
    assert!(
        releases.contains("2.0.0-1") && releases.contains("1.0.0-1"),
        "{releases}"
    );
    assert!(releases.contains('@'), "no publisher in {releases}");
    // The host table has 200 rows, the failed hosts first.
    let hosts = &dom[dom.find(r#"class="hosts""#).expect("a host table")..];
    let hosts = &hosts[..hosts.find("</table>").unwrap()];
    assert_eq!(hosts.matches("data-host=").count(), 200);
    let first = hosts.find("data-host=").unwrap();
    assert!(
        hosts[first..].starts_with(r#"data-host="host-0000""#),
        "a failed host should come first: {}",
        &hosts[first..first + 80]
    );

    let screenshot = artifacts_dir().join("dashboard-1000.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &dir.join("profile-screenshot"),
        &[
            "--virtual-time-budget=10000".into(),
            "--hide-scrollbars".into(),
            "--window-size=1400,1100".into(),
            format!("--screenshot={}", screenshot.display()),
            url,
        ],
    );
    let image = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        image.starts_with(b"\x89PNG") && image.len() > 20_000,
        "{} bytes",
        image.len()
    );
    eprintln!("screenshot: {}", screenshot.display());
}
