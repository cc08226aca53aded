//! `ferry config push/show/history/rollback` with the real binary, on file:// and on an
//! S3-compatible server (moto): serials grow, `show --trust` verifies, a rollback is a new
//! serial with the old files, bad files and untrusted bundles are refused with reasons, and
//! the bundle holds a secret's reference, never its value.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use ferry_testutil::Dir;
use ferry_testutil::s3::S3Server;
use support::*;

fn config(store: &str, environment: &[(&'static str, String)], arguments: &[&str]) -> Command {
    let mut command = ferry();
    command
        .arg("config")
        .arg(arguments[0])
        .args(["--store", store, "--app", "hello", "--channel", "stable"])
        .args(&arguments[1..])
        .envs(
            environment
                .iter()
                .map(|(name, value)| (*name, value.as_str())),
        );
    command
}

fn round_trip(dir: &Dir, store: &str, environment: &[(&'static str, String)]) {
    ok(ferry().arg("keygen").arg(dir.join("release")));
    ok(ferry().arg("keygen").arg(dir.join("other")));
    let key = dir.join("release.key").display().to_string();
    let public = dir.join("release.pub").display().to_string();
    let env_file = dir.write(
        "hello.env",
        "HELLO_GREETING=bonjour\nHELLO_TOKEN=@file:/etc/hello/token\n",
    );
    let toml_file = dir.write("app.toml", "[limits]\nconnections = 10\n");
    let env_file = env_file.display().to_string();
    let toml_file = toml_file.display().to_string();

    let pushed = ok(&mut config(
        store,
        environment,
        &["push", "--key", &key, &env_file, &toml_file, "--json"],
    ));
    let pushed: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(pushed["serial"], 1);
    assert_eq!(
        pushed["files"],
        serde_json::json!(["app.toml", "hello.env"])
    );

    std::fs::write(&env_file, "HELLO_GREETING=hallo\n").unwrap();
    let second = ok(&mut config(
        store,
        environment,
        &["push", "--key", &key, &env_file],
    ));
    assert!(stdout(&second).contains("serial 2"), "{}", stdout(&second));

    let shown = ok(&mut config(
        store,
        environment,
        &["show", "--trust", &public, "--json"],
    ));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["serial"], 2);
    assert_eq!(shown["files"][0]["content"], "HELLO_GREETING=hallo\n");
    assert!(shown["verified_by"].is_string(), "{shown}");
    let content = ok(&mut config(
        store,
        environment,
        &["show", "--file", "hello.env"],
    ));
    assert_eq!(stdout(&content), "HELLO_GREETING=hallo\n");

    // Signed by another key: refused when checked.
    let untrusted = fails(&mut config(
        store,
        environment,
        &[
            "show",
            "--trust",
            &dir.join("other.pub").display().to_string(),
        ],
    ));
    assert!(untrusted.contains("not trusted"), "{untrusted}");

    let rolled = ok(&mut config(
        store,
        environment,
        &["rollback", "--key", &key],
    ));
    assert!(
        stdout(&rolled).contains("files of serial 1 (new serial 3)"),
        "{}",
        stdout(&rolled)
    );
    let history = ok(&mut config(store, environment, &["history", "--json"]));
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let serials: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, [1, 2, 3]);
    assert_eq!(history[2]["current"], true);
    assert_eq!(history[2]["copied_from"], 1);
    let shown = ok(&mut config(
        store,
        environment,
        &["show", "--file", "hello.env"],
    ));
    // The reference travels, the secret does not (it is only read on the host).
    assert_eq!(
        stdout(&shown),
        "HELLO_GREETING=bonjour\nHELLO_TOKEN=@file:/etc/hello/token\n"
    );
    let text = ok(&mut config(store, environment, &["history"]));
    assert!(stdout(&text).contains("*      3"), "{}", stdout(&text));
}

#[test]
fn push_show_history_rollback_on_a_directory_store() {
    let dir = Dir::new("ferry-config-cli");
    let store = format!("file://{}", dir.join("store").display());
    std::fs::create_dir_all(dir.join("store")).unwrap();
    round_trip(&dir, &store, &[]);
}

#[test]
fn push_show_history_rollback_on_s3() {
    let server = S3Server::start();
    let dir = Dir::new("ferry-config-cli-s3");
    round_trip(&dir, &server.store_url("config-cli"), &server.environment());
}

#[test]
fn bad_files_are_refused_and_nothing_is_pushed() {
    let dir = Dir::new("ferry-config-cli-errors");
    let store = format!("file://{}", dir.join("store").display());
    std::fs::create_dir_all(dir.join("store")).unwrap();
    ok(ferry().arg("keygen").arg(dir.join("release")));
    let key = dir.join("release.key").display().to_string();
    let cases: [(&str, &[u8], &str); 4] = [
        ("broken.env", b"JUST TEXT\n", "is not KEY=VALUE"),
        ("relative.env", b"TOKEN=@file:secret\n", "must be absolute"),
        ("binary.conf", &[0xff, 0x00, 0xfe], "not UTF-8"),
        (".hidden", b"x\n", "must not start with '.'"),
    ];
    for (name, content, wanted) in cases {
        let path = dir.write(name, content).display().to_string();
        let stderr = fails(&mut config(&store, &[], &["push", "--key", &key, &path]));
        assert!(stderr.contains(wanted), "{name}: {stderr}");
    }
    let missing = fails(&mut config(
        &store,
        &[],
        &["push", "--key", &key, "/nonexistent/x.env"],
    ));
    assert!(missing.contains("/nonexistent/x.env"), "{missing}");
    assert!(
        !Path::new(&dir.join("store/apps/hello/config")).exists(),
        "a refused push wrote to the store"
    );
    let nothing = fails(&mut config(&store, &[], &["rollback", "--key", &key]));
    assert!(
        nothing.contains("nothing was ever pushed") || nothing.contains("store"),
        "{nothing}"
    );
}
