//! Helpers shared by ferry's test suites: a fresh temp dir per test, spawned processes
//! that are killed when the test ends, and free loopback ports; `s3` starts the moto server,
//! `fleet` builds publishers and hosts (agent files through the agent's own writer),
//! `rollout` runs the CLI for the rollout suites, `http` a keep-alive front, `hosts` boots
//! Debian hosts with systemd for the booted-host tests.

pub mod fleet;
pub mod hosts;
pub mod http;
pub mod nginx;
pub mod rollout;
pub mod s3;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A fresh temporary directory, removed when dropped (kept if `FERRY_KEEP_TEST_DIRS` is set).
pub struct Dir {
    inner: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Dir {
    /// Make a new empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Dir {
        let inner = tempfile::Builder::new()
            .prefix(&format!("ferry-test-{prefix}-"))
            .tempdir()
            .expect("create temp dir");
        let path = inner.path().to_path_buf();
        if std::env::var_os("FERRY_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping test dir {}", path.display());
            let _ = inner.keep();
            return Dir { inner: None, path };
        }
        Dir {
            inner: Some(inner),
            path,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }

    /// Write a file (creating parent directories) and return its path.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _ = inner.close();
        }
    }
}

/// The `ferry` binary at `binary` (a test's `CARGO_BIN_EXE_ferry`) as every CLI test runs
/// it: none of the test process's `FERRY_*`, `AWS_*` or `RUST_LOG` variables leak in, the
/// instance metadata service is never asked for credentials, no colours, no stdin. A test
/// adds the environment it means (an S3 server's endpoint and keys) on top.
pub fn ferry_command(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("FERRY_") || text.starts_with("AWS_") || text == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    command
        .env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null());
    command
}

/// A spawned child process that is killed (and reaped) when dropped, so a failing test
/// never leaves servers behind.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawn `command` and guard it.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        ChildGuard { child: Some(child) }
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Access the child (to wait on it, send it signals, read its pipes).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already taken")
    }

    /// Send a signal to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.id() as libc::pid_t, signal);
        }
    }

    /// Stop guarding and hand the child back.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child already taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind an ephemeral port")
}

/// The path to a workspace binary built by cargo alongside the test binaries
/// (for binaries of other packages, which `CARGO_BIN_EXE_*` does not cover).
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("current exe");
    dir.pop(); // the test binary's name
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// `apt-get download` into `dir`; when the package lists are missing (a fresh machine) and
/// we are root, refresh them once and retry. Returns the error text when it cannot.
pub fn apt_download(dir: &Path, packages: &[&str]) -> Result<(), String> {
    let download = || {
        Command::new("apt-get")
            .arg("download")
            .args(packages)
            .current_dir(dir)
            .output()
            .expect("run apt-get")
    };
    let output = download();
    if output.status.success() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|id| String::from_utf8_lossy(&id.stdout).trim() == "0");
    if is_root {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let retry = download();
        if retry.status.success() {
            return Ok(());
        }
        return Err(String::from_utf8_lossy(&retry.stderr).into_owned());
    }
    Err(String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The bodies of a Markdown file's fenced blocks whose opening line is exactly
/// ```` ```INFO ```` (`sh runnable`, `yaml`), in order: for tests that run what the docs show.
pub fn fenced_blocks(markdown: &str, info: &str) -> Vec<String> {
    let opening = format!("```{info}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, trimmed) if trimmed == opening => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}
