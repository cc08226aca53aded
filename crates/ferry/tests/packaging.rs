//! ferry packs itself: `packaging/ferry.toml` turns the real ferry binary into a .deb that
//! lintian accepts (no error tags) and that a sandboxed dpkg installs — `/usr/bin/ferry`
//! runs, `/etc/ferry/agent.toml` is a conffile an upgrade keeps when edited, the agent's
//! unit is shipped but not enabled or started — without touching the host.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::process::Command;

use ferry_testutil::Dir;
use support::*;

#[test]
fn the_manifest_version_follows_the_crate_version() {
    let manifest = std::fs::read_to_string(packaging_dir().join("ferry.toml")).unwrap();
    let expected = format!("version = \"{}-1\"", env!("CARGO_PKG_VERSION"));
    assert!(
        manifest.lines().any(|line| line.trim() == expected),
        "packaging/ferry.toml should say {expected} (the workspace version)"
    );
}

#[test]
fn ferry_packs_itself_lintian_clean_and_installs_in_a_sandbox() {
    let dir = Dir::new("ferry-packaging");
    let deb = pack_ferry(dir.path(), "xz");
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ferry_"),
        "{}",
        deb.display()
    );

    let lintian = run_lintian(&deb);
    let errors: Vec<&str> = lintian
        .lines()
        .filter(|line| line.starts_with("E:"))
        .collect();
    assert!(
        errors.is_empty(),
        "lintian errors:\n{}\n(all: {lintian})",
        errors.join("\n")
    );

    let inspect = ok(ferry().arg("inspect").arg("--json").arg(&deb));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        inspect["conffiles"],
        serde_json::json!(["/etc/ferry/agent.toml"])
    );
    let paths: Vec<&str> = inspect["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|file| file["path"].as_str())
        .collect();
    for wanted in [
        "/usr/bin/ferry",
        "/usr/lib/systemd/system/ferry-agent.service",
        "/usr/share/bash-completion/completions/ferry",
        "/usr/share/zsh/vendor-completions/_ferry",
        "/usr/share/fish/vendor_completions.d/ferry.fish",
        "/usr/share/man/man1/ferry.1.gz",
        "/usr/share/man/man1/ferry-deploy.1.gz",
    ] {
        assert!(paths.contains(&wanted), "{wanted} missing from {paths:?}");
    }

    let host_had_config = std::path::Path::new("/etc/ferry/agent.toml").exists();
    let root = dir.join("root");
    ok(sandbox_dpkg(&root).arg("--install").arg(&deb));
    assert!(
        sandbox_status(&root, "ferry").starts_with("install ok installed"),
        "{}",
        sandbox_status(&root, "ferry")
    );
    let version = ok(Command::new(root.join("usr/bin/ferry")).arg("--version"));
    assert_eq!(
        stdout(&version).trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
    // The unit is shipped, but neither enabled nor started: the config names no store yet.
    assert!(
        root.join("usr/lib/systemd/system/ferry-agent.service")
            .is_file()
    );
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/ferry-agent.service")
            .exists(),
        "the package enabled the agent before anyone configured it"
    );
    // The shipped config is a template the agent refuses with a clear message.
    let template = fails(
        ferry()
            .args(["agent", "status", "--config"])
            .arg(root.join("etc/ferry/agent.toml"))
            .env("FERRY_HOST_ID", "sandbox"),
    );
    assert!(template.contains("`store` is missing"), "{template}");

    // An admin's edit survives an upgrade (conffile + --force-confold).
    let edited = "store = \"file:///srv/ferry\"\n# edited by the admin\n";
    std::fs::write(root.join("etc/ferry/agent.toml"), edited).unwrap();
    ok(sandbox_dpkg(&root).arg("--install").arg(&deb));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ferry/agent.toml")).unwrap(),
        edited
    );

    assert!(
        !host_knows("ferry"),
        "the host's dpkg now knows the ferry package"
    );
    assert_eq!(
        std::path::Path::new("/etc/ferry/agent.toml").exists(),
        host_had_config,
        "the sandboxed install touched the host's /etc/ferry"
    );
    assert!(
        !std::path::Path::new("/etc/systemd/system/multi-user.target.wants/ferry-agent.service")
            .exists()
    );
}

fn run_lintian(deb: &std::path::Path) -> String {
    let output = ok(Command::new("lintian")
        .args(["--no-tag-display-limit", "--display-level", ">=warning"])
        .arg(deb));
    let text = stdout(&output);
    if !text.trim().is_empty() {
        eprintln!("lintian warnings (not errors):\n{text}");
    }
    text
}
