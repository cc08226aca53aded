//! A packed service through a real, sandboxed dpkg (`dpkg --root=DIR
//! --force-script-chrootless`): install runs the postinst, an upgrade keeps a locally
//! edited conffile (`--force-confold`), remove keeps conffiles, purge removes everything;
//! and the host's own dpkg database and systemd directories are untouched.

#[path = "fixtures/pack/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use ferry_testutil::Dir;
use support::*;

const PACKAGE: &str = "ferry-sandbox-sample";

fn sandbox_dpkg(root: &Path) -> Command {
    let mut command = Command::new("dpkg");
    command
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--force-confold",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn sandbox_status(root: &Path) -> String {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Status} ${Version}", PACKAGE])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn host_untouched() {
    let query = Command::new("dpkg-query")
        .args(["-W", PACKAGE])
        .output()
        .unwrap();
    assert!(!query.status.success(), "the host's dpkg knows {PACKAGE}");
    for path in [
        format!("/usr/bin/{PACKAGE}"),
        format!("/etc/{PACKAGE}"),
        format!("/usr/lib/systemd/system/{PACKAGE}.service"),
        format!("/etc/systemd/system/multi-user.target.wants/{PACKAGE}.service"),
        format!("/var/lib/systemd/deb-systemd-helper-enabled/{PACKAGE}.service.dsh-also"),
        "/var/lib/ferry-test".to_string(),
    ] {
        assert!(!Path::new(&path).exists(), "{path} appeared on the host");
    }
}

#[test]
fn install_upgrade_keep_edited_conffile_remove_purge_in_a_sandbox() {
    host_untouched();
    let dir = Dir::new("pack-sandbox");
    let root = dir.join("root");
    for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }

    let v1_dir = Dir::new("pack-sandbox-v1");
    let v1 = pack(
        &write_service(&v1_dir, PACKAGE, "1.0.0-1", "greeting = hello\n"),
        &dir.join("out"),
        &["--compression", "xz"],
    );
    let v2_dir = Dir::new("pack-sandbox-v2");
    let v2 = pack(
        &write_service(
            &v2_dir,
            PACKAGE,
            "1.0.0-2",
            "greeting = hello, upgraded default\n",
        ),
        &dir.join("out"),
        &[],
    );

    // Install.
    run_ok(sandbox_dpkg(&root).arg("-i").arg(&v1));
    assert_eq!(sandbox_status(&root), "install ok installed 1.0.0-1");
    let conffile = root.join(format!("etc/{PACKAGE}/hello.conf"));
    assert_eq!(
        std::fs::read_to_string(&conffile).unwrap(),
        "greeting = hello\n"
    );
    assert!(root.join(format!("usr/bin/{PACKAGE}")).is_file());
    assert!(
        root.join(format!("usr/lib/systemd/system/{PACKAGE}.service"))
            .is_file()
    );
    let log = std::fs::read_to_string(root.join("var/lib/ferry-test/postinst.log")).unwrap();
    assert_eq!(
        log, "configured \n",
        "postinst ran once, as a fresh install"
    );
    host_untouched();

    // The admin edits the conffile; the upgrade ships a new default but keeps the edit.
    std::fs::write(&conffile, "greeting = edited locally\n").unwrap();
    run_ok(sandbox_dpkg(&root).arg("-i").arg(&v2));
    assert_eq!(sandbox_status(&root), "install ok installed 1.0.0-2");
    assert_eq!(
        std::fs::read_to_string(&conffile).unwrap(),
        "greeting = edited locally\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join(format!("usr/share/{PACKAGE}/version"))).unwrap(),
        "1.0.0-2\n"
    );
    let log = std::fs::read_to_string(root.join("var/lib/ferry-test/postinst.log")).unwrap();
    assert_eq!(
        log, "configured \nconfigured 1.0.0-1\n",
        "postinst ran for the upgrade from 1.0.0-1"
    );
    host_untouched();

    // Remove keeps the conffile, purge deletes it.
    run_ok(sandbox_dpkg(&root).arg("-r").arg(PACKAGE));
    assert_eq!(sandbox_status(&root), "deinstall ok config-files 1.0.0-2");
    assert!(!root.join(format!("usr/bin/{PACKAGE}")).exists());
    assert!(conffile.exists());
    run_ok(sandbox_dpkg(&root).arg("-P").arg(PACKAGE));
    assert!(!conffile.exists());
    assert!(!root.join(format!("etc/{PACKAGE}")).exists());
    assert!(
        !root
            .join(format!("usr/lib/systemd/system/{PACKAGE}.service"))
            .exists()
    );
    assert!(!sandbox_status(&root).contains("installed"));
    let dpkg_log = std::fs::read_to_string(root.join("dpkg.log")).unwrap();
    assert!(
        dpkg_log.contains(&format!("purge {PACKAGE}:amd64 1.0.0-2")),
        "{dpkg_log}"
    );
    host_untouched();
}
