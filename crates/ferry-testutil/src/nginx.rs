//! Real nginx (the Debian package) for the tests of the HTTP read path: serving a `file://`
//! store directory with `contrib/nginx/ferry-store.conf`, or as a caching reverse proxy in
//! front of the S3 test server (a CDN stand-in). Each instance runs in the foreground with
//! its own prefix directory (config, logs, cache) on a free 127.0.0.1 port, and is stopped
//! when dropped. Its access log tells which requests reached the origin.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, free_port};

/// The nginx binary, as Debian installs it.
const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx.
pub struct Nginx {
    guard: Option<ChildGuard>,
    port: u16,
    prefix: PathBuf,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET`, `HEAD`.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// `HIT`, `MISS`, `EXPIRED`, `UPDATING`, `REVALIDATED`, `STALE`, or `-` (no cache).
    pub cache: String,
}

impl Logged {
    /// Whether this request was passed on to the origin (the cache could not answer alone).
    pub fn reached_origin(&self) -> bool {
        matches!(
            self.cache.as_str(),
            "MISS" | "EXPIRED" | "REVALIDATED" | "BYPASS"
        )
    }
}

/// Whether nginx is installed (`scripts/test` installs it).
pub fn available() -> bool {
    Path::new(NGINX).is_file()
}

impl Nginx {
    /// Serve `store_dir` (a `file://` store's directory) the way docs/scale.md says to.
    pub fn serve_store(store_dir: &Path, prefix: &Path) -> Nginx {
        let snippet =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/nginx/ferry-store.conf");
        let snippet = snippet
            .canonicalize()
            .expect("contrib/nginx/ferry-store.conf");
        let server = format!(
            "root {root};\n        include {snippet};",
            root = store_dir.display(),
            snippet = snippet.display()
        );
        Nginx::start(prefix, "", &server)
    }

    /// A caching reverse proxy in front of `origin` (`http://127.0.0.1:<port>/<bucket>/<prefix>`):
    /// it keeps what the origin says it may (`Cache-Control` max-age), asks the origin once
    /// per expired object however many clients wait (`proxy_cache_lock`), and answers
    /// conditional and ranged requests from its cache.
    ///
    /// It does not revalidate (`proxy_cache_revalidate off`): revalidation sends
    /// `If-Modified-Since` with the cached copy's `Last-Modified`, which has one-second
    /// resolution, and an origin that honours it alone (moto does) answers 304 for a pointer
    /// rewritten within the same second — the cache would then serve the old pointer for
    /// ever. docs/scale.md says the same for real CDNs.
    pub fn cache_in_front_of(origin: &str, prefix: &Path) -> Nginx {
        let cache = prefix.join("cache");
        std::fs::create_dir_all(&cache).expect("create the nginx cache directory");
        let http = format!(
            "proxy_cache_path {cache} levels=1:2 keys_zone=ferry:10m max_size=1g inactive=1h use_temp_path=off;",
            cache = cache.display()
        );
        let origin = origin.trim_end_matches('/');
        let server = format!(
            "location / {{
            proxy_pass {origin}/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache ferry;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_revalidate off;
            proxy_cache_use_stale updating error timeout;
            proxy_force_ranges on;
            add_header X-Cache-Status $upstream_cache_status;
        }}"
        );
        Nginx::start(prefix, &http, &server)
    }

    fn start(prefix: &Path, http: &str, server: &str) -> Nginx {
        assert!(
            available(),
            "nginx is not installed; run scripts/test, which installs it (apt-get install nginx)"
        );
        std::fs::create_dir_all(prefix.join("logs")).expect("create the nginx prefix");
        let mut last_error = String::new();
        // A port that was free can be taken before nginx binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let user = if is_root() { "user root;\n" } else { "" };
            let config = format!(
                "{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format ferry '$request_method $uri $status $upstream_cache_status';
    access_log {prefix}/logs/access.log ferry;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    {http}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
",
                prefix = prefix.display()
            );
            let config_path = prefix.join("nginx.conf");
            std::fs::write(&config_path, config).expect("write nginx.conf");
            let guard = ChildGuard::spawn(
                Command::new(NGINX)
                    .arg("-p")
                    .arg(prefix)
                    .arg("-c")
                    .arg(&config_path)
                    .args(["-g", "daemon off;"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(prefix.join("logs/stderr.log"))
                            .expect("create the nginx stderr log"),
                    ),
            );
            let mut nginx = Nginx {
                guard: Some(guard),
                port,
                prefix: prefix.to_owned(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(guard) = nginx.guard.as_mut() {
                    if let Ok(Some(status)) = guard.child().try_wait() {
                        last_error = format!(
                            "nginx exited with {status}: {}{}",
                            std::fs::read_to_string(prefix.join("logs/stderr.log"))
                                .unwrap_or_default(),
                            nginx.error_log()
                        );
                        nginx.guard = None;
                        break;
                    }
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if nginx.guard.is_some() {
                last_error = "nginx did not listen within 10 s".into();
            }
        }
        panic!("cannot start nginx: {last_error}");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request logged so far.
    pub fn log(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                Some(Logged {
                    method: fields.next()?.to_owned(),
                    path: fields.next()?.to_owned(),
                    status: fields.next()?.parse().ok()?,
                    cache: fields.next().unwrap_or("-").to_owned(),
                })
            })
            .collect()
    }

    /// The error log (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers, then exits. A
        // SIGKILL of the master alone would leave the workers behind.
        if let Some(mut guard) = self.guard.take() {
            guard.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(guard.child().try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
