//! The store suite's world: a fresh key and store (a `file://` directory or the moto S3
//! server), the real `ferry` binary run with a deadline, and raw access to the store for
//! tampering and for checking what was written.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_store::{Store, StoreOptions};
use ferry_testutil::Dir;
use ferry_testutil::s3::S3Server;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    S3,
}

/// A store on one backend, a key pair, and the binary wired to both.
pub struct Fixture {
    pub dir: Dir,
    pub server: Option<S3Server>,
    pub store: String,
    pub key: PathBuf,
    pub public: PathBuf,
}

/// Every command must end well within this; a hang fails the test instead of CI.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

impl Fixture {
    pub fn new(backend: Backend) -> Fixture {
        let dir = Dir::new("store");
        let (server, store) = match backend {
            Backend::File => {
                std::fs::create_dir_all(dir.join("store")).unwrap();
                (None, format!("file://{}", dir.join("store").display()))
            }
            Backend::S3 => {
                let server = S3Server::start();
                let url = server.store_url("fleet");
                (Some(server), url)
            }
        };
        let mut fixture = Fixture {
            key: dir.join("release.key"),
            public: dir.join("release.pub"),
            dir,
            server,
            store,
        };
        let output = fixture.run(&["keygen", fixture.dir.join("release").to_str().unwrap()]);
        assert_success(&output);
        fixture.key = fixture.dir.join("release.key");
        fixture
    }

    /// The binary with a clean environment: the test store's endpoint and credentials, a
    /// private verify-state file, and no FERRY_* settings leaking in from outside.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = ferry_testutil::ferry_command(Path::new(env!("CARGO_BIN_EXE_ferry")));
        command.args(args).current_dir(self.dir.path());
        command.env("FERRY_VERIFY_STATE", self.dir.join("verify-state.json"));
        if let Some(server) = &self.server {
            server.apply(&mut command);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args))
    }

    pub fn publish(&self, files: &[&Path], extra: &[&str]) -> Output {
        let mut args = vec![
            "publish",
            "--store",
            &self.store,
            "--app",
            "hello",
            "--key",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let paths: Vec<String> = files
            .iter()
            .map(|file| file.display().to_string())
            .collect();
        args.extend(paths.iter().map(String::as_str));
        self.run(&args)
    }

    pub fn verify(&self, channel: &str, trust: &Path) -> Output {
        self.run(&[
            "verify",
            "--store",
            &self.store,
            "--app",
            "hello",
            "--channel",
            channel,
            "--trust",
            trust.to_str().unwrap(),
        ])
    }

    /// Build a real .deb with dpkg-deb.
    pub fn deb(&self, version: &str, architecture: &str, payload: &str) -> PathBuf {
        let root = self.dir.join(format!("build-{version}-{architecture}"));
        self.dir.write(
            root.join("DEBIAN/control"),
            format!(
                "Package: hello\nVersion: {version}\nArchitecture: {architecture}\nMaintainer: Test <test@example.invalid>\nDescription: test package\n"
            ),
        );
        self.dir
            .write(root.join("usr/share/hello/payload"), payload);
        let output_file = self.dir.join(format!("hello_{version}_{architecture}.deb"));
        let output = run_bounded({
            let mut command = Command::new("dpkg-deb");
            command
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(&root)
                .arg(&output_file);
            command
        });
        assert_success(&output);
        output_file
    }

    /// A library handle on the same store, for reading and tampering with raw objects.
    pub fn raw(&self) -> RawStore {
        let options = StoreOptions {
            s3_endpoint: self.server.as_ref().map(S3Server::endpoint),
            ..StoreOptions::default()
        };
        if let Some(server) = &self.server {
            // The library reads credentials from the environment, like the binary.
            for (name, value) in server.environment() {
                // SAFETY: set before any thread of this test reads the environment; every
                // test sets the same values.
                unsafe { std::env::set_var(name, value) };
            }
        }
        let store = Store::open(&self.store, &options).expect("open store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        RawStore { store, runtime }
    }
}

pub struct RawStore {
    pub store: Store,
    pub runtime: tokio::runtime::Runtime,
}

impl RawStore {
    pub fn get(&self, path: &str) -> Vec<u8> {
        self.runtime
            .block_on(self.store.get(path, 1 << 30))
            .expect("read object")
            .unwrap_or_else(|| panic!("{path} missing"))
            .bytes
            .to_vec()
    }

    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.runtime
            .block_on(self.store.put_overwrite(path, bytes))
            .expect("write object");
    }

    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut paths: Vec<String> = self
            .runtime
            .block_on(self.store.list(prefix))
            .expect("list")
            .into_iter()
            .map(|info| info.path)
            .collect();
        paths.sort();
        paths
    }
}

pub fn run_bounded(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {command:?}: {error}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn assert_success(output: &Output) {
    assert!(output.status.success(), "command failed:\n{}", text(output));
}

pub fn assert_rejected(output: &Output, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected exit 2 (rejected):\n{}",
        text(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(needle),
        "expected {needle:?} in:\n{}",
        text(output)
    );
}

pub fn json(output: &Output) -> serde_json::Value {
    assert_success(output);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", text(output)))
}

pub fn releases(fixture: &Fixture, channel: &str) -> Vec<(u64, String, bool)> {
    let value = json(&fixture.run(&[
        "releases",
        "--store",
        &fixture.store,
        "--app",
        "hello",
        "--channel",
        channel,
        "--json",
    ]));
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|entry| {
            (
                entry["serial"].as_u64().unwrap(),
                entry["version"].as_str().unwrap().to_owned(),
                entry["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

pub fn pointer_payload(raw: &RawStore, channel: &str) -> serde_json::Value {
    let envelope: serde_json::Value =
        serde_json::from_slice(&raw.get(&format!("apps/hello/channels/{channel}.json"))).unwrap();
    serde_json::from_str(envelope["payload"].as_str().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// The suite; each case runs once per backend (see the modules at the bottom).
