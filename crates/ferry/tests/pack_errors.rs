//! Bad input to `ferry pack` gets a clear error naming the problem, never a panic, and no
//! package is left behind: a missing file, an unknown config key, an invalid version
//! (`v1.0` with a hint), a path escaping the package, executables of two architectures.

#[path = "fixtures/pack/support.rs"]
mod support;

use ferry_testutil::Dir;
use support::*;

fn manifest(files: &str) -> String {
    format!(
        r#"[package]
name = "ferry-bad"
version = "1.0-1"
maintainer = "Ferry Tests <tests@example.com>"
description = "Bad input"
{files}"#
    )
}

fn pack_fails(dir: &Dir, config_text: &str, extra: &[&str]) -> String {
    let config = dir.write("ferry.toml", config_text);
    let out = dir.join("out");
    let stderr = run_fail(
        ferry()
            .arg("pack")
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .args(extra),
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "files left in the output dir after a failure: {left:?}"
    );
    stderr
}

#[test]
fn missing_source_file() {
    let dir = Dir::new("pack-missing");
    let stderr = pack_fails(
        &dir,
        &manifest("[[files]]\nsource = \"target/release/nope\"\ndest = \"/usr/bin/nope\"\n"),
        &[],
    );
    assert!(
        stderr.contains("missing file") && stderr.contains("target/release/nope"),
        "{stderr}"
    );
}

#[test]
fn missing_manifest() {
    let dir = Dir::new("pack-no-manifest");
    let stderr = run_fail(
        ferry()
            .arg("pack")
            .arg("--config")
            .arg(dir.join("ferry.toml")),
    );
    assert!(stderr.contains("ferry.toml"), "{stderr}");
}

#[test]
fn unknown_config_key_is_named() {
    let dir = Dir::new("pack-unknown-key");
    let text = manifest("").replace("description =", "colour = \"blue\"\ndescription =");
    let stderr = pack_fails(&dir, &text, &[]);
    assert!(stderr.contains("colour"), "{stderr}");
    let stderr = pack_fails(
        &dir,
        &manifest("[[files]]\nsource = \"a\"\ndestination = \"/a\"\n"),
        &[],
    );
    assert!(stderr.contains("destination"), "{stderr}");
}

#[test]
fn invalid_version_with_hint() {
    let dir = Dir::new("pack-version");
    let stderr = pack_fails(&dir, &manifest("").replace("1.0-1", "v1.0"), &[]);
    assert!(
        stderr.contains("v1.0") && stderr.contains("\"1.0\""),
        "hint to drop the v: {stderr}"
    );
    let stderr = pack_fails(&dir, &manifest(""), &["--version", "1.0_beta"]);
    assert!(
        stderr.contains("1.0_beta") && stderr.contains("'_'"),
        "{stderr}"
    );
}

#[test]
fn path_escaping_the_package() {
    let dir = Dir::new("pack-escape");
    dir.write("a.txt", "a");
    for dest in [
        "/usr/../../etc/passwd",
        "usr/share/relative",
        "/usr/share/./x",
    ] {
        let stderr = pack_fails(
            &dir,
            &manifest(&format!(
                "[[files]]\nsource = \"a.txt\"\ndest = \"{dest}\"\n"
            )),
            &[],
        );
        assert!(stderr.contains(dest), "{dest}: {stderr}");
    }
    let stderr = pack_fails(
        &dir,
        &manifest("[[symlinks]]\npath = \"/../x\"\ntarget = \"y\"\n"),
        &[],
    );
    assert!(stderr.contains("escape"), "{stderr}");
}

#[test]
fn conflicting_elf_architectures() {
    let dir = Dir::new("pack-arches");
    std::fs::copy("/usr/bin/true", dir.join("native")).unwrap();
    // A minimal ELF header of a 64-bit little-endian arm64 executable.
    let mut arm = vec![0u8; 64];
    arm[..4].copy_from_slice(b"\x7fELF");
    arm[4] = 2;
    arm[5] = 1;
    arm[6] = 1;
    arm[16..18].copy_from_slice(&2u16.to_le_bytes());
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    dir.write("foreign", &arm);
    let files = "[[files]]\nsource = \"native\"\ndest = \"/usr/bin/native\"\n[[files]]\nsource = \"foreign\"\ndest = \"/usr/bin/foreign\"\n";
    let stderr = pack_fails(&dir, &manifest(files), &[]);
    assert!(
        stderr.contains("disagree") && stderr.contains("arm64") && stderr.contains("foreign"),
        "{stderr}"
    );
    // --arch settles it.
    let config = dir.write("ferry.toml", manifest(files));
    let deb = pack(&config, &dir.join("out"), &["--arch", "amd64"]);
    assert!(deb.to_string_lossy().ends_with("_amd64.deb"));
}

#[test]
fn bad_levels_modes_and_conffiles() {
    let dir = Dir::new("pack-misc");
    dir.write("a.txt", "a");
    let stderr = pack_fails(
        &dir,
        &manifest(""),
        &["--compression", "gzip", "--level", "12"],
    );
    assert!(
        stderr.contains("level 12") && stderr.contains("1 to 9"),
        "{stderr}"
    );
    let stderr = pack_fails(
        &dir,
        &manifest("[[files]]\nsource = \"a.txt\"\ndest = \"/a\"\nmode = \"rwx\"\n"),
        &[],
    );
    assert!(stderr.contains("rwx"), "{stderr}");
    let text = manifest("").replace(
        "description =",
        "conffiles = [\"/opt/none.conf\"]\ndescription =",
    );
    let stderr = pack_fails(&dir, &text, &[]);
    assert!(stderr.contains("/opt/none.conf"), "{stderr}");
    let stderr = pack_fails(&dir, &manifest("").replace("ferry-bad", "Ferry_Bad"), &[]);
    assert!(stderr.contains("Ferry_Bad"), "{stderr}");
    dir.write("scripts/postinst", "echo no shebang\n");
    let stderr = pack_fails(
        &dir,
        &manifest("[scripts]\npostinst = \"scripts/postinst\"\n"),
        &[],
    );
    assert!(stderr.contains("#!"), "{stderr}");
}
