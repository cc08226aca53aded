//! The agent updates itself through its own channel (app `ferry`, `[self-update]` with the
//! `unpack` method, so no root is needed): it installs ferry A and re-executes into it, then
//! B, keeping its PID (its state is in the journal on disk) while the hello-service it manages
//! under `ferry run` keeps answering every request; a broken C (its `ferry` exits 1) fails the
//! self-test, is rolled back to B and marked bad, and the agent keeps running B — and still
//! does its job: the next app release is installed.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_testutil::fleet::{
    AgentFile, GroupGuard, Publisher, http_get, stripped_copy, toml_string, wait_for,
};
use ferry_testutil::{Dir, free_port, workspace_binary};
use support::*;

const LIMIT: Duration = Duration::from_secs(90);

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

fn self_update_journal(state: &Path) -> serde_json::Value {
    std::fs::read_to_string(state.join("hello.stable.self-update.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn the_agent_updates_itself_and_rolls_back_a_broken_binary() {
    let dir = Dir::new("ferry-self-update");
    let ferry_binary = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let (publisher, store) =
        Publisher::on_directory_store(ferry_binary, dir.path(), "hello", "stable");
    let key = dir.join("work/release.key");
    let publish_ferry = |deb: &Path| {
        ok(ferry()
            .args([
                "publish", "--quiet", "--store", &store, "--app", "ferry", "--key",
            ])
            .arg(&key)
            .arg(deb));
    };
    let hello = stripped_copy(
        &workspace_binary("hello-service"),
        &dir.join("hello-service"),
    );
    publisher.publish(&publisher.pack(&hello, "1.0.0", None));

    // The host: hello under ferry run, installed once by a provisioning agent run.
    let host = dir.join("host");
    let port = free_port();
    std::fs::create_dir_all(&host).unwrap();
    let agent_text = |restart: &str, health: &str| {
        AgentFile {
            store: &store,
            app: "hello",
            channel: "stable",
            trust: &publisher.public_key(),
            interval: "500ms",
            jitter: "100ms",
            host_id: "self-update-host",
            state_dir: &host.join("state"),
            root: &host.join("srv"),
            restart,
            health,
        }
        .text()
    };
    let provision = host.join("provision.toml");
    std::fs::write(&provision, agent_text("method = \"none\"", "")).unwrap();
    ok(Command::new(ferry_binary)
        .args(["agent", "--once", "--config"])
        .arg(&provision)
        .env_remove("RUST_LOG"));
    let mut run = Command::new(ferry_binary);
    run.arg("run")
        .arg("--listen")
        .arg(format!("http=127.0.0.1:{port}"))
        .arg("--control")
        .arg(host.join("control.sock"))
        .arg("--")
        .arg(host.join("srv/current/usr/bin/hello-service"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.join("run.log")).unwrap());
    let _supervisor = GroupGuard::spawn(&mut run);
    wait_for(LIMIT, Duration::from_millis(100), || {
        http_get(port, "/").filter(|(status, _)| *status == 200)
    })
    .expect("hello answers");

    // Every request while the agent replaces itself must be answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http_get(port, "/") {
                    Some((200, _)) => answered.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The long-running agent, started from the test's ferry binary, with [self-update].
    let ferry_root = host.join("ferry-root");
    let mut text = agent_text(
        &format!(
            "method = \"supervisor\"\ncontrol = {}",
            toml_string(&host.join("control.sock").display().to_string())
        ),
        &format!("http = \"http://127.0.0.1:{port}/health\"\ntimeout = \"5s\"\nretry = \"100ms\""),
    );
    text.push_str(&format!(
        "\n[self-update]\nchannel = \"stable\"\nmethod = \"unpack\"\nroot = {}\n",
        toml_string(&ferry_root.display().to_string())
    ));
    let config = host.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let version_a = format!("{}-1", env!("CARGO_PKG_VERSION"));
    publish_ferry(&pack_ferry_as(
        &dir.join("build-a"),
        "zstd",
        Some(&version_a),
        None,
    ));
    let mut agent_command = Command::new(ferry_binary);
    agent_command
        .args(["agent", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.join("agent.log")).unwrap());
    let mut agent = GroupGuard::spawn(&mut agent_command);
    let pid = agent.id();
    let log = || std::fs::read_to_string(host.join("agent.log")).unwrap_or_default();
    let runs = |version: &str| {
        let wanted = ferry_root
            .join("releases")
            .join(version)
            .join("usr/bin/ferry");
        move || (exe_of(pid) == wanted).then_some(())
    };
    wait_for(LIMIT, Duration::from_millis(100), runs(&version_a)).unwrap_or_else(|| {
        panic!(
            "the agent did not re-exec into A ({})\n{}",
            exe_of(pid).display(),
            log()
        )
    });

    // A → B.
    let version_b = format!("{}-2", env!("CARGO_PKG_VERSION"));
    publish_ferry(&pack_ferry_as(
        &dir.join("build-b"),
        "zstd",
        Some(&version_b),
        None,
    ));
    wait_for(LIMIT, Duration::from_millis(100), runs(&version_b)).unwrap_or_else(|| {
        panic!(
            "the agent did not re-exec into B ({})\n{}",
            exe_of(pid).display(),
            log()
        )
    });
    assert!(agent.try_wait().is_none(), "the agent exited:\n{}", log());
    // The new process commits the update when it starts.
    let journal = wait_for(LIMIT, Duration::from_millis(100), || {
        let journal = self_update_journal(&host.join("state"));
        (journal["current"]["version"] == version_b.as_str()).then_some(journal)
    })
    .unwrap_or_else(|| panic!("B did not commit its self-update\n{}", log()));
    assert_eq!(
        journal["current"]["version"],
        version_b.as_str(),
        "{journal}"
    );
    assert_eq!(
        journal["previous"]["version"],
        version_a.as_str(),
        "{journal}"
    );

    // A broken C: rolled back, marked bad, B keeps running.
    let broken = dir.write("broken-ferry", "#!/bin/sh\necho broken >&2\nexit 1\n");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let version_c = format!("{}-3", env!("CARGO_PKG_VERSION"));
    publish_ferry(&pack_ferry_as(
        &dir.join("build-c"),
        "zstd",
        Some(&version_c),
        Some(&broken),
    ));
    let journal = wait_for(LIMIT, Duration::from_millis(100), || {
        let journal = self_update_journal(&host.join("state"));
        (journal["bad"].as_array().is_some_and(|bad| !bad.is_empty())).then_some(journal)
    })
    .unwrap_or_else(|| panic!("the broken agent release was not marked bad\n{}", log()));
    assert!(
        journal["last-error"]
            .as_str()
            .unwrap_or("")
            .contains(&version_c),
        "{journal}"
    );
    assert_eq!(journal["current"]["version"], version_b.as_str());
    assert_eq!(
        std::fs::canonicalize(ferry_root.join("current")).unwrap(),
        std::fs::canonicalize(ferry_root.join("releases").join(&version_b)).unwrap()
    );
    assert!(agent.try_wait().is_none(), "the agent exited:\n{}", log());
    assert_eq!(
        exe_of(pid),
        ferry_root
            .join("releases")
            .join(&version_b)
            .join("usr/bin/ferry")
    );

    // The updated agent still does its job.
    publisher.publish(&publisher.pack(&hello, "2.0.0", None));
    wait_for(LIMIT, Duration::from_millis(100), || {
        http_get(port, "/").filter(|(_, body)| body.trim() == "2.0.0")
    })
    .unwrap_or_else(|| panic!("the updated agent did not install hello 2.0.0\n{}", log()));

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed while the agent updated itself"
    );
}
