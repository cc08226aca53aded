//! End-to-end tests of `ferry agent`: the real binary, a real store (a `file://` directory
//! and the moto S3 server), real .debs built with `dpkg-deb`, real dpkg, and hello-service as
//! the app answering HTTP on a loopback port. The tests assert what an operator cares about:
//! which version answers, whether the service process was touched, what the status says.
//!
//! Two ways of restarting the service are used: `ferry run` (the supervisor, for the main
//! acceptance flow) and the `exec` restart method with a small script that stops the old
//! process by its pidfile and starts the new one (everywhere else, so those tests exercise the
//! agent alone).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_release::{ArtifactRef, ChannelPointer, SigningKey};
use ferry_testutil::{ChildGuard, Dir, free_port};

use support::world::*;

/// publish v1 → installed and answering; publish v2 → v2; channel rollback → v1 again.
fn upgrade_and_rollback(world: &mut World) {
    world.write_config(&world.default_health());
    let v1 = build_deb(&world.dir, "1.0.0", None);
    let v2 = build_deb(&world.dir, "2.0.0", None);
    world.publish(&v1, "1.0.0");
    if world.restart == Restart::Supervisor {
        // `ferry run` holds the port before anything is installed (it retries starting the
        // missing command); the agent's first install and reload start v1.
        world.start_supervisor();
    }
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    world.publish(&v2, "2.0.0");
    assert_ok(&world.agent_once(None), "agent installing v2");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    world.rollback_to("1.0.0");
    assert_ok(&world.agent_once(None), "agent following the rollback");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let status = world.status_json();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["serial"], 3);
    assert_eq!(status["state"], "ok");
    assert_eq!(world.host_report()["version"], "1.0.0");
    // Idle: nothing changes, the service keeps its process.
    let pid = world.service_pid();
    assert_ok(&world.agent_once(None), "idle agent");
    assert_eq!(world.service_pid(), pid);
}

#[test]
fn file_store_unpack_under_ferry_run_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-file", false, Restart::Supervisor);
    upgrade_and_rollback(&mut world);
}

#[test]
fn s3_store_unpack_under_ferry_run_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-s3", true, Restart::Supervisor);
    upgrade_and_rollback(&mut world);
}

#[test]
fn file_store_unpack_with_exec_restart_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-file-exec", false, Restart::Script);
    upgrade_and_rollback(&mut world);
}

#[test]
fn health_failure_rolls_back_marks_the_release_bad_and_the_next_good_one_installs() {
    let world = World::new("agent-unhealthy", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");

    world.publish(&build_deb(&world.dir, "2.0.0", Some("unhealthy")), "2.0.0");
    let output = world.agent_once(None);
    assert_eq!(
        output.status.code(),
        Some(4),
        "a rollback exits 4: {}",
        stderr(&output)
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let status = world.status_json();
    assert_eq!(status["state"], "rolled-back", "{status}");
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["bad"][0]["version"], "2.0.0", "{status}");
    let report = world.host_report();
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert!(
        report["last-error"].as_str().unwrap().contains("2.0.0"),
        "{report}"
    );

    // The bad release is not retried while the pointer still names it.
    let pid = world.service_pid();
    assert_ok(
        &world.agent_once(None),
        "agent with the bad release still published",
    );
    assert_eq!(world.service_pid(), pid);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");

    world.publish(&build_deb(&world.dir, "3.0.0", None), "3.0.0");
    assert_ok(&world.agent_once(None), "agent installing v3");
    assert_eq!(wait_for_version(world.port, "3.0.0"), "3.0.0");
    assert_eq!(world.status_json()["state"], "ok");
}

#[test]
fn a_crashing_first_process_rolls_back_too() {
    let world = World::new("agent-crash", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    world.publish(&build_deb(&world.dir, "2.0.0", Some("crash")), "2.0.0");
    assert_eq!(world.agent_once(None).status.code(), Some(4));
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    assert_eq!(
        std::fs::read_link(world.root().join("current")).unwrap(),
        Path::new("releases/1.0.0")
    );
}

/// Writes one bad input into the store, given the serial to use.
type BadInput<'a> = Box<dyn Fn(&World, u64) + 'a>;

#[test]
fn bad_inputs_are_refused_and_the_service_is_untouched() {
    let world = World::new("agent-bad-inputs", false, Restart::Script);
    world.write_config(&world.default_health());
    let v1 = std::fs::read(build_deb(&world.dir, "1.0.0", None)).unwrap();
    let v2 = std::fs::read(build_deb(&world.dir, "2.0.0", None)).unwrap();
    world.publish_raw(&v1, None, "1.0.0", 10, |_| {});
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid().expect("service pid");
    let pointer_path = ChannelPointer::path(APP, CHANNEL);

    let other_pair = ferry_release::generate_key_pair(&world.dir.join("stranger")).unwrap();
    let stranger = SigningKey::from_file(&other_pair.secret_path, None).unwrap();

    let mut serial = 20;
    let mut cases: Vec<(&str, BadInput, &str)> = vec![
        (
            "bad signature",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
                let bytes = world.get(&ChannelPointer::path(APP, CHANNEL)).unwrap();
                let text = String::from_utf8(bytes).unwrap().replace("2.0.0", "2.0.1");
                world.put(&ChannelPointer::path(APP, CHANNEL), text.into_bytes());
            }),
            "signature",
        ),
        (
            "untrusted key",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
                let bytes = world.get(&ChannelPointer::path(APP, CHANNEL)).unwrap();
                let envelope = ferry_release::Envelope::from_bytes(&bytes, "pointer").unwrap();
                let pointer: ChannelPointer = serde_json::from_str(&envelope.payload).unwrap();
                let resigned =
                    ferry_release::sign_document(&stranger, &pointer, "stranger").unwrap();
                world.put(&ChannelPointer::path(APP, CHANNEL), resigned.to_bytes());
            }),
            "trusted",
        ),
        (
            "expired pointer",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |pointer| {
                    pointer.expires_at = Some(ferry_release::now_utc() - time::Duration::hours(1));
                });
            }),
            "expire",
        ),
        (
            "truncated download",
            Box::new(|world: &World, serial| {
                let full = ArtifactRef::new(&ferry_release::sha256_hex(&v2), v2.len() as u64);
                world.publish_raw(&v2[..v2.len() / 2], Some(full), "2.0.0", serial, |_| {});
            }),
            "bytes",
        ),
        (
            "artifact hash mismatch",
            Box::new(|world: &World, serial| {
                let mut tampered = v2.clone();
                let middle = tampered.len() / 2;
                tampered[middle] ^= 0xff;
                let signed = ArtifactRef::new(&ferry_release::sha256_hex(&v2), v2.len() as u64);
                world.publish_raw(&tampered, Some(signed), "2.0.0", serial, |_| {});
            }),
            "sha256 mismatch",
        ),
        (
            "oversized document",
            Box::new(|world: &World, _| {
                world.put(&ChannelPointer::path(APP, CHANNEL), vec![b' '; 2 << 20])
            }),
            "limit",
        ),
    ];
    for (name, entries) in [
        (
            "dot-dot path",
            vec![("./usr/", b'5', ""), ("./../../escaped", b'0', "")],
        ),
        (
            "absolute path",
            vec![("/tmp/ferry-agent-test-escaped", b'0', "")],
        ),
        (
            "escaping symlink",
            vec![
                ("./usr/", b'5', ""),
                ("./usr/link", b'2', "../../../../etc"),
            ],
        ),
    ] {
        let deb = hostile_deb(&world.dir, name.split(' ').next().unwrap(), &entries);
        cases.push((
            name,
            Box::new(move |world: &World, serial| {
                drop(world.publish_raw(&deb, None, "9.9.9", serial, |_| {}))
            }),
            match name {
                "dot-dot path" => "`..`",
                "absolute path" => "absolute",
                _ => "pointing out",
            },
        ));
    }
    for (name, make, expected) in cases {
        serial += 1;
        make(&world, serial);
        let output = world.agent_once(None);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{name}: expected a refusal (exit 3), got {}:\n{}",
            output.status,
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{name}: the log should say {expected:?}:\n{}",
            stderr(&output)
        );
        assert_eq!(
            world.service_pid(),
            Some(pid),
            "{name}: the service was restarted"
        );
        assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0", "{name}");
        assert_eq!(
            std::fs::read_link(world.root().join("current")).unwrap(),
            Path::new("releases/1.0.0"),
            "{name}"
        );
        assert_eq!(world.status_json()["state"], "refused", "{name}");
    }
    // A validly signed pointer with a serial below the floor (a stale replica, a CDN edge, a
    // replay) is ignored, not refused: nothing installed, and no fault of the host.
    drop(world.publish_raw(&v2, None, "2.0.0", 5, |_| {}));
    let output = world.agent_once(None);
    assert_eq!(
        output.status.code(),
        Some(0),
        "lower serial:\n{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("ignored a stale channel pointer: serial 5 is lower than serial"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        world.service_pid(),
        Some(pid),
        "lower serial: the service was restarted"
    );
    assert_eq!(
        wait_for_version(world.port, "1.0.0"),
        "1.0.0",
        "lower serial"
    );
    assert_eq!(
        world.status_json()["state"],
        "refused",
        "a stale pointer leaves the state as the last refusal left it"
    );
    assert!(!world.dir.join("escaped").exists() && !world.root().join("escaped").exists());
    assert!(!Path::new("/tmp/ferry-agent-test-escaped").exists());
    let _ = pointer_path;

    // After all that, a good release still installs.
    serial += 1;
    world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
    assert_ok(
        &world.agent_once(None),
        "agent installing v2 after the refusals",
    );
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

#[test]
fn store_down_backs_off_without_touching_the_service_and_recovers() {
    let world = World::new("agent-store-down", true, Restart::Script);
    let gate = Gate::start(world.s3.as_ref().unwrap().port());
    // The agent reaches the store only through the gate.
    let gated = format!("http://127.0.0.1:{}", gate.port);
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replacen("app = ", &format!("s3-endpoint = \"{gated}\"\napp = "), 1),
    )
    .unwrap();
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");

    let metrics_port = free_port();
    let mut command = world.agent();
    command
        .env_remove("FERRY_S3_ENDPOINT")
        .env("AWS_ENDPOINT_URL", &gated)
        .arg("--metrics")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.dir.join("agent.log")).unwrap());
    let mut agent = ChildGuard::spawn(&mut command);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid();

    gate.open.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut errors = 0;
    while Instant::now() < deadline && errors < 3 {
        std::thread::sleep(Duration::from_millis(100));
        errors = metrics_value(metrics_port, "ferry_agent_errors_total").unwrap_or(errors);
    }
    let log = std::fs::read_to_string(world.dir.join("agent.log")).unwrap();
    assert!(
        errors >= 3,
        "the agent should fail polls while the store is down (errors: {errors}):\n{log}"
    );
    assert!(
        agent.child().try_wait().unwrap().is_none(),
        "the agent must keep running while the store is down"
    );
    assert_eq!(
        world.service_pid(),
        pid,
        "the service must not be restarted while the store is down"
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    assert!(log.contains("backing off"), "{log}");

    // A new release while the store is unreachable to the agent; then the store comes back.
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    gate.open.store(true, Ordering::Relaxed);
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    // The commit follows the health check, a moment after the service first answers v2.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline
        && metrics_value(metrics_port, "ferry_agent_installs_total").unwrap_or(0) < 2
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metrics_value(metrics_port, "ferry_agent_installs_total").unwrap_or(0) >= 2);
    assert_eq!(
        metrics_value(metrics_port, "ferry_agent_current_serial"),
        Some(2)
    );
}

#[test]
fn dpkg_method_in_a_sandboxed_root_installs_upgrades_and_rolls_back() {
    let mut world = World::new("agent-dpkg", false, Restart::Script);
    let root = world.dir.join("dpkg-root");
    for dir in [
        "var/lib/dpkg/updates",
        "var/lib/dpkg/info",
        "var/lib/dpkg/triggers",
        "var/log",
        "usr/bin",
        "usr/share",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    world.install = format!(
        "method = \"dpkg\"\ndpkg-args = [\"--root={root}\", \"--log={root}/var/log/dpkg.log\", \"--force-script-chrootless\", \"--force-depends\", \"--force-not-root\"]\nlock-timeout = \"30s\"",
        root = root.display()
    );
    world.restart = Restart::Script;
    // Health: the installed package's mode file must not say "unhealthy".
    let health = format!(
        "command = [\"sh\", \"-c\", \"test -f {root}/usr/bin/hello-service && ! grep -q unhealthy {root}/usr/share/hello-service/mode 2>/dev/null\"]\ntimeout = \"10s\"\nretry = \"100ms\"",
        root = root.display()
    );
    world.write_config(&health);
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replace(
            &config[config.find("[restart]").unwrap()..config.find("[health]").unwrap()],
            "[restart]\nmethod = \"none\"\n",
        ),
    )
    .unwrap();
    let installed_version = || {
        let output = Command::new("dpkg-query")
            .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
            .args(["-W", "-f", "${Version} ${Status}", "hello-service"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "dpkg install of v1");
    assert_eq!(installed_version(), "1.0.0 install ok installed");
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    // Another package manager holds the dpkg lock for a moment: the agent waits for it.
    let lock = root.join("var/lib/dpkg/lock");
    let mut holder = ChildGuard::spawn(
        Command::new("python3")
            .args(["-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(2)"])
            .arg(&lock)
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.child().stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let upgrade = world.agent_once(None);
    assert_ok(&upgrade, "dpkg upgrade to v2");
    assert!(
        stderr(&upgrade).contains("dpkg is locked by another process; waiting"),
        "{}",
        stderr(&upgrade)
    );
    let _ = holder.child().wait();
    assert_eq!(installed_version(), "2.0.0 install ok installed");
    world.publish(&build_deb(&world.dir, "3.0.0", Some("unhealthy")), "3.0.0");
    assert_eq!(
        world.agent_once(None).status.code(),
        Some(4),
        "an unhealthy v3 is rolled back"
    );
    assert_eq!(installed_version(), "2.0.0 install ok installed");
    let postinst = std::fs::read_to_string(root.join("var/log/hello-postinst.log")).unwrap();
    let runs: Vec<&str> = postinst.lines().collect();
    assert_eq!(
        runs,
        [
            "postinst configure 1.0.0",
            "postinst configure 2.0.0",
            "postinst configure 3.0.0",
            "postinst configure 2.0.0"
        ],
        "{postinst}"
    );
    assert_eq!(world.status_json()["state"], "rolled-back");
}

/// kill -9 the agent at `point` during an update from v1 to v2 (v2 `unhealthy` for the
/// rollback points), start it again, and check it ends consistent: the journal idle, the
/// service answering the version the journal says is installed.
fn crash_and_resume(point: &str) {
    crash_and_resume_with(point, Restart::Script);
}

fn crash_and_resume_with(point: &str, restart: Restart) {
    let mut world = World::new(&format!("agent-crash-{point}"), false, restart);
    world.write_config(&world.default_health());
    if restart == Restart::Supervisor {
        world.start_supervisor();
    }
    let rollback = point.starts_with("roll");
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    world.publish(
        &build_deb(&world.dir, "2.0.0", rollback.then_some("unhealthy")),
        "2.0.0",
    );

    let crashed = world.agent_once(Some(point));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(9),
        "the agent should die by SIGKILL at {point} (if it ran to the end, the ferry binary was \
         built without the `fault-injection` feature, e.g. by a concurrent plain `cargo build`; \
         test builds enable it through ferry's dev-dependency): {}",
        stderr(&crashed)
    );
    let journal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.dir.join("state/hello.stable.state.json")).unwrap(),
    )
    .unwrap();
    eprintln!(
        "journal after the crash at {point}: step {}",
        journal["step"]["name"]
    );

    let resumed = world.agent_once(None);
    assert!(
        resumed.status.code().is_some(),
        "the resumed agent exits normally: {}",
        stderr(&resumed)
    );
    // One more cycle settles any follow-up (e.g. re-reading the pointer after a resume).
    let _ = world.agent_once(None);
    let status = world.status_json();
    assert_eq!(status["step"], "idle", "{status}");
    let expected = if rollback { "1.0.0" } else { "2.0.0" };
    assert_eq!(status["version"], expected, "{status}");
    assert_eq!(
        wait_for_version(world.port, expected),
        expected,
        "after a crash at {point}"
    );
    assert_eq!(
        std::fs::read_link(world.root().join("current")).unwrap(),
        Path::new("releases").join(expected)
    );
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            crash_and_resume($point);
        }
    )*};
}

crash_tests! {
    kill_9_while_downloading => "downloading",
    kill_9_after_download => "downloaded",
    kill_9_while_installing => "installing",
    kill_9_after_install => "installed",
    kill_9_while_restarting => "restarting",
    kill_9_after_restart => "restarted",
    kill_9_while_checking => "checking",
    kill_9_after_commit => "committed",
    kill_9_while_rolling_back => "rolling-back",
    kill_9_after_rollback => "rolled-back",
}

#[test]
fn kill_9_after_the_swap_under_ferry_run() {
    crash_and_resume_with("restarted", Restart::Supervisor);
}

#[test]
fn kill_9_while_rolling_back_under_ferry_run() {
    crash_and_resume_with("rolling-back", Restart::Supervisor);
}

#[test]
fn every_crash_point_has_a_test() {
    let source = include_str!("agent.rs");
    for point in ferry_agent::fault::POINTS {
        assert!(
            source.contains(&format!("=> \"{point}\"")),
            "crash point {point} has no kill -9 test"
        );
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = Dir::new("agent-config");
    let config = dir.write(
        "agent.toml",
        "store = \"file:///nowhere\"\napp = \"hello\"\nintreval = \"5s\"\n",
    );
    let output = run_bounded(
        ferry()
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--once"),
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("intreval"), "{}", stderr(&output));
}

#[test]
fn a_store_that_ignores_if_none_match_still_costs_no_update_and_still_updates() {
    let world = World::new("agent-no-conditional-get", true, Restart::Script);
    let proxy =
        ferry_testutil::s3::ConditionStrippingProxy::start(world.s3.as_ref().unwrap().port());
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replacen(
            "app = ",
            &format!("s3-endpoint = \"{}\"\napp = ", proxy.endpoint()),
            1,
        ),
    )
    .unwrap();
    let agent_once = || {
        let mut command = world.agent();
        command
            .env_remove("FERRY_S3_ENDPOINT")
            .env("RUST_LOG", "debug")
            .arg("--once");
        run_bounded(&mut command, Duration::from_secs(60))
    };
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&agent_once(), "agent installing v1 through the proxy");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid();
    let idle = agent_once();
    assert_ok(&idle, "idle agent through the proxy");
    assert!(
        stderr(&idle).contains("pointer not modified"),
        "{}",
        stderr(&idle)
    );
    assert!(
        !stderr(&idle).contains("pointer verified"),
        "{}",
        stderr(&idle)
    );
    assert_eq!(world.service_pid(), pid);
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    assert_ok(&agent_once(), "agent installing v2 through the proxy");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

#[test]
fn a_second_agent_for_the_same_app_is_refused_while_one_runs() {
    let world = World::new("agent-lock", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    let mut command = world.agent();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.dir.join("agent.log")).unwrap());
    let _daemon = ChildGuard::spawn(&mut command);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let second = world.agent_once(None);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    // Reading the status does not need the lock (the commit may land a moment after the
    // service answers, so wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && world.status_json()["version"] != "1.0.0" {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(world.status_json()["version"], "1.0.0");
}

#[test]
fn environment_overrides_fill_in_and_beat_the_file() {
    let world = World::new("agent-env", false, Restart::Script);
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    let config: String = config
        .lines()
        .filter(|line| !line.starts_with("store =") && !line.starts_with("host-id ="))
        .map(|line| {
            if line.starts_with("app =") {
                "app = \"not-this-app\"\n".to_string()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(world.config_path(), config).unwrap();
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    let mut command = world.agent();
    command
        .arg("--once")
        .env("FERRY_STORE", &world.store_url)
        .env("FERRY_APP", APP)
        .env("FERRY_HOST_ID", "from-the-environment");
    assert_ok(
        &run_bounded(&mut command, Duration::from_secs(60)),
        "agent configured by the environment",
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let report = world
        .get(&format!("apps/{APP}/hosts/from-the-environment.json"))
        .expect("the report under the host id from the environment");
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["version"], "1.0.0");
}
