//! `ferry run` end to end with real processes and sockets: a program written for systemd
//! socket activation (Python, fd 3) runs unchanged and inherits nothing but its listener;
//! READY=1 is forwarded to systemd's NOTIFY_SOCKET; a crashed app is restarted; SIGHUP
//! reloads; Unix socket listeners work; bad input gets a clear error.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::{ChildGuard, Dir, free_port, workspace_binary};

const TIMEOUT: Duration = Duration::from_secs(15);

fn eventually<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ferry_run(dir: &Dir, arguments: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .arg("run")
        .args(arguments)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    let log = std::fs::File::create(dir.join("ferry-run.log")).unwrap();
    command.stdout(log.try_clone().unwrap()).stderr(log);
    command
}

fn log(dir: &Dir) -> String {
    std::fs::read_to_string(dir.join("ferry-run.log")).unwrap_or_default()
}

fn status(control: &Path) -> Option<ferry_supervisor::Status> {
    ferry_supervisor::control::status(control, TIMEOUT).ok()
}

fn get(address: SocketAddr, path: &str) -> Option<ferry_testutil::http::Response> {
    ferry_testutil::http::get(address, path, TIMEOUT).ok()
}

/// A socket-activated server as one would write it for systemd, knowing nothing of ferry: it
/// takes fd 3, reports what it inherited, and answers every connection with its PID.
const PYTHON_SERVER: &str = r#"
import os, socket, sys
report_path = sys.argv[1]
open_fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))
        open_fds.append(int(name))
    except OSError:
        pass  # the descriptor listdir itself used, closed by now
with open(report_path + ".tmp", "w") as report:
    report.write("pid=%d\n" % os.getpid())
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        report.write("%s=%s\n" % (key, os.environ.get(key, "")))
    report.write("fds=%s\n" % ",".join(str(fd) for fd in sorted(open_fds)))
os.rename(report_path + ".tmp", report_path)
if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    sys.exit("not socket-activated")
server = socket.socket(fileno=3)
server.setblocking(True)
while True:
    connection, _ = server.accept()
    connection.recv(65536)
    body = b"python %d\n" % os.getpid()
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    connection.close()
"#;

fn read_report(path: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

#[test]
fn systemd_socket_activated_python_server_runs_unchanged_and_inherits_only_its_listener() {
    let dir = Dir::new("run-python");
    let script = dir.write("server.py", PYTHON_SERVER);
    let report = dir.join("report");
    let systemd = UnixDatagram::bind(dir.join("systemd-notify")).unwrap();
    systemd.set_read_timeout(Some(TIMEOUT)).unwrap();
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = dir.join("control.sock");
    let mut command = ferry_run(
        &dir,
        &[
            "--listen",
            &format!("web={address}"),
            "--health",
            &format!("http://{address}/"),
            "--control",
            control.to_str().unwrap(),
            "--",
            "python3",
            script.to_str().unwrap(),
            report.to_str().unwrap(),
        ],
    );
    command.env("NOTIFY_SOCKET", dir.join("systemd-notify"));
    let supervisor = ChildGuard::spawn(&mut command);

    // systemd hears READY=1 (and the stable MAINPID) once the first process is ready.
    let mut buffer = [0u8; 4096];
    let length = systemd
        .recv(&mut buffer)
        .unwrap_or_else(|e| panic!("no notification for systemd ({e}); log:\n{}", log(&dir)));
    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
    assert!(message.lines().any(|line| line == "READY=1"), "{message}");
    assert!(
        message.contains(&format!("MAINPID={}", supervisor.id())),
        "{message}"
    );

    let first = read_report(&report).expect("the server wrote its report");
    let pid = &first["pid"];
    assert_eq!(
        &first["LISTEN_PID"], pid,
        "LISTEN_PID is the child's own PID"
    );
    assert_eq!(
        (
            first["LISTEN_FDS"].as_str(),
            first["LISTEN_FDNAMES"].as_str()
        ),
        ("1", "web")
    );
    assert!(
        first["NOTIFY_SOCKET"].starts_with('@'),
        "the app gets its own notify socket: {first:?}"
    );
    assert_eq!(
        first["fds"], "0,1,2,3",
        "nothing but stdio and the listener crosses exec: {first:?}"
    );
    let answer = get(address, "/").expect("the python server answers");
    assert_eq!(answer.body, format!("python {pid}\n"));

    // Reload: a new python process, on the same socket, with its own LISTEN_PID.
    std::fs::remove_file(&report).unwrap();
    let new_pid = ferry_supervisor::control::reload(&control, TIMEOUT).expect("reload");
    assert_ne!(new_pid.to_string(), *pid);
    let second =
        eventually(TIMEOUT, || read_report(&report)).expect("the new server wrote its report");
    assert_eq!(second["pid"], new_pid.to_string());
    assert_eq!(second["LISTEN_PID"], new_pid.to_string());
    assert_eq!(second["fds"], "0,1,2,3");
    let answered_by_new = eventually(TIMEOUT, || {
        get(address, "/").filter(|a| a.body == format!("python {new_pid}\n"))
    });
    assert!(answered_by_new.is_some(), "log:\n{}", log(&dir));
}

#[test]
fn a_crashed_app_is_restarted_and_sighup_reloads() {
    let dir = Dir::new("run-crash");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = dir.join("control.sock");
    let hello = workspace_binary("hello-service");
    let mut command = ferry_run(
        &dir,
        &[
            "--listen",
            &format!("http={address}"),
            "--control",
            control.to_str().unwrap(),
            "--",
            hello.to_str().unwrap(),
        ],
    );
    command.env("HELLO_VERSION", "crash-test");
    let mut supervisor = ChildGuard::spawn(&mut command);
    let first = eventually(TIMEOUT, || status(&control))
        .unwrap_or_else(|| panic!("not up; log:\n{}", log(&dir)));
    let first_pid = first.pid.unwrap();

    // SIGKILL the app behind the supervisor's back: it is restarted and serves again.
    unsafe { libc::kill(first_pid as i32, libc::SIGKILL) };
    let restarted = eventually(TIMEOUT, || {
        status(&control).filter(|s| s.pid.is_some() && s.pid != Some(first_pid))
    });
    let restarted = restarted.unwrap_or_else(|| panic!("not restarted; log:\n{}", log(&dir)));
    assert_eq!(
        get(address, "/").map(|a| a.body),
        Some("crash-test\n".to_owned())
    );
    assert!(
        log(&dir).contains("exited on its own (signal 9)"),
        "{}",
        log(&dir)
    );

    // SIGHUP to the supervisor reloads: a new process and the next generation.
    supervisor.signal(libc::SIGHUP);
    let reloaded = eventually(TIMEOUT, || {
        status(&control).filter(|s| s.generation > restarted.generation)
    });
    let reloaded = reloaded.unwrap_or_else(|| panic!("SIGHUP did not reload; log:\n{}", log(&dir)));
    assert_ne!(reloaded.pid, restarted.pid);
    assert!(
        supervisor.child().try_wait().unwrap().is_none(),
        "SIGHUP must not kill the supervisor"
    );
}

#[test]
fn unix_socket_listener_and_reload_over_the_control_socket_by_hand() {
    let dir = Dir::new("run-unix");
    let socket = dir.join("app.sock");
    let control = dir.join("control.sock");
    let hello = workspace_binary("hello-service");
    let mut command = ferry_run(
        &dir,
        &[
            "--listen",
            &format!("http={}", socket.display()),
            "--control",
            control.to_str().unwrap(),
            "--",
            hello.to_str().unwrap(),
        ],
    );
    command.env("HELLO_VERSION", "unix-1");
    let _supervisor = ChildGuard::spawn(&mut command);
    eventually(TIMEOUT, || status(&control))
        .unwrap_or_else(|| panic!("not up; log:\n{}", log(&dir)));
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("unix-1\n"),
        "{answer}"
    );

    // The raw protocol, as any client would speak it: one JSON line each way.
    let mut raw = UnixStream::connect(&control).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(b"{\"command\":\"reload\"}\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    let reply: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(reply["pid"].as_u64().is_some(), "{reply}");
    let mut raw = UnixStream::connect(&control).unwrap();
    raw.write_all(b"{\"command\":\"explode\"}\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("\"ok\":false") && reply.contains("explode"),
        "{reply}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = Dir::new("run-bad");
    let output = ferry_run(&dir, &["--listen", "http=nonsense", "--", "true"])
        .status()
        .unwrap();
    assert_eq!(output.code(), Some(1));
    assert!(log(&dir).contains("nonsense"), "{}", log(&dir));

    let output = ferry_run(&dir, &["--ready-timeout", "0", "--", "true"])
        .status()
        .unwrap();
    assert_eq!(output.code(), Some(1));
    assert!(log(&dir).contains("--ready-timeout"), "{}", log(&dir));
}

#[test]
fn a_program_installed_after_the_supervisor_started_is_started_when_it_appears() {
    let dir = Dir::new("run-later");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = dir.join("control.sock");
    let program = dir.join("current/bin/hello-service");
    let mut command = ferry_run(
        &dir,
        &[
            "--listen",
            &format!("http={address}"),
            "--control",
            control.to_str().unwrap(),
            "--",
            program.to_str().unwrap(),
        ],
    );
    command.env("HELLO_VERSION", "late");
    let mut supervisor = ChildGuard::spawn(&mut command);
    let complained = eventually(TIMEOUT, || log(&dir).contains("cannot start").then_some(()));
    assert!(
        complained.is_some(),
        "a missing program is reported; log:\n{}",
        log(&dir)
    );
    assert!(
        supervisor.child().try_wait().unwrap().is_none(),
        "ferry run keeps waiting for it"
    );

    // Meanwhile the socket is held: a connection waits in its queue and is answered once the
    // program exists.
    let early = std::thread::spawn(move || get(address, "/"));
    std::fs::create_dir_all(program.parent().unwrap()).unwrap();
    std::fs::copy(workspace_binary("hello-service"), &program).unwrap();
    let up = eventually(TIMEOUT, || status(&control));
    assert!(up.is_some(), "started once installed; log:\n{}", log(&dir));
    let early = early
        .join()
        .unwrap()
        .expect("the queued request is answered");
    assert_eq!(early.body, "late\n");
}

#[test]
fn an_app_failing_its_health_url_is_never_marked_ready() {
    let dir = Dir::new("run-unhealthy");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control = dir.join("control.sock");
    let hello = workspace_binary("hello-service");
    let mut command = ferry_run(
        &dir,
        &[
            "--listen",
            &format!("http={address}"),
            "--health",
            &format!("http://{address}/health"),
            "--ready-timeout",
            "1",
            "--control",
            control.to_str().unwrap(),
            "--",
            hello.to_str().unwrap(),
        ],
    );
    // READY=1 is sent, but /health answers 500: with --health, the probe decides.
    command.env("HELLO_MODE", "unhealthy");
    let _supervisor = ChildGuard::spawn(&mut command);
    let refused = eventually(TIMEOUT, || {
        log(&dir)
            .contains("was not ready within 1.0 s")
            .then_some(())
    });
    assert!(refused.is_some(), "log:\n{}", log(&dir));
    assert!(log(&dir).contains("/health to answer 2xx"), "{}", log(&dir));
    let error = ferry_supervisor::control::status(&control, TIMEOUT).unwrap_err();
    assert!(
        error.to_string().contains("no process is running"),
        "{error}"
    );
}

/// Regression: a `ferry run` killed with SIGKILL left its app running, unsupervised and
/// holding the port. The app now gets SIGTERM when its supervisor dies.
#[test]
fn the_app_is_stopped_when_the_supervisor_is_killed() {
    let dir = Dir::new("run-killed");
    let port = free_port();
    let control = dir.join("control.sock");
    let hello = workspace_binary("hello-service");
    let mut supervisor = ChildGuard::spawn(&mut ferry_run(
        &dir,
        &[
            "--listen",
            &format!("http=127.0.0.1:{port}"),
            "--control",
            control.to_str().unwrap(),
            "--",
            hello.to_str().unwrap(),
        ],
    ));
    let pid = eventually(TIMEOUT, || status(&control).and_then(|s| s.pid))
        .unwrap_or_else(|| panic!("not up; log:\n{}", log(&dir)));
    supervisor.child().kill().unwrap();
    supervisor.child().wait().unwrap();
    // Gone, or a zombie waiting for whoever inherited it to reap it.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    let stopped = eventually(TIMEOUT, || (!running()).then_some(()));
    assert!(
        stopped.is_some(),
        "hello-service {pid} outlived its supervisor"
    );
}
