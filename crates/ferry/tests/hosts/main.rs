//! ferry on real servers: Debian bookworm hosts booted with systemd as PID 1
//! (systemd-nspawn), each with ferry installed from its own .deb and the agent running as
//! `ferry-agent.service`. Every scenario asserts what an operator sees: which version
//! answers, what systemd shows, what dpkg says, what the host reports.
//!
//! They run when this process is root and the host image exists (`scripts/test` builds it
//! and sets FERRY_HOST_TESTS=require); otherwise each test says why it skips.

#[path = "../fixtures/provisioning/support.rs"]
mod support;
mod world;

use std::time::Duration;

use ferry_release::HostState;
use ferry_testutil::hosts::BootedHost;
use support::{ferry, ok, stdout};
use world::{AGENT_CONFIG, PORT, ROLLOUT, TRUST, Unit, World};

/// Wait until hello answers `version` on the host.
fn wait_serving(host: &BootedHost, version: &str) {
    host.wait_until(
        &format!("hello answering {version}"),
        ROLLOUT,
        &format!("[ \"$(curl -fsS -m 5 http://127.0.0.1:{PORT}/)\" = {version} ]"),
    );
}

fn dpkg_version(host: &BootedHost, package: &str) -> String {
    host.sh(&format!("dpkg-query -W -f '${{Version}}' {package}"))
}

fn assert_dpkg_consistent(host: &BootedHost) {
    let audit = host.sh("dpkg --audit");
    assert!(
        audit.trim().is_empty(),
        "dpkg --audit on {}: {audit}",
        host.name()
    );
}

/// Scenario 1: Provisioning as in production: real cloud-init (NoCloud) runs `ferry cloud-init`'s
/// user-data at first boot; ferry's .deb comes from the store, sha256-pinned; the agent comes
/// up under systemd and installs the app. No step by hand.
#[test]
fn cloud_init_turns_a_fresh_host_into_a_ferry_host() {
    let Some(world) = World::new("hosts-cloud-init") else {
        return;
    };
    let ferry_deb = world.publish_ferry(None);
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    let user_data = stdout(&ok(ferry()
        .args([
            "cloud-init",
            "--store",
            &world.store,
            "--app",
            "hello",
            "--trust",
        ])
        .arg(world.publisher.public_key())
        .args([
            "--interval",
            "1s",
            "--health-http",
            "http://127.0.0.1:8080/health",
        ])));
    let mut config = world.config("cloud-1");
    config.cloud_init = true;
    config.files.retain(|(path, _, _)| path != TRUST);
    config.files.push((
        "/var/lib/cloud/seed/nocloud/meta-data".into(),
        b"instance-id: cloud-1\nlocal-hostname: cloud-1\n".to_vec(),
        0o644,
    ));
    config.files.push((
        "/var/lib/cloud/seed/nocloud/user-data".into(),
        user_data.into_bytes(),
        0o600,
    ));
    let host = world.boot(config);

    let status = host.sh("cloud-init status --wait --long");
    assert!(status.contains("status: done"), "cloud-init: {status}");
    assert_eq!(
        host.sh("systemctl is-active ferry-agent.service").trim(),
        "active"
    );
    assert_eq!(
        host.sh("systemctl is-enabled ferry-agent.service").trim(),
        "enabled"
    );
    let packed = ferry_deb::DebReader::open(&ferry_deb).unwrap();
    assert_eq!(
        dpkg_version(&host, "ferry"),
        packed.control().version().unwrap()
    );
    // The agent cloud-init configured takes the app on its own.
    wait_serving(&host, "1.0.0");
    let report = world.wait_committed(&host, "1.0.0");
    assert_eq!(report.host_id, world::host_id(&host));
    assert_eq!(
        host.sh("systemctl is-active hello.service").trim(),
        "active"
    );
    assert_dpkg_consistent(&host);
}

/// Scenario 2: The app as a real package: `ferry pack` with its unit under `ferry run` (Type=notify),
/// installed by the agent with dpkg; an upgrade under a request loop inside the host fails
/// no request, and systemd keeps one MainPID across the swap.
#[test]
fn a_packaged_service_upgrades_with_zero_failed_requests() {
    let Some(world) = World::new("hosts-zero-downtime") else {
        return;
    };
    let host = world.provisioned("swap-1", &world.agent_toml("method = \"none\"", ""));
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    wait_serving(&host, "1.0.0");
    world.wait_committed(&host, "1.0.0");
    let main_pid = host.unit_property("hello.service", "MainPID");
    assert_eq!(
        host.sh(&format!("cat /proc/{main_pid}/comm")).trim(),
        "ferry",
        "systemd's MainPID is ferry run"
    );

    let load = host.start_load(PORT, 3000);
    world.publish(&world.hello("2.0.0", None, Unit::Supervised, None));
    world.wait_committed(&host, "2.0.0");
    // A few more requests on the new version before the loop stops.
    host.wait_until(
        "answers from 2.0.0 in the loop",
        Duration::from_secs(30),
        "[ \"$(grep -c '^2.0.0$' /run/ferry-load.log)\" -ge 20 ]",
    );
    let (answers, failures) = host.finish_load(load);
    assert!(
        failures.is_empty(),
        "failed requests during the swap: {failures:?}"
    );
    assert!(answers.iter().any(|answer| answer == "1.0.0"));
    assert!(
        answers
            .iter()
            .all(|answer| answer == "1.0.0" || answer == "2.0.0")
    );
    assert_eq!(answers.last().map(String::as_str), Some("2.0.0"));
    assert!(answers.len() >= 40, "only {} requests", answers.len());
    assert_eq!(
        host.unit_property("hello.service", "MainPID"),
        main_pid,
        "one MainPID"
    );
    assert_eq!(host.unit_property("hello.service", "NRestarts"), "0");
    assert_eq!(dpkg_version(&host, "hello"), "2.0.0");
    assert_dpkg_consistent(&host);
    eprintln!("{} requests during the upgrade, none failed", answers.len());
}

/// Scenario 3a: `restart = systemd`: `systemctl reload-or-restart` of a plain unit (no ExecReload:
/// a restart) on real systemd; the package leaves the unit alone (`on-upgrade = "none"`).
#[test]
fn restart_systemd_restarts_a_plain_unit() {
    let Some(world) = World::new("hosts-restart-systemd") else {
        return;
    };
    let host = world.provisioned(
        "systemd-1",
        &world.agent_toml("method = \"systemd\"\nunit = \"hello.service\"", ""),
    );
    world.publish(&world.hello("1.0.0", None, Unit::Plain, Some("none")));
    world.wait_committed(&host, "1.0.0");
    let first = host.unit_property("hello.service", "MainPID");
    world.publish(&world.hello("2.0.0", None, Unit::Plain, Some("none")));
    world.wait_committed(&host, "2.0.0");
    wait_serving(&host, "2.0.0");
    let second = host.unit_property("hello.service", "MainPID");
    assert_ne!(first, second, "the agent's systemctl restarted the unit");
    assert_eq!(
        host.sh(&format!("cat /proc/{second}/comm")).trim(),
        "hello-service"
    );
    assert_eq!(
        host.sh("systemctl is-active hello.service").trim(),
        "active"
    );
}

/// Scenario 3b: `restart = signal` with the PID from systemd (`unit =`): SIGHUP to the unit's
/// MainPID, which is `ferry run`, swaps the app with the package leaving the unit alone.
#[test]
fn restart_signal_reaches_the_units_main_pid() {
    let Some(world) = World::new("hosts-restart-signal") else {
        return;
    };
    let host = world.provisioned(
        "signal-1",
        &world.agent_toml(
            "method = \"signal\"\nunit = \"hello.service\"\nsignal = \"HUP\"",
            "",
        ),
    );
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, Some("none")));
    world.wait_committed(&host, "1.0.0");
    let main_pid = host.unit_property("hello.service", "MainPID");
    let app_pid = host.sh(&format!("pgrep -P {main_pid} hello-service"));
    world.publish(&world.hello("2.0.0", None, Unit::Supervised, Some("none")));
    world.wait_committed(&host, "2.0.0");
    wait_serving(&host, "2.0.0");
    assert_eq!(host.unit_property("hello.service", "MainPID"), main_pid);
    let new_app_pid = host.wait_until(
        "the old hello-service gone",
        Duration::from_secs(60),
        &format!(
            "p=$(pgrep -P {main_pid} hello-service) && [ \"$p\" != {} ] && echo $p",
            app_pid.trim()
        ),
    );
    assert_ne!(new_app_pid.trim(), app_pid.trim());
}

/// Scenario 4: Failure: an unhealthy release is rolled back with dpkg (the previous .deb
/// reinstalled); the unit is active on the old version and the report says so.
#[test]
fn an_unhealthy_release_is_rolled_back_with_dpkg() {
    let Some(world) = World::new("hosts-rollback") else {
        return;
    };
    let host = world.provisioned("rollback-1", &world.agent_toml("method = \"none\"", ""));
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    world.wait_committed(&host, "1.0.0");
    let main_pid = host.unit_property("hello.service", "MainPID");
    world.publish(&world.hello("2.0.0", Some("unhealthy"), Unit::Supervised, None));
    let report = world.wait_report(&host, "2.0.0 rolled back", |report| {
        report.state == HostState::RolledBack
    });
    assert_eq!(report.version.as_deref(), Some("1.0.0"));
    assert!(
        report.bad.iter().any(|bad| bad.version == "2.0.0"),
        "2.0.0 is marked bad: {report:#?}"
    );
    assert_eq!(dpkg_version(&host, "hello"), "1.0.0");
    wait_serving(&host, "1.0.0");
    assert_eq!(
        host.sh("systemctl is-active hello.service").trim(),
        "active"
    );
    assert_eq!(host.unit_property("hello.service", "MainPID"), main_pid);
    assert_dpkg_consistent(&host);
    // It stays there: a few polls later nothing was retried.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(dpkg_version(&host, "hello"), "1.0.0");

    // A release whose process exits before it is ready: the swap fails, so the postinst's
    // `systemctl reload` (ExecReload=ferry reload) fails, so `dpkg -i` fails — the agent
    // sees it at install time and rolls back, while 1.0.0 never stopped answering.
    let load = host.start_load(PORT, 3000);
    world.publish(&world.hello("3.0.0", Some("crash"), Unit::Supervised, None));
    let report = world.wait_report(&host, "3.0.0 rolled back", |report| {
        report.bad.iter().any(|bad| bad.version == "3.0.0")
    });
    assert_eq!(report.state, HostState::RolledBack, "{report:#?}");
    let error = report.last_error.unwrap_or_default();
    assert!(
        error.contains("reload"),
        "the install failed on the reload: {error}"
    );
    let (answers, failures) = host.finish_load(load);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        answers.iter().all(|answer| answer == "1.0.0"),
        "{answers:?}"
    );
    assert_eq!(dpkg_version(&host, "hello"), "1.0.0");
    assert_eq!(host.unit_property("hello.service", "MainPID"), main_pid);
    assert_dpkg_consistent(&host);
}

/// Scenario 5: Power cuts: the host loses power mid-life and boots on its committed version; the
/// agent and dpkg are killed (-9) in the middle of `dpkg -i`, and after the agent's restart
/// dpkg is consistent and the new release serves.
#[test]
fn a_power_cut_and_a_kill_during_dpkg_leave_the_host_serving() {
    let Some(world) = World::new("hosts-power") else {
        return;
    };
    let mut host = world.provisioned("power-1", &world.agent_toml("method = \"none\"", ""));
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    world.wait_committed(&host, "1.0.0");

    host.host().power_off();
    host.boot_again();
    wait_serving(&host, "1.0.0");
    assert_eq!(
        host.sh("systemctl is-active ferry-agent.service").trim(),
        "active"
    );
    assert_eq!(
        host.sh("systemctl is-enabled hello.service").trim(),
        "enabled"
    );
    assert_eq!(dpkg_version(&host, "hello"), "1.0.0");

    // 2.0.0's postinst waits for a file, so the test can kill dpkg while it runs.
    let postinst = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
        i=0; while [ ! -e /run/hello-continue ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done\nfi\n#FERRY#\nexit 0\n";
    let deb = world.hello_with_postinst("2.0.0", postinst);
    world.publish(&deb);
    host.wait_until(
        "dpkg configuring hello 2.0.0",
        ROLLOUT,
        // (`hell[o]`: the pattern must not match this shell's own command line)
        "pgrep -f 'dpkg/info/hell[o].postinst' >/dev/null",
    );
    let agent = host.unit_property("ferry-agent.service", "MainPID");
    // The agent, dpkg and the maintainer script it runs: everything of that install dies.
    host.sh(&format!(
        "kill -9 {agent}; pkill -9 -x dpkg; pkill -9 -f 'dpkg/info/hell[o].postinst'; true"
    ));
    let audit = host.sh("dpkg --audit");
    assert!(audit.contains("hello"), "dpkg was interrupted: {audit:?}");
    wait_serving(&host, "1.0.0");
    host.sh("touch /run/hello-continue");
    // systemd restarts the agent; it finds its journal mid-install and recovers dpkg.
    world.wait_committed(&host, "2.0.0");
    wait_serving(&host, "2.0.0");
    assert_ne!(host.unit_property("ferry-agent.service", "MainPID"), agent);
    assert_dpkg_consistent(&host);
    assert_eq!(dpkg_version(&host, "hello"), "2.0.0");

    // And after a power cut now, 2.0.0 is what comes back.
    host.host().power_off();
    host.boot_again();
    wait_serving(&host, "2.0.0");
    assert_dpkg_consistent(&host);
}

/// Scenario 6: Self-update under systemd: the agent installs ferry's next package from the ferry
/// channel with dpkg and re-executes into it — the same MainPID, now the new binary — while
/// the app keeps answering every request.
#[test]
fn the_agent_updates_itself_under_systemd() {
    let Some(world) = World::new("hosts-self-update") else {
        return;
    };
    let host = world.provisioned(
        "self-1",
        &world.agent_toml(
            "method = \"none\"",
            "\n[self-update]\nchannel = \"stable\"\nmethod = \"dpkg\"\n",
        ),
    );
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    world.wait_committed(&host, "1.0.0");
    let agent = host.unit_property("ferry-agent.service", "MainPID");
    let old_inode = host.sh("stat -L -c %i /usr/bin/ferry");
    let load = host.start_load(PORT, 3000);
    world.publish_ferry(Some("0.1.0-2"));
    host.wait_until(
        "ferry 0.1.0-2 installed and the agent re-executed into it",
        ROLLOUT,
        &format!(
            "[ \"$(dpkg-query -W -f '${{Version}}' ferry)\" = 0.1.0-2 ] && \
             [ \"$(stat -L -c %i /proc/{agent}/exe)\" = \"$(stat -L -c %i /usr/bin/ferry)\" ]"
        ),
    );
    let state = host.sh("cat /var/lib/ferry/hello.stable.self-update.json");
    let (answers, failures) = host.finish_load(load);
    assert!(
        failures.is_empty(),
        "failed requests during the self-update: {failures:?}"
    );
    assert!(answers.iter().all(|answer| answer == "1.0.0"));
    assert_ne!(host.sh("stat -L -c %i /usr/bin/ferry"), old_inode);
    assert_eq!(host.unit_property("ferry-agent.service", "MainPID"), agent);
    assert_eq!(
        host.sh("systemctl is-active ferry-agent.service").trim(),
        "active"
    );
    assert!(state.contains("0.1.0-2"), "self-update state: {state}");
    // The re-executed agent still does its job.
    world.publish(&world.hello("2.0.0", None, Unit::Supervised, None));
    world.wait_committed(&host, "2.0.0");
    assert_dpkg_consistent(&host);
}

/// Scenario 7: A small fleet: five booted hosts roll out in two waves, followed by `ferry watch`.
#[test]
fn five_hosts_roll_out_in_waves_under_ferry_watch() {
    let Some(world) = World::new("hosts-fleet") else {
        return;
    };
    let agent_toml = world.agent_toml("method = \"none\"", "");
    let hosts: Vec<BootedHost> = (1..=5)
        .map(|n| world.provisioned(&format!("fleet-{n}"), &agent_toml))
        .collect();
    world.publish(&world.hello("1.0.0", None, Unit::Supervised, None));
    for host in &hosts {
        world.wait_committed(host, "1.0.0");
    }
    // Which wave each host is in, from its percentile (docs/rollout.md): a plan that puts
    // at least one host in each of two waves.
    let percentiles: Vec<u8> = hosts
        .iter()
        .map(|host| {
            ferry_release::host_percentile(&format!("{}/hello/stable", world::host_id(host)))
        })
        .collect();
    let mut sorted = percentiles.clone();
    sorted.sort();
    let first_wave = sorted[1] + 1; // the two lowest percentiles go first
    let waves = format!("{first_wave}%:0,100%:25s");
    let key = world.dir.join("work/release.key");
    let deb = world.hello("2.0.0", None, Unit::Supervised, None);
    ok(ferry()
        .args([
            "publish",
            "--quiet",
            "--store",
            &world.store,
            "--app",
            "hello",
            "--key",
        ])
        .arg(&key)
        // The hosts share this machine's clock.
        .args(["--waves", &waves, "--max-clock-skew", "5s"])
        .arg(&deb));
    let mut watch = ferry();
    watch
        .args(["watch", "--store", &world.store, "--app", "hello", "--key"])
        .arg(&key)
        .args(["--max-failures", "1", "--timeout", "3m", "--interval", "1s"]);
    let watcher = std::thread::spawn(move || {
        ferry_testutil::fleet::run_bounded(&mut watch, Duration::from_secs(240))
    });

    // The first wave takes it; the second waits for its delay.
    for (host, percentile) in hosts.iter().zip(&percentiles) {
        if *percentile < first_wave {
            world.wait_committed(host, "2.0.0");
        }
    }
    for (host, percentile) in hosts.iter().zip(&percentiles) {
        if *percentile >= first_wave {
            let report = world.report(host).unwrap();
            assert_eq!(
                report.version.as_deref(),
                Some("1.0.0"),
                "{} is in the second wave and must wait",
                host.name()
            );
        }
    }
    let watched = watcher.join().unwrap();
    assert!(
        watched.status.success(),
        "ferry watch: {}\n{}",
        watched.status,
        String::from_utf8_lossy(&watched.stderr)
    );
    for host in &hosts {
        let report = world.wait_committed(host, "2.0.0");
        assert_eq!(report.state, HostState::Ok);
        assert_eq!(host.get(PORT, "/").as_deref(), Some("2.0.0"));
    }
    let status = stdout(&ok(ferry().args([
        "status",
        "--store",
        &world.store,
        "--app",
        "hello",
    ])));
    assert!(status.contains("2.0.0"), "{status}");
}

/// `ferry try`: a good package installs and is healthy (exit 0); an unhealthy one fails with
/// the unit's journal; a package whose unit cannot start fails naming the unit.
#[test]
fn ferry_try_reports_what_a_fresh_host_makes_of_a_package() {
    let Some(world) = World::new("hosts-try") else {
        return;
    };
    let image = world.image.root().to_owned();
    let try_package = |deb: &std::path::Path, extra: &[&str]| {
        let mut command = ferry();
        command
            .arg("try")
            .arg(deb)
            .arg("--image")
            .arg(&image)
            .args(extra);
        ferry_testutil::fleet::run_bounded(&mut command, Duration::from_secs(180))
    };
    let ferry_deb = world.dir.join("debs/ferry.deb");
    let ferry_deb = ferry_deb.to_str().unwrap();
    let health = "http://127.0.0.1:8080/health";
    let good = world.hello("1.0.0", None, Unit::Supervised, None);
    let output = try_package(&good, &["--with", ferry_deb, "--health", health]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("hello.service: active"), "{text}");
    assert!(text.contains("installed and healthy"), "{text}");

    let sick = world.hello("2.0.0", Some("unhealthy"), Unit::Supervised, None);
    let output = try_package(
        &sick,
        &["--with", ferry_deb, "--health", health, "--timeout", "5s"],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("health    FAILED"), "{text}");
    assert!(text.contains("journal of hello.service"), "{text}");

    // Without ferry on the host the package's dependency is missing: dpkg says so.
    let output = try_package(&good, &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("install   FAILED"), "{text}");
    assert!(text.contains("depends on ferry"), "{text}");
}

/// The docs show the units exactly as these tests install them.
#[test]
fn the_documented_units_are_the_tested_ones() {
    let docs = support::packaging_dir().join("../docs");
    let run = std::fs::read_to_string(docs.join("run.md")).unwrap();
    assert!(
        run.contains(world::SUPERVISED_UNIT),
        "docs/run.md must show the unit the booted-host tests install:\n{}",
        world::SUPERVISED_UNIT
    );
    let unit =
        std::fs::read_to_string(support::packaging_dir().join("ferry-agent.service")).unwrap();
    assert!(unit.contains(&format!("--config {AGENT_CONFIG}")), "{unit}");
}
