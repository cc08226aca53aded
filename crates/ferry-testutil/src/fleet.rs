//! Helpers for running a fleet of hosts on one machine, shared by the fleet test and the
//! fleet benchmark: a publisher that drives the real `ferry keygen/pack/publish/rollback`,
//! agent config files, process groups that are stopped for sure when dropped, plain HTTP
//! GETs on loopback, and CPU / memory readings from `/proc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Drives the real `ferry` binary for everything a release engineer does: keygen, pack,
/// publish, rollback. Every command must succeed; a failure panics with its stderr.
pub struct Publisher {
    ferry: PathBuf,
    dir: PathBuf,
    store: String,
    environment: Vec<(&'static str, String)>,
    app: String,
    channel: String,
}

impl Publisher {
    /// A publisher working in `dir` (keys and builds go there) against `store`, with
    /// `environment` (the S3 endpoint and credentials) set on every command.
    pub fn new(
        ferry: &Path,
        dir: &Path,
        store: &str,
        environment: Vec<(&'static str, String)>,
        app: &str,
        channel: &str,
    ) -> Publisher {
        std::fs::create_dir_all(dir.join("build")).expect("create the build directory");
        Publisher {
            ferry: ferry.to_path_buf(),
            dir: dir.to_path_buf(),
            store: store.to_string(),
            environment,
            app: app.to_string(),
            channel: channel.to_string(),
        }
    }

    /// A publisher with a fresh key (in `<dir>/work`) and a new, empty `file://` store at
    /// `<dir>/store`; returns it with the store URL.
    pub fn on_directory_store(
        ferry: &Path,
        dir: &Path,
        app: &str,
        channel: &str,
    ) -> (Publisher, String) {
        let store_dir = dir.join("store");
        std::fs::create_dir_all(&store_dir).expect("create the store directory");
        let store = format!("file://{}", store_dir.display());
        let publisher = Publisher::new(ferry, &dir.join("work"), &store, vec![], app, channel);
        publisher.keygen();
        (publisher, store)
    }

    /// The public key agents trust.
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("release.pub")
    }

    fn secret_key(&self) -> PathBuf {
        self.dir.join("release.key")
    }

    /// `ferry keygen <dir>/release`.
    pub fn keygen(&self) {
        self.ferry(&["keygen".as_ref(), self.dir.join("release").as_os_str()]);
    }

    /// `ferry pack` a hello-service release: `binary` at /usr/bin/hello-service, `version`
    /// in /usr/share/hello-service/version and, when given, `mode` (e.g. `unhealthy`) in
    /// /usr/share/hello-service/mode. Returns the .deb.
    pub fn pack(&self, binary: &Path, version: &str, mode: Option<&str>) -> PathBuf {
        self.pack_with(binary, version, mode, &PackExtras::default())
    }

    /// [`Publisher::pack`] with extras: systemd units (written beside the manifest and listed
    /// in its `[systemd]` table, which `units.systemd` extends), scripts, `Depends`, `strip`.
    pub fn pack_with(
        &self,
        binary: &Path,
        version: &str,
        mode: Option<&str>,
        units: &PackExtras,
    ) -> PathBuf {
        let build = self.dir.join("build").join(version);
        std::fs::create_dir_all(&build).expect("create the build directory");
        std::fs::write(build.join("version"), format!("{version}\n")).expect("write version");
        // The manifest as a TOML table, serialised by the toml crate (no hand quoting).
        let file = |source: &str, dest: &str, mode: Option<&str>| {
            let mut entry = toml::Table::new();
            entry.insert("source".into(), source.into());
            entry.insert("dest".into(), dest.into());
            if let Some(mode) = mode {
                entry.insert("mode".into(), mode.into());
            }
            toml::Value::Table(entry)
        };
        let mut files = vec![
            file(
                &binary.display().to_string(),
                "/usr/bin/hello-service",
                Some("0755"),
            ),
            file("version", "/usr/share/hello-service/version", None),
        ];
        if let Some(mode) = mode {
            std::fs::write(build.join("mode"), format!("{mode}\n")).expect("write mode");
            files.push(file("mode", "/usr/share/hello-service/mode", None));
        }
        let mut package = toml::Table::new();
        for (key, value) in [
            ("name", self.app.as_str()),
            ("version", version),
            ("maintainer", "ferry fleet tests <fleet@example.com>"),
            (
                "description",
                "hello-service for ferry's fleet test and benchmark",
            ),
            ("section", "net"),
        ] {
            package.insert(key.into(), value.into());
        }
        if units.strip {
            package.insert("strip".into(), true.into());
        }
        if !units.depends.is_empty() {
            let depends = units.depends.iter().map(|d| toml::Value::from(d.as_str()));
            package.insert("depends".into(), toml::Value::Array(depends.collect()));
        }
        let mut table = toml::Table::new();
        table.insert("package".into(), toml::Value::Table(package));
        table.insert("files".into(), toml::Value::Array(files));
        if !units.files.is_empty() {
            let mut systemd = units.systemd.clone();
            let mut names = Vec::new();
            for (name, text) in &units.files {
                std::fs::write(build.join(name), text).expect("write a unit file");
                names.push(toml::Value::from(name.as_str()));
            }
            systemd.insert("units".into(), toml::Value::Array(names));
            table.insert("systemd".into(), toml::Value::Table(systemd));
        }
        if !units.scripts.is_empty() {
            let mut scripts = toml::Table::new();
            for (kind, text) in &units.scripts {
                std::fs::write(build.join(kind), text).expect("write a maintainer script");
                scripts.insert(kind.clone(), kind.as_str().into());
            }
            table.insert("scripts".into(), toml::Value::Table(scripts));
        }
        let manifest = toml::to_string(&table).expect("a manifest serialises");
        let config = build.join("ferry.toml");
        std::fs::write(&config, manifest).expect("write ferry.toml");
        let out = build.join("out");
        self.ferry(&[
            "pack".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        let found = std::fs::read_dir(&out)
            .expect("read the pack output directory")
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|extension| extension == "deb"));
        found.unwrap_or_else(|| panic!("ferry pack wrote no .deb into {}", out.display()))
    }

    /// `ferry publish` one .deb to the channel.
    pub fn publish(&self, package: &Path) -> Output {
        self.on_channel("publish", &[package.as_os_str()])
    }

    /// `ferry rollback` to the release before the current one.
    pub fn rollback(&self) -> Output {
        self.on_channel("rollback", &[])
    }

    /// `ferry SUBCOMMAND` on this publisher's store, app and channel, signed with its key.
    fn on_channel(&self, subcommand: &str, extra: &[&std::ffi::OsStr]) -> Output {
        let key = self.secret_key();
        let mut arguments: Vec<&std::ffi::OsStr> = vec![
            subcommand.as_ref(),
            "--store".as_ref(),
            self.store.as_ref(),
            "--app".as_ref(),
            self.app.as_ref(),
            "--channel".as_ref(),
            self.channel.as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
        ];
        arguments.extend_from_slice(extra);
        self.ferry(&arguments)
    }

    fn ferry(&self, arguments: &[&std::ffi::OsStr]) -> Output {
        let mut command = crate::ferry_command(&self.ferry);
        command.args(arguments);
        for (name, value) in &self.environment {
            command.env(name, value);
        }
        let output = run_bounded(&mut command, Duration::from_secs(120));
        assert!(
            output.status.success(),
            "`ferry {}` failed ({}):\n{}",
            arguments[0].to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// What [`Publisher::pack_with`] adds to a hello-service package: systemd units, maintainer
/// scripts, `Depends`, stripping.
#[derive(Debug, Clone, Default)]
pub struct PackExtras {
    /// Unit files: name (`hello.service`) and text.
    pub files: Vec<(String, String)>,
    /// More `[systemd]` keys (`enable`, `start`, `on-upgrade`).
    pub systemd: toml::Table,
    /// The package's `Depends`.
    pub depends: Vec<String>,
    /// Maintainer scripts: kind (`postinst`) and text.
    pub scripts: Vec<(String, String)>,
    /// `strip = true`: ferry pack strips the ELF files.
    pub strip: bool,
}

/// Run a command to completion, killing it after `limit` (then panicking with its stderr).
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {command:?}: {error}"));
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_thread.join().unwrap_or_default();
            panic!(
                "{command:?} ran longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// A copy of `binary` without debug info (`strip`), so a fleet downloads and unpacks a
/// realistic ~2 MB package instead of a ~30 MB debug build.
pub fn stripped_copy(binary: &Path, destination: &Path) -> PathBuf {
    std::fs::copy(binary, destination)
        .unwrap_or_else(|error| panic!("copy {}: {error}", binary.display()));
    let output = Command::new("strip")
        .arg(destination)
        .output()
        .expect("run strip (binutils)");
    assert!(
        output.status.success(),
        "strip {}: {}",
        destination.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    destination.to_path_buf()
}

/// Quote a string for TOML (a basic string is JSON-compatible for what a path holds).
pub fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// `ferry run` for one test host: `--listen http=127.0.0.1:PORT`, its control socket at
/// `<dir>/control.sock`, a 5 s drain, then `program` (with `arguments`); its log goes to
/// `<dir>/run.log`. The caller adds what else it needs and spawns it (in a [`GroupGuard`]).
pub fn supervisor_command(
    ferry: &Path,
    dir: &Path,
    port: u16,
    program: &std::ffi::OsStr,
    arguments: &[&str],
) -> Command {
    let mut command = Command::new(ferry);
    command
        .arg("run")
        .arg("--listen")
        .arg(format!("http=127.0.0.1:{port}"))
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(["--drain-timeout", "5", "--"])
        .arg(program)
        .args(arguments)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("run.log")).expect("create run.log"));
    command
}

/// [`supervisor_command`] in front of the host's `current` hello-service, spawned: it binds
/// the port before any release is installed; the agent's first install starts the service.
pub fn start_hello_supervisor(ferry: &Path, dir: &Path, port: u16) -> GroupGuard {
    let program = dir.join("srv/current/usr/bin/hello-service");
    GroupGuard::spawn(&mut supervisor_command(
        ferry,
        dir,
        port,
        program.as_os_str(),
        &[],
    ))
}

/// The body of one agent-file table (`[restart]`, `[health]`, …) parsed into the agent's type
/// for it, so a test's typo fails here, naming the table.
pub fn toml_table<T: serde::de::DeserializeOwned>(body: &str, name: &str) -> T {
    toml::from_str(body).unwrap_or_else(|error| panic!("[{name}] {body:?}: {error}"))
}

/// One host's agent file, written as an operator would. `restart` and `health` are the
/// bodies of the `[restart]` and `[health]` tables.
pub struct AgentFile<'a> {
    /// The store URL.
    pub store: &'a str,
    /// The app.
    pub app: &'a str,
    /// The channel.
    pub channel: &'a str,
    /// The trusted public key.
    pub trust: &'a Path,
    /// Poll interval, e.g. `"1s"`.
    pub interval: &'a str,
    /// Jitter, e.g. `"500ms"`.
    pub jitter: &'a str,
    /// This host's id.
    pub host_id: &'a str,
    /// The journal directory.
    pub state_dir: &'a Path,
    /// The unpack root.
    pub root: &'a Path,
    /// `[restart]` body.
    pub restart: &'a str,
    /// `[health]` body.
    pub health: &'a str,
}

impl AgentFile<'_> {
    /// The TOML text, written by the agent's own serialiser (the `[restart]` and `[health]`
    /// bodies are parsed into its types first, so a typo in a test fails here).
    pub fn text(&self) -> String {
        use ferry_agent::config::InstallFile;
        let file = ferry_agent::AgentFile {
            store: Some(self.store.to_owned()),
            app: Some(self.app.to_owned()),
            channel: Some(self.channel.to_owned()),
            trust: vec![self.trust.to_path_buf()],
            interval: Some(self.interval.to_owned()),
            jitter: Some(self.jitter.to_owned()),
            backoff_max: Some("5s".to_owned()),
            host_id: Some(self.host_id.to_owned()),
            state_dir: Some(self.state_dir.to_path_buf()),
            install: Some(InstallFile::Unpack {
                root: self.root.to_path_buf(),
                keep: None,
            }),
            restart: Some(toml_table(self.restart, "restart")),
            health: Some(toml_table(self.health, "health")),
            ..Default::default()
        };
        file.to_toml().expect("an agent file serialises")
    }
}

/// A process started in its own process group. Dropping it stops the whole group for sure:
/// SIGKILL to the group and to every direct child's own group (a `ferry run` supervisor puts
/// each service process in a group of its own), then the process is reaped.
pub struct GroupGuard {
    child: Option<Child>,
}

impl GroupGuard {
    /// Spawn `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> GroupGuard {
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {command:?}: {error}"));
        GroupGuard { child: Some(child) }
    }

    /// The process's PID.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether it has exited (and how).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Ask it to stop (SIGTERM), without waiting.
    pub fn terminate(&self) {
        signal(self.id() as i32, libc::SIGTERM);
    }

    /// Stop it and everything it started; returns once it is reaped.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        if child.try_wait().ok().flatten().is_none() {
            // Freeze it so it cannot start another child while its children are collected.
            signal(pid, libc::SIGSTOP);
            for descendant in children_of(pid) {
                signal(-descendant, libc::SIGKILL);
                signal(descendant, libc::SIGKILL);
            }
            signal(-pid, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Stop a fleet: every agent first (so none acts on a supervisor going away), then every
/// supervisor with SIGTERM so it drains its service, and whatever is still up after 10 s is
/// killed with its process groups.
pub fn stop_fleet(agents: Vec<GroupGuard>, supervisors: Vec<GroupGuard>) {
    for mut agent in agents {
        agent.kill();
    }
    for supervisor in &supervisors {
        supervisor.terminate();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut supervisor in supervisors {
        while supervisor.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        supervisor.kill();
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: i32, signal: i32) {
    if pid == 0 || pid == 1 || pid == -1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the PIDs are this test's own.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// PIDs whose parent is `parent` (from `/proc/<pid>/stat`).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            proc_stat_fields(*pid).is_some_and(|fields| {
                fields.get(1).and_then(|ppid| ppid.parse::<i32>().ok()) == Some(parent)
            })
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, … (index 0 = state).
fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = text.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

/// CPU time used so far by a process (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = proc_stat_fields(pid as i32)?;
    // After the name: state(0) ppid(1) … utime(11) stime(12), in clock ticks.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as u64 } else { 100 };
    Some(Duration::from_micros((user + system) * 1_000_000 / ticks))
}

/// Resident and proportional set size of a process in KiB (`VmRSS` and `Pss`; PSS shares
/// the binary's pages fairly among the processes mapping them, so it sums honestly).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// A GET on a fresh loopback connection: the status and the body, `None` when nothing
/// answers within five seconds.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
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

/// Wait (at most `limit`) until `check` holds; else panic naming `what`, with the log at
/// `log` (an agent's stderr) in the message.
pub fn wait_until_logged(what: &str, limit: Duration, log: &Path, mut check: impl FnMut() -> bool) {
    if wait_for(limit, Duration::from_millis(50), || check().then_some(())).is_none() {
        panic!(
            "timed out waiting for {what}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// `[restart]` through a `ferry run --control SOCKET` supervisor, with a 20 s limit.
pub fn supervisor_restart(control: &Path) -> ferry_agent::config::RestartFile {
    ferry_agent::config::RestartFile::Supervisor {
        control: control.to_path_buf(),
        timeout: Some("20s".into()),
    }
}

/// `[health]`: hello-service's `/health` on `port`, retried every 100 ms within `timeout`.
pub fn http_health(port: u16, timeout: &str) -> ferry_agent::config::HealthFile {
    ferry_agent::config::HealthFile {
        http: Some(format!("http://127.0.0.1:{port}/health")),
        timeout: Some(timeout.into()),
        retry: Some("100ms".into()),
        ..Default::default()
    }
}

/// Poll `check` every `pause` until it returns `Some` or `limit` runs out.
pub fn wait_for<T>(
    limit: Duration,
    pause: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_and_backslashes() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("/tmp/x y"), "\"/tmp/x y\"");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory_readings() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        let (rss, pss) = memory_kib(pid).expect("smaps_rollup");
        assert!(rss > 0 && pss > 0 && pss <= rss);
    }

    #[test]
    fn a_group_guard_stops_grandchildren_in_their_own_groups() {
        // sh starts a sleep in a new process group (like `ferry run` does with its service).
        let mut command = Command::new("sh");
        command
            .args(["-c", "setsid sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped());
        let mut guard = GroupGuard::spawn(&mut command);
        let wait = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            let children = children_of(guard.id() as i32);
            (!children.is_empty()).then_some(children)
        });
        let children = wait.expect("sh started its child");
        guard.kill();
        let gone = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            children
                .iter()
                .all(|pid| {
                    // Reaped by init, or a zombie waiting to be.
                    proc_stat_fields(*pid).is_none_or(|fields| fields[0] == "Z")
                })
                .then_some(())
        });
        assert!(gone.is_some(), "the grandchild survived its guard");
    }
}
