//! Booted-host tests: Debian containers with systemd as PID 1 (ferry-host). Whether they run
//! here, where the image is, and a host wrapper whose every failure shows the host's journal.
//!
//! `FERRY_HOST_TESTS=require` (set by `scripts/test` once it built the image) makes a test
//! fail when hosts cannot be booted; `skip` skips them; unset, they run when the image is
//! there and this process may boot containers, and say so when they skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub use ferry_host::{Bind, Host, HostConfig, Image};

/// The image the tests boot: `FERRY_HOST_IMAGE`, else `target/ferry-host/bookworm` of this
/// workspace (where `scripts/host-image` builds it).
pub fn image_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRY_HOST_IMAGE") {
        return PathBuf::from(dir);
    }
    let mut target = std::env::current_exe().expect("current exe");
    target.pop(); // the test binary
    if target.ends_with("deps") {
        target.pop();
    }
    target.pop(); // the profile directory
    target.join("ferry-host").join(ferry_host::SUITE)
}

/// The image, or `None` (with the reason on stderr) when booted-host tests do not run here.
pub fn image_or_skip(test: &str) -> Option<Image> {
    let mode = std::env::var("FERRY_HOST_TESTS").unwrap_or_default();
    if mode == "skip" {
        eprintln!("skipping booted-host test {test}: FERRY_HOST_TESTS=skip");
        return None;
    }
    let dir = image_dir();
    let reason = match (ferry_host::unavailable(), Image::open(&dir)) {
        (None, Some(image)) => return Some(image),
        (Some(error), _) => error.to_string(),
        (None, None) => format!(
            "no host image at {} (build it with scripts/host-image)",
            dir.display()
        ),
    };
    assert!(
        mode != "require",
        "booted-host test {test} cannot run although FERRY_HOST_TESTS=require: {reason}"
    );
    eprintln!("skipping booted-host test {test}: {reason}");
    None
}

/// Every command inside a host gets this long unless it says otherwise.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A booted host for a test: commands that must succeed, waits, and the journal printed
/// when the test fails while it is up.
pub struct BootedHost {
    host: Host,
}

impl BootedHost {
    /// Create the host in `dir` on `image` and boot it.
    pub fn boot(image: &Image, dir: &Path, config: HostConfig) -> BootedHost {
        let name = config.name.clone();
        let mut host = Host::create(image, dir, config)
            .unwrap_or_else(|error| panic!("cannot lay out host {name}: {error}"));
        let started = Instant::now();
        host.boot()
            .unwrap_or_else(|error| panic!("cannot boot host {name}: {error}"));
        eprintln!(
            "host {name} booted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        BootedHost { host }
    }

    /// The host itself.
    pub fn host(&mut self) -> &mut Host {
        &mut self.host
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        self.host.name()
    }

    /// Boot it again (after [`Host::power_off`] or [`Host::shutdown`]).
    pub fn boot_again(&mut self) {
        let started = Instant::now();
        if let Err(error) = self.host.boot() {
            panic!("cannot boot host {} again: {error}", self.host.name());
        }
        eprintln!(
            "host {} booted again in {:.1} s",
            self.host.name(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Run a shell script inside; its stdout. Panics (with the journal) unless it exits 0.
    pub fn sh(&self, script: &str) -> String {
        match self.host.sh(script, COMMAND_LIMIT) {
            Ok(stdout) => stdout,
            Err(error) => panic!("on host {}: {error}", self.host.name()),
        }
    }

    /// Run a shell script inside; whether it exited 0, and its stdout.
    pub fn try_sh(&self, script: &str) -> (bool, String) {
        match self.host.run(&["sh", "-c", script], COMMAND_LIMIT) {
            Ok(finished) => (finished.success(), finished.stdout),
            Err(error) => panic!("on host {}: {error}", self.host.name()),
        }
    }

    /// Wait until `script` exits 0 inside; panics after `limit`, naming `what`.
    pub fn wait_until(&self, what: &str, limit: Duration, script: &str) -> String {
        let started = Instant::now();
        loop {
            let (ok, stdout) = self.try_sh(script);
            if ok {
                return stdout;
            }
            assert!(
                started.elapsed() < limit,
                "host {}: {what} did not happen within {limit:?} (last output: {stdout:?})",
                self.host.name()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `GET http://127.0.0.1:PORT/PATH` inside; the body, or `None` when it fails.
    pub fn get(&self, port: u16, path: &str) -> Option<String> {
        let (ok, body) = self.try_sh(&format!("curl -fsS -m 5 http://127.0.0.1:{port}{path}"));
        ok.then(|| body.trim().to_owned())
    }

    /// `systemctl show -p PROPERTY --value UNIT` inside.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Start a request loop inside the host: one `GET /` every 20 ms against `port`, at most
    /// `count` requests, each answer recorded, until [`LoadLoop::finish`].
    pub fn start_load(&self, port: u16, count: u32) -> LoadLoop {
        let script = format!(
            r#"rm -f /run/ferry-load.stop /run/ferry-load.log
i=0
while [ ! -e /run/ferry-load.stop ] && [ $i -lt {count} ]; do
  i=$((i+1))
  answer=$(curl -sS -m 5 http://127.0.0.1:{port}/ 2>&1) || answer="FAILED $answer"
  echo "$answer" >> /run/ferry-load.log
  sleep 0.02
done"#
        );
        let child = self
            .host
            .command("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the request loop");
        // Wait for its first answer, so the loop covers what comes next.
        self.wait_until(
            "the request loop's first answer",
            Duration::from_secs(30),
            "test -s /run/ferry-load.log",
        );
        LoadLoop { child: Some(child) }
    }

    /// The answers of the load loop so far: (answers that were not failures, failures).
    pub fn load_answers(&self) -> (Vec<String>, Vec<String>) {
        let log = self.sh("cat /run/ferry-load.log");
        log.lines()
            .map(str::to_owned)
            .partition(|line| !line.starts_with("FAILED"))
    }

    /// Stop a load loop and return its (answers, failures).
    pub fn finish_load(&self, mut load: LoadLoop) -> (Vec<String>, Vec<String>) {
        self.sh("touch /run/ferry-load.stop");
        if let Some(mut child) = load.child.take() {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.load_answers()
    }
}

impl Drop for BootedHost {
    fn drop(&mut self) {
        if std::thread::panicking() && self.host.is_running() {
            eprintln!(
                "---- journal of host {} (last 200 lines) ----\n{}",
                self.host.name(),
                self.host.journal(200)
            );
        }
        self.host.shutdown();
    }
}

/// A request loop running inside a host (see [`BootedHost::start_load`]).
pub struct LoadLoop {
    child: Option<Child>,
}

impl Drop for LoadLoop {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
