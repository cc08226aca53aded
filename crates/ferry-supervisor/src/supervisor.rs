//! The state machine behind `ferry run`: start the app, keep one process serving, swap it on
//! reload (new one ready → old one drained; new one failing → old one kept), restart it with
//! backoff when it exits on its own, and drain everything on shutdown.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::child::Child;
use crate::readiness::{HealthUrl, NotifySocket, notify_systemd};
use crate::{BoundListener, Config, Error, control, spawn};

/// A process that ran at least this long before exiting resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// How often the health URL is probed while waiting for readiness.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What the supervisor is running right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The serving process, if one is up (none while restarting after a crash).
    pub pid: Option<u32>,
    /// How many processes became ready so far (1 after the first start).
    pub generation: u64,
}

type ReloadReply = oneshot::Sender<Result<u32, Error>>;

#[derive(Debug)]
enum Request {
    Reload(Option<ReloadReply>),
}

/// Asks a running supervisor for reloads and its status. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Status>,
}

impl Handle {
    /// Reload and wait for the outcome: the new process's PID, or why it failed (the old
    /// process then keeps serving). Reloads run one at a time, in the order asked.
    pub async fn reload(&self) -> Result<u32, Error> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request::Reload(Some(reply)))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Queue a reload without waiting for it (SIGHUP). False when the queue is full or the
    /// supervisor has stopped.
    pub fn request_reload(&self) -> bool {
        self.requests.try_send(Request::Reload(None)).is_ok()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Wait until the status satisfies `condition` (for example: the first process is up).
    pub async fn wait_for_status(&self, condition: impl FnMut(&Status) -> bool) -> Status {
        let mut status = self.status.clone();
        if let Ok(status) = status.wait_for(condition).await {
            return *status;
        }
        *self.status.borrow()
    }
}

struct Running {
    child: Child,
    _notify: NotifySocket,
}

/// The supervisor: owns the configuration and the bound listeners.
pub struct Supervisor {
    config: Config,
    health_url: Option<HealthUrl>,
    listeners: Vec<BoundListener>,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<Status>,
    handle: Handle,
    generation: u64,
    told_systemd_ready: bool,
    draining: JoinSet<()>,
}

enum Event {
    Stop,
    Reload(Option<ReloadReply>),
    CurrentExited(String),
    StartDue,
    DrainFinished,
}

impl Supervisor {
    /// A supervisor for `config` serving `listeners`, and a handle to reach it.
    pub fn new(
        config: Config,
        listeners: Vec<BoundListener>,
    ) -> Result<(Supervisor, Handle), Error> {
        let health_url = config.health_url.as_deref().map(str::parse).transpose()?;
        let (request_sender, requests) = mpsc::channel(64);
        let (status, status_receiver) = watch::channel(Status {
            pid: None,
            generation: 0,
        });
        let handle = Handle {
            requests: request_sender,
            status: status_receiver,
        };
        let supervisor = Supervisor {
            config,
            health_url,
            listeners,
            requests,
            status,
            handle: handle.clone(),
            generation: 0,
            told_systemd_ready: false,
            draining: JoinSet::new(),
        };
        Ok((supervisor, handle))
    }

    /// Run until `shutdown` resolves, then drain the serving process (SIGTERM, SIGKILL after
    /// the drain deadline), wait for every child, and return.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_sender, stopping) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_sender.send(true);
        });
        let _control = match &self.config.control_path {
            Some(path) => Some(control::Server::start(path, self.handle.clone())?),
            None => None,
        };
        let mut current: Option<Running> = None;
        let mut failures: u32 = 0;
        let mut next_start = Instant::now();
        loop {
            let event = {
                let mut stop = stopping.clone();
                let current_exit = async {
                    match &current {
                        Some(running) => running.child.exited().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => Event::Stop,
                    description = current_exit => Event::CurrentExited(description),
                    request = self.requests.recv() => match request {
                        Some(Request::Reload(reply)) => Event::Reload(reply),
                        None => Event::Stop,
                    },
                    () = tokio::time::sleep_until(next_start), if current.is_none() => Event::StartDue,
                    Some(_) = self.draining.join_next(), if !self.draining.is_empty() => Event::DrainFinished,
                }
            };
            match event {
                Event::Stop => break,
                Event::DrainFinished => {}
                Event::Reload(reply) => {
                    tracing::info!("reload: starting a new process");
                    match self.start(&stopping).await {
                        Ok(new) => {
                            let pid = new.child.pid as u32;
                            if let Some(old) = current.replace(new) {
                                tracing::info!(
                                    old = old.child.pid,
                                    new = pid,
                                    "reload succeeded: draining the old process"
                                );
                                self.drain(old);
                            }
                            failures = 0;
                            self.publish(current.as_ref());
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(pid));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(
                                serving = current.as_ref().map(|running| running.child.pid),
                                "reload failed, the old process keeps serving: {error}"
                            );
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(error));
                            }
                        }
                    }
                }
                Event::CurrentExited(description) => {
                    let Some(gone) = current.take() else { continue };
                    if gone.child.started.elapsed() >= STABLE_RUN {
                        failures = 0;
                    }
                    failures += 1;
                    let delay = self.config.restart_delay(failures);
                    tracing::warn!(
                        pid = gone.child.pid,
                        "the process exited on its own ({description}); restarting in {delay:?}"
                    );
                    next_start = Instant::now() + delay;
                    self.publish(None);
                }
                Event::StartDue => match self.start(&stopping).await {
                    Ok(new) => {
                        current = Some(new);
                        self.publish(current.as_ref());
                    }
                    Err(Error::ShuttingDown) => break,
                    // A missing program is retried too: the agent may install the first
                    // release after `ferry run` started (the listeners queue meanwhile).
                    Err(error) => {
                        failures += 1;
                        let delay = self.config.restart_delay(failures);
                        tracing::warn!(
                            "starting the process failed: {error}; retrying in {delay:?}"
                        );
                        next_start = Instant::now() + delay;
                    }
                },
            }
        }
        tracing::info!("shutting down: draining");
        self.requests.close();
        while let Ok(Request::Reload(reply)) = self.requests.try_recv() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::ShuttingDown));
            }
        }
        if let Some(socket) = &self.config.systemd_notify_socket {
            let _ = notify_systemd(socket, "STOPPING=1");
        }
        if let Some(running) = current.take() {
            self.drain(running);
        }
        while self.draining.join_next().await.is_some() {}
        self.publish(None);
        Ok(())
    }

    /// Start a new process and wait until it is ready; on failure it is terminated (its process
    /// group: SIGTERM, SIGKILL after the drain deadline) and the error says why.
    async fn start(&mut self, stopping: &watch::Receiver<bool>) -> Result<Running, Error> {
        let generation = self.generation + 1;
        let notify = NotifySocket::bind(generation)?;
        let program = spawn::resolve_program(&self.config.program)?;
        let listeners: Vec<(&str, &OwnedFd)> = self
            .listeners
            .iter()
            .map(|listener| (listener.name.as_str(), &listener.socket))
            .collect();
        let spawned = spawn::spawn(
            &program,
            &self.config.arguments,
            &listeners,
            notify.address.as_ref(),
        )?;
        let child = Child::watch(spawned.pid, generation);
        tracing::info!(pid = child.pid, generation, program = %program.display(), "started a process; waiting until it is ready");
        match self.wait_ready(&child, &notify, stopping).await {
            Ok(()) => {
                self.generation = generation;
                tracing::info!(pid = child.pid, generation, "the process is ready");
                Ok(Running {
                    child,
                    _notify: notify,
                })
            }
            Err(error) => {
                // Wait until it is gone before reporting: once the failure is reported, only
                // the old process answers (a never-ready app may have accepted connections;
                // SIGTERM first lets it finish them).
                terminate(&child, libc::SIGTERM, true, self.config.drain_timeout).await;
                drop(notify);
                Err(error)
            }
        }
    }

    async fn wait_ready(
        &self,
        child: &Child,
        notify: &NotifySocket,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut stop = stopping.clone();
        let how = match (&self.health_url, self.config.ready_delay) {
            (Some(_), _) => format!(
                "{} to answer 2xx",
                self.config.health_url.as_deref().unwrap_or_default()
            ),
            (None, Some(delay)) => format!("READY=1 or still running after {delay:?}"),
            (None, None) => "READY=1 on NOTIFY_SOCKET".to_owned(),
        };
        let ready = async {
            if let Some(url) = &self.health_url {
                loop {
                    match url.probe(Duration::from_secs(2)).await {
                        Ok(status) if (200..300).contains(&status) => return,
                        Ok(status) => tracing::debug!(status, "health probe not yet 2xx"),
                        Err(error) => tracing::debug!("health probe failed: {error}"),
                    }
                    tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
                }
            }
            let delay = async {
                match self.config.ready_delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notify.ready() => {}
                () = delay => {}
            }
        };
        tokio::select! {
            biased;
            () = stopped(&mut stop) => Err(Error::ShuttingDown),
            status = child.exited() => Err(Error::ExitedBeforeReady { status }),
            () = ready => {
                // A process that exited right after saying READY=1 is not ready.
                if child.has_exited() {
                    return Err(Error::ExitedBeforeReady { status: child.exited().await });
                }
                Ok(())
            }
            () = tokio::time::sleep(self.config.ready_timeout) => Err(Error::NotReadyInTime {
                pid: child.pid as u32,
                seconds: self.config.ready_timeout.as_secs_f64(),
                how,
            }),
        }
    }

    /// SIGTERM the old process (its main PID only, like systemd's KillMode=mixed), SIGKILL
    /// its group after the drain deadline.
    fn drain(&mut self, old: Running) {
        let drain_timeout = self.config.drain_timeout;
        self.draining.spawn(async move {
            let Running { child, _notify } = old;
            terminate(&child, libc::SIGTERM, false, drain_timeout).await;
        });
    }

    fn publish(&mut self, current: Option<&Running>) {
        let status = Status {
            pid: current.map(|running| running.child.pid as u32),
            generation: self.generation,
        };
        self.status.send_replace(status);
        let (Some(socket), Some(pid)) = (&self.config.systemd_notify_socket, status.pid) else {
            return;
        };
        let mut message = format!(
            "STATUS=serving: pid {pid}, generation {}",
            status.generation
        );
        if !self.told_systemd_ready {
            message = format!("READY=1\nMAINPID={}\n{message}", std::process::id());
        }
        match notify_systemd(socket, &message) {
            Ok(()) => self.told_systemd_ready = true,
            Err(error) => tracing::warn!(
                "cannot notify systemd at {}: {error}",
                socket.to_string_lossy()
            ),
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone). The watch guard is dropped
/// inside, so the futures that await this stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Send `signal` (to the group when `whole_group`), wait up to `deadline`, then SIGKILL the
/// group and wait for the exit.
async fn terminate(child: &Child, signal: libc::c_int, whole_group: bool, deadline: Duration) {
    if whole_group {
        child.signal_group(signal);
    } else {
        child.signal(signal);
    }
    match tokio::time::timeout(deadline, child.exited()).await {
        Ok(description) => tracing::info!(
            pid = child.pid,
            generation = child.generation,
            "process exited ({description})"
        ),
        Err(_) => {
            tracing::warn!(
                pid = child.pid,
                "process did not exit within {deadline:?}: SIGKILL to its group"
            );
            child.signal_group(libc::SIGKILL);
            let description = child.exited().await;
            tracing::info!(pid = child.pid, "process exited ({description})");
        }
    }
}
