//! Logging: `tracing` to stderr, level from -v/-q unless RUST_LOG says otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(verbose: u8, quiet: bool) {
    // object_store logs each of its own request retries at INFO; ferry says once, with
    // context, what failed and what it does next, so those lines are noise below -v.
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info,object_store=warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
