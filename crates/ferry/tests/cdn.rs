//! The HTTP read path (docs/scale.md), against real nginx: agents read a `file://` store
//! directory served by nginx with `contrib/nginx/ferry-store.conf`, and an S3 store through
//! nginx as a caching reverse proxy (a CDN stand-in), while their reports go to the writable
//! store behind (`report-store`). The cache absorbs the polls: the origin sees about one
//! pointer request per max-age. A mirror serving an older pointer never moves a host back.

#[path = "fixtures/provisioning/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testutil::Dir;
use ferry_testutil::fleet::{GroupGuard, Publisher, wait_for};
use ferry_testutil::nginx::Nginx;
use ferry_testutil::s3::{BUCKET, S3Server};

const APP: &str = "hello";
const POINTER: &str = "/apps/hello/channels/stable.json";

fn agent_file(dir: &Path, store: &str, report_store: &str, trust: &Path, host: &str) -> PathBuf {
    let file = ferry_agent::AgentFile {
        store: Some(store.into()),
        report_store: Some(report_store.into()),
        app: Some(APP.into()),
        channel: Some("stable".into()),
        trust: vec![trust.to_path_buf()],
        host_id: Some(host.into()),
        interval: Some("200ms".into()),
        jitter: Some("50ms".into()),
        state_dir: Some(dir.join(host).join("state")),
        cache_dir: Some(dir.join(host).join("cache")),
        install: Some(ferry_agent::config::InstallFile::Unpack {
            root: dir.join(host).join("srv"),
            keep: None,
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(&path, file.to_toml().unwrap()).unwrap();
    path
}

fn spawn_agent(config: &Path, environment: &[(&'static str, String)], log: &Path) -> GroupGuard {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["agent", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (name, value) in environment {
        command.env(name, value);
    }
    GroupGuard::spawn(&mut command)
}

/// The version a host's agent unpacked, if any.
fn installed(dir: &Path, host: &str) -> Option<String> {
    std::fs::read_to_string(
        dir.join(host)
            .join("srv/current/usr/share/hello-service/version"),
    )
    .ok()
    .map(|text| text.trim().to_owned())
}

fn wait_until_all_on(dir: &Path, hosts: &[&str], version: &str, logs: &[PathBuf], nginx: &Nginx) {
    let reached = wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
        hosts
            .iter()
            .all(|host| installed(dir, host).as_deref() == Some(version))
            .then_some(())
    });
    if reached.is_none() {
        let logs: Vec<String> = logs
            .iter()
            .map(|log| std::fs::read_to_string(log).unwrap_or_default())
            .collect();
        panic!(
            "not every host reached {version}: {:?}\nagent logs:\n{}\nnginx log:\n{:?}\n{}",
            hosts
                .iter()
                .map(|host| (host, installed(dir, host)))
                .collect::<Vec<_>>(),
            logs.join("\n---\n"),
            nginx.log(),
            nginx.error_log()
        );
    }
}

fn status(store: &str, environment: &[(&'static str, String)]) -> serde_json::Value {
    let mut command = support::ferry();
    command.args(["status", "--json", "--store", store, "--app", APP]);
    for (name, value) in environment {
        command.env(name, value);
    }
    serde_json::from_slice(&support::ok(&mut command).stdout).unwrap()
}

/// The response headers of a GET through nginx, lower-cased names.
fn headers(port: u16, path: &str) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn agents_read_a_directory_store_served_by_nginx_and_a_stale_mirror_never_moves_them_back() {
    let dir = Dir::new("cdn-static");
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let (publisher, store) = Publisher::on_directory_store(ferry, dir.path(), APP, "stable");
    let store_dir = PathBuf::from(store.strip_prefix("file://").unwrap());
    let nginx = Nginx::serve_store(&store_dir, &dir.join("nginx"));
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "1.0.0", None));

    let hosts = ["h1", "h2"];
    let logs: Vec<PathBuf> = hosts
        .iter()
        .map(|host| dir.join(format!("{host}.log")))
        .collect();
    let _agents: Vec<GroupGuard> = hosts
        .iter()
        .zip(&logs)
        .map(|(host, log)| {
            let config = agent_file(
                dir.path(),
                &nginx.url(),
                &store,
                &publisher.public_key(),
                host,
            );
            spawn_agent(&config, &[], log)
        })
        .collect();
    wait_until_all_on(dir.path(), &hosts, "1.0.0", &logs, &nginx);
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "2.0.0", None));
    wait_until_all_on(dir.path(), &hosts, "2.0.0", &logs, &nginx);

    // Everything came through nginx: the pointer, the release's blobs.
    let log = nginx.log();
    assert!(
        log.iter()
            .any(|line| line.path == POINTER && line.status == 200),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|line| line.path.starts_with("/artifacts/") && line.status == 200),
        "no artifact was read through nginx: {log:?}"
    );
    // The reports went to the writable store behind it; nginx does not serve them.
    let seen = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let seen = status(&store, &[]);
        (seen["totals"]["updated"] == 2).then_some(seen)
    });
    assert!(seen.is_some(), "reports: {}", status(&store, &[]));
    let (code, _) = headers(nginx.port(), "/apps/hello/hosts/h1.json");
    assert_eq!(code, 404, "host reports must not be served over HTTP");
    let (code, sent) = headers(nginx.port(), POINTER);
    assert_eq!(code, 200);
    assert_eq!(header(&sent, "cache-control"), Some("public, max-age=10"));
    assert_eq!(header(&sent, "etag"), None, "pointers carry no mtime ETag");

    // Writes to an http:// store are refused with a clear word.
    let mut publish = support::ferry();
    publish
        .args(["publish", "--store", &nginx.url(), "--app", APP, "--key"])
        .arg(dir.join("work/release.key"))
        .arg(publisher.pack(Path::new("/bin/true"), "9.0.0", None));
    let refused = support::fails(&mut publish);
    assert!(refused.contains("read-only"), "{refused}");

    // A mirror that serves an older, validly signed pointer (serial 1, release 1.0.0).
    let pointer_file = store_dir.join(POINTER.trim_start_matches('/'));
    let current = std::fs::read(&pointer_file).unwrap();
    let old = std::fs::read(store_dir.join("apps/hello/channels/stable/history/1.json")).unwrap();
    std::fs::write(&pointer_file, &old).unwrap();
    let polls_before = nginx
        .log()
        .iter()
        .filter(|line| line.path == POINTER)
        .count();
    let polled = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let polls = nginx
            .log()
            .iter()
            .filter(|line| line.path == POINTER)
            .count();
        (polls >= polls_before + 10).then_some(())
    });
    assert!(polled.is_some(), "the agents stopped polling");
    for (host, log) in hosts.iter().zip(&logs) {
        assert_eq!(
            installed(dir.path(), host).as_deref(),
            Some("2.0.0"),
            "{host} moved back"
        );
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("ignored a stale channel pointer: serial 1 is lower than serial 2"),
            "{host}: {text}"
        );
    }
    let seen = status(&store, &[]);
    for host in seen["hosts"].as_array().unwrap() {
        assert_eq!(
            host["state"], "ok",
            "a stale mirror is not the host's fault: {seen}"
        );
        assert_eq!(host["version"], "2.0.0", "{seen}");
    }

    // The mirror catches up and the next good release is taken.
    std::fs::write(&pointer_file, &current).unwrap();
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "3.0.0", None));
    wait_until_all_on(dir.path(), &hosts, "3.0.0", &logs, &nginx);
}

#[test]
fn agents_converge_through_an_nginx_cache_in_front_of_s3_which_absorbs_their_polls() {
    let dir = Dir::new("cdn-cache");
    let s3 = S3Server::start();
    let store = s3.store_url("cdn");
    s3.allow_public_reads("cdn");
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    // Pointers may be cached for 2 s: what the agents' publish→seen delay allows for.
    let mut environment = s3.environment();
    environment.push(("FERRY_POINTER_MAX_AGE", "2s".into()));
    let publisher = Publisher::new(
        ferry,
        &dir.join("work"),
        &store,
        environment.clone(),
        APP,
        "stable",
    );
    publisher.keygen();
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "1.0.0", None));
    let cache = Nginx::cache_in_front_of(
        &format!("{}/{BUCKET}/cdn", s3.endpoint()),
        &dir.join("nginx"),
    );

    // What the publisher wrote tells the cache how long it may keep each object.
    let (code, sent) = headers(cache.port(), POINTER);
    assert_eq!(code, 200, "{}", cache.error_log());
    assert_eq!(header(&sent, "cache-control"), Some("public, max-age=2"));

    let hosts = ["c1", "c2", "c3"];
    let logs: Vec<PathBuf> = hosts
        .iter()
        .map(|host| dir.join(format!("{host}.log")))
        .collect();
    let _agents: Vec<GroupGuard> = hosts
        .iter()
        .zip(&logs)
        .map(|(host, log)| {
            let config = agent_file(
                dir.path(),
                &cache.url(),
                &store,
                &publisher.public_key(),
                host,
            );
            spawn_agent(&config, &s3.environment(), log)
        })
        .collect();
    wait_until_all_on(dir.path(), &hosts, "1.0.0", &logs, &cache);
    publisher.publish(&publisher.pack(Path::new("/bin/true"), "2.0.0", None));
    wait_until_all_on(dir.path(), &hosts, "2.0.0", &logs, &cache);

    let artifacts: Vec<_> = cache
        .log()
        .into_iter()
        .filter(|line| line.path.starts_with("/artifacts/") && line.path.ends_with(".deb"))
        .collect();
    assert!(
        !artifacts.is_empty(),
        "no release was read through the cache"
    );
    let artifact = &artifacts[0].path;
    let (_, sent) = headers(cache.port(), artifact);
    assert_eq!(
        header(&sent, "cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{artifact}"
    );

    // Idle: three agents poll every ~0.2 s, but the origin sees the pointer about once per
    // max-age (2 s) — the cache answers the rest, conditional polls with 304.
    let start = cache.log().len();
    let window = Duration::from_secs(8);
    let began = Instant::now();
    std::thread::sleep(window);
    let elapsed = began.elapsed().as_secs_f64();
    let idle: Vec<_> = cache.log()[start..]
        .iter()
        .filter(|line| line.path == POINTER)
        .cloned()
        .collect();
    let origin = idle.iter().filter(|line| line.reached_origin()).count();
    assert!(
        idle.len() >= 40,
        "the agents polled only {} times in {elapsed:.1} s",
        idle.len()
    );
    let bound = (elapsed / 2.0).ceil() as usize + 1;
    assert!(
        origin <= bound,
        "{origin} of {} pointer polls reached the origin in {elapsed:.1} s (bound {bound}): {idle:?}",
        idle.len()
    );
    assert!(
        idle.iter().filter(|line| line.status == 304).count() * 2 > idle.len(),
        "conditional polls should mostly be answered 304 by the cache: {idle:?}"
    );

    // Reports went to S3, and status reads them there.
    let seen = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let seen = status(&store, &s3.environment());
        (seen["totals"]["updated"] == 3).then_some(seen)
    });
    assert!(seen.is_some(), "{}", status(&store, &s3.environment()));
}
