//! `ferry deploy` end to end, on file:// and S3: a git checkout with a ferry.toml whose
//! `[deploy]` table names the store and a key held in an environment variable, three agents
//! following the channel. A healthy release rolls out (exit 0) with its provenance recorded;
//! a dirty tree and a held deploy lock are refused (exit 6) with nothing published; an
//! unhealthy release is rolled back (exit 3) and the hosts stay on the last good one. The
//! `pre` hooks write the build inputs, the `post` hooks see how the rollout ended, and a
//! local webhook receives every step (`--notify`), its first answer a 503 to be retried,
//! while a second, dead webhook holds nothing up.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_testutil::Dir;
use ferry_testutil::fleet::{GroupGuard, run_bounded, wait_for};
use ferry_testutil::s3::TestStore;

const HOSTS: [&str; 3] = ["d1", "d2", "d3"];

struct Checkout {
    dir: Dir,
    repo: PathBuf,
    store: TestStore,
    key_text: String,
    public: PathBuf,
}

fn git(repo: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=ferry tests",
            "-c",
            "user.email=tests@example.com",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Checkout {
    fn new(s3: bool) -> Checkout {
        let dir = Dir::new(if s3 { "deploy-s3" } else { "deploy-dir" });
        let store = TestStore::new(dir.path(), s3, "deploy");
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        support::ok(support::ferry().arg("keygen").arg(keys.join("release")));
        let key_text = std::fs::read_to_string(keys.join("release.key")).unwrap();
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("build")).unwrap();
        let results = dir.join("results");
        std::fs::create_dir_all(&results).unwrap();
        let manifest = format!(
            r#"[package]
name = "hello"
version = "1.0.0"
maintainer = "ferry deploy tests <deploy@example.com>"
description = "hello-service for the deploy test"
section = "net"

[[files]]
source = "/bin/true"
dest = "/usr/bin/hello-service"
mode = "0755"

[[files]]
source = "build/version"
dest = "/usr/share/hello-service/version"

[[files]]
source = "build/mode"
dest = "/usr/share/hello-service/mode"

[deploy]
store = "{store}"
key = "env:FERRY_TEST_DEPLOY_KEY"
max-failures = "0"
rollback = true
timeout = "90s"
pre = [
    "printf '%s\n' \"$FERRY_DEPLOY_VERSION\" > build/version",
    "if [ \"$FERRY_DEPLOY_VERSION\" = 3.0.0 ]; then echo unhealthy; else echo ok; fi > build/mode",
]
post = ["echo \"$FERRY_DEPLOY_VERSION $FERRY_DEPLOY_RESULT\" >> {results}/post.log"]
"#,
            store = store.url,
            results = results.display()
        );
        std::fs::write(repo.join("ferry.toml"), manifest).unwrap();
        std::fs::write(repo.join(".gitignore"), "build/\ntarget/\n").unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "ferry.toml", ".gitignore"]);
        git(&repo, &["commit", "-q", "-m", "hello"]);
        Checkout {
            public: keys.join("release.pub"),
            dir,
            repo,
            store,
            key_text,
        }
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        let mut command = support::ferry();
        command
            .arg("deploy")
            .arg("--config")
            .arg(self.repo.join("ferry.toml"))
            .args(["--interval", "300ms", "--create-store"])
            .args(extra)
            .env("FERRY_TEST_DEPLOY_KEY", &self.key_text);
        for (name, value) in &self.store.environment {
            command.env(name, value);
        }
        run_bounded(&mut command, Duration::from_secs(180))
    }

    fn ferry(&self, args: &[&str]) -> Output {
        let mut command = support::ferry();
        command.args(args);
        for (name, value) in &self.store.environment {
            command.env(name, value);
        }
        run_bounded(&mut command, Duration::from_secs(60))
    }

    fn agent(&self, host: &str) -> GroupGuard {
        let root = self.dir.join(host);
        let file = ferry_agent::AgentFile {
            store: Some(self.store.url.clone()),
            app: Some("hello".into()),
            channel: Some("stable".into()),
            trust: vec![self.public.clone()],
            host_id: Some(host.into()),
            interval: Some("200ms".into()),
            jitter: Some("50ms".into()),
            state_dir: Some(root.join("state")),
            cache_dir: Some(root.join("cache")),
            install: Some(ferry_agent::config::InstallFile::Unpack {
                root: root.join("srv"),
                keep: None,
            }),
            health: Some(ferry_agent::config::HealthFile {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "test \"$(cat {}/srv/current/usr/share/hello-service/mode)\" = ok",
                        root.display()
                    ),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let config = self.dir.join(format!("{host}.toml"));
        std::fs::write(&config, file.to_toml().unwrap()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(["agent", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in &self.store.environment {
            command.env(name, value);
        }
        GroupGuard::spawn(&mut command)
    }

    fn installed(&self, host: &str) -> Option<String> {
        std::fs::read_to_string(
            self.dir
                .join(host)
                .join("srv/current/usr/share/hello-service/version"),
        )
        .ok()
        .map(|text| text.trim().to_owned())
    }

    fn serials(&self) -> usize {
        let output = self.ferry(&[
            "releases",
            "--store",
            &self.store.url,
            "--app",
            "hello",
            "--json",
        ]);
        assert!(output.status.success(), "{}", text(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        list.as_array().map_or(0, Vec::len)
    }
}

/// A webhook on 127.0.0.1 that records every JSON body POSTed to it; it answers the first
/// request 503 (the sender must retry), the rest 200.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
        let seen = bodies.clone();
        std::thread::spawn(move || {
            let mut answered = 0;
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                answered += 1;
                let status = if answered == 1 {
                    "503 Service Unavailable"
                } else {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or_default());
                    "200 OK"
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Webhook { url, bodies }
    }

    fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|body| body["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn deploy_end_to_end(s3: bool) {
    let checkout = Checkout::new(s3);

    // The plan, with nothing written.
    let planned = checkout.deploy(&["--dry-run"]);
    assert!(planned.status.success(), "{}", text(&planned));
    assert!(text(&planned).contains("dry run: nothing run, packed or written"));
    assert!(
        !checkout.repo.join("build/version").exists(),
        "a dry run ran a hook"
    );

    // The first deploy creates the channel; the agents then follow it.
    let first = checkout.deploy(&["--no-watch"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let _agents: Vec<GroupGuard> = HOSTS.iter().map(|host| checkout.agent(host)).collect();
    let on = |version: &str| {
        wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
            HOSTS
                .iter()
                .all(|host| checkout.installed(host).as_deref() == Some(version))
                .then_some(())
        })
        .is_some()
    };
    assert!(on("1.0.0"), "the hosts never ran 1.0.0");

    // A healthy release, watched to the end, each step told to the webhooks (one dead).
    let webhook = Webhook::start();
    let dead = format!("http://127.0.0.1:{}/nobody", ferry_testutil::free_port());
    let notify = ["--notify", webhook.url.as_str(), "--notify", dead.as_str()];
    let healthy = checkout.deploy(&[&["--version", "2.0.0"][..], &notify].concat());
    assert_eq!(healthy.status.code(), Some(0), "{}", text(&healthy));
    assert!(
        text(&healthy).contains("rolled out 2.0.0"),
        "{}",
        text(&healthy)
    );
    assert!(on("2.0.0"));
    // Its provenance: the commit, a clean tree, the branch.
    let releases = checkout.ferry(&["releases", "--store", &checkout.store.url, "--app", "hello"]);
    assert!(releases.status.success(), "{}", text(&releases));
    let listed = text(&releases);
    assert!(
        listed.contains("commit ") && listed.contains(" on main"),
        "{listed}"
    );
    assert!(!listed.contains("(dirty)"), "{listed}");

    // A dirty tree is refused; nothing is published.
    let before = checkout.serials();
    std::fs::write(checkout.repo.join("ferry.toml.orig"), "leftover").unwrap();
    let dirty = checkout.deploy(&["--version", "2.1.0"]);
    assert_eq!(dirty.status.code(), Some(6), "{}", text(&dirty));
    assert!(
        text(&dirty).contains("uncommitted changes"),
        "{}",
        text(&dirty)
    );
    assert_eq!(checkout.serials(), before, "a refused deploy published");
    std::fs::remove_file(checkout.repo.join("ferry.toml.orig")).unwrap();

    // Another deploy's lock is respected, shown by status, and breakable.
    let lock = serde_json::json!({
        "owner": "someone@elsewhere",
        "version": "9.9.9",
        "since": "2026-12-01T10:00:00Z",
        "expires-at": "2099-01-01T00:00:00Z",
    });
    write_object(
        &checkout,
        "apps/hello/locks/stable.json",
        serde_json::to_vec(&lock).unwrap(),
    );
    let held = checkout.deploy(&["--version", "2.1.0"]);
    assert_eq!(held.status.code(), Some(6), "{}", text(&held));
    assert!(
        text(&held).contains("someone@elsewhere is deploying 9.9.9"),
        "{}",
        text(&held)
    );
    assert_eq!(checkout.serials(), before);
    let status = checkout.ferry(&["status", "--store", &checkout.store.url, "--app", "hello"]);
    assert!(
        text(&status).contains("deploy in progress: 9.9.9 by someone@elsewhere"),
        "{}",
        text(&status)
    );

    // An unhealthy release (the pre hook marks 3.0.0 unhealthy): rolled back, exit 3, and
    // the hosts stay on 2.0.0. --break-lock takes the stale lock over.
    let unhealthy =
        checkout.deploy(&[&["--version", "3.0.0", "--break-lock"][..], &notify].concat());
    assert_eq!(unhealthy.status.code(), Some(3), "{}", text(&unhealthy));
    assert!(text(&unhealthy).contains("took over the deploy lock of someone@elsewhere"));
    assert!(
        text(&unhealthy).contains("rolled back"),
        "{}",
        text(&unhealthy)
    );
    for host in HOSTS {
        assert_eq!(checkout.installed(host).as_deref(), Some("2.0.0"), "{host}");
    }
    // The lock is gone with the deploy.
    let status = checkout.ferry(&[
        "status",
        "--store",
        &checkout.store.url,
        "--app",
        "hello",
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["deploy_lock"].is_null(), "{status}");
    assert_eq!(status["pointer"]["version"], "2.0.0");

    // The webhook heard both rollouts, in order, the first event despite its 503.
    assert_eq!(
        webhook.events(),
        ["started", "done", "started", "hosts-failed", "rolled-back"],
        "{:?}",
        webhook.bodies.lock().unwrap()
    );
    let bodies = webhook.bodies.lock().unwrap().clone();
    assert_eq!(bodies[1]["version"], "2.0.0");
    assert_eq!(bodies[1]["updated"], 3);
    assert!(
        bodies[4]["text"]
            .as_str()
            .unwrap()
            .contains("rolled back hello/stable from 3.0.0 to 2.0.0"),
        "{}",
        bodies[4]
    );

    let post = std::fs::read_to_string(checkout.dir.join("results/post.log")).unwrap();
    assert_eq!(
        post.lines().collect::<Vec<_>>(),
        ["1.0.0 published", "2.0.0 rolled-out", "3.0.0 rolled-back"],
        "{post}"
    );
}

/// Write an object into the store as another tool would.
fn write_object(checkout: &Checkout, path: &str, bytes: Vec<u8>) {
    match &checkout.store.server {
        None => {
            let root = PathBuf::from(checkout.store.url.strip_prefix("file://").unwrap());
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        Some(server) => {
            let local = checkout.dir.join("object.json");
            std::fs::write(&local, bytes).unwrap();
            let mut command = Command::new("aws");
            command
                .args(["--endpoint-url", &server.endpoint(), "s3", "cp", "--quiet"])
                .arg(&local)
                .arg(format!("{}/{path}", checkout.store.url));
            server.apply(&mut command);
            support::ok(&mut command);
        }
    }
}

#[test]
fn deploy_on_a_directory_store() {
    deploy_end_to_end(false);
}

#[test]
fn deploy_on_s3() {
    deploy_end_to_end(true);
}
