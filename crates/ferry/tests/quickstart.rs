//! The README's first command: `ferry quickstart` runs the whole loop (keygen, pack,
//! publish, agent under `ferry run`, swap to v2 under load, rollback) and ends with zero
//! failed requests.

use std::process::Command;

use ferry_testutil::{Dir, workspace_binary};

#[test]
fn quickstart_runs_the_whole_loop_without_a_failed_request() {
    let dir = Dir::new("quickstart");
    let work = dir.join("work");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("quickstart")
        .arg("--dir")
        .arg(&work)
        .arg("--example-binary")
        .arg(workspace_binary("hello-service"))
        .output()
        .expect("run ferry quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );

    let tally = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("requests answered:"))
        .unwrap_or_else(|| panic!("no tally line in:\n{stdout}"));
    assert!(
        tally.contains("errors: 0,"),
        "requests failed during the swaps: {tally}"
    );
    // Both versions answered while the client was counting: the swap really happened under load.
    assert!(
        tally.contains("1.0.0-1: ") && tally.contains("2.0.0-1: "),
        "{tally}"
    );
    let answered: u64 = tally
        .split("requests answered:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the count in {tally}"));
    assert!(
        answered > 1000,
        "too few requests to mean anything: {tally}"
    );

    // Everything it started is gone: the port it served on no longer accepts connections.
    assert!(!stdout.contains("left running"), "{stdout}");
    let address = stdout
        .split("curl http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no service address in:\n{stdout}"));
    let address: std::net::SocketAddr = address.parse().expect("a socket address");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "something still listens on {address}"
    );
    // It says what to type by hand at every step.
    for command in [
        "$ ferry keygen",
        "$ ferry pack",
        "$ ferry publish",
        "$ ferry run",
        "$ ferry agent",
        "$ ferry rollback",
    ] {
        assert!(
            stdout.contains(command),
            "the narration lacks `{command}`:\n{stdout}"
        );
    }
    // Its files stay in --dir; the store holds the three pointer states (v1, v2, rollback).
    let history = work.join("store/apps/hello/channels/stable/history");
    let serials = std::fs::read_dir(&history)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(
        serials,
        3,
        "expected three pointer states in {}",
        history.display()
    );
}

#[test]
fn an_installed_ferry_runs_the_quickstart_with_no_source_tree_and_no_build() {
    // A ferry somewhere else, as the .deb installs it: no hello-service beside it, no cargo
    // on PATH, no source tree to build from. It packs itself as the example service.
    let dir = Dir::new("quickstart-installed");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let ferry = ferry_testutil::fleet::stripped_copy(
        std::path::Path::new(env!("CARGO_BIN_EXE_ferry")),
        &dir.join("bin/ferry"),
    );
    let output = Command::new(&ferry)
        .arg("quickstart")
        .arg("--dir")
        .arg(dir.join("work"))
        .env("PATH", "/usr/bin:/bin")
        .env_remove("CARGO")
        .output()
        .expect("run ferry quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout.contains("building"),
        "it built something:\n{stdout}"
    );
    let tally = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("requests answered:"))
        .unwrap_or_else(|| panic!("no tally line in:\n{stdout}"));
    assert!(tally.contains("errors: 0,"), "{tally}");
    assert!(
        tally.contains("1.0.0-1: ") && tally.contains("2.0.0-1: "),
        "{tally}"
    );
}
