//! `ferry status`: the fleet as the store sees it — the channel's pointer, every host's
//! report (version, serial, state, health, last seen, last error), hosts per version, the
//! rollout's progress per wave, stale hosts flagged. `--json` prints
//! [`ferry_fleet::FleetStatus`], the stable schema documented in docs/rollout.md.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ferry_fleet::FleetStatus;

use super::store_args::{ChannelArgs, runtime};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: ChannelArgs,
    /// Flag a host stale when its wave opened this long ago and it has neither moved nor
    /// reported since (a few agent intervals plus the health-check timeout).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "5m")]
    pub stale_after: Duration,
    /// Print the status as JSON (schema in docs/rollout.md).
    #[arg(long)]
    pub json: bool,
}

/// Read the fleet's status from the store.
pub fn fetch(args: &Args) -> anyhow::Result<FleetStatus> {
    let store = args.target.store.open(false)?;
    runtime()?
        .block_on(ferry_fleet::collect(
            &store,
            &args.target.app,
            &args.target.channel,
            args.stale_after,
        ))
        .with_context(|| {
            format!(
                "cannot read the status of {}/{} from {}",
                args.target.app,
                args.target.channel,
                store.url()
            )
        })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status = fetch(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(seconds: Option<u64>) -> String {
    match seconds {
        None => "never".into(),
        Some(seconds) if seconds < 120 => format!("{seconds}s ago"),
        Some(seconds) if seconds < 7200 => format!("{}m ago", seconds / 60),
        Some(seconds) if seconds < 172_800 => format!("{}h ago", seconds / 3600),
        Some(seconds) => format!("{}d ago", seconds / 86_400),
    }
}

/// Lay out rows as left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The human-readable status.
pub fn render(status: &FleetStatus) -> String {
    let mut text = String::new();
    match &status.pointer {
        None => {
            let _ = writeln!(
                text,
                "channel {}/{}: never published",
                status.app, status.channel
            );
        }
        Some(pointer) => {
            let _ = writeln!(
                text,
                "channel {}/{}: {} (serial {}){}, waves {} from {}",
                status.app,
                status.channel,
                pointer.version,
                pointer.serial,
                if pointer.paused { " PAUSED" } else { "" },
                pointer.waves,
                pointer.published_at
            );
            if let Some(provenance) = &pointer.provenance {
                let _ = writeln!(
                    text,
                    "published by {}",
                    crate::provenance::describe(provenance)
                );
            }
        }
    }
    if let Some(lock) = &status.deploy_lock {
        let _ = writeln!(
            text,
            "deploy in progress: {} by {} since {} (lock expires {}; `ferry deploy --break-lock` takes it over)",
            lock.version, lock.owner, lock.since, lock.expires_at
        );
    }
    let totals = &status.totals;
    let current = status
        .pointer
        .as_ref()
        .map_or("the current release", |pointer| pointer.version.as_str());
    let _ = writeln!(
        text,
        "hosts: {} — {} on {current}, {} failed it, {} pending, {} stale{}{}",
        totals.hosts,
        totals.updated,
        totals.failed,
        totals.pending,
        totals.stale,
        if totals.held > 0 {
            format!(", {} held", totals.held)
        } else {
            String::new()
        },
        if totals.ignored_reports > 0 {
            format!(
                " ({} reports ignored: unreadable or another channel)",
                totals.ignored_reports
            )
        } else {
            String::new()
        }
    );

    if !status.versions.is_empty() {
        text.push('\n');
        let mut rows = vec![vec!["VERSION".into(), "HOSTS".into(), "STATES".into()]];
        for version in &status.versions {
            let states: Vec<String> = version
                .states
                .iter()
                .map(|(state, count)| format!("{state} {count}"))
                .collect();
            rows.push(vec![
                format!(
                    "{}{}",
                    version.version,
                    if version.current { " *" } else { "" }
                ),
                version.hosts.to_string(),
                states.join(", "),
            ]);
        }
        text.push_str(&table(&rows));
    }

    if !status.waves.is_empty() {
        text.push('\n');
        let mut rows = vec![
            [
                "WAVE", "PERCENT", "OPENS", "OPEN", "HOSTS", "UPDATED", "FAILED", "PENDING",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for wave in &status.waves {
            rows.push(vec![
                wave.wave.to_string(),
                format!("{}%", wave.percent),
                format!(
                    "+{} ({})",
                    ferry_release::format_delay(wave.after_s),
                    wave.opens_at
                ),
                if wave.open { "yes" } else { "no" }.into(),
                wave.hosts.to_string(),
                wave.updated.to_string(),
                wave.failed.to_string(),
                wave.pending.to_string(),
            ]);
        }
        text.push_str(&table(&rows));
    }

    if !status.hosts.is_empty() {
        text.push('\n');
        let mut rows = vec![
            [
                "HOST",
                "VERSION",
                "SERIAL",
                "STATE",
                "HEALTH",
                "LAST SEEN",
                "WAVE",
                "NOTE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for host in &status.hosts {
            let mut error: String = host
                .last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(100)
                .collect();
            // What the operator should know first: held, then waiting (when no error).
            if let Some(waiting) = &host.waiting {
                if host.last_error.is_none() || host.state == "ok" {
                    error = waiting.chars().take(100).collect();
                }
            }
            if let Some(held) = &host.held {
                error = format!(
                    "HELD ({}); {error}",
                    held.chars().take(80).collect::<String>()
                );
            }
            if host.stale {
                error = format!("STALE; {error}");
            }
            rows.push(vec![
                host.host.clone(),
                host.version.clone().unwrap_or_else(|| "-".into()),
                host.serial.map_or("-".into(), |serial| serial.to_string()),
                host.state.clone(),
                host.health.clone(),
                ago(host.last_seen_s),
                host.wave.map_or("-".into(), |wave| wave.to_string()),
                error,
            ]);
        }
        text.push_str(&table(&rows));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_ages_read_well() {
        let text = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "tail text".into()],
        ]);
        assert_eq!(text, "A     BB  C\nlong  x   tail text\n");
        assert_eq!(ago(Some(5)), "5s ago");
        assert_eq!(ago(Some(600)), "10m ago");
        assert_eq!(ago(Some(10_000)), "2h ago");
        assert_eq!(ago(None), "never");
    }
}
