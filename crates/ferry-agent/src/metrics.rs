//! Counters for the opt-in Prometheus endpoint (`--metrics 127.0.0.1:PORT`): polls, 304s,
//! errors, installs, rollbacks, refusals and the current serial, served as text by a tiny
//! HTTP responder on the agent's own runtime.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The agent's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Pointer polls made.
    pub polls: AtomicU64,
    /// Polls answered "not modified".
    pub not_modified: AtomicU64,
    /// Cycles that ended in an error.
    pub errors: AtomicU64,
    /// Releases installed and committed.
    pub installs: AtomicU64,
    /// Automatic rollbacks.
    pub rollbacks: AtomicU64,
    /// Pointers or artifacts refused by verification.
    pub refused: AtomicU64,
    /// Signed pointers older than the serial floor (a cache or replica behind), ignored.
    pub stale_pointers: AtomicU64,
    /// The serial of the committed release.
    pub current_serial: AtomicU64,
    /// Bytes fetched from the store for releases (patches or whole packages).
    pub download_bytes: AtomicU64,
    /// What those releases would have cost as whole packages.
    pub download_full_bytes: AtomicU64,
    /// Releases rebuilt from a patch.
    pub patched: AtomicU64,
    /// Patches that failed, so the whole package was downloaded instead.
    pub patch_fallbacks: AtomicU64,
}

impl Metrics {
    /// Add one to a counter.
    pub fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one fetched release.
    pub fn record_download(&self, record: &ferry_release::DownloadRecord) {
        self.download_bytes
            .fetch_add(record.bytes, Ordering::Relaxed);
        if record.via != "cached" {
            self.download_full_bytes
                .fetch_add(record.full_bytes, Ordering::Relaxed);
        }
        if record.via == "patch" {
            Metrics::increment(&self.patched);
        }
        if record
            .note
            .as_deref()
            .is_some_and(|note| note.starts_with("patch failed"))
        {
            Metrics::increment(&self.patch_fallbacks);
        }
    }
}

/// One app's counters as served: labelled with its app and channel.
#[derive(Debug, Clone)]
pub struct Target {
    /// The app.
    pub app: String,
    /// Its channel.
    pub channel: String,
    /// Its counters.
    pub metrics: std::sync::Arc<Metrics>,
}

type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Metrics) -> &AtomicU64,
);

/// Every series: name, type, help, and the counter it reads.
const SERIES: [Series; 12] = [
    (
        "ferry_agent_polls_total",
        "counter",
        "Channel pointer polls.",
        |m| &m.polls,
    ),
    (
        "ferry_agent_not_modified_total",
        "counter",
        "Polls answered not modified.",
        |m| &m.not_modified,
    ),
    (
        "ferry_agent_errors_total",
        "counter",
        "Cycles that failed.",
        |m| &m.errors,
    ),
    (
        "ferry_agent_installs_total",
        "counter",
        "Releases installed and committed.",
        |m| &m.installs,
    ),
    (
        "ferry_agent_rollbacks_total",
        "counter",
        "Automatic rollbacks after a failed update.",
        |m| &m.rollbacks,
    ),
    (
        "ferry_agent_refused_total",
        "counter",
        "Pointers or artifacts refused by verification.",
        |m| &m.refused,
    ),
    (
        "ferry_agent_stale_pointers_total",
        "counter",
        "Signed pointers older than one already accepted (a cache behind, or a replay), ignored.",
        |m| &m.stale_pointers,
    ),
    (
        "ferry_agent_download_bytes_total",
        "counter",
        "Bytes fetched from the store for releases (patches or whole packages).",
        |m| &m.download_bytes,
    ),
    (
        "ferry_agent_download_full_bytes_total",
        "counter",
        "Whole-package size of the releases fetched (the cost without patches).",
        |m| &m.download_full_bytes,
    ),
    (
        "ferry_agent_patched_total",
        "counter",
        "Releases rebuilt from a patch and verified.",
        |m| &m.patched,
    ),
    (
        "ferry_agent_patch_fallbacks_total",
        "counter",
        "Patches that failed, so the whole package was downloaded.",
        |m| &m.patch_fallbacks,
    ),
    (
        "ferry_agent_current_serial",
        "gauge",
        "Serial of the committed release.",
        |m| &m.current_serial,
    ),
];

/// The Prometheus text of several apps' counters (app, channel, counters): each series
/// once, a line per app.
pub fn render_all(targets: &[(&str, &str, &Metrics)]) -> String {
    let mut out = String::new();
    for (name, kind, help, field) in SERIES {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (app, channel, metrics) in targets {
            out.push_str(&format!(
                "{name}{{app=\"{app}\",channel=\"{channel}\"}} {}\n",
                field(metrics).load(Ordering::Relaxed)
            ));
        }
    }
    out
}

/// Serve the metrics of `targets` (one per app) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, targets: Vec<Target>) {
    loop {
        let mut socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                // Out of file descriptors and the like: do not spin.
                tracing::debug!("metrics endpoint cannot accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let body = render_all(
            &targets
                .iter()
                .map(|target| {
                    (
                        target.app.as_str(),
                        target.channel.as_str(),
                        &*target.metrics,
                    )
                })
                .collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            // Read the request head (bounded) before answering: closing a socket with unread
            // bytes makes the kernel reset the connection and the client lose the answer.
            let mut request = Vec::with_capacity(512);
            let mut buffer = [0u8; 1024];
            let read_head = async {
                while request.len() < 16 * 1024 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(count) => request.extend_from_slice(&buffer[..count]),
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read_head).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_endpoint_serves_prometheus_text() {
        let metrics = std::sync::Arc::new(Metrics::default());
        Metrics::increment(&metrics.polls);
        Metrics::increment(&metrics.polls);
        metrics.current_serial.store(7, Ordering::Relaxed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let other = std::sync::Arc::new(Metrics::default());
        tokio::spawn(serve(
            listener,
            vec![
                Target {
                    app: "hello".into(),
                    channel: "stable".into(),
                    metrics,
                },
                Target {
                    app: "worker".into(),
                    channel: "stable".into(),
                    metrics: other,
                },
            ],
        ));
        let (status, body) = crate::health::http_get(&format!("http://{address}/metrics"))
            .await
            .unwrap();
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("ferry_agent_polls_total{app=\"hello\",channel=\"stable\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("ferry_agent_current_serial{app=\"hello\",channel=\"stable\"} 7"),
            "{body}"
        );
        assert!(
            body.contains("ferry_agent_polls_total{app=\"worker\",channel=\"stable\"} 0"),
            "{body}"
        );
        assert_eq!(
            body.matches("# TYPE ferry_agent_polls_total counter")
                .count(),
            1,
            "one TYPE line per series: {body}"
        );
    }
}
