//! The zero-downtime acceptance test for `ferry run`: 32 clients (keep-alive and
//! new-connection) hammer the supervised hello-service while it is reloaded at least 50 times
//! back to back — including a reload to a release that never gets ready and one that crashes —
//! and every reply is classified. Nothing may fail. Afterwards /proc must show no zombies, no
//! stray old processes, and no leaked descriptors in the supervisor.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferry_testutil::http::{Connection, Failure};
use ferry_testutil::{ChildGuard, Dir, free_port, workspace_binary};

const KEEP_ALIVE_CLIENTS: usize = 24;
const NEW_CONNECTION_CLIENTS: usize = 8;
const MINIMUM_RELOADS: usize = 50;
const MINIMUM_REQUESTS: u64 = 100_000;
/// Bounds: the test ends by itself even on a very slow machine (and then fails clearly).
const MAXIMUM_RELOADS: usize = 1_000;
const TIME_LIMIT: Duration = Duration::from_secs(150);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An installed "release" of hello-service: its binary plus the share files it reads.
struct Release {
    root: PathBuf,
}

impl Release {
    fn install(dir: &Dir) -> Release {
        let root = dir.join("app");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("share/hello-service")).unwrap();
        std::fs::copy(
            workspace_binary("hello-service"),
            root.join("bin/hello-service"),
        )
        .expect("hello-service is built (scripts/test builds every workspace binary)");
        Release { root }
    }

    fn binary(&self) -> PathBuf {
        self.root.join("bin/hello-service")
    }

    /// What the next process started will be: atomically replaced, like a package upgrade.
    fn set(&self, version: &str, mode: &str) {
        for (name, value) in [("version", version), ("mode", mode)] {
            let path = self.root.join("share/hello-service").join(name);
            let temporary = path.with_extension("new");
            std::fs::write(&temporary, format!("{value}\n")).unwrap();
            std::fs::rename(&temporary, &path).unwrap();
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    timeout: AtomicU64,
    wrong: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<(), String>, failure: Option<Failure>) {
        match (outcome, failure) {
            (Ok(()), _) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            (Err(message), failure) => {
                let counter = match failure {
                    Some(Failure::Refused) => &self.refused,
                    Some(Failure::Reset) => &self.reset,
                    Some(Failure::Timeout) => &self.timeout,
                    Some(Failure::Malformed) | None => &self.wrong,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut examples = self.examples.lock().unwrap();
                if examples.len() < 20 {
                    examples.push(message);
                }
            }
        }
    }

    fn total(&self) -> u64 {
        [
            &self.ok,
            &self.refused,
            &self.reset,
            &self.timeout,
            &self.wrong,
        ]
        .iter()
        .map(|counter| counter.load(Ordering::Relaxed))
        .sum()
    }
}

/// One client loop: GET / until told to stop, checking every answer is a version some
/// release really had.
fn client(
    address: SocketAddr,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    versions: Arc<RwLock<HashSet<String>>>,
    tally: Arc<Tally>,
) {
    let mut connection: Option<Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        if connection.is_none() {
            match Connection::open(address, REQUEST_TIMEOUT) {
                Ok(opened) => connection = Some(opened),
                Err(failure) => {
                    tally.record(Err(format!("connect: {failure:?}")), Some(failure));
                    continue;
                }
            }
        }
        let reused = connection.as_mut().expect("connection just opened");
        match reused.get("/") {
            Ok(response) => {
                let known = versions.read().unwrap().contains(response.body.trim_end());
                if response.status == 200 && known && response.body.ends_with('\n') {
                    tally.record(Ok(()), None);
                } else {
                    tally.record(
                        Err(format!(
                            "wrong answer: {} {:?}",
                            response.status, response.body
                        )),
                        None,
                    );
                }
                if response.close || !keep_alive {
                    connection = None;
                }
            }
            Err(failure) => {
                tally.record(
                    Err(format!(
                        "request: {failure:?} (keep-alive client: {keep_alive})"
                    )),
                    Some(failure),
                );
                connection = None;
            }
        }
    }
}

fn control_status(control: &Path) -> Option<ferry_supervisor::Status> {
    ferry_supervisor::control::status(control, Duration::from_secs(10)).ok()
}

/// The PIDs whose parent is `parent`, with their state letter, from /proc.
fn children_of(parent: u32) -> BTreeMap<u32, char> {
    let mut children = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may contain spaces, so parse after the last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, after)| after.to_owned()) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields
            .next()
            .and_then(|field| field.chars().next())
            .unwrap_or('?');
        let ppid: u32 = fields
            .next()
            .and_then(|field| field.parse().ok())
            .unwrap_or(0);
        if ppid == parent {
            children.insert(pid, state);
        }
    }
    children
}

fn open_descriptors(pid: u32) -> Vec<String> {
    let mut descriptors: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("{} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    descriptors.sort();
    descriptors
}

/// Poll `condition` every 50 ms for at most `limit`; true when it held.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fifty_reloads_under_load_drop_nothing_and_leak_nothing() {
    let started = Instant::now();
    let dir = Dir::new("run-load");
    let release = Release::install(&dir);
    let versions = Arc::new(RwLock::new(HashSet::from(["v0".to_owned()])));
    release.set("v0", "normal");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = dir.join("control.sock");
    let log = std::fs::File::create(dir.join("ferry-run.log")).unwrap();
    let mut supervisor = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "run",
                "--listen",
                &format!("http={address}"),
                "--ready-timeout",
                "5",
                "--drain-timeout",
                "30",
            ])
            .arg("--control")
            .arg(&control)
            .arg("--")
            .arg(release.binary())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let supervisor_pid = supervisor.id();
    assert!(
        eventually(Duration::from_secs(30), || control_status(&control)
            .is_some()),
        "ferry run did not come up; log:\n{}",
        std::fs::read_to_string(dir.join("ferry-run.log")).unwrap_or_default()
    );
    // Let the status connection above close on the supervisor's side before counting.
    std::thread::sleep(Duration::from_millis(300));
    let descriptors_before = open_descriptors(supervisor_pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for index in 0..KEEP_ALIVE_CLIENTS + NEW_CONNECTION_CLIENTS {
        let (stop, versions, tally) = (stop.clone(), versions.clone(), tally.clone());
        let keep_alive = index < KEEP_ALIVE_CLIENTS;
        clients.push(std::thread::spawn(move || {
            client(address, keep_alive, stop, versions, tally)
        }));
    }

    let mut successful_reloads = 0usize;
    let mut attempts = 0usize;
    let mut failed_reload_errors = Vec::new();
    let mut slow_request = None;
    let reloads_finished_at = Arc::new(AtomicU64::new(0));
    let sequence = Arc::new(AtomicU64::new(0));
    while (successful_reloads < MINIMUM_RELOADS || tally.total() < MINIMUM_REQUESTS)
        && attempts < MAXIMUM_RELOADS
        && started.elapsed() < TIME_LIMIT
    {
        attempts += 1;
        let before = control_status(&control).expect("status before a reload");
        // Two bad releases in the middle of the run: the old process must keep serving.
        let bad_mode = match successful_reloads {
            20 if failed_reload_errors.is_empty() => Some("fail-ready"),
            30 if failed_reload_errors.len() == 1 => Some("crash"),
            _ => None,
        };
        let version = match bad_mode {
            Some(mode) => format!("v{attempts}-{mode}"),
            None => format!("v{attempts}"),
        };
        versions.write().unwrap().insert(version.clone());
        release.set(&version, bad_mode.unwrap_or("normal"));

        // Reload 10: a request that takes longer than the reload, sent on a connection
        // proven (by its first answer) to belong to the old process.
        if successful_reloads == 10 && slow_request.is_none() {
            let mut connection =
                Connection::open(address, REQUEST_TIMEOUT).expect("connect for the slow request");
            let first = connection
                .get("/")
                .expect("first answer on the slow connection");
            let old_version = first.body.clone();
            let (finished_at, sequence) = (reloads_finished_at.clone(), sequence.clone());
            // Written here, before the reload, so a slow machine cannot let the reload win
            // the race to the old process; the thread only waits for the answer.
            connection
                .send("/slow?ms=4000")
                .expect("write the slow request");
            slow_request = Some(std::thread::spawn(move || {
                let response = connection.receive();
                let answered_at = sequence.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    old_version,
                    response,
                    answered_at,
                    finished_at.load(Ordering::SeqCst),
                )
            }));
            // Let the old process read it before it is told to drain.
            std::thread::sleep(Duration::from_millis(100));
        }

        let outcome = ferry_supervisor::control::reload(&control, Duration::from_secs(60));
        match (bad_mode, outcome) {
            (None, Ok(pid)) => {
                assert_ne!(Some(pid), before.pid, "a reload must start a new process");
                successful_reloads += 1;
                if successful_reloads == 11 {
                    reloads_finished_at.store(
                        sequence.fetch_add(1, Ordering::SeqCst) + 1,
                        Ordering::SeqCst,
                    );
                }
            }
            (None, Err(error)) => panic!("reload {attempts} to a good release failed: {error}"),
            (Some(mode), Ok(pid)) => {
                panic!("reload to a {mode} release reported success (pid {pid})")
            }
            (Some(mode), Err(error)) => {
                let after = control_status(&control).expect("status after a failed reload");
                assert_eq!(
                    after.pid, before.pid,
                    "after the failed {mode} reload the old process must still serve"
                );
                failed_reload_errors.push(format!("{mode}: {error}"));
                // The old version is what a fresh request still gets.
                let answer = ferry_testutil::http::get(address, "/", REQUEST_TIMEOUT)
                    .expect("answer after a failed reload");
                assert!(
                    !answer.body.contains(mode),
                    "a {mode} process answered after its reload failed: {answer:?}"
                );
            }
        }
    }
    // A little steady load after the last swap, then stop every client (each request is
    // bounded by REQUEST_TIMEOUT, so the joins are bounded too).
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("client thread");
    }
    let (old_version, slow_response, slow_answered_at, reload_done_at) = slow_request
        .expect("the slow request was sent")
        .join()
        .expect("slow request thread");

    let ok = tally.ok.load(Ordering::Relaxed);
    let report = format!(
        "{attempts} reload attempts ({successful_reloads} ok) in {:.1?}: ok {ok}, refused {}, reset {}, timeout {}, wrong {}; examples: {:#?}",
        started.elapsed(),
        tally.refused.load(Ordering::Relaxed),
        tally.reset.load(Ordering::Relaxed),
        tally.timeout.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
        tally.examples.lock().unwrap()
    );
    eprintln!("{report}");
    assert_eq!(
        tally.total() - ok,
        0,
        "every request must succeed: {report}"
    );
    assert!(
        ok >= MINIMUM_REQUESTS,
        "too few requests for the acceptance bar: {report}"
    );
    assert!(successful_reloads >= MINIMUM_RELOADS, "{report}");

    let slow_response = slow_response.expect("the slow request across a reload must be answered");
    assert_eq!(
        (slow_response.status, &slow_response.body),
        (200, &old_version),
        "the slow request completes on the old process"
    );
    assert!(
        slow_answered_at > reload_done_at && reload_done_at > 0,
        "the slow request was still in flight when its reload finished"
    );

    assert_eq!(failed_reload_errors.len(), 2, "{failed_reload_errors:?}");
    assert!(
        failed_reload_errors[0].contains("not ready within"),
        "{failed_reload_errors:?}"
    );
    assert!(
        failed_reload_errors[1].contains("exited before ready (status 1)"),
        "{failed_reload_errors:?}"
    );

    // Every old generation drains and is reaped: exactly one child, not a zombie.
    let settled = eventually(Duration::from_secs(40), || {
        let children = children_of(supervisor_pid);
        children.len() == 1 && children.values().all(|state| *state != 'Z')
    });
    assert!(
        settled,
        "children of ferry run after the reloads: {:?}",
        children_of(supervisor_pid)
    );
    // The supervisor holds no more descriptors than before the first reload (not the same
    // set: the serving child's notify socket is a new one).
    let leak_free = eventually(Duration::from_secs(10), || {
        open_descriptors(supervisor_pid).len() <= descriptors_before.len()
    });
    assert!(
        leak_free,
        "descriptors of ferry run before: {descriptors_before:#?}\nafter: {:#?}",
        open_descriptors(supervisor_pid)
    );

    // SIGTERM drains the last process and ends the supervisor cleanly.
    supervisor.signal(libc::SIGTERM);
    let mut exit = None;
    eventually(Duration::from_secs(40), || {
        exit = supervisor.child().try_wait().unwrap();
        exit.is_some()
    });
    assert_eq!(
        exit.map(|status| status.code()),
        Some(Some(0)),
        "ferry run exits 0 after SIGTERM"
    );
    assert!(children_of(supervisor_pid).is_empty());
    assert!(!control.exists(), "the control socket is removed on exit");
}
