//! `ferry inspect` on packages it did not write: real Debian archive packages fetched with
//! `apt-get download` must list exactly what `dpkg-deb -c` lists; and malformed input —
//! truncated, corrupted, not a .deb at all — is refused with a clear error, never a panic.

#[path = "fixtures/pack/support.rs"]
mod support;

use ferry_testutil::Dir;
use support::*;

#[test]
fn reads_real_debian_packages_like_dpkg_deb() {
    let dir = Dir::new("inspect-apt");
    let packages = ["hello", "base-files", "tzdata", "liblz4-1"];
    if let Err(error) = ferry_testutil::apt_download(dir.path(), &packages) {
        eprintln!(
            "SKIPPED: apt-get download {packages:?} failed (no Debian mirror reachable?): {}",
            error
        );
        return;
    }
    let mut debs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    debs.sort();
    assert_eq!(debs.len(), packages.len(), "{debs:?}");
    for deb in &debs {
        let json = inspect_json(deb);
        let theirs = dpkg_listing(deb);
        assert!(theirs.len() > 3, "{}", deb.display());
        assert_eq!(
            inspect_listing(&json),
            theirs,
            "{}: ferry inspect and dpkg-deb -c disagree",
            deb.display()
        );
        for field in ["Package", "Version", "Architecture", "Maintainer"] {
            assert_eq!(
                json["control"][field].as_str().unwrap_or(""),
                dpkg_field(deb, field),
                "{field} of {}",
                deb.display()
            );
        }
        // The text view works too.
        let text = run_ok(ferry().arg("inspect").arg(deb));
        assert!(
            String::from_utf8_lossy(&text.stdout)
                .contains(json["control"]["Package"].as_str().unwrap())
        );
    }
    let base_files = debs
        .iter()
        .find(|deb| deb.to_string_lossy().contains("base-files"))
        .unwrap();
    let json = inspect_json(base_files);
    assert!(
        json["conffiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "/etc/issue"),
        "{}",
        json["conffiles"]
    );
}

#[test]
fn malformed_packages_are_refused_clearly() {
    let dir = Dir::new("inspect-bad");
    let config = write_service(&dir, "ferry-sample", "1.0.0-1", "x\n");
    let deb = pack(&config, &dir.join("out"), &["--compression", "gzip"]);
    let good = std::fs::read(&deb).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("empty", Vec::new(), &["ar magic"]),
        (
            "text",
            b"hello, I am not a package\n".to_vec(),
            &["not a Debian binary package"],
        ),
        ("truncated-header", good[..100].to_vec(), &["truncated"]),
        (
            "truncated-middle",
            good[..good.len() / 2].to_vec(),
            &["truncated"],
        ),
        (
            "truncated-end",
            good[..good.len() - 20].to_vec(),
            &["data.tar.gz"],
        ),
    ];
    let mut wrong_first = good.clone();
    wrong_first[8..21].copy_from_slice(b"debian-trash!");
    cases.push(("wrong-first-member", wrong_first, &["debian-trash!"]));
    let mut bad_size = good.clone();
    bad_size[8 + 48..8 + 52].copy_from_slice(b"zz  ");
    cases.push(("bad-size", bad_size, &["not a number"]));
    // Flip bytes in the middle of the compressed data.tar.
    let mut corrupt = good.clone();
    let middle = good.len() - 400;
    for byte in &mut corrupt[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    cases.push(("corrupt-data", corrupt, &["data.tar.gz"]));

    for (name, bytes, expected) in cases {
        let path = dir.write(format!("{name}.deb"), &bytes);
        let stderr = run_fail(ferry().arg("inspect").arg(&path));
        assert!(
            stderr.contains(&format!("{name}.deb")),
            "{name}: the error names the file: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{name}: expected {needle:?} in: {stderr}"
            );
        }
    }
    let stderr = run_fail(ferry().arg("inspect").arg(dir.join("absent.deb")));
    assert!(stderr.contains("absent.deb"), "{stderr}");
}
