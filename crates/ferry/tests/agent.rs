//! End-to-end tests of `ferry agent`: the real binary, a real store (a `file://` directory
//! and the moto S3 server), real .debs built with `dpkg-deb`, real dpkg, and hello-service as
//! the app answering HTTP on a loopback port. The tests assert what an operator cares about:
//! which version answers, whether the service process was touched, what the status says.
//!
//! Two ways of restarting the service are used: `ferry run` (the supervisor, for the main
//! acceptance flow) and the `exec` restart method with a small script that stops the old
//! process by its pidfile and starts the new one (everywhere else, so those tests exercise the
//! agent alone).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_release::{ArtifactRef, ChannelPointer, ReleaseRef, Rollout, SigningKey};
use ferry_store::{Store, StoreOptions};
use ferry_testutil::s3::S3Server;
use ferry_testutil::{ChildGuard, Dir, free_port, workspace_binary};

const APP: &str = "hello";
const CHANNEL: &str = "stable";

fn ferry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

fn host_architecture() -> String {
    let output = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("run dpkg --print-architecture");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn hello_service_binary() -> PathBuf {
    let path = workspace_binary("hello-service");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p hello-service` (scripts/test does)",
        path.display()
    );
    path
}

/// Build a hello-service .deb with `dpkg-deb --build`: the binary at /usr/bin/hello-service,
/// its version (and optionally mode) under /usr/share/hello-service/, and a postinst that logs
/// each run into `$DPKG_ROOT/var/log/hello-postinst.log`.
fn build_deb(dir: &Dir, version: &str, mode: Option<&str>) -> PathBuf {
    let stage = dir.join(format!("stage-{version}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(stage.join("usr/bin")).unwrap();
    std::fs::create_dir_all(stage.join("usr/share/hello-service")).unwrap();
    std::fs::copy(hello_service_binary(), stage.join("usr/bin/hello-service")).unwrap();
    std::fs::write(
        stage.join("usr/share/hello-service/version"),
        format!("{version}\n"),
    )
    .unwrap();
    if let Some(mode) = mode {
        std::fs::write(
            stage.join("usr/share/hello-service/mode"),
            format!("{mode}\n"),
        )
        .unwrap();
    }
    std::fs::write(
        stage.join("DEBIAN/control"),
        format!(
            "Package: hello-service\nVersion: {version}\nArchitecture: {}\nMaintainer: Ferry Tests <tests@example.invalid>\nDescription: hello-service for ferry's agent tests\n",
            host_architecture()
        ),
    )
    .unwrap();
    let postinst = stage.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\nset -e\nmkdir -p \"$DPKG_ROOT/var/log\"\necho \"postinst $1 $(cat \"$DPKG_ROOT/usr/share/hello-service/version\")\" >> \"$DPKG_ROOT/var/log/hello-postinst.log\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join(format!("hello-service_{version}.deb"));
    let output = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "--build"])
        .arg(&stage)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(
        output.status.success(),
        "dpkg-deb --build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    deb
}

/// A GET on a fresh connection; `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The version the service answers on `/`, waiting up to 10 s for it to equal `expected`.
fn wait_for_version(port: u16, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::from("<no answer>");
    while Instant::now() < deadline {
        if let Some((200, body)) = http_get(port, "/") {
            last = body.trim().to_string();
            if last == expected {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

/// How the service under test is run and restarted.
#[derive(Clone, Copy, PartialEq)]
enum Restart {
    /// `exec` restart method with the pidfile script.
    Script,
    /// `ferry run --control`.
    Supervisor,
}

/// A world for one test: keys, a store, an install root, a port for the service.
struct World {
    dir: Dir,
    store_url: String,
    s3: Option<S3Server>,
    key: SigningKey,
    port: u16,
    restart: Restart,
    install: String,
    supervisor: Option<ChildGuard>,
    runtime: tokio::runtime::Runtime,
}

impl World {
    fn new(name: &str, s3: bool, restart: Restart) -> World {
        let dir = Dir::new(name);
        let s3 = s3.then(S3Server::start);
        let store_url = match &s3 {
            Some(server) => server.store_url("fleet"),
            None => {
                std::fs::create_dir_all(dir.join("store")).unwrap();
                format!("file://{}", dir.join("store").display())
            }
        };
        if s3.is_some() {
            // The store handles this test process opens read S3 credentials from the
            // environment. They are the same constants for every test server (the endpoint is
            // passed explicitly), so they are set once per process.
            static CREDENTIALS: std::sync::Once = std::sync::Once::new();
            CREDENTIALS.call_once(|| {
                for (name, value) in [
                    ("AWS_ACCESS_KEY_ID", ferry_testutil::s3::ACCESS_KEY_ID),
                    (
                        "AWS_SECRET_ACCESS_KEY",
                        ferry_testutil::s3::SECRET_ACCESS_KEY,
                    ),
                    ("AWS_REGION", "us-east-1"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ] {
                    // SAFETY: done once, before this test starts any thread of its own; under
                    // nextest each test is its own process.
                    unsafe { std::env::set_var(name, value) };
                }
            });
        }
        let pair = ferry_release::generate_key_pair(&dir.join("release")).unwrap();
        let key = SigningKey::from_file(&pair.secret_path, None).unwrap();
        let root = dir.join("srv");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            dir.join("restart.sh"),
            r#"#!/bin/sh
# Stop the running hello-service by its pidfile (never by name), start the current release.
root="$1"; port="$2"; pidfile="$3"; log="$4"
if [ -f "$pidfile" ]; then
  old=$(cat "$pidfile")
  kill "$old" 2>/dev/null
  i=0
  while kill -0 "$old" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i+1)); done
fi
"$root/current/usr/bin/hello-service" --listen "127.0.0.1:$port" >>"$log" 2>&1 </dev/null &
echo $! > "$pidfile"
"#,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            dir,
            store_url,
            s3,
            key,
            port: free_port(),
            restart,
            install: "unpack".into(),
            supervisor: None,
            runtime,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("srv")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("hello.pid")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    fn store(&self) -> Store {
        let options = StoreOptions {
            s3_endpoint: self.s3.as_ref().map(S3Server::endpoint),
            ..Default::default()
        };
        Store::open(&self.store_url, &options).unwrap()
    }

    /// Write the agent config; `extra_health` replaces the default HTTP health check.
    fn write_config(&self, health: &str) {
        let dir = self.dir.path().display();
        let root = self.root();
        let restart = match self.restart {
            Restart::Script => format!(
                "method = \"exec\"\ncommand = [\"sh\", \"{dir}/restart.sh\", \"{}\", \"{}\", \"{}\", \"{dir}/hello.log\"]\ntimeout = \"10s\"",
                root.display(),
                self.port,
                self.pidfile().display()
            ),
            Restart::Supervisor => format!(
                "method = \"supervisor\"\ncontrol = \"{dir}/control.sock\"\ntimeout = \"20s\""
            ),
        };
        let install = if self.install == "unpack" {
            format!("method = \"unpack\"\nroot = \"{}\"", root.display())
        } else {
            self.install.clone()
        };
        let text = format!(
            r#"store = "{store}"
app = "{APP}"
channel = "{CHANNEL}"
trust = ["{dir}/release.pub"]
interval = "100ms"
backoff-max = "1s"
state-dir = "{dir}/state"
host-id = "test-host"
[install]
{install}
[restart]
{restart}
[health]
{health}
"#,
            store = self.store_url
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn default_health(&self) -> String {
        format!(
            "http = \"http://127.0.0.1:{}/health\"\ntimeout = \"8s\"\nretry = \"100ms\"",
            self.port
        )
    }

    fn agent(&self) -> Command {
        let mut command = ferry();
        command.arg("agent").arg("--config").arg(self.config_path());
        if let Some(server) = &self.s3 {
            server.apply(&mut command);
        }
        command
    }

    /// `ferry agent --once`, with an optional crash point.
    fn agent_once(&self, crash_at: Option<&str>) -> Output {
        let mut command = self.agent();
        command.arg("--once");
        if let Some(point) = crash_at {
            command.env("FERRY_AGENT_CRASH_AT", point);
        }
        run_bounded(&mut command, Duration::from_secs(60))
    }

    fn service_pid(&self) -> Option<u32> {
        match self.restart {
            Restart::Script => std::fs::read_to_string(self.pidfile())
                .ok()?
                .trim()
                .parse()
                .ok(),
            Restart::Supervisor => {
                let answer =
                    control_request(&self.dir.join("control.sock"), r#"{"command":"status"}"#)?;
                answer.get("pid")?.as_u64().map(|pid| pid as u32)
            }
        }
    }

    /// Start `ferry run` in front of `<root>/current/usr/bin/hello-service`.
    fn start_supervisor(&mut self) {
        let mut command = ferry();
        command
            .arg("run")
            .arg("--control")
            .arg(self.dir.join("control.sock"))
            .arg("--listen")
            .arg(format!("http=127.0.0.1:{}", self.port))
            .arg("--")
            .arg(self.root().join("current/usr/bin/hello-service"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("supervisor.log")).unwrap());
        self.supervisor = Some(ChildGuard::spawn(&mut command));
        // Nothing is installed yet: the supervisor holds the port and waits for a reload.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !self.dir.join("control.sock").exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ferry publish` of a .deb to the channel.
    fn publish(&self, deb: &Path, _version: &str) {
        let mut command = ferry();
        command
            .args([
                "publish",
                "--app",
                APP,
                "--channel",
                CHANNEL,
                "--store",
                &self.store_url,
                "--key",
            ])
            .arg(self.dir.join("release.key"))
            .arg(deb);
        if let Some(server) = &self.s3 {
            server.apply(&mut command);
        }
        assert_ok(
            &run_bounded(&mut command, Duration::from_secs(60)),
            "ferry publish",
        );
    }

    /// `ferry rollback --to VERSION`: a new, higher serial naming an earlier release.
    fn rollback_to(&self, version: &str) {
        let mut command = ferry();
        command
            .args([
                "rollback",
                "--app",
                APP,
                "--channel",
                CHANNEL,
                "--store",
                &self.store_url,
                "--to",
                version,
                "--key",
            ])
            .arg(self.dir.join("release.key"));
        if let Some(server) = &self.s3 {
            server.apply(&mut command);
        }
        assert_ok(
            &run_bounded(&mut command, Duration::from_secs(60)),
            "ferry rollback",
        );
    }

    /// Write an artifact and a signed pointer directly, bypassing every publish-side check,
    /// the way an attacker or a broken tool could. Returns the artifact reference written.
    fn publish_raw(
        &self,
        artifact: &[u8],
        signed: Option<ArtifactRef>,
        version: &str,
        serial: u64,
        tweak: impl FnOnce(&mut ChannelPointer),
    ) -> ArtifactRef {
        let store = self.store();
        let sha256 = ferry_release::sha256_hex(artifact);
        let reference = signed.unwrap_or_else(|| ArtifactRef::new(&sha256, artifact.len() as u64));
        let mut pointer = ChannelPointer {
            schema: ferry_release::SCHEMA,
            app: APP.into(),
            channel: CHANNEL.into(),
            serial,
            release: ReleaseRef {
                version: version.into(),
                artifacts: [(host_architecture(), reference.clone())]
                    .into_iter()
                    .collect(),
            },
            rollout: Rollout::default(),
            paused: false,
            published_at: ferry_release::now_utc(),
            expires_at: None,
        };
        tweak(&mut pointer);
        let envelope = ferry_release::sign_document(&self.key, &pointer, "test pointer").unwrap();
        self.put(&reference.path, artifact.to_vec());
        self.put(&ChannelPointer::path(APP, CHANNEL), envelope.to_bytes());
        let _ = store;
        reference
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        let store = self.store();
        self.runtime
            .block_on(store.put_overwrite(path, Bytes::from(bytes)))
            .unwrap();
    }

    fn get(&self, path: &str) -> Option<Vec<u8>> {
        let store = self.store();
        self.runtime
            .block_on(store.get(path, 1 << 20))
            .unwrap()
            .map(|object| object.bytes.to_vec())
    }

    fn status_json(&self) -> serde_json::Value {
        let output = run_bounded(
            self.agent().args(["status", "--json"]),
            Duration::from_secs(20),
        );
        assert!(
            output.status.success(),
            "ferry agent status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn host_report(&self) -> serde_json::Value {
        let bytes = self
            .get(&format!("apps/{APP}/hosts/test-host.json"))
            .expect("a host report in the store");
        serde_json::from_slice(&bytes).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // `ferry run` stops its service on SIGTERM; a SIGKILL alone would orphan it.
        let supervised = self
            .service_pid()
            .filter(|_| self.restart == Restart::Supervisor);
        if let Some(supervisor) = self.supervisor.as_mut() {
            // SAFETY: kill(2) has no memory-safety preconditions; the PID is our child.
            unsafe { libc_kill(supervisor.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(supervisor.child().try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let scripted = std::fs::read_to_string(self.pidfile())
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        for pid in supervised.into_iter().chain(scripted) {
            // SAFETY: as above; the PID is the test's own service process.
            unsafe { libc_kill(pid as i32, 9) };
        }
    }
}

unsafe fn libc_kill(pid: i32, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    if pid > 1 {
        // SAFETY: see the caller.
        unsafe {
            kill(pid, signal);
        }
    }
}

/// One JSON line to the supervisor's control socket, one back.
fn control_request(socket: &Path, request: &str) -> Option<serde_json::Value> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    writeln!(stream, "{request}").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// Run a command to completion, killing it after `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{command:?} ran longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// publish v1 → installed and answering; publish v2 → v2; channel rollback → v1 again.
fn upgrade_and_rollback(world: &mut World) {
    world.write_config(&world.default_health());
    let v1 = build_deb(&world.dir, "1.0.0", None);
    let v2 = build_deb(&world.dir, "2.0.0", None);
    world.publish(&v1, "1.0.0");
    if world.restart == Restart::Supervisor {
        // `ferry run` holds the port before anything is installed (it retries starting the
        // missing command); the agent's first install and reload start v1.
        world.start_supervisor();
    }
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    world.publish(&v2, "2.0.0");
    assert_ok(&world.agent_once(None), "agent installing v2");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    world.rollback_to("1.0.0");
    assert_ok(&world.agent_once(None), "agent following the rollback");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let status = world.status_json();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["serial"], 3);
    assert_eq!(status["state"], "ok");
    assert_eq!(world.host_report()["version"], "1.0.0");
    // Idle: nothing changes, the service keeps its process.
    let pid = world.service_pid();
    assert_ok(&world.agent_once(None), "idle agent");
    assert_eq!(world.service_pid(), pid);
}

#[test]
fn file_store_unpack_under_ferry_run_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-file", false, Restart::Supervisor);
    upgrade_and_rollback(&mut world);
}

#[test]
fn s3_store_unpack_under_ferry_run_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-s3", true, Restart::Supervisor);
    upgrade_and_rollback(&mut world);
}

#[test]
fn file_store_unpack_with_exec_restart_publish_upgrade_and_rollback() {
    let mut world = World::new("agent-file-exec", false, Restart::Script);
    upgrade_and_rollback(&mut world);
}

#[test]
fn health_failure_rolls_back_marks_the_release_bad_and_the_next_good_one_installs() {
    let world = World::new("agent-unhealthy", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");

    world.publish(&build_deb(&world.dir, "2.0.0", Some("unhealthy")), "2.0.0");
    let output = world.agent_once(None);
    assert_eq!(
        output.status.code(),
        Some(4),
        "a rollback exits 4: {}",
        stderr(&output)
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let status = world.status_json();
    assert_eq!(status["state"], "rolled-back", "{status}");
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["bad"][0]["version"], "2.0.0", "{status}");
    let report = world.host_report();
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert!(
        report["last-error"].as_str().unwrap().contains("2.0.0"),
        "{report}"
    );

    // The bad release is not retried while the pointer still names it.
    let pid = world.service_pid();
    assert_ok(
        &world.agent_once(None),
        "agent with the bad release still published",
    );
    assert_eq!(world.service_pid(), pid);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");

    world.publish(&build_deb(&world.dir, "3.0.0", None), "3.0.0");
    assert_ok(&world.agent_once(None), "agent installing v3");
    assert_eq!(wait_for_version(world.port, "3.0.0"), "3.0.0");
    assert_eq!(world.status_json()["state"], "ok");
}

#[test]
fn a_crashing_first_process_rolls_back_too() {
    let world = World::new("agent-crash", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    world.publish(&build_deb(&world.dir, "2.0.0", Some("crash")), "2.0.0");
    assert_eq!(world.agent_once(None).status.code(), Some(4));
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    assert_eq!(
        std::fs::read_link(world.root().join("current")).unwrap(),
        Path::new("releases/1.0.0")
    );
}

/// A .deb written by hand (ar + control.tar.gz + an uncompressed data.tar with raw headers), so
/// it can hold entries `dpkg-deb --build` would never write.
fn hostile_deb(dir: &Dir, name: &str, entries: &[(&str, u8, &str)]) -> Vec<u8> {
    let control_dir = dir.join(format!("control-{name}"));
    std::fs::create_dir_all(&control_dir).unwrap();
    std::fs::write(
        control_dir.join("control"),
        format!("Package: hello-service\nVersion: 9.9.9\nArchitecture: {}\nMaintainer: T <t@example.invalid>\nDescription: hostile\n", host_architecture()),
    )
    .unwrap();
    let control_tar = dir.join(format!("control-{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&control_tar)
        .arg("-C")
        .arg(&control_dir)
        .arg("./control")
        .status()
        .unwrap();
    assert!(status.success());
    let mut data = Vec::new();
    for (path, kind, link) in entries {
        let body: &[u8] = if *kind == b'0' { b"evil\n" } else { b"" };
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = *kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        data.extend_from_slice(&header);
        data.extend_from_slice(body);
        data.resize(data.len().div_ceil(512) * 512, 0);
    }
    data.resize(data.len() + 1024, 0);
    let mut deb = b"!<arch>\n".to_vec();
    for (member, contents) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", std::fs::read(&control_tar).unwrap()),
        ("data.tar", data),
    ] {
        deb.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                member,
                0,
                0,
                0,
                "100644",
                contents.len()
            )
            .as_bytes(),
        );
        deb.extend_from_slice(&contents);
        if contents.len() % 2 == 1 {
            deb.push(b'\n');
        }
    }
    deb
}

/// Writes one bad input into the store, given the serial to use.
type BadInput<'a> = Box<dyn Fn(&World, u64) + 'a>;

#[test]
fn bad_inputs_are_refused_and_the_service_is_untouched() {
    let world = World::new("agent-bad-inputs", false, Restart::Script);
    world.write_config(&world.default_health());
    let v1 = std::fs::read(build_deb(&world.dir, "1.0.0", None)).unwrap();
    let v2 = std::fs::read(build_deb(&world.dir, "2.0.0", None)).unwrap();
    world.publish_raw(&v1, None, "1.0.0", 10, |_| {});
    assert_ok(&world.agent_once(None), "agent installing v1");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid().expect("service pid");
    let pointer_path = ChannelPointer::path(APP, CHANNEL);

    let other_pair = ferry_release::generate_key_pair(&world.dir.join("stranger")).unwrap();
    let stranger = SigningKey::from_file(&other_pair.secret_path, None).unwrap();

    let mut serial = 20;
    let mut cases: Vec<(&str, BadInput, &str)> = vec![
        (
            "bad signature",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
                let bytes = world.get(&ChannelPointer::path(APP, CHANNEL)).unwrap();
                let text = String::from_utf8(bytes).unwrap().replace("2.0.0", "2.0.1");
                world.put(&ChannelPointer::path(APP, CHANNEL), text.into_bytes());
            }),
            "signature",
        ),
        (
            "untrusted key",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
                let bytes = world.get(&ChannelPointer::path(APP, CHANNEL)).unwrap();
                let envelope = ferry_release::Envelope::from_bytes(&bytes, "pointer").unwrap();
                let pointer: ChannelPointer = serde_json::from_str(&envelope.payload).unwrap();
                let resigned =
                    ferry_release::sign_document(&stranger, &pointer, "stranger").unwrap();
                world.put(&ChannelPointer::path(APP, CHANNEL), resigned.to_bytes());
            }),
            "trusted",
        ),
        (
            "lower serial",
            Box::new(|world: &World, _| drop(world.publish_raw(&v2, None, "2.0.0", 5, |_| {}))),
            "serial",
        ),
        (
            "expired pointer",
            Box::new(|world: &World, serial| {
                world.publish_raw(&v2, None, "2.0.0", serial, |pointer| {
                    pointer.expires_at = Some(ferry_release::now_utc() - time::Duration::hours(1));
                });
            }),
            "expire",
        ),
        (
            "truncated download",
            Box::new(|world: &World, serial| {
                let full = ArtifactRef::new(&ferry_release::sha256_hex(&v2), v2.len() as u64);
                world.publish_raw(&v2[..v2.len() / 2], Some(full), "2.0.0", serial, |_| {});
            }),
            "bytes",
        ),
        (
            "artifact hash mismatch",
            Box::new(|world: &World, serial| {
                let mut tampered = v2.clone();
                let middle = tampered.len() / 2;
                tampered[middle] ^= 0xff;
                let signed = ArtifactRef::new(&ferry_release::sha256_hex(&v2), v2.len() as u64);
                world.publish_raw(&tampered, Some(signed), "2.0.0", serial, |_| {});
            }),
            "sha256 mismatch",
        ),
        (
            "oversized document",
            Box::new(|world: &World, _| {
                world.put(&ChannelPointer::path(APP, CHANNEL), vec![b' '; 2 << 20])
            }),
            "limit",
        ),
    ];
    for (name, entries) in [
        (
            "dot-dot path",
            vec![("./usr/", b'5', ""), ("./../../escaped", b'0', "")],
        ),
        (
            "absolute path",
            vec![("/tmp/ferry-agent-test-escaped", b'0', "")],
        ),
        (
            "escaping symlink",
            vec![
                ("./usr/", b'5', ""),
                ("./usr/link", b'2', "../../../../etc"),
            ],
        ),
    ] {
        let deb = hostile_deb(&world.dir, name.split(' ').next().unwrap(), &entries);
        cases.push((
            name,
            Box::new(move |world: &World, serial| {
                drop(world.publish_raw(&deb, None, "9.9.9", serial, |_| {}))
            }),
            match name {
                "dot-dot path" => "`..`",
                "absolute path" => "absolute",
                _ => "pointing out",
            },
        ));
    }
    for (name, make, expected) in cases {
        serial += 1;
        make(&world, serial);
        let output = world.agent_once(None);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{name}: expected a refusal (exit 3), got {}:\n{}",
            output.status,
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{name}: the log should say {expected:?}:\n{}",
            stderr(&output)
        );
        assert_eq!(
            world.service_pid(),
            Some(pid),
            "{name}: the service was restarted"
        );
        assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0", "{name}");
        assert_eq!(
            std::fs::read_link(world.root().join("current")).unwrap(),
            Path::new("releases/1.0.0"),
            "{name}"
        );
        assert_eq!(world.status_json()["state"], "refused", "{name}");
    }
    assert!(!world.dir.join("escaped").exists() && !world.root().join("escaped").exists());
    assert!(!Path::new("/tmp/ferry-agent-test-escaped").exists());
    let _ = pointer_path;

    // After all that, a good release still installs.
    serial += 1;
    world.publish_raw(&v2, None, "2.0.0", serial, |_| {});
    assert_ok(
        &world.agent_once(None),
        "agent installing v2 after the refusals",
    );
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

/// A TCP forwarder in front of the S3 server that can be switched off (the port then refuses
/// connections, as if the server were stopped) and on again, keeping the server's data.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    fn start(upstream: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (open_flag, stop_flag) = (open.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !stop_flag.load(Ordering::Relaxed) {
                if !open_flag.load(Ordering::Relaxed) {
                    listener = None; // closed port: connection refused
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let active = match &listener {
                    Some(active) => active,
                    None => match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(bound) => listener.insert(bound),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                active.set_nonblocking(true).unwrap();
                match active.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Gate { port, open, stop }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn metrics_value(port: u16, name: &str) -> Option<u64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|line| line.starts_with(name))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn store_down_backs_off_without_touching_the_service_and_recovers() {
    let world = World::new("agent-store-down", true, Restart::Script);
    let gate = Gate::start(world.s3.as_ref().unwrap().port());
    // The agent reaches the store only through the gate.
    let gated = format!("http://127.0.0.1:{}", gate.port);
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replacen("app = ", &format!("s3-endpoint = \"{gated}\"\napp = "), 1),
    )
    .unwrap();
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");

    let metrics_port = free_port();
    let mut command = world.agent();
    command
        .env_remove("FERRY_S3_ENDPOINT")
        .env("AWS_ENDPOINT_URL", &gated)
        .arg("--metrics")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.dir.join("agent.log")).unwrap());
    let mut agent = ChildGuard::spawn(&mut command);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid();

    gate.open.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut errors = 0;
    while Instant::now() < deadline && errors < 3 {
        std::thread::sleep(Duration::from_millis(100));
        errors = metrics_value(metrics_port, "ferry_agent_errors_total").unwrap_or(errors);
    }
    let log = std::fs::read_to_string(world.dir.join("agent.log")).unwrap();
    assert!(
        errors >= 3,
        "the agent should fail polls while the store is down (errors: {errors}):\n{log}"
    );
    assert!(
        agent.child().try_wait().unwrap().is_none(),
        "the agent must keep running while the store is down"
    );
    assert_eq!(
        world.service_pid(),
        pid,
        "the service must not be restarted while the store is down"
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    assert!(log.contains("backing off"), "{log}");

    // A new release while the store is unreachable to the agent; then the store comes back.
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    gate.open.store(true, Ordering::Relaxed);
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
    // The commit follows the health check, a moment after the service first answers v2.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline
        && metrics_value(metrics_port, "ferry_agent_installs_total").unwrap_or(0) < 2
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metrics_value(metrics_port, "ferry_agent_installs_total").unwrap_or(0) >= 2);
    assert_eq!(
        metrics_value(metrics_port, "ferry_agent_current_serial"),
        Some(2)
    );
}

#[test]
fn dpkg_method_in_a_sandboxed_root_installs_upgrades_and_rolls_back() {
    let mut world = World::new("agent-dpkg", false, Restart::Script);
    let root = world.dir.join("dpkg-root");
    for dir in [
        "var/lib/dpkg/updates",
        "var/lib/dpkg/info",
        "var/lib/dpkg/triggers",
        "var/log",
        "usr/bin",
        "usr/share",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    world.install = format!(
        "method = \"dpkg\"\ndpkg-args = [\"--root={root}\", \"--log={root}/var/log/dpkg.log\", \"--force-script-chrootless\", \"--force-depends\", \"--force-not-root\"]\nlock-timeout = \"30s\"",
        root = root.display()
    );
    world.restart = Restart::Script;
    // Health: the installed package's mode file must not say "unhealthy".
    let health = format!(
        "command = [\"sh\", \"-c\", \"test -f {root}/usr/bin/hello-service && ! grep -q unhealthy {root}/usr/share/hello-service/mode 2>/dev/null\"]\ntimeout = \"10s\"\nretry = \"100ms\"",
        root = root.display()
    );
    world.write_config(&health);
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replace(
            &config[config.find("[restart]").unwrap()..config.find("[health]").unwrap()],
            "[restart]\nmethod = \"none\"\n",
        ),
    )
    .unwrap();
    let installed_version = || {
        let output = Command::new("dpkg-query")
            .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
            .args(["-W", "-f", "${Version} ${Status}", "hello-service"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "dpkg install of v1");
    assert_eq!(installed_version(), "1.0.0 install ok installed");
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    // Another package manager holds the dpkg lock for a moment: the agent waits for it.
    let lock = root.join("var/lib/dpkg/lock");
    let mut holder = ChildGuard::spawn(
        Command::new("python3")
            .args(["-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(2)"])
            .arg(&lock)
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.child().stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let upgrade = world.agent_once(None);
    assert_ok(&upgrade, "dpkg upgrade to v2");
    assert!(
        stderr(&upgrade).contains("dpkg is locked by another process; waiting"),
        "{}",
        stderr(&upgrade)
    );
    let _ = holder.child().wait();
    assert_eq!(installed_version(), "2.0.0 install ok installed");
    world.publish(&build_deb(&world.dir, "3.0.0", Some("unhealthy")), "3.0.0");
    assert_eq!(
        world.agent_once(None).status.code(),
        Some(4),
        "an unhealthy v3 is rolled back"
    );
    assert_eq!(installed_version(), "2.0.0 install ok installed");
    let postinst = std::fs::read_to_string(root.join("var/log/hello-postinst.log")).unwrap();
    let runs: Vec<&str> = postinst.lines().collect();
    assert_eq!(
        runs,
        [
            "postinst configure 1.0.0",
            "postinst configure 2.0.0",
            "postinst configure 3.0.0",
            "postinst configure 2.0.0"
        ],
        "{postinst}"
    );
    assert_eq!(world.status_json()["state"], "rolled-back");
}

/// kill -9 the agent at `point` during an update from v1 to v2 (v2 `unhealthy` for the
/// rollback points), start it again, and check it ends consistent: the journal idle, the
/// service answering the version the journal says is installed.
fn crash_and_resume(point: &str) {
    crash_and_resume_with(point, Restart::Script);
}

fn crash_and_resume_with(point: &str, restart: Restart) {
    let mut world = World::new(&format!("agent-crash-{point}"), false, restart);
    world.write_config(&world.default_health());
    if restart == Restart::Supervisor {
        world.start_supervisor();
    }
    let rollback = point.starts_with("roll");
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&world.agent_once(None), "agent installing v1");
    world.publish(
        &build_deb(&world.dir, "2.0.0", rollback.then_some("unhealthy")),
        "2.0.0",
    );

    let crashed = world.agent_once(Some(point));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(9),
        "the agent should die by SIGKILL at {point} (if it ran to the end, the ferry binary was \
         built without the `fault-injection` feature, e.g. by a concurrent plain `cargo build`; \
         test builds enable it through ferry's dev-dependency): {}",
        stderr(&crashed)
    );
    let journal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.dir.join("state/hello.stable.state.json")).unwrap(),
    )
    .unwrap();
    eprintln!(
        "journal after the crash at {point}: step {}",
        journal["step"]["name"]
    );

    let resumed = world.agent_once(None);
    assert!(
        resumed.status.code().is_some(),
        "the resumed agent exits normally: {}",
        stderr(&resumed)
    );
    // One more cycle settles any follow-up (e.g. re-reading the pointer after a resume).
    let _ = world.agent_once(None);
    let status = world.status_json();
    assert_eq!(status["step"], "idle", "{status}");
    let expected = if rollback { "1.0.0" } else { "2.0.0" };
    assert_eq!(status["version"], expected, "{status}");
    assert_eq!(
        wait_for_version(world.port, expected),
        expected,
        "after a crash at {point}"
    );
    assert_eq!(
        std::fs::read_link(world.root().join("current")).unwrap(),
        Path::new("releases").join(expected)
    );
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            crash_and_resume($point);
        }
    )*};
}

crash_tests! {
    kill_9_while_downloading => "downloading",
    kill_9_after_download => "downloaded",
    kill_9_while_installing => "installing",
    kill_9_after_install => "installed",
    kill_9_while_restarting => "restarting",
    kill_9_after_restart => "restarted",
    kill_9_while_checking => "checking",
    kill_9_after_commit => "committed",
    kill_9_while_rolling_back => "rolling-back",
    kill_9_after_rollback => "rolled-back",
}

#[test]
fn kill_9_after_the_swap_under_ferry_run() {
    crash_and_resume_with("restarted", Restart::Supervisor);
}

#[test]
fn kill_9_while_rolling_back_under_ferry_run() {
    crash_and_resume_with("rolling-back", Restart::Supervisor);
}

#[test]
fn every_crash_point_has_a_test() {
    let source = include_str!("agent.rs");
    for point in ferry_agent::fault::POINTS {
        assert!(
            source.contains(&format!("=> \"{point}\"")),
            "crash point {point} has no kill -9 test"
        );
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = Dir::new("agent-config");
    let config = dir.write(
        "agent.toml",
        "store = \"file:///nowhere\"\napp = \"hello\"\nintreval = \"5s\"\n",
    );
    let output = run_bounded(
        ferry()
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--once"),
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("intreval"), "{}", stderr(&output));
}

#[test]
fn a_store_that_ignores_if_none_match_still_costs_no_update_and_still_updates() {
    let world = World::new("agent-no-conditional-get", true, Restart::Script);
    let proxy =
        ferry_testutil::s3::ConditionStrippingProxy::start(world.s3.as_ref().unwrap().port());
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        config.replacen(
            "app = ",
            &format!("s3-endpoint = \"{}\"\napp = ", proxy.endpoint()),
            1,
        ),
    )
    .unwrap();
    let agent_once = || {
        let mut command = world.agent();
        command
            .env_remove("FERRY_S3_ENDPOINT")
            .env("RUST_LOG", "debug")
            .arg("--once");
        run_bounded(&mut command, Duration::from_secs(60))
    };
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    assert_ok(&agent_once(), "agent installing v1 through the proxy");
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let pid = world.service_pid();
    let idle = agent_once();
    assert_ok(&idle, "idle agent through the proxy");
    assert!(
        stderr(&idle).contains("pointer not modified"),
        "{}",
        stderr(&idle)
    );
    assert!(
        !stderr(&idle).contains("pointer verified"),
        "{}",
        stderr(&idle)
    );
    assert_eq!(world.service_pid(), pid);
    world.publish(&build_deb(&world.dir, "2.0.0", None), "2.0.0");
    assert_ok(&agent_once(), "agent installing v2 through the proxy");
    assert_eq!(wait_for_version(world.port, "2.0.0"), "2.0.0");
}

#[test]
fn a_second_agent_for_the_same_app_is_refused_while_one_runs() {
    let world = World::new("agent-lock", false, Restart::Script);
    world.write_config(&world.default_health());
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    let mut command = world.agent();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(world.dir.join("agent.log")).unwrap());
    let _daemon = ChildGuard::spawn(&mut command);
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let second = world.agent_once(None);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    // Reading the status does not need the lock (the commit may land a moment after the
    // service answers, so wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && world.status_json()["version"] != "1.0.0" {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(world.status_json()["version"], "1.0.0");
}

#[test]
fn environment_overrides_fill_in_and_beat_the_file() {
    let world = World::new("agent-env", false, Restart::Script);
    world.write_config(&world.default_health());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    let config: String = config
        .lines()
        .filter(|line| !line.starts_with("store =") && !line.starts_with("host-id ="))
        .map(|line| {
            if line.starts_with("app =") {
                "app = \"not-this-app\"\n".to_string()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(world.config_path(), config).unwrap();
    world.publish(&build_deb(&world.dir, "1.0.0", None), "1.0.0");
    let mut command = world.agent();
    command
        .arg("--once")
        .env("FERRY_STORE", &world.store_url)
        .env("FERRY_APP", APP)
        .env("FERRY_HOST_ID", "from-the-environment");
    assert_ok(
        &run_bounded(&mut command, Duration::from_secs(60)),
        "agent configured by the environment",
    );
    assert_eq!(wait_for_version(world.port, "1.0.0"), "1.0.0");
    let report = world
        .get(&format!("apps/{APP}/hosts/from-the-environment.json"))
        .expect("the report under the host id from the environment");
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["version"], "1.0.0");
}
