//! The shutdown signal: SIGTERM (what `ferry run` and systemd send to drain) or SIGINT,
//! delivered as a runtime-agnostic `Future` and as a blocking wait.
//!
//! The signal handler only writes a byte to a pipe (async-signal-safe); a small thread reads
//! it and wakes every waiter, so no async runtime is required.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::Error;

/// Resolves once SIGTERM or SIGINT arrived. Cheap to clone; every clone resolves.
#[derive(Clone, Debug)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    requested: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    condvar: Condvar,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Install the SIGTERM/SIGINT handler (once per process) and return the signal.
pub fn shutdown() -> Result<Shutdown, Error> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(shared) = SHARED.get() {
        return Ok(Shutdown {
            shared: shared.clone(),
        });
    }
    let shared = Arc::new(Shared::default());
    install(shared.clone()).map_err(|source| Error::Signal { source })?;
    let _ = SHARED.set(shared.clone());
    Ok(Shutdown { shared })
}

impl Shutdown {
    /// Whether the signal has arrived.
    pub fn is_requested(&self) -> bool {
        self.shared.requested.load(Ordering::SeqCst)
    }

    /// Block the calling thread until the signal arrives.
    pub fn wait(&self) {
        let mut wakers = self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while !self.is_requested() {
            wakers = self
                .shared
                .condvar
                .wait(wakers)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.is_requested() {
            return Poll::Ready(());
        }
        let mut wakers = self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Checked again under the lock: the reader thread sets the flag before taking it.
        if self.is_requested() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|waker| waker.will_wake(context.waker())) {
            wakers.push(context.waker().clone());
        }
        Poll::Pending
    }
}

extern "C" fn on_signal(_signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) and errno access are async-signal-safe; errno is restored so the
        // interrupted code does not see ours.
        unsafe {
            let saved = *libc::__errno_location();
            let byte = 1u8;
            libc::write(fd, (&raw const byte).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

fn install(shared: Arc<Shared>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    // The reader blocks; only the writer stays non-blocking so a flood of signals can never
    // stall the handler.
    // SAFETY: fcntl on the descriptor just created.
    unsafe {
        let flags = libc::fcntl(read_fd, libc::F_GETFL);
        libc::fcntl(read_fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    PIPE_WRITE.store(write_fd, Ordering::SeqCst);
    std::thread::Builder::new()
        .name("ferry-handoff-shutdown".to_owned())
        .spawn(move || {
            let mut byte = 0u8;
            loop {
                // SAFETY: reads at most one byte into `byte`.
                let count = unsafe { libc::read(read_fd, (&raw mut byte).cast(), 1) };
                if count == 1 {
                    break;
                }
                if count < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The pipe is never closed; any other outcome is unexpected, stop quietly.
                return;
            }
            shared.requested.store(true, Ordering::SeqCst);
            let wakers = std::mem::take(
                &mut *shared
                    .wakers
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            shared.condvar.notify_all();
            for waker in wakers {
                waker.wake();
            }
        })?;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::task::Wake;
    use std::time::Duration;

    struct Signal(mpsc::Sender<()>);

    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            let _ = self.0.send(());
        }
    }

    #[test]
    fn sigterm_resolves_the_future_and_the_blocking_wait() {
        let shutdown = shutdown().unwrap();
        let mut future = shutdown.clone();
        let (sender, woken) = mpsc::channel();
        let waker = Waker::from(Arc::new(Signal(sender)));
        let mut context = Context::from_waker(&waker);
        assert!(Pin::new(&mut future).poll(&mut context).is_pending());
        assert!(!shutdown.is_requested());

        let waiter = shutdown.clone();
        let (done, waited) = mpsc::channel();
        std::thread::spawn(move || {
            waiter.wait();
            let _ = done.send(());
        });
        // SAFETY: raise(3) delivers SIGTERM to this process, whose handler is ours now.
        unsafe {
            libc::raise(libc::SIGTERM);
        }
        woken
            .recv_timeout(Duration::from_secs(10))
            .expect("the future's waker was woken");
        assert!(Pin::new(&mut future).poll(&mut context).is_ready());
        waited
            .recv_timeout(Duration::from_secs(10))
            .expect("wait() returned");
        assert!(
            super::shutdown().unwrap().is_requested(),
            "later handles see it too"
        );
    }
}
