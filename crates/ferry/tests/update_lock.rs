//! The application's update lock (`update-lock` in agent.toml) with a real hello-service
//! under `ferry run`: a long request holds the lock (`GET /job?ms=N` takes a shared flock on
//! `HELLO_UPDATE_LOCK`), and the agent's swap waits for it; after `update-lock-timeout` the
//! agent leaves the release for the next poll (`skip`) or goes ahead (`proceed`), as the file
//! says. A load loop counts every answer throughout: none may fail.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_agent::config::InstallFile;
use ferry_testutil::Dir;
use ferry_testutil::fleet::{
    GroupGuard, Publisher, http_get, http_health, stripped_copy, supervisor_command,
    supervisor_restart,
};

fn ferry_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// GETs of `/` on fresh connections until stopped (at most 90 s, 100,000 requests): the
/// first moment each version answered, and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<usize>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let first_seen = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, first_seen, failures) = (stop.clone(), first_seen.clone(), failures.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut count = 0;
                while !stop.load(Ordering::Relaxed)
                    && count < 100_000
                    && started.elapsed() < Duration::from_secs(90)
                {
                    count += 1;
                    match http_get(port, "/") {
                        Some((200, body)) => {
                            first_seen
                                .lock()
                                .unwrap()
                                .entry(body.trim().to_owned())
                                .or_insert_with(Instant::now);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                count
            })
        };
        Load {
            stop,
            first_seen,
            failures,
            thread: Some(thread),
        }
    }

    fn first_seen(&self, version: &str) -> Option<Instant> {
        self.first_seen.lock().unwrap().get(version).copied()
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let count = self.thread.take().unwrap().join().unwrap();
        (count, self.failures.lock().unwrap().clone())
    }
}

/// A running long request: its answer (status, body) and when it arrived.
type Job = JoinHandle<(Option<(u16, String)>, Instant)>;

/// A long request that holds the update lock for `ms`: returns when it was sent and a handle
/// to its answer (status, body, when it arrived).
fn long_job(port: u16, ms: u64) -> (Instant, Job) {
    let sent = Instant::now();
    let handle = std::thread::spawn(move || {
        let answer = http_get(port, &format!("/job?ms={ms}"));
        (answer, Instant::now())
    });
    (sent, handle)
}

/// Whether something holds a lock on `path` (a probe that lets go at once).
fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor owned here; closing it below drops the probe's lock.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

fn wait_until(what: &str, log: &Path, check: impl FnMut() -> bool) {
    ferry_testutil::fleet::wait_until_logged(what, Duration::from_secs(60), log, check);
}

struct Host {
    dir: Dir,
    publisher: Publisher,
    binary: PathBuf,
    port: u16,
    lock: PathBuf,
    agent: Option<GroupGuard>,
}

impl Host {
    fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// (Re)start the agent with `update-lock` and the given timeout and expiry action.
    fn start_agent(&mut self, timeout: &str, expired: &str) {
        drop(self.agent.take());
        let file = ferry_agent::AgentFile {
            store: Some(format!("file://{}", self.dir.join("store").display())),
            app: Some("hello".into()),
            channel: Some("stable".into()),
            trust: vec![self.publisher.public_key()],
            interval: Some("200ms".into()),
            jitter: Some("0s".into()),
            state_dir: Some(self.dir.join("state")),
            host_id: Some("lock-host".into()),
            install: Some(InstallFile::Unpack {
                root: self.dir.join("srv"),
                keep: None,
            }),
            restart: Some(supervisor_restart(&self.dir.join("control.sock"))),
            health: Some(http_health(self.port, "10s")),
            update_lock: Some(self.lock.clone()),
            update_lock_timeout: Some(timeout.into()),
            update_lock_expired: Some(expired.into()),
            ..Default::default()
        };
        let config = self.dir.join("agent.toml");
        std::fs::write(&config, file.to_toml().unwrap()).unwrap();
        let mut command = ferry_testutil::ferry_command(&ferry_binary());
        command
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.agent_log())
                    .unwrap(),
            );
        self.agent = Some(GroupGuard::spawn(&mut command));
    }

    /// `ferry agent ARGS… --config agent.toml`, which must succeed.
    fn agent_command(&self, arguments: &[&str]) {
        let output = ferry_testutil::fleet::run_bounded(
            ferry_testutil::ferry_command(&ferry_binary())
                .arg("agent")
                .args(arguments)
                .arg("--config")
                .arg(self.dir.join("agent.toml")),
            Duration::from_secs(20),
        );
        assert!(
            output.status.success(),
            "ferry agent {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn publish(&self, version: &str) {
        let deb = self.publisher.pack(&self.binary, version, None);
        self.publisher.publish(&deb);
    }

    fn report(&self) -> serde_json::Value {
        let path = self.dir.join("store/apps/hello/hosts/lock-host.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Start a job holding the lock for `ms` and wait until it holds it.
    fn job(&self, ms: u64) -> (Instant, Job) {
        let job = long_job(self.port, ms);
        wait_until("the job to hold the update lock", &self.agent_log(), || {
            lock_is_held(&self.lock)
        });
        job
    }
}

#[test]
fn a_long_request_holding_the_update_lock_delays_the_swap_and_the_maximum_wait_holds() {
    let dir = Dir::new("update-lock");
    let (publisher, _store) =
        Publisher::on_directory_store(&ferry_binary(), dir.path(), "hello", "stable");
    let built = ferry_testutil::workspace_binary("hello-service");
    assert!(
        built.is_file(),
        "{} is missing: run scripts/test",
        built.display()
    );
    let binary = stripped_copy(&built, &dir.join("hello-service"));
    let port = ferry_testutil::free_port();
    let lock = dir.join("hello-update.lock");
    let program = dir.join("srv/current/usr/bin/hello-service");
    let mut supervisor =
        supervisor_command(&ferry_binary(), dir.path(), port, program.as_os_str(), &[]);
    supervisor.env("HELLO_UPDATE_LOCK", &lock);
    let _supervisor = GroupGuard::spawn(&mut supervisor);
    let mut host = Host {
        dir,
        publisher,
        binary,
        port,
        lock,
        agent: None,
    };
    let log = host.agent_log();

    host.publish("1.0.0-1");
    host.start_agent("30s", "skip");
    wait_until("1.0.0-1 to answer", &log, || {
        http_get(port, "/").is_some_and(|(_, body)| body.trim() == "1.0.0-1")
    });
    let load = Load::start(port);

    // 1. A 3 s job holds the lock: the swap to 2.0.0-1 waits for it to end.
    let (sent, job) = host.job(3000);
    host.publish("2.0.0-1");
    wait_until(
        "the report to say the agent waits for the lock",
        &log,
        || {
            host.report()["waiting"]
                .as_str()
                .is_some_and(|text| text.contains("waiting for the application's update lock"))
        },
    );
    let (answer, _) = job.join().unwrap();
    assert_eq!(
        answer,
        Some((200, "1.0.0-1\n".into())),
        "the job ran to its end on the old release"
    );
    wait_until("2.0.0-1 to answer", &log, || {
        load.first_seen("2.0.0-1").is_some()
    });
    let swapped = load.first_seen("2.0.0-1").unwrap();
    assert!(
        swapped >= sent + Duration::from_millis(3000),
        "2.0.0-1 answered {:?} after the job was sent; the job held the lock for 3 s from then",
        swapped - sent
    );

    // 1b. A hold placed while the agent waits for the lock still counts once the lock is
    //     free: 2.5.0-1 waits for `ferry agent release`.
    let (_, job) = host.job(2000);
    host.publish("2.5.0-1");
    wait_until("the agent to wait for the lock again", &log, || {
        host.report()["waiting"]
            .as_str()
            .is_some_and(|text| text.contains("waiting for the application's update lock"))
    });
    host.agent_command(&["hold", "hello", "--reason", "checking the disk"]);
    let (answer, _) = job.join().unwrap();
    assert_eq!(answer, Some((200, "2.0.0-1\n".into())));
    wait_until("the report to say the host is held", &log, || {
        host.report()["waiting"]
            .as_str()
            .is_some_and(|text| text.contains("checking the disk"))
    });
    assert_eq!(load.first_seen("2.5.0-1"), None, "held: nothing installed");
    host.agent_command(&["release", "hello"]);
    wait_until("2.5.0-1 to answer once released", &log, || {
        load.first_seen("2.5.0-1").is_some()
    });

    // 2. With a 1 s maximum and `skip`: the agent gives up on this poll (the report says
    //    so) and installs 3.0.0-1 at a later poll, once the 4 s job is over.
    host.start_agent("1s", "skip");
    let (sent, job) = host.job(4000);
    host.publish("3.0.0-1");
    wait_until("the report to say the lock was held too long", &log, || {
        host.report()["waiting"]
            .as_str()
            .is_some_and(|text| text.contains("still held after 1s"))
    });
    assert_eq!(
        load.first_seen("3.0.0-1"),
        None,
        "skipped while the job runs"
    );
    let (answer, _) = job.join().unwrap();
    assert_eq!(answer, Some((200, "2.5.0-1\n".into())));
    wait_until("3.0.0-1 to answer", &log, || {
        load.first_seen("3.0.0-1").is_some()
    });
    assert!(load.first_seen("3.0.0-1").unwrap() >= sent + Duration::from_millis(4000));

    // 3. With a 1 s maximum and `proceed`: the swap goes ahead while the 3 s job still
    //    runs, and the old process still finishes the job (it drains, it is not killed).
    host.start_agent("1s", "proceed");
    let (_, job) = host.job(3000);
    host.publish("4.0.0-1");
    wait_until("4.0.0-1 to answer", &log, || {
        load.first_seen("4.0.0-1").is_some()
    });
    let (answer, finished) = job.join().unwrap();
    assert_eq!(
        answer,
        Some((200, "3.0.0-1\n".into())),
        "drained, not cut off"
    );
    assert!(
        load.first_seen("4.0.0-1").unwrap() < finished,
        "the swap went ahead before the job ended"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("going ahead (update-lock-expired = \"proceed\")"),
        "{log_text}"
    );

    let (requests, failures) = load.finish();
    assert!(requests > 100, "the load loop ran ({requests} requests)");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:?}",
        failures.len()
    );
}
