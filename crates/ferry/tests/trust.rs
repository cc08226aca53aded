//! The keyring (docs/trust.md), on a `file://` store and on the S3 test server, with agents
//! that pin only the root key: a 2-of-3 channel cannot be moved by one stolen key and is
//! moved by two signers (each signature checkable with stock `minisign -V`); a revoked key's
//! pointer is refused by every agent at its next poll; a root rotation signed by the old
//! root is followed by agents that were never touched; a keyring signed by a non-root key
//! and a replayed older keyring are refused.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ferry_release::{ChannelPointer, HostReport, HostState, Keyring};
use ferry_testutil::Dir;
use ferry_testutil::fleet::{Publisher, run_bounded};
use ferry_testutil::s3::{S3Server, TestStore};

struct World {
    dir: Dir,
    store: String,
    environment: Vec<(&'static str, String)>,
    s3: Option<S3Server>,
    publisher: Publisher,
}

impl World {
    fn new(name: &str, s3: bool) -> World {
        let dir = Dir::new(name);
        let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
        let TestStore {
            url: store,
            environment,
            server,
        } = TestStore::new(dir.path(), s3, "trust");
        let publisher = Publisher::new(
            ferry,
            &dir.join("work"),
            &store,
            environment.clone(),
            "hello",
            "stable",
        );
        let world = World {
            dir,
            store,
            environment,
            s3: server,
            publisher,
        };
        for name in ["root", "root2", "alice", "bob", "ci", "dave", "mallory"] {
            world.ok(&["keygen", &world.key(name, "").display().to_string()]);
        }
        world
    }

    /// `keys/NAME` + `ext` (`.key`, `.pub`, or "" for the keygen prefix).
    fn key(&self, name: &str, ext: &str) -> PathBuf {
        std::fs::create_dir_all(self.dir.join("keys")).unwrap();
        self.dir.join("keys").join(format!("{name}{ext}"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = support::ferry();
        command.args(args);
        for (name, value) in &self.environment {
            command.env(name, value);
        }
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        support::stdout(&support::ok(&mut self.command(args)))
    }

    fn fails(&self, args: &[&str]) -> String {
        support::fails(&mut self.command(args))
    }

    fn keyring(&self, args: &[&str], roots: &[&str]) -> String {
        let mut all: Vec<String> = vec![
            "keyring".into(),
            args[0].into(),
            "--store".into(),
            self.store.clone(),
            "--app".into(),
            "hello".into(),
        ];
        for root in roots {
            all.push("--root-key".into());
            all.push(self.key(root, ".key").display().to_string());
        }
        all.extend(args[1..].iter().map(|arg| arg.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.ok(&all)
    }

    fn publish_args(&self, channel: &str, key: &str, deb: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "publish",
            "--quiet",
            "--store",
            &self.store,
            "--app",
            "hello",
            "--channel",
            channel,
            "--key",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.push(self.key(key, ".key").display().to_string());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.push(deb.display().to_string());
        args
    }

    fn publish(&self, channel: &str, key: &str, deb: &Path, extra: &[&str]) -> String {
        let args = self.publish_args(channel, key, deb, extra);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn sign(&self, channel: &str, key: &str) -> String {
        let key = self.key(key, ".key").display().to_string();
        self.ok(&[
            "sign",
            "--store",
            &self.store,
            "--app",
            "hello",
            "--channel",
            channel,
            "--key",
            &key,
        ])
    }

    fn deb(&self, version: &str) -> PathBuf {
        // A small real ELF program stands in for the service: these tests are about trust.
        self.publisher.pack(Path::new("/bin/true"), version, None)
    }

    /// A host following `channel` that pins only the root key.
    fn host(&self, name: &str, channel: &str) -> PathBuf {
        let host = self.dir.join(name);
        std::fs::create_dir_all(&host).unwrap();
        let file = ferry_agent::AgentFile {
            store: Some(self.store.clone()),
            app: Some("hello".into()),
            channel: Some(channel.into()),
            trust_root: vec![self.key("root", ".pub")],
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

    fn agent_once(&self, host: &Path) -> Output {
        let mut command = self.command(&["agent", "--once", "--config"]);
        command.arg(host.join("agent.toml"));
        let output = run_bounded(&mut command, Duration::from_secs(120));
        if !output.status.success() {
            eprintln!(
                "agent --once on {}: {}",
                host.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }

    fn status(&self, host: &Path) -> HostReport {
        let mut command = self.command(&["agent", "status", "--json", "--config"]);
        command.arg(host.join("agent.toml"));
        serde_json::from_slice(&support::ok(&mut command).stdout).unwrap()
    }

    /// Write an object the way someone with store credentials but without the keys would.
    fn put_raw(&self, path: &str, bytes: &[u8]) {
        match &self.s3 {
            None => {
                let target = self.dir.join("store").join(path);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(target, bytes).unwrap();
            }
            Some(server) => {
                let file = self.dir.join("raw-object");
                std::fs::write(&file, bytes).unwrap();
                aws_cp(
                    server,
                    file.display().to_string(),
                    format!("{}/{path}", server.store_url("trust")),
                );
            }
        }
    }

    fn get_raw(&self, path: &str) -> Vec<u8> {
        match &self.s3 {
            None => std::fs::read(self.dir.join("store").join(path)).unwrap(),
            Some(server) => {
                let file = self.dir.join("raw-read");
                aws_cp(
                    server,
                    format!("{}/{path}", server.store_url("trust")),
                    file.display().to_string(),
                );
                std::fs::read(file).unwrap()
            }
        }
    }
}

/// `aws s3 cp FROM TO` against the test server (the stock client, as an intruder would).
fn aws_cp(server: &S3Server, from: String, to: String) {
    let mut command = Command::new("aws");
    command
        .args(["--endpoint-url", &server.endpoint(), "s3", "cp", "--quiet"])
        .args([from, to]);
    server.apply(&mut command);
    support::ok(&mut command);
}

fn signing_key(world: &World, name: &str) -> ferry_release::SigningKey {
    ferry_release::SigningKey::from_file(&world.key(name, ".key"), None).unwrap()
}

fn keyring_scenario(s3: bool) {
    let world = World::new(if s3 { "trust-s3" } else { "trust-file" }, s3);
    let key = |name: &str| world.key(name, ".pub").display().to_string();
    world.keyring(&["init"], &["root"]);
    for (name, channels) in [
        ("alice", "stable"),
        ("bob", "stable"),
        ("ci", "stable,beta"),
    ] {
        world.keyring(
            &[
                "add",
                "--name",
                name,
                "--pubkey",
                &key(name),
                "--channels",
                channels,
            ],
            &["root"],
        );
    }
    world.keyring(
        &["threshold", "--channel", "stable", "--count", "2"],
        &["root"],
    );
    let shown = world.ok(&[
        "keyring",
        "show",
        "--store",
        &world.store,
        "--app",
        "hello",
        "--trust-root",
        &key("root"),
    ]);
    assert!(
        shown.contains("serial 5") && shown.contains("channel stable: 2 signatures"),
        "{shown}"
    );

    // stable is 2-of-3: one key alone is refused by the CLI, a stage plus a second signer moves it.
    let one = world.deb("1.0.0");
    let error = world.fails(
        &world
            .publish_args("stable", "ci", &one, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(error.contains("needs 2 signatures"), "{error}");
    let staged = world.publish("stable", "alice", &one, &["--stage"]);
    assert!(staged.contains("the channel has not moved"), "{staged}");
    let host = world.host("host-stable", "stable");
    world.agent_once(&host);
    assert_eq!(
        world.status(&host).version,
        None,
        "a staged pointer is not in force"
    );
    let signed = world.sign("stable", "bob");
    assert!(signed.contains("2 of 2 signatures"), "{signed}");
    world.agent_once(&host);
    assert_eq!(world.status(&host).version.as_deref(), Some("1.0.0"));

    // Each signature of the committed pointer checks with stock minisign.
    let envelope = ferry_release::Envelope::from_bytes(
        &world.get_raw("apps/hello/channels/stable.json"),
        "pointer",
    )
    .unwrap();
    assert_eq!(envelope.all_signatures().count(), 2);
    std::fs::write(world.dir.join("payload.json"), &envelope.payload).unwrap();
    for (signature, signer) in envelope.all_signatures().zip(["alice", "bob"]) {
        std::fs::write(world.dir.join("payload.json.minisig"), signature).unwrap();
        support::ok(
            Command::new("minisign")
                .arg("-Vq")
                .arg("-p")
                .arg(key(signer))
                .arg("-m")
                .arg(world.dir.join("payload.json")),
        );
    }

    // A stolen key writes a pointer on its own (straight into the store): refused.
    let two = world.deb("2.0.0");
    world.publish("stable", "ci", &two, &["--stage"]);
    let (pointer, forged) = staged_pointer(&world, "stable");
    world.put_raw("apps/hello/channels/stable.json", &forged.to_bytes());
    world.agent_once(&host);
    let status = world.status(&host);
    assert_eq!(status.state, HostState::Refused, "{status:?}");
    assert!(
        status
            .last_error
            .unwrap_or_default()
            .contains("1 of the 2 keys")
    );
    assert_eq!(status.version.as_deref(), Some("1.0.0"));
    // Two signers on the same staged pointer are accepted.
    world.put_raw(
        "apps/hello/channels/stable.json",
        &world.get_raw("apps/hello/channels/stable/history/1.json"),
    );
    let signed = world.sign("stable", "alice");
    assert!(
        signed.contains(&format!("serial {}", pointer.serial)),
        "{signed}"
    );
    world.agent_once(&host);
    assert_eq!(world.status(&host).version.as_deref(), Some("2.0.0"));

    // beta is 1-of-1 (ci): two hosts follow it; ci is revoked; its next pointer is refused by both.
    let beta = [world.host("beta-1", "beta"), world.host("beta-2", "beta")];
    world.publish("beta", "ci", &one, &[]);
    for host in &beta {
        world.agent_once(host);
        assert_eq!(world.status(host).version.as_deref(), Some("1.0.0"));
    }
    world.keyring(&["revoke", "--name", "ci"], &["root"]);
    world.publish("beta", "ci", &two, &[]);
    for host in &beta {
        world.agent_once(host);
        let status = world.status(host);
        assert_eq!(status.state, HostState::Refused, "{status:?}");
        assert_eq!(status.version.as_deref(), Some("1.0.0"));
    }

    // Root rotation: signed by the old root; the new root adds dave for beta; the hosts, which
    // pin only the old root, follow and take dave's release.
    world.keyring(&["rotate-root", "--new-root", &key("root2")], &["root"]);
    let refused = world.fails(&[
        "keyring",
        "add",
        "--store",
        &world.store,
        "--app",
        "hello",
        "--root-key",
        &world.key("root", ".key").display().to_string(),
        "--name",
        "x",
        "--pubkey",
        &key("mallory"),
    ]);
    assert!(refused.contains("root keys"), "{refused}");
    world.keyring(
        &[
            "add",
            "--name",
            "dave",
            "--pubkey",
            &key("dave"),
            "--channels",
            "beta",
        ],
        &["root2"],
    );
    // Keys are scoped: dave may sign beta only.
    let dave = world.key("dave", ".key").display().to_string();
    let error = world.fails(&[
        "sign",
        "--store",
        &world.store,
        "--app",
        "hello",
        "--channel",
        "stable",
        "--key",
        &dave,
    ]);
    assert!(error.contains("may not sign hello/stable"), "{error}");
    let three = world.deb("3.0.0");
    world.publish("beta", "dave", &three, &["--new-key"]);
    for host in &beta {
        world.agent_once(host);
        assert_eq!(world.status(host).version.as_deref(), Some("3.0.0"));
    }

    // A keyring signed by a non-root key (adding mallory) is refused; so is mallory's pointer.
    let current: Keyring = serde_json::from_str(
        &ferry_release::Envelope::from_bytes(&world.get_raw("apps/hello/keyring.json"), "keyring")
            .unwrap()
            .payload,
    )
    .unwrap();
    let mut forged = current.clone();
    forged.serial += 1;
    forged.keys.push(ferry_release::KeyringKey {
        name: "mallory".into(),
        public_key: std::fs::read_to_string(key("mallory"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .into(),
        channels: vec!["*".into()],
        revoked: false,
    });
    let envelope =
        ferry_release::sign_document(&signing_key(&world, "alice"), &forged, "forged keyring")
            .unwrap();
    world.put_raw("apps/hello/keyring.json", &envelope.to_bytes());
    world.put_raw(
        &format!("apps/hello/keyring/{}.json", forged.serial),
        &envelope.to_bytes(),
    );
    let four = world.deb("4.0.0");
    world.publish("beta", "mallory", &four, &["--new-key"]);
    for host in &beta {
        world.agent_once(host);
        let status = world.status(host);
        assert_eq!(status.state, HostState::Refused, "{status:?}");
        assert_eq!(status.version.as_deref(), Some("3.0.0"));
    }

    // A replayed older keyring (serial 5, before ci was revoked): refused; ci stays revoked.
    world.put_raw(
        "apps/hello/keyring.json",
        &world.get_raw("apps/hello/keyring/5.json"),
    );
    let five = world.deb("5.0.0");
    // (ci's own tool builds on mallory's pointer: an attacker takes what it needs.)
    let mallory = key("mallory");
    world.publish("beta", "ci", &five, &["--new-key", "--trust", &mallory]);
    for host in &beta {
        world.agent_once(host);
        let status = world.status(host);
        assert_eq!(status.version.as_deref(), Some("3.0.0"), "{status:?}");
        let accepted: Keyring =
            serde_json::from_slice(&std::fs::read(host.join("state/hello.keyring.json")).unwrap())
                .unwrap();
        assert_eq!(
            accepted.serial, 8,
            "the rotated keyring with dave stays in force"
        );
    }
}

/// The pointer `ferry publish --stage` left for `channel`.
fn staged_pointer(world: &World, channel: &str) -> (ChannelPointer, ferry_release::Envelope) {
    let envelope = ferry_release::Envelope::from_bytes(
        &world.get_raw(&format!("apps/hello/staged/{channel}.json")),
        "staged",
    )
    .unwrap();
    let pointer: ChannelPointer = serde_json::from_str(&envelope.payload).unwrap();
    (pointer, envelope)
}

#[test]
fn the_keyring_guards_channels_on_a_directory_store() {
    keyring_scenario(false);
}

#[test]
fn the_keyring_guards_channels_on_s3() {
    keyring_scenario(true);
}

#[test]
fn cloud_init_pins_the_root_key() {
    let world = World::new("trust-cloud-init", false);
    let root = world.key("root", ".pub");
    let sha = "0".repeat(64);
    let user_data = world.ok(&[
        "cloud-init",
        "--store",
        &world.store,
        "--app",
        "hello",
        "--trust-root",
        &root.display().to_string(),
        "--agent-deb",
        "https://example.invalid/ferry.deb",
        "--agent-deb-sha256",
        &sha,
    ]);
    let id = ferry_release::TrustedKeys::from_files(&[&root])
        .unwrap()
        .ids()[0]
        .to_string();
    let path = format!("/etc/ferry/root/{id}.pub");
    assert!(
        user_data.contains(&format!("path: {path}"))
            || user_data.contains(&format!("path: '{path}'"))
            || user_data.contains(&format!("path: \"{path}\"")),
        "{user_data}"
    );
    assert!(user_data.contains("trust-root = ["), "{user_data}");
    assert!(
        !user_data.contains("/etc/ferry/trusted/"),
        "no release key is pinned: {user_data}"
    );
}
