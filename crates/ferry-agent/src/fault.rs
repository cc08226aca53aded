//! Test-only crash points. With the `fault-injection` feature, `FERRY_AGENT_CRASH_AT=<point>`
//! makes the agent `SIGKILL` itself when it reaches that point, right after the journal
//! records it — the same thing as an operator's `kill -9` or a power cut there. Without the
//! feature this compiles to nothing.

/// The variable naming the crash point.
pub const CRASH_AT_VARIABLE: &str = "FERRY_AGENT_CRASH_AT";

/// Every crash point, in the order an update passes them.
pub const POINTS: &[&str] = &[
    "downloading",
    "downloaded",
    "installing",
    "installed",
    "restarting",
    "restarted",
    "checking",
    "committed",
    "rolling-back",
    "rolled-back",
];

/// Die here if the test asked for it.
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var(CRASH_AT_VARIABLE).is_ok_and(|wanted| wanted == name) {
        tracing::warn!(
            point = name,
            "fault injection: killing the agent with SIGKILL"
        );
        // SAFETY: kill(2) on our own PID has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
