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

    /// The Prometheus text exposition of the counters.
    pub fn render(&self, app: &str, channel: &str) -> String {
        let labels = format!("app=\"{app}\",channel=\"{channel}\"");
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "ferry_agent_polls_total",
                "counter",
                "Channel pointer polls.",
                &self.polls,
            ),
            (
                "ferry_agent_not_modified_total",
                "counter",
                "Polls answered not modified.",
                &self.not_modified,
            ),
            (
                "ferry_agent_errors_total",
                "counter",
                "Cycles that failed.",
                &self.errors,
            ),
            (
                "ferry_agent_installs_total",
                "counter",
                "Releases installed and committed.",
                &self.installs,
            ),
            (
                "ferry_agent_rollbacks_total",
                "counter",
                "Automatic rollbacks after a failed update.",
                &self.rollbacks,
            ),
            (
                "ferry_agent_refused_total",
                "counter",
                "Pointers or artifacts refused by verification.",
                &self.refused,
            ),
            (
                "ferry_agent_stale_pointers_total",
                "counter",
                "Signed pointers older than one already accepted (a cache behind, or a replay), ignored.",
                &self.stale_pointers,
            ),
            (
                "ferry_agent_download_bytes_total",
                "counter",
                "Bytes fetched from the store for releases (patches or whole packages).",
                &self.download_bytes,
            ),
            (
                "ferry_agent_download_full_bytes_total",
                "counter",
                "Whole-package size of the releases fetched (the cost without patches).",
                &self.download_full_bytes,
            ),
            (
                "ferry_agent_patched_total",
                "counter",
                "Releases rebuilt from a patch and verified.",
                &self.patched,
            ),
            (
                "ferry_agent_patch_fallbacks_total",
                "counter",
                "Patches that failed, so the whole package was downloaded.",
                &self.patch_fallbacks,
            ),
            (
                "ferry_agent_current_serial",
                "gauge",
                "Serial of the committed release.",
                &self.current_serial,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Serve the metrics on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    app: String,
    channel: String,
) {
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
        let body = metrics.render(&app, &channel);
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
        tokio::spawn(serve(listener, metrics, "hello".into(), "stable".into()));
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
    }
}
