//! `ferry watch`: follow a rollout through the host reports and halt it when too many hosts
//! fail the release — a signed pause, or with `--rollback` a signed rollback — then say what
//! was done. The exit status tells a CI job how it ended (see `EXIT STATUS` in `--help`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_fleet::{Threshold, Verdict};
use ferry_store::PauseOutcome;

use super::store_args::{ChannelArgs, KeyArgs, runtime};

/// Every host is on the release (or failed it within the threshold).
pub const EXIT_ROLLED_OUT: u8 = 0;
/// Too many failures: the rollout was paused.
pub const EXIT_PAUSED: u8 = 2;
/// Too many failures: the channel was rolled back.
pub const EXIT_ROLLED_BACK: u8 = 3;
/// `--timeout` passed before the rollout finished.
pub const EXIT_TIMED_OUT: u8 = 4;
/// The channel moved to another release while watching (someone else published or rolled
/// back).
pub const EXIT_SUPERSEDED: u8 = 5;

#[derive(Debug, clap::Args)]
#[command(after_help = "EXIT STATUS:\n  \
    0  rolled out: every reporting host runs the release (or failed it within --max-failures)\n  \
    1  error (bad arguments, the store could not be read at start, the halt could not be written)\n  \
    2  halted: failures exceeded --max-failures and the rollout was paused\n  \
    3  halted: failures exceeded --max-failures and the channel was rolled back (--rollback)\n  \
    4  timed out: --timeout passed before the rollout finished\n  \
    5  superseded: the channel was pointed at another release while watching")]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Halt when more hosts than this failed the release: a share of the reporting hosts
    /// (`5%`) or a number of hosts (`3`).
    #[arg(long, default_value = "5%", value_name = "LIMIT")]
    pub max_failures: String,
    /// Halt by rolling the channel back to the previous release instead of pausing it.
    #[arg(long)]
    pub rollback: bool,
    /// The release to watch (default: the one the channel names now).
    #[arg(long = "release", value_name = "VERSION")]
    pub release: Option<String>,
    /// Give up (exit 4) after this long.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "1h")]
    pub timeout: Duration,
    /// Time between reads of the host reports.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "2s")]
    pub interval: Duration,
    /// A host whose agent sends heartbeats and has not reported for this long is gone: it
    /// does not count as updated (so the rollout is not done while it is silent).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "1h")]
    pub stale_after: Duration,
    /// Write even on a store that ignores conditional writes.
    #[arg(long)]
    pub single_publisher: bool,
    /// POST a JSON event for each step of the rollout to this webhook (repeat for several):
    /// started, wave opened, hosts failed, halted, rolled back, done, with a Slack-compatible
    /// `text` (docs/rollout.md). Retried with backoff; never holds up the rollout.
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    watch(&args).map(ExitCode::from)
}

/// Watch the rollout; the exit status (see `EXIT STATUS`).
pub fn watch(args: &Args) -> anyhow::Result<u8> {
    let threshold = Threshold::parse(&args.max_failures)?;
    let key = args.key.load()?;
    let signer = args.key.signer(&key)?;
    let store = args.target.store.open(false)?;
    let runtime = runtime()?;
    let stale_after = args.stale_after;
    let read = |store: &ferry_store::Store| {
        runtime.block_on(ferry_fleet::collect(
            store,
            &args.target.app,
            &args.target.channel,
            stale_after,
        ))
    };
    let first = read(&store).with_context(|| {
        format!(
            "cannot read {}/{} from {}",
            args.target.app,
            args.target.channel,
            store.url()
        )
    })?;
    let Some(pointer) = &first.pointer else {
        anyhow::bail!(
            "channel {}/{} has never been published; nothing to watch",
            args.target.app,
            args.target.channel
        );
    };
    let version = args.release.clone().unwrap_or(pointer.version.clone());
    let notifier = crate::notify::Notifier::new(args.notify.clone())?;
    let notify = |event: &'static str, status: &ferry_fleet::FleetStatus, text: String| {
        let (updated, failed, total) = match ferry_fleet::judge(status, &version, threshold) {
            Verdict::Rolling {
                updated,
                failed,
                total,
            } => (updated, failed, total),
            Verdict::Done { updated, failed } => (updated, failed, status.totals.hosts),
            Verdict::Failing { failed, total } => (status.totals.updated, failed, total),
            Verdict::Superseded { .. } => (0, 0, status.totals.hosts),
        };
        notifier.send(crate::notify::Event {
            event,
            app: args.target.app.clone(),
            channel: args.target.channel.clone(),
            version: version.clone(),
            updated,
            failed,
            total,
            at: ferry_release::format_time(ferry_release::now_utc()),
            text,
        });
    };
    let mut open_waves: Vec<usize> = first
        .waves
        .iter()
        .filter(|wave| wave.open)
        .map(|wave| wave.wave)
        .collect();
    let mut failed_seen = 0;
    notify(
        "started",
        &first,
        format!(
            "ferry: rolling out {version} to {}/{} (waves {}; {} hosts reporting)",
            args.target.app, args.target.channel, pointer.waves, first.totals.hosts
        ),
    );
    eprintln!(
        "watching {}/{} roll out {version} (serial {}, waves {}); halting by {} above {threshold} failed hosts",
        args.target.app,
        args.target.channel,
        pointer.serial,
        pointer.waves,
        if args.rollback { "rollback" } else { "pause" },
    );
    let started = Instant::now();
    let mut last_line = String::new();
    let mut status = first;
    loop {
        let verdict = ferry_fleet::judge(&status, &version, threshold);
        let line = match &verdict {
            Verdict::Rolling {
                updated,
                failed,
                total,
            } => format!(
                "{updated}/{total} hosts on {version}, {failed} failed{}",
                if status
                    .pointer
                    .as_ref()
                    .is_some_and(|pointer| pointer.paused)
                {
                    " (channel paused)"
                } else {
                    ""
                }
            ),
            other => format!("{other:?}"),
        };
        if line != last_line {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last_line = line;
        }
        for wave in status.waves.iter().filter(|wave| wave.open) {
            if !open_waves.contains(&wave.wave) {
                open_waves.push(wave.wave);
                notify(
                    "wave-opened",
                    &status,
                    format!(
                        "ferry: {}/{} wave {} ({}% of hosts) opened for {version}",
                        args.target.app, args.target.channel, wave.wave, wave.percent
                    ),
                );
            }
        }
        let failed_now: Vec<&str> = status
            .hosts
            .iter()
            .filter(|host| host.failed_current)
            .map(|host| host.host.as_str())
            .collect();
        if failed_now.len() > failed_seen {
            failed_seen = failed_now.len();
            notify(
                "hosts-failed",
                &status,
                format!(
                    "ferry: {} host(s) failed {version} on {}/{}: {}",
                    failed_now.len(),
                    args.target.app,
                    args.target.channel,
                    failed_now.join(", ")
                ),
            );
        }
        match verdict {
            Verdict::Rolling { .. } => {}
            Verdict::Done { updated, failed } => {
                let text = format!(
                    "rolled out {version} on {}/{}: {updated} hosts updated, {failed} failed (within {threshold})",
                    args.target.app, args.target.channel
                );
                println!("{text}");
                notify("done", &status, format!("ferry: {text}"));
                return Ok(EXIT_ROLLED_OUT);
            }
            Verdict::Superseded {
                version: now,
                serial,
            } => {
                let text = format!(
                    "{}/{} no longer names {version}: it names {} (serial {}); stopped watching",
                    args.target.app,
                    args.target.channel,
                    now.as_deref().unwrap_or("nothing"),
                    serial.map_or("-".into(), |serial| serial.to_string())
                );
                println!("{text}");
                notify("superseded", &status, format!("ferry: {text}"));
                return Ok(EXIT_SUPERSEDED);
            }
            Verdict::Failing { failed, total } => {
                let failed_hosts: Vec<&str> = status
                    .hosts
                    .iter()
                    .filter(|host| host.failed_current)
                    .map(|host| host.host.as_str())
                    .collect();
                let halted = halt(
                    args,
                    &runtime,
                    &store,
                    &signer,
                    &version,
                    failed,
                    total,
                    &failed_hosts,
                    threshold,
                );
                let (event, text) = match &halted {
                    Ok((code, text)) if *code == EXIT_ROLLED_BACK => ("rolled-back", text.clone()),
                    Ok((_, text)) => ("halted", text.clone()),
                    Err(error) => ("halted", format!("{error:#}")),
                };
                notify(event, &status, format!("ferry: {text}"));
                return halted.map(|(code, _)| code);
            }
        }
        if started.elapsed() >= args.timeout {
            let text = format!(
                "timed out after {} watching {version} on {}/{}: {last_line}",
                humantime::format_duration(args.timeout),
                args.target.app,
                args.target.channel
            );
            println!("{text}");
            notify("timed-out", &status, format!("ferry: {text}"));
            return Ok(EXIT_TIMED_OUT);
        }
        std::thread::sleep(
            args.interval
                .min(args.timeout.saturating_sub(started.elapsed())),
        );
        match read(&store) {
            Ok(next) => status = next,
            Err(error) => {
                eprintln!("warning: cannot read the fleet's status (retrying): {error:#}")
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn halt(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    store: &ferry_store::Store,
    key: &ferry_store::Signer<'_>,
    version: &str,
    failed: usize,
    total: usize,
    failed_hosts: &[&str],
    threshold: Threshold,
) -> anyhow::Result<(u8, String)> {
    let why = format!(
        "{failed} of {total} hosts failed {version} (more than {threshold}): {}",
        failed_hosts.join(", ")
    );
    if args.rollback {
        let (from, advanced) = runtime
            .block_on(ferry_store::rollback_channel(
                store,
                key,
                &args.target.app,
                &args.target.channel,
                None,
                args.single_publisher,
                false,
            ))
            .with_context(|| format!("{why}; and the rollback FAILED"))?;
        let text = format!(
            "HALTED: {why}\nrolled back {}/{} from {from} to {} (serial {})",
            args.target.app, args.target.channel, advanced.pointer.release.version, advanced.serial
        );
        println!("{text}");
        Ok((EXIT_ROLLED_BACK, text.replace('\n', "; ")))
    } else {
        let outcome = runtime
            .block_on(ferry_store::set_paused(
                store,
                key,
                &args.target.app,
                &args.target.channel,
                true,
                false,
                args.single_publisher,
            ))
            .with_context(|| format!("{why}; and the pause FAILED"))?;
        let serial = match outcome {
            PauseOutcome::Changed(advanced) => advanced.serial,
            PauseOutcome::Unchanged(pointer) => pointer.serial,
        };
        let text = format!(
            "HALTED: {why}\npaused {}/{} at serial {serial}; hosts that have {version} keep it, no other host installs it. `ferry rollback` to go back, `ferry resume` to go on",
            args.target.app, args.target.channel
        );
        println!("{text}");
        Ok((EXIT_PAUSED, text.replace('\n', "; ")))
    }
}
