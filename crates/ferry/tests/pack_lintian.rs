//! lintian on a packed service (binary + systemd unit + conffile + postinst): no
//! error-level tags with xz or gzip. Debian 12's lintian wrongly flags every zstd .deb as
//! malformed, so zstd packs are checked with dpkg (see pack_dpkg.rs) instead.

#[path = "fixtures/pack/support.rs"]
mod support;

use std::process::Command;

use ferry_testutil::Dir;
use support::*;

#[test]
fn lintian_finds_no_errors_with_xz_and_gzip() {
    let dir = Dir::new("pack-lintian");
    let config = write_service(
        &dir,
        "ferry-lintian-sample",
        "1.0.0-1",
        "greeting = hello\n",
    );
    for compression in ["xz", "gzip"] {
        let deb = pack(
            &config,
            &dir.join(format!("out-{compression}")),
            &["--compression", compression],
        );
        let output = Command::new("lintian")
            .args(["--no-tag-display-limit", "--display-level", ">=warning"])
            .arg(&deb)
            .output()
            .expect("run lintian (apt-get install lintian)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with("E:"))
            .collect();
        assert!(
            errors.is_empty(),
            "{compression}: lintian errors:\n{}\n(all output:\n{stdout}\n{stderr})",
            errors.join("\n")
        );
        // Exit status 0: no tag at lintian's default fail-on level (error); 2 would mean
        // lintian could not process the package at all.
        assert_eq!(
            output.status.code(),
            Some(0),
            "{compression}: lintian failed:\n{stdout}\n{stderr}"
        );
        if !stdout.trim().is_empty() {
            eprintln!("{compression}: lintian warnings (not errors):\n{stdout}");
        }
    }
}

/// `depends = ["$auto"]` asks dpkg-shlibdeps for the libraries the ELF files need, as Debian's
/// own packages get them: lintian's `undeclared-elf-prerequisites` goes away.
#[test]
fn auto_depends_declares_the_shared_libraries_the_binary_needs() {
    let dir = Dir::new("pack-auto-depends");
    std::fs::copy(
        ferry_testutil::workspace_binary("hello-service"),
        dir.join("hello-service"),
    )
    .expect("copy hello-service (cargo build --workspace --bins)");
    let lint = |depends: &str| {
        let manifest = format!(
            r#"[package]
name = "ferry-auto-depends"
version = "1.0.0-1"
maintainer = "Ferry Tests <tests@example.com>"
description = """greeting service for ferry's tests
It is a real Rust binary, linked against libc and libgcc."""
section = "net"
strip = true
depends = {depends}

[[files]]
source = "hello-service"
dest = "/usr/bin/ferry-auto-depends"
mode = "0755"
"#
        );
        let config = dir.write("ferry.toml", manifest);
        let deb = pack(&config, &dir.join("out"), &["--compression", "xz"]);
        let inspect = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["inspect", "--json"])
            .arg(&deb)
            .output()
            .expect("run ferry inspect");
        let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let lintian = Command::new("lintian")
            .args(["--no-tag-display-limit", "--display-level", ">=info"])
            .arg(&deb)
            .output()
            .expect("run lintian (apt-get install lintian)");
        std::fs::remove_file(&deb).unwrap();
        (
            inspect["control"]["Depends"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            String::from_utf8_lossy(&lintian.stdout).into_owned(),
        )
    };
    let (declared, tags) = lint(r#"["$auto", "adduser"]"#);
    assert!(declared.contains("libc6 (>= 2."), "{declared}");
    assert!(declared.contains("libgcc-s1"), "{declared}");
    assert!(
        declared.ends_with("adduser"),
        "the other entries stay: {declared}"
    );
    assert!(!tags.contains("undeclared-elf-prerequisites"), "{tags}");
    // Without it, the same package lacks them (what lintian flags, where it knows the tag).
    let (declared, _) = lint("[]");
    assert!(declared.is_empty(), "{declared}");
}
