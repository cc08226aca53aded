//! `ferry dashboard`: a read-only web page with what `ferry status` shows, for one app or
//! every app in the store. The page is static HTML with a little JavaScript that fetches
//! `/api/status` (the `ferry status --json` schema, one entry per app) and redraws itself;
//! the server only reads the store, never writes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::store_args::{StoreArgs, runtime};
use crate::env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Show only this app (default: every app in the store).
    #[arg(long, env = env::FERRY_APP)]
    pub app: Option<String>,
    /// The channel shown for each app.
    #[arg(long, env = env::FERRY_CHANNEL, default_value = "stable")]
    pub channel: String,
    /// Address to serve on; keep it on loopback (the page has no authentication) and reach it
    /// through an SSH tunnel or a proxy that adds some.
    #[arg(long, default_value = "127.0.0.1:8377", value_name = "ADDRESS")]
    pub listen: SocketAddr,
    /// How often the page refreshes itself.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "2s")]
    pub refresh: Duration,
    /// Flag a host stale as `ferry status --stale-after` does.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "5m")]
    pub stale_after: Duration,
}

struct Shared {
    store: ferry_store::Store,
    app: Option<String>,
    channel: String,
    stale_after: Duration,
    page: String,
    /// The apps found by the last listing and when: listing `apps/` walks every history
    /// entry too, so it is redone at most every APPS_REFRESH, not on every page refresh.
    apps: tokio::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
}

/// How long a discovered list of apps is reused.
const APPS_REFRESH: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open(false)?;
    let refresh_ms = args.refresh.as_millis().clamp(250, 3_600_000);
    let shared = Arc::new(Shared {
        store,
        app: args.app.clone(),
        channel: args.channel.clone(),
        stale_after: args.stale_after,
        page: PAGE.replace("__REFRESH_MS__", &refresh_ms.to_string()),
        apps: tokio::sync::Mutex::new(None),
    });
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        // The one line a script waits for (the port when --listen asked for port 0).
        println!("dashboard on http://{address}/");
        tracing::info!(%address, "serving the dashboard");
        serve(listener, shared).await
    })
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<ExitCode> {
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
            _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accept failed: {error}");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!("dashboard connection ended: {error}");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(hyper::header::CONTENT_TYPE, value);
    }
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    response
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the dashboard is read-only\n",
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            shared.page.clone(),
        ),
        "/api/status" => match statuses(shared).await {
            Ok(value) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&value).unwrap_or_default(),
            ),
            Err(error) => reply(
                StatusCode::BAD_GATEWAY,
                "application/json",
                serde_json::to_vec(&json!({"error": format!("{error:#}")})).unwrap_or_default(),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

/// `{"schema":1,"apps":[<ferry status --json of each app>]}`.
async fn statuses(shared: &Shared) -> anyhow::Result<serde_json::Value> {
    let apps = match &shared.app {
        Some(app) => vec![app.clone()],
        None => {
            let mut cached = shared.apps.lock().await;
            match cached.as_ref() {
                Some((at, apps)) if at.elapsed() < APPS_REFRESH => apps.clone(),
                _ => {
                    let apps = apps_in(&shared.store).await?;
                    *cached = Some((std::time::Instant::now(), apps.clone()));
                    apps
                }
            }
        }
    };
    let mut statuses = Vec::new();
    for app in apps {
        let status = ferry_fleet::collect(&shared.store, &app, &shared.channel, shared.stale_after)
            .await
            .with_context(|| format!("cannot read the status of {app}/{}", shared.channel))?;
        statuses.push(status);
    }
    Ok(json!({"schema": 1, "apps": statuses}))
}

/// The apps that have the shown channel or host reports: `apps/<app>/…`.
async fn apps_in(store: &ferry_store::Store) -> anyhow::Result<Vec<String>> {
    let objects = store.list("apps").await?;
    let mut apps: Vec<String> = objects
        .iter()
        .filter_map(|object| {
            let mut parts = object.path.strip_prefix("apps/")?.split('/');
            let app = parts.next()?;
            matches!(parts.next(), Some("channels" | "hosts")).then(|| app.to_owned())
        })
        .collect();
    apps.sort();
    apps.dedup();
    Ok(apps)
}

/// The page. Everything from the store is inserted with `textContent` (never as HTML): host
/// ids and errors come from hosts and must not be able to run script here.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ferry fleet</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 .3em 0; }
h2 { font-size: 17px; margin: 1.2em 0 .3em 0; }
table { border-collapse: collapse; margin: .4em 0 1em 0; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #eee; }
td.error { white-space: normal; max-width: 40em; color: #933; }
.current { font-weight: bold; }
.paused { color: #fff; background: #c60; padding: 0 .4em; border-radius: 3px; }
.failed { background: #fdd; } .stale { background: #ffd; } .updated { background: #dfd; }
#meta { color: #666; }
#problem { color: #b00; font-weight: bold; }
</style>
</head>
<body>
<h1>ferry fleet</h1>
<div id="meta">loading…</div>
<div id="problem"></div>
<div id="apps"></div>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}
function table(parent, headers, rows) {
  const t = document.createElement("table");
  const head = document.createElement("tr");
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  t.appendChild(head);
  for (const r of rows) t.appendChild(r);
  parent.appendChild(t);
  return t;
}
function ago(s) {
  if (s === null || s === undefined) return "never";
  if (s < 120) return s + "s ago";
  if (s < 7200) return Math.floor(s / 60) + "m ago";
  return Math.floor(s / 3600) + "h ago";
}
function renderApp(parent, st) {
  const section = document.createElement("section");
  section.className = "app";
  section.dataset.app = st.app;
  const h2 = document.createElement("h2");
  const p = st.pointer;
  h2.textContent = st.app + "/" + st.channel + ": " + (p ? p.version + " (serial " + p.serial + ")" : "never published");
  if (p && p.paused) { const s = document.createElement("span"); s.className = "paused"; s.textContent = "PAUSED"; h2.appendChild(document.createTextNode(" ")); h2.appendChild(s); }
  section.appendChild(h2);
  const t = st.totals;
  const summary = document.createElement("div");
  summary.className = "totals";
  summary.textContent = t.hosts + " hosts: " + t.updated + " updated, " + t.failed + " failed, " + t.pending + " pending, " + t.stale + " stale" + (p ? "; waves " + p.waves + " from " + p.published_at : "");
  section.appendChild(summary);
  table(section, ["version", "hosts", "states"], st.versions.map(v => {
    const r = document.createElement("tr"); r.className = "version";
    cell(r, v.version + (v.current ? " (current)" : ""), v.current ? "current" : "");
    cell(r, v.hosts);
    cell(r, Object.entries(v.states).map(([k, n]) => k + " " + n).join(", "));
    return r;
  }));
  if (st.waves.length) table(section, ["wave", "percent", "opens", "open", "hosts", "updated", "failed", "pending"], st.waves.map(w => {
    const r = document.createElement("tr");
    cell(r, w.wave); cell(r, w.percent + "%"); cell(r, w.opens_at); cell(r, w.open ? "yes" : "no");
    cell(r, w.hosts); cell(r, w.updated); cell(r, w.failed); cell(r, w.pending);
    return r;
  }));
  table(section, ["host", "version", "serial", "state", "health", "last seen", "wave", "last error"], st.hosts.map(h => {
    const r = document.createElement("tr");
    r.className = "host" + (h.failed_current ? " failed" : h.stale ? " stale" : h.on_current ? " updated" : "");
    r.dataset.host = h.host;
    cell(r, h.host); cell(r, h.version); cell(r, h.serial); cell(r, h.state + (h.stale ? " (stale)" : ""));
    cell(r, h.health); cell(r, ago(h.last_seen_s)); cell(r, h.wave); cell(r, h.last_error, "error");
    return r;
  }));
  parent.appendChild(section);
}
async function refresh() {
  try {
    const response = await fetch("/api/status", {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    const apps = document.getElementById("apps");
    const fresh = document.createElement("div");
    fresh.id = "apps";
    for (const st of body.apps) renderApp(fresh, st);
    if (!body.apps.length) fresh.textContent = "no apps in this store yet";
    apps.replaceWith(fresh);
    document.getElementById("problem").textContent = "";
    document.getElementById("meta").textContent = "updated " + new Date().toISOString().replace(/\.\d+Z$/, "Z") + ", refreshing every " + REFRESH_MS / 1000 + " s";
    document.body.dataset.loaded = "yes";
  } catch (error) {
    document.getElementById("problem").textContent = "cannot read the status: " + error.message;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"##;
