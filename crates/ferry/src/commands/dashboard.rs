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
    /// Who published each release, by app and version: release documents never change, so
    /// each is read once, not on every page refresh.
    provenance: tokio::sync::Mutex<ProvenanceCache>,
}

type ProvenanceCache =
    std::collections::HashMap<(String, String), Option<ferry_release::Provenance>>;

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
        provenance: Default::default(),
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
    let mut releases = serde_json::Map::new();
    for app in apps {
        let status = ferry_fleet::collect(&shared.store, &app, &shared.channel, shared.stale_after)
            .await
            .with_context(|| format!("cannot read the status of {app}/{}", shared.channel))?;
        releases.insert(app.clone(), release_history(shared, &app, &status).await);
        statuses.push(status);
    }
    Ok(json!({"schema": 1, "apps": statuses, "releases": releases}))
}

/// The channel's last releases, newest first, with who published them from what (an empty
/// list when the history cannot be read: the page then only lacks that table).
async fn release_history(
    shared: &Shared,
    app: &str,
    status: &ferry_fleet::FleetStatus,
) -> serde_json::Value {
    const SHOWN: usize = 10;
    let Ok(mut entries) =
        ferry_store::history(&shared.store, app, &shared.channel, Some(SHOWN)).await
    else {
        return json!([]);
    };
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.serial));
    let current = status.pointer.as_ref().map(|pointer| pointer.serial);
    let mut rows = Vec::new();
    for entry in entries {
        let key = (app.to_owned(), entry.version.clone());
        let known = shared.provenance.lock().await.get(&key).cloned();
        let provenance = match known {
            Some(known) => known,
            None => {
                let read =
                    ferry_store::read_release_document(&shared.store, app, &entry.version).await;
                let found = read
                    .as_ref()
                    .ok()
                    .and_then(Option::as_ref)
                    .and_then(|release| release.provenance.clone());
                // Only an answer is kept; a failed read is tried again next time.
                if read.is_ok() {
                    shared.provenance.lock().await.insert(key, found.clone());
                }
                found
            }
        };
        rows.push(json!({
            "serial": entry.serial,
            "version": entry.version,
            "published_at": ferry_release::format_time(entry.published_at),
            "key_id": entry.key_id.map(|id| id.to_string()),
            "current": Some(entry.serial) == current,
            "paused": entry.pointer.paused,
            "by": provenance.as_ref().map(crate::provenance::describe),
        }));
    }
    json!(rows)
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
h3 { font-size: 14px; margin: 1em 0 .3em 0; color: #444; }
table { border-collapse: collapse; margin: .4em 0 1em 0; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #eee; }
td.error { white-space: normal; max-width: 40em; color: #933; }
.current { font-weight: bold; }
.paused { color: #fff; background: #c60; padding: 0 .4em; border-radius: 3px; }
.lock { background: #fe9; border: 1px solid #db3; padding: .3em .6em; display: inline-block; margin: .3em 0; }
.provenance { color: #555; }
tr.failed { background: #fdd; } tr.stale { background: #ffd; } tr.updated { background: #dfd; }
#meta { color: #666; }
#problem { color: #b00; font-weight: bold; }
.wave { display: flex; align-items: center; gap: .6em; margin: .25em 0; }
.wave .label { width: 27em; font-size: 13px; }
.bar { display: flex; width: 34em; height: 14px; background: #e4e4e4; border-radius: 3px; overflow: hidden; }
.bar .updated { background: #3a3; } .bar .failed { background: #d33; } .bar .pending { background: #bbb; }
.bar.closed { opacity: .45; }
.panels { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
canvas.grid { background: #fff; border: 1px solid #ddd; image-rendering: pixelated; }
svg.timeline { background: #fff; border: 1px solid #ddd; }
.legend span { display: inline-block; width: .9em; height: .9em; margin: 0 .25em 0 .8em; vertical-align: -2px; }
.hover { color: #444; min-height: 1.4em; font-size: 13px; }
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
// How a host is drawn: the same classes as `ferry status` counts.
const COLOURS = {updated: "#3a3", failed: "#d33", stale: "#e8c21c", updating: "#39f", pending: "#bbb"};
const MAX_ROWS = 200;
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}
function cell(row, text, className) {
  const td = el("td", className);
  td.textContent = text === null || text === undefined ? "-" : String(text);
  row.appendChild(td);
  return td;
}
function table(parent, headers, rows, className) {
  const t = el("table", className);
  const head = el("tr");
  for (const h of headers) head.appendChild(el("th", "", h));
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
function kind(h) {
  if (h.failed_current) return "failed";
  if (h.stale) return "stale";
  if (h.on_current) return "updated";
  if (h.state === "updating") return "updating";
  return "pending";
}
function waves(parent, st) {
  if (!st.waves.length) return;
  const box = el("div", "waves");
  box.appendChild(el("h3", "", "rollout by wave"));
  for (const w of st.waves) {
    const line = el("div", "wave");
    line.dataset.wave = w.wave;
    line.appendChild(el("div", "label", "wave " + w.wave + " · " + w.percent + "% · " + (w.open ? "open" : "opens " + w.opens_at) + " · " + w.updated + "/" + w.hosts + " updated" + (w.failed ? ", " + w.failed + " failed" : "")));
    const bar = el("div", "bar" + (w.open ? "" : " closed"));
    const total = Math.max(w.hosts, 1);
    for (const [name, n] of [["updated", w.updated], ["failed", w.failed], ["pending", w.pending]]) {
      if (!n) continue;
      const seg = el("span", name);
      seg.style.width = (100 * n / total) + "%";
      bar.appendChild(seg);
    }
    line.appendChild(bar);
    box.appendChild(line);
  }
  parent.appendChild(box);
}
// One square per host, in host order, coloured by state: readable at 10,000 hosts where a
// table is not. The readout under it names the host under the pointer.
function grid(parent, st) {
  const box = el("div");
  box.appendChild(el("h3", "", "hosts (" + st.hosts.length + ")"));
  const n = st.hosts.length;
  const size = n > 2500 ? 5 : n > 400 ? 9 : 16;
  const columns = Math.max(1, Math.min(n, Math.floor(640 / size)));
  const rows = Math.max(1, Math.ceil(n / columns));
  const canvas = el("canvas", "grid");
  canvas.width = columns * size; canvas.height = rows * size;
  canvas.dataset.cells = n;
  const counts = {};
  const g = canvas.getContext("2d");
  st.hosts.forEach((h, i) => {
    const k = kind(h);
    counts[k] = (counts[k] || 0) + 1;
    g.fillStyle = COLOURS[k];
    g.fillRect((i % columns) * size, Math.floor(i / columns) * size, size - 1, size - 1);
  });
  for (const [k, c] of Object.entries(counts)) canvas.dataset[k] = c;
  const readout = el("div", "hover", "point at a square to see the host");
  canvas.addEventListener("mousemove", e => {
    const i = Math.floor(e.offsetY / size) * columns + Math.floor(e.offsetX / size);
    const h = st.hosts[i];
    readout.textContent = h ? h.host + ": " + (h.version || "nothing") + ", " + h.state + (h.stale ? " (stale)" : "") + (h.held ? " — HELD: " + h.held : "") + (h.waiting ? " — " + h.waiting : "") + (h.last_error ? " — " + h.last_error : "") : "";
  });
  box.appendChild(canvas);
  const legend = el("div", "legend");
  for (const [k, colour] of Object.entries(COLOURS)) {
    const s = el("span"); s.style.background = colour;
    legend.appendChild(s);
    legend.appendChild(document.createTextNode(k + " " + (counts[k] || 0)));
  }
  box.appendChild(legend);
  box.appendChild(readout);
  parent.appendChild(box);
}
// Hosts on the current release over time since it was published (each host counts from
// its last state change), failures marked where they happened.
function timeline(parent, st) {
  const p = st.pointer;
  if (!p) return;
  const start = Date.parse(p.published_at);
  const now = Date.now();
  const took = st.hosts.filter(h => h.on_current && h.last_change).map(h => Math.max(start, Date.parse(h.last_change))).sort((a, b) => a - b);
  const failed = st.hosts.filter(h => h.failed_current && h.last_change).map(h => Math.max(start, Date.parse(h.last_change)));
  const W = 520, H = 180, M = 30;
  const span = Math.max(now - start, 1000);
  const total = Math.max(st.hosts.length, 1);
  const x = t => M + (W - 2 * M) * (t - start) / span;
  const y = n => H - M - (H - 2 * M) * n / total;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "timeline");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  svg.dataset.points = took.length;
  svg.dataset.failures = failed.length;
  const line = (x1, y1, x2, y2, colour) => {
    const l = document.createElementNS(ns, "line");
    l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
    l.setAttribute("stroke", colour); svg.appendChild(l);
  };
  const text = (tx, ty, value, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("font-size", "11");
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = value; svg.appendChild(t);
  };
  line(M, H - M, W - M, H - M, "#999"); line(M, M, M, H - M, "#999");
  text(M - 4, M + 4, String(total), "end"); text(M - 4, H - M, "0", "end");
  text(M, H - M + 14, "published"); text(W - M, H - M + 14, "now", "end");
  let points = [[x(start), y(0)]];
  took.forEach((t, i) => { points.push([x(t), y(i)]); points.push([x(t), y(i + 1)]); });
  points.push([x(now), y(took.length)]);
  const poly = document.createElementNS(ns, "polyline");
  poly.setAttribute("points", points.map(p => p.join(",")).join(" "));
  poly.setAttribute("fill", "none"); poly.setAttribute("stroke", "#3a3"); poly.setAttribute("stroke-width", "2");
  svg.appendChild(poly);
  for (const t of failed) {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", x(t)); c.setAttribute("cy", H - M); c.setAttribute("r", "4"); c.setAttribute("fill", "#d33");
    svg.appendChild(c);
  }
  const box = el("div");
  box.appendChild(el("h3", "", "hosts on " + p.version + " since it was published (red: failures)"));
  box.appendChild(svg);
  parent.appendChild(box);
}
function renderApp(parent, st, releases) {
  const section = el("section", "app");
  section.dataset.app = st.app;
  const h2 = el("h2");
  const p = st.pointer;
  h2.textContent = st.app + "/" + st.channel + ": " + (p ? p.version + " (serial " + p.serial + ")" : "never published");
  if (p && p.paused) { h2.appendChild(document.createTextNode(" ")); h2.appendChild(el("span", "paused", "PAUSED")); }
  section.appendChild(h2);
  if (p && p.provenance) {
    const v = p.provenance;
    const git = v.git ? ", commit " + v.git.commit.slice(0, 12) + (v.git.dirty ? " (dirty)" : "") + (v.git.branch ? " on " + v.git.branch : "") + (v.git.tag ? ", tag " + v.git.tag : "") : "";
    section.appendChild(el("div", "provenance", "published by " + v.by + git + " with key " + v["key-id"]));
  }
  if (st.deploy_lock) {
    const l = st.deploy_lock;
    section.appendChild(el("div", "lock", "deploy in progress: " + l.version + " by " + l.owner + " since " + l.since));
  }
  const t = st.totals;
  section.appendChild(el("div", "totals", t.hosts + " hosts: " + t.updated + " updated, " + t.failed + " failed, " + t.pending + " pending, " + t.stale + " stale" + (t.held ? ", " + t.held + " held" : "") + (p ? "; waves " + p.waves + " from " + p.published_at : "")));
  waves(section, st);
  const panels = el("div", "panels");
  if (st.hosts.length) grid(panels, st);
  timeline(panels, st);
  section.appendChild(panels);
  table(section, ["version", "hosts", "states"], st.versions.map(v => {
    const r = el("tr", "version");
    cell(r, v.version + (v.current ? " (current)" : ""), v.current ? "current" : "");
    cell(r, v.hosts);
    cell(r, Object.entries(v.states).map(([k, n]) => k + " " + n).join(", "));
    return r;
  }));
  if (releases && releases.length) {
    section.appendChild(el("h3", "", "releases"));
    table(section, ["serial", "version", "published", "key", "by"], releases.map(rel => {
      const r = el("tr", "release" + (rel.current ? " current" : ""));
      cell(r, rel.serial); cell(r, rel.version + (rel.paused ? " (paused)" : "")); cell(r, rel.published_at);
      cell(r, rel.key_id); cell(r, rel.by);
      return r;
    }), "releases");
  }
  // Every host when they fit in a table; beyond that the ones that need a look first.
  const order = {failed: 0, stale: 1, updating: 2, pending: 3, updated: 4};
  let hosts = st.hosts;
  if (hosts.length > MAX_ROWS) {
    hosts = hosts.slice().sort((a, b) => order[kind(a)] - order[kind(b)]).slice(0, MAX_ROWS);
    section.appendChild(el("h3", "", "showing " + MAX_ROWS + " of " + st.hosts.length + " hosts: failed, stale and pending first"));
  }
  table(section, ["host", "version", "serial", "state", "health", "last seen", "wave", "note"], hosts.map(h => {
    const k = kind(h);
    const r = el("tr", "host" + (k === "failed" || k === "stale" || k === "updated" ? " " + k : ""));
    r.dataset.host = h.host;
    cell(r, h.host); cell(r, h.version); cell(r, h.serial); cell(r, h.state + (h.stale ? " (stale)" : ""));
    cell(r, h.health); cell(r, ago(h.last_seen_s)); cell(r, h.wave); cell(r, h.held ? "HELD: " + h.held : (h.last_error || h.waiting), h.held || h.last_error ? "error" : "");
    return r;
  }), "hosts");
  parent.appendChild(section);
}
async function refresh() {
  try {
    const response = await fetch("/api/status", {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    const apps = document.getElementById("apps");
    const fresh = el("div");
    fresh.id = "apps";
    for (const st of body.apps) renderApp(fresh, st, (body.releases || {})[st.app]);
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
