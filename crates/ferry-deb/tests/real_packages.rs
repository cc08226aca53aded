//! The reader against packages made by Debian's own tools: real archive packages fetched
//! with `apt-get download`, and trees built with `dpkg-deb --build` in every compression.
//! Each must list exactly what `dpkg-deb -c` lists and give the fields `dpkg-deb -f` gives.

use std::path::Path;
use std::process::Command;

use ferry_testutil::Dir;

/// One line of `dpkg-deb -c`: (mode string, owner, size, path without `./`, link target).
type Listing = Vec<(String, String, u64, String)>;

fn dpkg_listing(deb: &Path) -> Listing {
    let output = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .expect("run dpkg-deb -c");
    assert!(
        output.status.success(),
        "dpkg-deb -c {}: {}",
        deb.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let mut parts = line
                .splitn(6, char::is_whitespace)
                .filter(|part| !part.is_empty());
            let mode = parts.next().unwrap().to_string();
            let owner = parts.next().unwrap().to_string();
            // The size column is right-aligned, so collapse runs of spaces first.
            let rest: Vec<&str> = line.split_whitespace().collect();
            let size: u64 = rest[2].parse().unwrap();
            let path_start = line
                .find(" ./")
                .map(|index| index + 1)
                .or_else(|| line.find(" /").map(|index| index + 1))
                .unwrap();
            let mut path = line[path_start..].to_string();
            if let Some(index) = path.find(" -> ") {
                path.truncate(index);
            }
            if let Some(index) = path.find(" link to ") {
                path.truncate(index);
            }
            let _ = parts.next();
            (
                mode,
                owner,
                size,
                path.trim_start_matches("./")
                    .trim_start_matches('/')
                    .to_string(),
            )
        })
        .collect()
}

fn ferry_listing(deb: &Path) -> (ferry_deb::Inspection, Listing) {
    let file = std::fs::File::open(deb).unwrap();
    let inspection = ferry_deb::inspect(std::io::BufReader::new(file))
        .unwrap_or_else(|error| panic!("ferry cannot read {}: {error}", deb.display()));
    let listing = inspection
        .files
        .iter()
        .map(|file| {
            (
                file.mode_string(),
                file.owner.clone(),
                file.size,
                file.path.trim_start_matches('/').to_string(),
            )
        })
        .collect();
    (inspection, listing)
}

fn dpkg_field(deb: &Path, field: &str) -> String {
    let output = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn assert_agrees_with_dpkg(deb: &Path) -> ferry_deb::Inspection {
    let (inspection, ours) = ferry_listing(deb);
    let theirs = dpkg_listing(deb);
    assert!(!theirs.is_empty(), "{} lists no files", deb.display());
    assert_eq!(ours, theirs, "file lists differ for {}", deb.display());
    for field in ["Package", "Version", "Architecture"] {
        assert_eq!(
            inspection.control.get(field).unwrap_or(""),
            dpkg_field(deb, field),
            "{field} of {}",
            deb.display()
        );
    }
    inspection
}

#[test]
fn reads_real_debian_packages_like_dpkg_deb() {
    let dir = Dir::new("apt");
    let packages = ["hello", "base-files", "tzdata", "libzstd1"];
    if let Err(error) = ferry_testutil::apt_download(dir.path(), &packages) {
        eprintln!(
            "SKIPPED: apt-get download could not fetch {packages:?} (no Debian mirror reachable?): {}",
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
        let inspection = assert_agrees_with_dpkg(deb);
        if deb
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("base-files")
        {
            assert!(!inspection.conffiles.is_empty(), "base-files has conffiles");
            assert!(
                inspection
                    .control_files
                    .iter()
                    .any(|file| file.name == "postinst")
            );
        }
    }
}

#[test]
fn reads_every_compression_dpkg_deb_builds() {
    let dir = Dir::new("dpkg-build");
    let tree = dir.join("tree");
    dir.write("tree/DEBIAN/control", "Package: sample\nVersion: 1.2-3\nArchitecture: all\nMaintainer: Test <test@example.com>\nDescription: a sample\n longer text\n");
    dir.write(
        "tree/DEBIAN/postinst",
        "#!/bin/sh\nset -e\necho configured\n",
    );
    std::fs::set_permissions(
        tree.join("DEBIAN/postinst"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir.write("tree/usr/share/sample/data.txt", "hello\n".repeat(1000));
    let long = format!(
        "tree/usr/share/sample/{}/{}.txt",
        "deep".repeat(30),
        "name".repeat(30)
    );
    dir.write(&long, "long path\n");
    std::os::unix::fs::symlink("data.txt", tree.join("usr/share/sample/link")).unwrap();
    for (flag, compression) in [
        ("gzip", "gzip"),
        ("xz", "xz"),
        ("zstd", "zstd"),
        ("none", "none"),
    ] {
        let deb = dir.join(format!("sample-{flag}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Z", flag, "--build"])
            .arg(&tree)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let inspection = assert_agrees_with_dpkg(&deb);
        let data = inspection.members.last().unwrap();
        assert_eq!(data.compression.unwrap().name(), compression);
        assert_eq!(
            inspection.control.get("Description"),
            Some("a sample\n longer text")
        );
        let postinst = inspection
            .control_files
            .iter()
            .find(|file| file.name == "postinst")
            .unwrap();
        assert_eq!(postinst.mode, "0755");
        let link = inspection
            .files
            .iter()
            .find(|file| file.path.ends_with("/link"))
            .unwrap();
        assert_eq!(link.link_target.as_deref(), Some("data.txt"));
        assert!(
            inspection.files.iter().any(|file| file.path.len() > 200),
            "long path kept"
        );
    }
}
