//! One booted host: `systemd-nspawn -b` on an overlay of the image, in a mount namespace of
//! its own (so the overlay disappears with the container, even when the caller is killed),
//! commands run inside with `nsenter`.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Finished, Image, Result, run_bounded};

/// A directory of this machine made visible inside the host.
#[derive(Debug, Clone)]
pub struct Bind {
    /// The directory (or file) on this machine.
    pub source: PathBuf,
    /// Where it appears inside the host (absolute).
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a host is made of, before it boots.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Its hostname (letters, digits and `-`).
    pub name: String,
    /// Directories bound in at every boot.
    pub binds: Vec<Bind>,
    /// Files written onto its disk before the first boot: absolute path, contents, mode.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Let cloud-init run at boot (it is switched off otherwise, which saves seconds).
    pub cloud_init: bool,
}

/// A host: its disk (an overlay layer over the image) and, while it runs, its container.
pub struct Host {
    config: HostConfig,
    image: PathBuf,
    dir: PathBuf,
    nspawn: Option<Child>,
    leader: Option<i32>,
    boots: u32,
}

/// How long a boot may take until `systemctl is-system-running` settles.
const BOOT_LIMIT: Duration = Duration::from_secs(120);
/// How long a clean shutdown may take before the host is powered off.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// The PATH commands inside the host run with.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Host {
    /// Lay out a host's disk in `dir` (which must be empty or missing) on `image`: its
    /// machine id (derived from the name, so it is stable across boots), hostname and
    /// `config.files`. Nothing runs yet.
    pub fn create(image: &Image, dir: &Path, config: HostConfig) -> Result<Host> {
        if config.name.is_empty()
            || !config
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::Boot {
                name: config.name.clone(),
                detail: "a host name is letters, digits and '-'".into(),
            });
        }
        for part in ["upper", "work", "root"] {
            let path = dir.join(part);
            std::fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
        }
        let host = Host {
            image: image.root().to_path_buf(),
            dir: dir.to_path_buf(),
            nspawn: None,
            leader: None,
            boots: 0,
            config,
        };
        host.write_file(
            "/etc/machine-id",
            machine_id(&host.config.name).as_bytes(),
            0o444,
        )?;
        host.write_file(
            "/etc/hostname",
            format!("{}\n", host.config.name).as_bytes(),
            0o644,
        )?;
        if !host.config.cloud_init {
            host.write_file("/etc/cloud/cloud-init.disabled", b"", 0o644)?;
        }
        for (path, contents, mode) in &host.config.files {
            host.write_file(path, contents, *mode)?;
        }
        Ok(host)
    }

    /// Write a file onto the host's disk from outside (only while it is not running).
    pub fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        let relative = path.trim_start_matches('/');
        let target = self.dir.join("upper").join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        std::fs::write(&target, contents).map_err(|e| Error::io("write", &target, e))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set the mode of", &target, e))
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The host's machine id (`/etc/machine-id`).
    pub fn machine_id(&self) -> String {
        machine_id(&self.config.name)
    }

    /// Boot it and wait until systemd has started everything (`running` or `degraded`).
    pub fn boot(&mut self) -> Result<()> {
        if self.nspawn.is_some() {
            return Ok(());
        }
        self.boots += 1;
        let console_path = self.dir.join(format!("console-{}.log", self.boots));
        let console =
            File::create(&console_path).map_err(|e| Error::io("create", &console_path, e))?;
        let console_err = console
            .try_clone()
            .map_err(|e| Error::io("open", &console_path, e))?;
        let root = self.dir.join("root");
        let overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.image.display(),
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        // The overlay is mounted in a private mount namespace that exists only as long as
        // the container: nothing is left mounted, whatever happens to this process.
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount -t overlay overlay -o "$1" "$2" && shift 2 && exec "$@""#)
            .arg("ferry-host")
            .arg(&overlay)
            .arg(&root)
            .arg("systemd-nspawn")
            .args(["--quiet", "--boot", "--register=no", "--keep-unit"])
            .args(["--private-network", "--console=read-only"])
            .arg(format!("--machine={}", self.config.name))
            .arg("--directory")
            .arg(&root);
        for bind in &self.config.binds {
            let flag = if bind.read_only {
                "--bind-ro"
            } else {
                "--bind"
            };
            command.arg(format!("{flag}={}:{}", bind.source.display(), bind.target));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .map_err(|error| Error::Boot {
                name: self.config.name.clone(),
                detail: format!("cannot start systemd-nspawn: {error}"),
            })?;
        let nspawn_pid = child.id() as i32;
        self.nspawn = Some(child);
        let started = Instant::now();
        let leader = loop {
            if let Some(leader) = find_child(nspawn_pid, "systemd") {
                break leader;
            }
            if let Some(status) = self
                .nspawn
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.nspawn = None;
                return Err(self.boot_error(format!("systemd-nspawn exited with {status}")));
            }
            if started.elapsed() > BOOT_LIMIT {
                self.power_off();
                return Err(self.boot_error("systemd never started inside the container".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.leader = Some(leader);
        loop {
            let state = self
                .run(&["systemctl", "is-system-running"], Duration::from_secs(10))
                .map(|finished| finished.stdout.trim().to_owned())
                .unwrap_or_default();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if started.elapsed() > BOOT_LIMIT {
                let jobs = self
                    .run(
                        &["systemctl", "list-jobs", "--no-pager"],
                        Duration::from_secs(10),
                    )
                    .map(|finished| finished.stdout)
                    .unwrap_or_default();
                return Err(self.boot_error(format!(
                    "still {state:?} after {BOOT_LIMIT:?}; jobs:\n{jobs}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn boot_error(&self, detail: String) -> Error {
        let console = std::fs::read_to_string(self.dir.join(format!("console-{}.log", self.boots)))
            .unwrap_or_default();
        let lines: Vec<&str> = console.lines().collect();
        Error::Boot {
            name: self.config.name.clone(),
            detail: format!(
                "{detail}\nconsole:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            ),
        }
    }

    /// Is it running?
    pub fn is_running(&mut self) -> bool {
        match self.nspawn.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A command that runs `program` inside the host (all its namespaces), with a clean
    /// environment (`PATH`, `LANG=C.UTF-8`). Panics when the host is not running.
    pub fn command(&self, program: &str) -> Command {
        let leader = self.leader.expect("the host is not running");
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(leader.to_string())
            .args(["--all", "--", "env", "-i"])
            .arg(format!("PATH={HOST_PATH}"))
            .args(["LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"])
            .arg(program);
        command
    }

    /// Run `argv` inside the host within `limit`.
    pub fn run(&self, argv: &[&str], limit: Duration) -> Result<Finished> {
        let (program, arguments) = argv.split_first().expect("a command");
        let mut command = self.command(program);
        command.args(arguments);
        run_bounded(&mut command, limit)
    }

    /// Run a shell script inside the host within `limit`; its stdout when it exits 0.
    pub fn sh(&self, script: &str, limit: Duration) -> Result<String> {
        let finished = self.run(&["sh", "-c", script], limit)?;
        finished
            .check(format!("`{script}` on host {}", self.config.name))
            .map(|finished| finished.stdout)
    }

    /// The last `lines` of the host's journal (all units), or why it could not be read.
    pub fn journal(&self, lines: u32) -> String {
        let lines = lines.to_string();
        match self.run(
            &[
                "journalctl",
                "--no-pager",
                "-o",
                "short-monotonic",
                "-n",
                &lines,
            ],
            Duration::from_secs(20),
        ) {
            Ok(finished) => finished.stdout,
            Err(error) => format!("(cannot read the journal: {error})"),
        }
    }

    /// The PID of the host's init as seen from this machine.
    pub fn leader(&self) -> Option<i32> {
        self.leader
    }

    /// Shut it down cleanly (SIGTERM to systemd-nspawn: systemd stops every unit); powered
    /// off when that takes longer than 30 s.
    pub fn shutdown(&mut self) {
        let Some(child) = self.nspawn.as_mut() else {
            return;
        };
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_LIMIT {
            if let Ok(Some(_)) = child.try_wait() {
                self.nspawn = None;
                self.leader = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.power_off();
    }

    /// Cut the power: SIGKILL to the host's init ends every process in it at once, with no
    /// unit stopped and nothing flushed by the host itself. Its disk stays as it was.
    pub fn power_off(&mut self) {
        if let Some(leader) = self.leader.take() {
            // SAFETY: kill(2) on the container's init, which we found as nspawn's child.
            unsafe {
                libc::kill(leader, libc::SIGKILL);
            }
        }
        if let Some(mut child) = self.nspawn.take() {
            let started = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > STOP_LIMIT => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A 32-hex-digit machine id derived from the host name (FNV-1a, twice), stable across boots.
fn machine_id(name: &str) -> String {
    let hash = |seed: u64| {
        name.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}\n",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x8422_2325_cbf2_9ce4)
    )
}

/// A child of `parent` whose command name is `comm`.
fn find_child(parent: i32, comm: &str) -> Option<i32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = &stat[open + 1..close];
        let ppid: i32 = stat[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_stable_distinct_and_well_formed() {
        let one = machine_id("host-1");
        assert_eq!(one, machine_id("host-1"));
        assert_ne!(one, machine_id("host-2"));
        assert_eq!(one.trim().len(), 32);
        assert!(one.trim().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_child_with_a_name_is_found() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id() as i32;
        assert_eq!(find_child(me, "sleep"), Some(child.id() as i32));
        assert_eq!(find_child(me, "no-such-program"), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
