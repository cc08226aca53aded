//! The supervisor driven in-process through its entry point — a `Config`, bound listeners and
//! a shutdown future — with a real child (a Python socket-activated program that reads its
//! behaviour from a file): concurrent reloads queue, a crashing and a never-ready release are
//! refused with the old process kept, and shutdown drains and reaps everything.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use ferry_supervisor::{BoundListener, Config, Error, Supervisor};

const APP: &str = r#"
import os, select, signal, socket, sys, time
mode = open(sys.argv[1]).read().strip()
if mode == "crash":
    sys.exit(3)
if mode != "silent":
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", address)
server = socket.socket(fileno=3)
server.setblocking(False)
# Drain like a well-behaved app: SIGTERM only stops accepting, so a connection this process
# took is always answered (dying with one in hand would close it unanswered).
wake_read, wake_write = os.pipe()
os.set_blocking(wake_write, False)
signal.set_wakeup_fd(wake_write)
signal.signal(signal.SIGTERM, lambda *_: None)
stopping = False
while not stopping:
    readable, _, _ = select.select([server, wake_read], [], [])
    if wake_read in readable:
        stopping = True
    if server in readable:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            continue
        connection.setblocking(True)
        connection.sendall(b"%d\n" % os.getpid())
        connection.close()
"#;

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn set_mode(dir: &Path, mode: &str) {
    std::fs::write(dir.join("mode"), mode).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_queue_bad_releases_are_refused_and_shutdown_reaps_everything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    set_mode(dir.path(), "normal");
    let mut config = Config::new(
        "python3",
        vec![
            OsString::from(dir.path().join("app.py")),
            OsString::from(dir.path().join("mode")),
        ],
    );
    config.ready_timeout = Duration::from_secs(3);
    config.drain_timeout = Duration::from_secs(5);
    let listener = BoundListener::bind(&"http=127.0.0.1:0".parse().unwrap()).unwrap();
    let address = listener.description.clone();
    let (supervisor, handle) = Supervisor::new(config, vec![listener]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(supervisor.run(async move {
        let _ = stopped.await;
    }));

    let first = tokio::time::timeout(
        Duration::from_secs(20),
        handle.wait_for_status(|s| s.pid.is_some()),
    )
    .await
    .expect("the first process becomes ready");
    let first_pid = first.pid.unwrap();
    assert_eq!(first.generation, 1);

    // Two reloads asked at once run one after the other, each with a new process.
    let (a, b) = tokio::join!(handle.reload(), handle.reload());
    let (a, b) = (a.expect("first reload"), b.expect("second reload"));
    assert!(a != b && a != first_pid && b != first_pid);
    assert_eq!(handle.status().generation, 3);
    let serving = handle.status().pid.unwrap();

    // Once the replaced processes have drained and exited, the answer really comes from the
    // serving process, on the one bound socket. (While one drains it may still take a
    // connection from the shared queue, and answers it: that is the design.)
    for pid in [first_pid, a, b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pid != serving && alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        std::net::TcpStream::connect(address)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    })
    .await
    .unwrap();
    assert_eq!(answer.trim(), serving.to_string());

    set_mode(dir.path(), "crash");
    match handle.reload().await {
        Err(Error::ExitedBeforeReady { status }) => assert_eq!(status, "status 3"),
        other => panic!("a crashing release must be refused, got {other:?}"),
    }
    assert_eq!(
        handle.status().pid,
        Some(serving),
        "the old process keeps serving"
    );

    set_mode(dir.path(), "silent");
    match handle.reload().await {
        Err(error @ Error::NotReadyInTime { .. }) => {
            assert!(error.to_string().contains("READY=1"), "{error}")
        }
        other => panic!("a release that never gets ready must be refused, got {other:?}"),
    }
    assert_eq!(
        handle.status().pid,
        Some(serving),
        "the old process keeps serving"
    );

    // Every replaced or refused process is gone and reaped by now or shortly.
    for pid in [first_pid, a, b] {
        if pid == serving {
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive(pid), "old process {pid} is still there");
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    assert!(
        !alive(serving),
        "shutdown drains and reaps the serving process"
    );
    assert_eq!(handle.status().pid, None);
    assert!(matches!(handle.reload().await, Err(Error::ShuttingDown)));
}
