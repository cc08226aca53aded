//! `ferry reload`: ask a `ferry run` for a zero-downtime swap over its control socket and
//! wait for the answer. It is the packaged unit's `ExecReload=`, so `systemctl reload`
//! returns only once the new process serves, and fails when the swap failed (the old
//! process is then still serving).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "In a unit: ExecReload=/usr/bin/ferry reload --control /run/hello/control.sock"
)]
pub struct Args {
    /// The control socket of the `ferry run` to reload (its `--control PATH`).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// How long the swap may take: allow the supervisor's --ready-timeout plus
    /// --drain-timeout (plus reloads queued before this one).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "120s")]
    pub timeout: Duration,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pid =
        ferry_supervisor::control::reload(&args.control, args.timeout).with_context(|| {
            format!(
                "the reload through {} failed; the previous process keeps serving",
                args.control.display()
            )
        })?;
    println!("reloaded: PID {pid} serves");
    Ok(ExitCode::SUCCESS)
}
