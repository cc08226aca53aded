//! Delta updates end to end, on a `file://` store and on the S3 test server: `ferry publish`
//! makes patches from the channel's earlier releases; an agent that has the base rebuilds
//! the new package from a patch (a few percent of the bytes), checks it against the signed
//! index and installs it; one without the base, or facing a corrupt patch, downloads the
//! whole package and still installs; a rollback and the next patch after a patched install
//! work; real dpkg installs a rebuilt package.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ferry_release::{DownloadRecord, HostReport};
use ferry_testutil::fleet::{Publisher, run_bounded, stripped_copy};
use ferry_testutil::s3::{S3Server, TestStore};
use ferry_testutil::{Dir, workspace_binary};

/// One store (file:// or S3), a publisher and hello-service builds that differ like two
/// real releases: the binary itself changes a little, not only its version file.
struct World {
    dir: Dir,
    publisher: Publisher,
    store: String,
    environment: Vec<(&'static str, String)>,
    binaries: Vec<PathBuf>,
    _s3: Option<S3Server>,
}

impl World {
    fn new(name: &str, s3: bool) -> World {
        let dir = Dir::new(name);
        let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
        let TestStore {
            url: store,
            environment,
            server,
        } = TestStore::new(dir.path(), s3, "deltas/ferry");
        let publisher = Publisher::new(
            ferry,
            &dir.join("work"),
            &store,
            environment.clone(),
            "hello",
            "stable",
        );
        publisher.keygen();
        let hello = stripped_copy(
            &workspace_binary("hello-service"),
            &dir.join("hello-service"),
        );
        let original = std::fs::read(&hello).unwrap();
        // Release n: the binary with a few bytes changed in the middle of its code, as a
        // small source change does.
        let binaries = (0..3u8)
            .map(|n| {
                let mut bytes = original.clone();
                let middle = bytes.len() / 2;
                bytes[middle..middle + 8].copy_from_slice(&[n; 8]);
                let path = dir.join(format!("hello-{n}"));
                std::fs::write(&path, &bytes).unwrap();
                path
            })
            .collect();
        World {
            dir,
            publisher,
            store,
            environment,
            binaries,
            _s3: server,
        }
    }

    fn pack(&self, n: usize, version: &str) -> PathBuf {
        self.publisher.pack(&self.binaries[n], version, None)
    }

    /// A host: an agent file with `unpack` into its own root, no restart, no health check.
    fn host(&self, name: &str) -> PathBuf {
        let host = self.dir.join(name);
        std::fs::create_dir_all(&host).unwrap();
        let file = ferry_agent::AgentFile {
            store: Some(self.store.clone()),
            app: Some("hello".into()),
            channel: Some("stable".into()),
            trust: vec![self.publisher.public_key()],
            host_id: Some(name.into()),
            state_dir: Some(host.join("state")),
            cache_dir: Some(host.join("cache")),
            install: Some(ferry_agent::config::InstallFile::Unpack {
                root: host.join("srv"),
                keep: None,
            }),
            ..Default::default()
        };
        std::fs::write(host.join("agent.toml"), file.to_toml().unwrap()).unwrap();
        host
    }

    /// One agent cycle on `host`; panics unless it succeeds.
    fn agent_once(&self, host: &Path) -> Output {
        let mut command = ferry_testutil::ferry_command(Path::new(env!("CARGO_BIN_EXE_ferry")));
        command
            .args(["agent", "--once", "--config"])
            .arg(host.join("agent.toml"));
        for (name, value) in &self.environment {
            command.env(name, value);
        }
        let output = run_bounded(&mut command, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "agent --once failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn status(&self, host: &Path) -> HostReport {
        let output = support::ok(
            support::ferry()
                .args(["agent", "status", "--json", "--config"])
                .arg(host.join("agent.toml")),
        );
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }

    fn download(&self, host: &Path) -> DownloadRecord {
        self.status(host).last_download.expect("a download record")
    }

    fn installed_binary(&self, host: &Path) -> Vec<u8> {
        std::fs::read(host.join("srv/current/usr/bin/hello-service")).unwrap()
    }

    fn store_path(&self, path: &str) -> PathBuf {
        self.dir.join("store").join(path)
    }
}

fn patched_then_full(s3: bool) {
    let world = World::new(if s3 { "delta-s3" } else { "delta-file" }, s3);
    let one = world.pack(0, "1.0.0");
    let two = world.pack(1, "2.0.0");
    world.publisher.publish(&one);
    let host = world.host("host-1");
    world.agent_once(&host);
    assert_eq!(
        world.download(&host).via,
        "full",
        "nothing to patch from yet"
    );

    let published = world.publisher.publish(&two);
    let said = String::from_utf8_lossy(&published.stdout);
    assert!(said.contains("patch amd64 from 1.0.0"), "{said}");

    world.agent_once(&host);
    let record = world.download(&host);
    let full = std::fs::metadata(&two).unwrap().len();
    assert_eq!(record.version, "2.0.0");
    assert_eq!(record.via, "patch", "{record:?}");
    assert_eq!(record.full_bytes, full);
    assert!(
        record.bytes * 20 < full,
        "a patch of {} bytes for a {full}-byte package",
        record.bytes
    );
    assert_eq!(
        world.installed_binary(&host),
        std::fs::read(&world.binaries[1]).unwrap()
    );
    assert_eq!(world.status(&host).version.as_deref(), Some("2.0.0"));

    // A host that never had 1.0.0 has no base: the whole package, and it says why.
    let fresh = world.host("host-2");
    world.agent_once(&fresh);
    let record = world.download(&fresh);
    assert_eq!(record.via, "full");
    assert_eq!(record.bytes, full);
    assert!(record.note.unwrap_or_default().contains("no cached base"));
    assert_eq!(
        world.installed_binary(&fresh),
        std::fs::read(&world.binaries[1]).unwrap()
    );
}

#[test]
fn an_agent_takes_the_next_release_through_a_patch_on_a_directory_store() {
    patched_then_full(false);
}

#[test]
fn an_agent_takes_the_next_release_through_a_patch_on_s3() {
    patched_then_full(true);
}

#[test]
fn a_corrupt_patch_falls_back_to_the_whole_package() {
    let world = World::new("delta-corrupt", false);
    world.publisher.publish(&world.pack(0, "1.0.0"));
    let host = world.host("host-1");
    world.agent_once(&host);
    world.publisher.publish(&world.pack(1, "2.0.0"));
    // Flip bytes in every stored patch: its sha256 no longer matches the signed index.
    let patches = world.store_path("artifacts/patches");
    for entry in std::fs::read_dir(&patches).unwrap().flatten() {
        let mut bytes = std::fs::read(entry.path()).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(entry.path(), bytes).unwrap();
    }
    world.agent_once(&host);
    let status = world.status(&host);
    let record = status.last_download.clone().unwrap();
    assert_eq!(record.via, "full", "{record:?}");
    assert!(record.note.unwrap_or_default().contains("patch failed"));
    assert_eq!(status.version.as_deref(), Some("2.0.0"));
    assert!(
        status.bad.is_empty(),
        "a bad patch does not make the release bad: {status:?}"
    );
    assert_eq!(
        world.installed_binary(&host),
        std::fs::read(&world.binaries[1]).unwrap()
    );
}

#[test]
fn a_rollback_and_the_next_patch_work_after_a_patched_install() {
    let world = World::new("delta-rollback", false);
    world.publisher.publish(&world.pack(0, "1.0.0"));
    let host = world.host("host-1");
    world.agent_once(&host);
    world.publisher.publish(&world.pack(1, "2.0.0"));
    world.agent_once(&host);
    assert_eq!(world.download(&host).via, "patch");

    // Back to 1.0.0: from the cache, nothing downloaded.
    world.publisher.rollback();
    world.agent_once(&host);
    assert_eq!(world.status(&host).version.as_deref(), Some("1.0.0"));
    assert_eq!(
        world.installed_binary(&host),
        std::fs::read(&world.binaries[0]).unwrap()
    );

    // 3.0.0 has patches from 1.0.0 and 2.0.0; the host holds 2.0.0 only as the package it
    // rebuilt (its expanded form) and 1.0.0 as downloaded. Either base works.
    let three = world.pack(2, "3.0.0");
    world.publisher.publish(&three);
    world.agent_once(&host);
    let record = world.download(&host);
    assert_eq!(record.via, "patch", "{record:?}");
    assert_eq!(
        world.installed_binary(&host),
        std::fs::read(&world.binaries[2]).unwrap()
    );

    // `ferry releases` lists each version's patches.
    let listing = support::stdout(&support::ok(support::ferry().args([
        "releases",
        "--store",
        &world.store,
        "--app",
        "hello",
    ])));
    let three_line = listing
        .lines()
        .find(|line| line.contains("3.0.0"))
        .unwrap_or_default();
    assert!(three_line.contains("patches: amd64 from "), "{listing}");
    assert!(
        three_line.contains("amd64 from 2.0.0") && three_line.contains("amd64 from 1.0.0"),
        "{listing}"
    );
}

#[test]
fn real_dpkg_installs_a_package_rebuilt_from_a_patch() {
    let world = World::new("delta-dpkg", false);
    world.publisher.publish(&world.pack(0, "1.0.0"));
    let host = world.host("host-1");
    world.agent_once(&host);
    let two = world.pack(1, "2.0.0");
    world.publisher.publish(&two);
    world.agent_once(&host);
    assert_eq!(world.download(&host).via, "patch");
    let sha = ferry_release::sha256_hex(&std::fs::read(&two).unwrap());
    let rebuilt = host.join("cache").join(format!("{sha}.deb"));
    let sandbox = world.dir.join("dpkg-root");
    support::ok(support::sandbox_dpkg(&sandbox).arg("-i").arg(&rebuilt));
    let installed = std::fs::read(sandbox.join("usr/bin/hello-service")).unwrap();
    assert_eq!(installed, std::fs::read(&world.binaries[1]).unwrap());
    assert_eq!(
        support::sandbox_status(&sandbox, "hello"),
        "install ok installed 2.0.0"
    );
}

#[test]
fn pack_strips_elf_files_when_asked() {
    let world = World::new("delta-strip", false);
    let unstripped = workspace_binary("hello-service");
    let extras = ferry_testutil::fleet::PackExtras {
        strip: true,
        ..Default::default()
    };
    let deb = world
        .publisher
        .pack_with(&unstripped, "1.0.0", None, &extras);
    let out = world.dir.join("extracted");
    support::ok(
        std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&out),
    );
    let packed = out.join("usr/bin/hello-service");
    let (packed_size, original_size) = (
        std::fs::metadata(&packed).unwrap().len(),
        std::fs::metadata(&unstripped).unwrap().len(),
    );
    assert!(
        packed_size * 2 < original_size,
        "{packed_size} vs {original_size}"
    );
    let symbols = support::stdout(&support::ok(
        std::process::Command::new("readelf").arg("-S").arg(&packed),
    ));
    assert!(!symbols.contains(".symtab"), "still has a symbol table");
    support::ok(std::process::Command::new(&packed).arg("--help"));
    // The source file is left alone.
    assert_eq!(std::fs::metadata(&unstripped).unwrap().len(), original_size);
}
