//! The world the agent's end-to-end tests run in: keys, a store (a `file://` directory or
//! the moto S3 server), an install root, hello-service .debs built with `dpkg-deb`, the service
//! run by `ferry run` or by a pidfile script, and the real `ferry` binary driving all of it.
//! Shared by `tests/agent.rs` and `tests/hardening.rs`.
#![allow(dead_code)]

use std::io::Write;
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

pub const APP: &str = "hello";
pub const CHANNEL: &str = "stable";

pub fn ferry() -> Command {
    ferry_testutil::ferry_command(Path::new(env!("CARGO_BIN_EXE_ferry")))
}

pub fn host_architecture() -> String {
    let output = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("run dpkg --print-architecture");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

pub fn hello_service_binary() -> PathBuf {
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
pub fn build_deb(dir: &Dir, version: &str, mode: Option<&str>) -> PathBuf {
    build_deb_with_files(dir, version, mode, &[])
}

/// [`build_deb`] with extra files, each `(path under the root, contents)`.
pub fn build_deb_with_files(
    dir: &Dir,
    version: &str,
    mode: Option<&str>,
    extra: &[(&str, Vec<u8>)],
) -> PathBuf {
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
    for (path, contents) in extra {
        let target = stage.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, contents).unwrap();
    }
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
pub use ferry_testutil::fleet::http_get;

/// The version the service answers on `/`, waiting up to 10 s for it to equal `expected`.
pub fn wait_for_version(port: u16, expected: &str) -> String {
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
pub enum Restart {
    /// `exec` restart method with the pidfile script.
    Script,
    /// `ferry run --control`.
    Supervisor,
}

/// A world for one test: keys, a store, an install root, a port for the service.
pub struct World {
    pub dir: Dir,
    pub store_url: String,
    pub s3: Option<S3Server>,
    pub key: SigningKey,
    pub port: u16,
    pub restart: Restart,
    pub install: String,
    pub supervisor: Option<ChildGuard>,
    pub runtime: tokio::runtime::Runtime,
}

impl World {
    pub fn new(name: &str, s3: bool, restart: Restart) -> World {
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

    pub fn root(&self) -> PathBuf {
        self.dir.join("srv")
    }

    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("hello.pid")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn store(&self) -> Store {
        let options = StoreOptions {
            s3_endpoint: self.s3.as_ref().map(S3Server::endpoint),
            ..Default::default()
        };
        Store::open(&self.store_url, &options).unwrap()
    }

    /// Write the agent config; `extra_health` replaces the default HTTP health check.
    pub fn write_config(&self, health: &str) {
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
        // Through the agent's own writer: the bodies above are parsed into its types first.
        let file = ferry_agent::AgentFile {
            store: Some(self.store_url.clone()),
            app: Some(APP.into()),
            channel: Some(CHANNEL.into()),
            trust: vec![self.dir.join("release.pub")],
            interval: Some("100ms".into()),
            backoff_max: Some("1s".into()),
            state_dir: Some(self.dir.join("state")),
            host_id: Some("test-host".into()),
            install: Some(ferry_testutil::fleet::toml_table(&install, "install")),
            restart: Some(ferry_testutil::fleet::toml_table(&restart, "restart")),
            health: Some(ferry_testutil::fleet::toml_table(health, "health")),
            ..Default::default()
        };
        let text = file.to_toml().unwrap();
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn default_health(&self) -> String {
        format!(
            "http = \"http://127.0.0.1:{}/health\"\ntimeout = \"8s\"\nretry = \"100ms\"",
            self.port
        )
    }

    pub fn agent(&self) -> Command {
        let mut command = ferry();
        command.arg("agent").arg("--config").arg(self.config_path());
        if let Some(server) = &self.s3 {
            server.apply(&mut command);
        }
        command
    }

    /// `ferry agent --once`, with an optional crash point.
    pub fn agent_once(&self, crash_at: Option<&str>) -> Output {
        let mut command = self.agent();
        command.arg("--once");
        if let Some(point) = crash_at {
            command.env("FERRY_AGENT_CRASH_AT", point);
        }
        run_bounded(&mut command, Duration::from_secs(60))
    }

    pub fn service_pid(&self) -> Option<u32> {
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
    pub fn start_supervisor(&mut self) {
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

    /// `ferry SUBCOMMAND` on this world's channel, signed with its key (the S3 endpoint and
    /// credentials set when the store is S3); more arguments can be added before it runs.
    pub fn channel_command(&self, subcommand: &str) -> Command {
        let mut command = ferry();
        command
            .args([subcommand, "--app", APP, "--channel", CHANNEL, "--store"])
            .arg(&self.store_url)
            .arg("--key")
            .arg(self.dir.join("release.key"));
        if let Some(server) = &self.s3 {
            server.apply(&mut command);
        }
        command
    }

    /// `ferry publish` of a .deb to the channel.
    pub fn publish(&self, deb: &Path, _version: &str) {
        let mut command = self.channel_command("publish");
        command.arg(deb);
        assert_ok(
            &run_bounded(&mut command, Duration::from_secs(60)),
            "ferry publish",
        );
    }

    /// `ferry rollback --to VERSION`: a new, higher serial naming an earlier release.
    pub fn rollback_to(&self, version: &str) {
        let mut command = self.channel_command("rollback");
        command.args(["--to", version]);
        assert_ok(
            &run_bounded(&mut command, Duration::from_secs(60)),
            "ferry rollback",
        );
    }

    /// Write an artifact and a signed pointer directly, bypassing every publish-side check,
    /// the way an attacker or a broken tool could. Returns the artifact reference written.
    pub fn publish_raw(
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
            urgent: false,
            published_at: ferry_release::now_utc(),
            expires_at: None,
        };
        tweak(&mut pointer);
        let envelope = ferry_release::sign_document(&self.key, &pointer, "test pointer").unwrap();
        self.put(&reference.path, artifact.to_vec());
        // As a publish would: the history entry first, so later publishes can build on it.
        self.put(
            &ChannelPointer::history_path(APP, CHANNEL, pointer.serial),
            envelope.to_bytes(),
        );
        self.put(&ChannelPointer::path(APP, CHANNEL), envelope.to_bytes());
        let _ = store;
        reference
    }

    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        let store = self.store();
        self.runtime
            .block_on(store.put_overwrite(path, Bytes::from(bytes)))
            .unwrap();
    }

    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        let store = self.store();
        self.runtime
            .block_on(store.get(path, 1 << 20))
            .unwrap()
            .map(|object| object.bytes.to_vec())
    }

    pub fn status_json(&self) -> serde_json::Value {
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

    pub fn host_report(&self) -> serde_json::Value {
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

pub unsafe fn libc_kill(pid: i32, signal: i32) {
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
pub fn control_request(socket: &Path, request: &str) -> Option<serde_json::Value> {
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
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
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

pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A .deb written by hand (ar + control.tar.gz + an uncompressed data.tar with raw headers), so
/// it can hold entries `dpkg-deb --build` would never write.
pub fn hostile_deb(dir: &Dir, name: &str, entries: &[(&str, u8, &str)]) -> Vec<u8> {
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
    deb_with_data(dir, name, "9.9.9", data)
}

/// A .deb of hello-service `version` whose uncompressed `data.tar` member is `data` as given
/// (for archives `dpkg-deb --build` would not write: raw headers, GNU sparse entries).
pub fn deb_with_data(dir: &Dir, name: &str, version: &str, data: Vec<u8>) -> Vec<u8> {
    let control_dir = dir.join(format!("control-{name}"));
    std::fs::create_dir_all(&control_dir).unwrap();
    std::fs::write(
        control_dir.join("control"),
        format!("Package: hello-service\nVersion: {version}\nArchitecture: {}\nMaintainer: T <t@example.invalid>\nDescription: hand-made\n", host_architecture()),
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

/// A TCP forwarder in front of the S3 server that can be switched off (the port then refuses
/// connections, as if the server were stopped) and on again, keeping the server's data.
pub struct Gate {
    pub port: u16,
    pub open: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
}

impl Gate {
    pub fn start(upstream: u16) -> Gate {
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

pub fn metrics_value(port: u16, name: &str) -> Option<u64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|line| line.starts_with(name))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
