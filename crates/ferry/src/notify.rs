//! Rollout notifications (`ferry watch --notify URL`, `ferry deploy --notify URL`): a JSON
//! event POSTed to each URL for every step of a rollout — started, a wave opened, hosts
//! failed, halted, rolled back, done — with a Slack-compatible `text` field, so a Slack or
//! Mattermost incoming webhook shows it as it is.
//!
//! Delivery never holds up the rollout: events go to a background thread that POSTs them in
//! order, retrying each up to five times with growing pauses (0.5 s … 8 s, 5 s per try), and
//! gives up on an event with a warning. When the command ends, what is still queued gets
//! [`FLUSH_LIMIT`] to go out.

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long the end of a command waits for queued events.
const FLUSH_LIMIT: Duration = Duration::from_secs(15);
/// Tries per event and URL.
const ATTEMPTS: u32 = 5;

/// One rollout event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `started`, `wave-opened`, `hosts-failed`, `halted`, `rolled-back`, `done`,
    /// `timed-out`, `superseded`.
    pub event: &'static str,
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: String,
    /// The release being rolled out.
    pub version: String,
    /// Hosts on the release.
    pub updated: usize,
    /// Hosts that failed it.
    pub failed: usize,
    /// Hosts reporting.
    pub total: usize,
    /// When (RFC 3339).
    pub at: String,
    /// One line for people (Slack's and Mattermost's `text`).
    pub text: String,
}

/// Sends events to the configured URLs, one background thread per URL, so a dead webhook
/// delays no other.
pub struct Notifier {
    workers: Vec<(mpsc::Sender<Event>, JoinHandle<()>)>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Notifier {
    /// A notifier for `urls`; with none, sending does nothing.
    pub fn new(urls: Vec<String>) -> anyhow::Result<Notifier> {
        let deadline: Arc<Mutex<Option<Instant>>> = Default::default();
        let mut workers = Vec::new();
        for url in urls {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--notify {url}: expected an http:// or https:// URL (a webhook)"
            );
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(5))
                .build()?;
            let (sender, receiver) = mpsc::channel::<Event>();
            let flush_by = deadline.clone();
            let worker = std::thread::Builder::new()
                .name("notify".into())
                .spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        tracing::warn!(
                            "notifications to {url} are off: cannot start their runtime"
                        );
                        return;
                    };
                    for event in receiver {
                        runtime.block_on(deliver(&client, &url, &event, &flush_by));
                    }
                })?;
            workers.push((sender, worker));
        }
        Ok(Notifier { workers, deadline })
    }

    /// Queue an event for every URL (returns at once).
    pub fn send(&self, event: Event) {
        for (sender, _) in &self.workers {
            let _ = sender.send(event.clone());
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // No more events; what is queued gets until the deadline, then the threads are left
        // to end with the process.
        let until = Instant::now() + FLUSH_LIMIT;
        if let Ok(mut deadline) = self.deadline.lock() {
            *deadline = Some(until);
        }
        let workers: Vec<JoinHandle<()>> = self
            .workers
            .drain(..)
            .map(|(sender, worker)| {
                drop(sender);
                worker
            })
            .collect();
        while workers.iter().any(|worker| !worker.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    flush_by: &Mutex<Option<Instant>>,
) {
    let Ok(body) = serde_json::to_vec(event) else {
        return;
    };
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let problem = match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("answered {}", response.status()),
            Err(error) => error.to_string(),
        };
        let past_deadline = flush_by
            .lock()
            .ok()
            .and_then(|deadline| *deadline)
            .is_some_and(|deadline| Instant::now() + pause > deadline);
        if attempt == ATTEMPTS || past_deadline {
            tracing::warn!(
                "gave up notifying {url} of {} after {attempt} tries: {problem}",
                event.event
            );
            return;
        }
        tracing::debug!(url, attempt, "notification failed ({problem}); retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(8));
    }
}
