//! `ferry pack` checked by Debian's own tools: `dpkg-deb --info` and `--contents` accept
//! every compression ferry writes and list exactly the files and modes `ferry inspect`
//! lists; two packs with the same SOURCE_DATE_EPOCH are byte-identical.

#[path = "fixtures/pack/support.rs"]
mod support;

use std::process::Command;

use ferry_testutil::Dir;
use support::*;

#[test]
fn dpkg_deb_reads_every_compression_like_ferry_inspect() {
    let dir = Dir::new("pack-dpkg");
    let config = write_service(&dir, "ferry-sample", "1.0.0-1", "greeting = hello\n");
    for (compression, member_suffix) in [
        ("zstd", ".zst"),
        ("xz", ".xz"),
        ("gzip", ".gz"),
        ("none", ""),
    ] {
        let out = dir.join(format!("out-{compression}"));
        let deb = pack(&config, &out, &["--compression", compression]);
        assert_eq!(deb.file_name().unwrap(), "ferry-sample_1.0.0-1_amd64.deb");

        let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains(" Package: ferry-sample"), "{info}");
        assert!(info.contains("new Debian package, version 2.0"), "{info}");

        let json = inspect_json(&deb);
        let ours = inspect_listing(&json);
        let theirs = dpkg_listing(&deb);
        assert_eq!(
            ours, theirs,
            "{compression}: ferry inspect and dpkg-deb -c disagree"
        );
        for expected in [
            ("-rwxr-xr-x", "usr/bin/ferry-sample"),
            ("-rw-r--r--", "etc/ferry-sample/hello.conf"),
            ("-rw-r--r--", "usr/lib/systemd/system/ferry-sample.service"),
            ("-rw-r--r--", "usr/share/doc/ferry-sample/copyright"),
            (
                "-rw-r--r--",
                "usr/share/doc/ferry-sample/changelog.Debian.gz",
            ),
            ("drwxr-xr-x", "usr/lib/systemd/system/"),
            ("drwxr-xr-x", ""),
        ] {
            assert!(
                theirs
                    .iter()
                    .any(
                        |(mode, owner, _, path)| (mode.as_str(), path.as_str()) == expected
                            && owner == "root/root"
                    ),
                "{compression}: {expected:?} missing from {theirs:#?}"
            );
        }
        let members: Vec<&str> = json["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            members,
            [
                "debian-binary",
                &format!("control.tar{member_suffix}"),
                &format!("data.tar{member_suffix}")
            ]
        );
        for field in [
            "Package",
            "Version",
            "Architecture",
            "Installed-Size",
            "Depends",
            "Maintainer",
        ] {
            assert_eq!(
                json["control"][field].as_str().unwrap_or(""),
                dpkg_field(&deb, field),
                "{field}"
            );
        }
        assert_eq!(
            dpkg_field(&deb, "Architecture"),
            "amd64",
            "detected from the ELF binary"
        );
        assert_eq!(
            json["conffiles"],
            serde_json::json!(["/etc/ferry-sample/hello.conf"])
        );
        let postinst = json["control_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "postinst")
            .unwrap();
        assert_eq!(postinst["mode"], "0755");
        let text = postinst["text"].as_str().unwrap();
        assert!(
            text.contains("configured $2")
                && text.contains("DPKG_ROOT")
                && text.contains("'ferry-sample.service'"),
            "{text}"
        );

        // The md5sums dpkg would check match the real contents.
        let extracted = dir.join(format!("extract-{compression}"));
        run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted));
        let control_dir = dir.join(format!("control-{compression}"));
        run_ok(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(&deb)
                .arg(&control_dir),
        );
        let check = run_ok(
            Command::new("md5sum")
                .arg("-c")
                .arg(control_dir.join("md5sums"))
                .current_dir(&extracted),
        );
        assert!(String::from_utf8_lossy(&check.stdout).contains("usr/bin/ferry-sample: OK"));
    }
}

#[test]
fn installed_size_matches_dpkg_gencontrol_rules() {
    let dir = Dir::new("pack-size");
    let config = write_service(&dir, "ferry-sample", "1.0.0-1", "x\n");
    let deb = pack(&config, &dir.join("out"), &[]);
    let extracted = dir.join("tree");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted));
    // dpkg-gencontrol: regular files and symlinks by size rounded up to KiB, 1 KiB for
    // every other object, the root directory included. `du` style walk done here.
    fn walk(path: &std::path::Path) -> u64 {
        let metadata = std::fs::symlink_metadata(path).unwrap();
        if metadata.is_dir() {
            1 + std::fs::read_dir(path)
                .unwrap()
                .map(|entry| walk(&entry.unwrap().path()))
                .sum::<u64>()
        } else {
            metadata.len().div_ceil(1024)
        }
    }
    assert_eq!(
        dpkg_field(&deb, "Installed-Size"),
        walk(&extracted).to_string()
    );
}

#[test]
fn two_packs_with_the_same_source_date_epoch_are_byte_identical() {
    let dir = Dir::new("pack-repro");
    let config = write_service(&dir, "ferry-sample", "1.0.0-1", "x\n");
    for compression in ["zstd", "xz", "gzip", "none"] {
        let first = std::fs::read(pack(
            &config,
            &dir.join(format!("a-{compression}")),
            &["--compression", compression],
        ))
        .unwrap();
        // Touch the sources: mtimes must not leak into the package.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.join("hello.conf"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let second = std::fs::read(pack(
            &config,
            &dir.join(format!("b-{compression}")),
            &["--compression", compression],
        ))
        .unwrap();
        assert!(first == second, "{compression}: two packs differ");
        // And the timestamp does matter, so the comparison above can fail.
        let other_out = dir.join(format!("c-{compression}"));
        let output = run_ok(
            ferry()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["pack", "--compression", compression, "--config"])
                .arg(&config)
                .arg("--out")
                .arg(&other_out),
        );
        let third = std::fs::read(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
        assert!(
            first != third,
            "{compression}: SOURCE_DATE_EPOCH is ignored"
        );
    }
}

#[test]
fn flags_override_the_manifest() {
    let dir = Dir::new("pack-flags");
    let config = write_service(&dir, "ferry-sample", "1.0.0-1", "x\n");
    let deb = pack(
        &config,
        &dir.join("out"),
        &[
            "--version",
            "2:1.2.3-4",
            "--arch",
            "arm64",
            "--compression",
            "xz",
            "--level",
            "1",
        ],
    );
    assert_eq!(deb.file_name().unwrap(), "ferry-sample_1.2.3-4_arm64.deb");
    assert_eq!(dpkg_field(&deb, "Version"), "2:1.2.3-4");
    assert_eq!(dpkg_field(&deb, "Architecture"), "arm64");
    let json = inspect_json(&deb);
    assert_eq!(json["members"][2]["name"], "data.tar.xz");
}

#[test]
fn long_paths_directories_and_symlinks() {
    let dir = Dir::new("pack-tree");
    let long_name = format!(
        "{}/{}.txt",
        "nested-directory".repeat(8),
        "long-file-name".repeat(10)
    );
    dir.write(format!("assets/{long_name}"), "deep\n");
    dir.write("assets/top.txt", "top\n");
    std::os::unix::fs::symlink("top.txt", dir.join("assets/alias.txt")).unwrap();
    let config = dir.write(
        "ferry.toml",
        r#"[package]
name = "ferry-assets"
version = "0.3"
maintainer = "Ferry Tests <tests@example.com>"
description = "Static assets"

[[files]]
source = "assets"
dest = "/usr/share/ferry-assets"

[[symlinks]]
path = "/usr/share/ferry-assets-current"
target = "ferry-assets"
"#,
    );
    let deb = pack(&config, &dir.join("out"), &[]);
    assert_eq!(
        deb.file_name().unwrap(),
        "ferry-assets_0.3_all.deb",
        "no ELF → all"
    );
    let theirs = dpkg_listing(&deb);
    assert_eq!(inspect_listing(&inspect_json(&deb)), theirs);
    let long_path = format!("usr/share/ferry-assets/{long_name}");
    assert!(long_path.len() > 200);
    assert!(theirs.iter().any(|row| row.3 == long_path), "{theirs:#?}");
    assert!(
        theirs
            .iter()
            .any(|row| row.0.starts_with('l') && row.3 == "usr/share/ferry-assets/alias.txt")
    );
    assert!(
        theirs
            .iter()
            .any(|row| row.3 == "usr/share/doc/ferry-assets/changelog.gz"),
        "native version → changelog.gz"
    );
}

#[test]
fn packs_from_cargo_toml_metadata() {
    let dir = Dir::new("pack-cargo");
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::copy(
        "/usr/bin/true",
        dir.join("target/release/ferry-cargo-sample"),
    )
    .unwrap();
    let config = dir.write(
        "Cargo.toml",
        r#"[package]
name = "ferry-cargo-sample"
version = "0.4.0-rc.2"
edition = "2024"
description = "Sample packed from Cargo metadata"
authors = ["Ferry Tests <tests@example.com>"]

[package.metadata.ferry]
files = [{ source = "target/release/ferry-cargo-sample", dest = "/usr/bin/ferry-cargo-sample" }]
"#,
    );
    let deb = pack(&config, &dir.join("out"), &[]);
    assert_eq!(
        deb.file_name().unwrap(),
        "ferry-cargo-sample_0.4.0~rc.2_amd64.deb"
    );
    assert_eq!(
        dpkg_field(&deb, "Maintainer"),
        "Ferry Tests <tests@example.com>"
    );
    assert!(
        dpkg_listing(&deb)
            .iter()
            .any(|row| row.3 == "usr/bin/ferry-cargo-sample" && row.0 == "-rwxr-xr-x")
    );
}
