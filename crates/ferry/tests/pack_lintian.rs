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
