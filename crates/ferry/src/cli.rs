//! The command-line surface: global flags and the list of subcommands. Each subcommand's
//! flags live beside its code in `commands/<name>.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Pack a service into a .deb, publish it to an object store, and roll it out to a fleet
/// with health-gated, zero-downtime restarts.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    // Listed after each command's own flags in `--help`.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, display_order = 10_000)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, display_order = 10_001)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a .deb from a ferry.toml.
    Pack(commands::pack::Args),
    /// Show what is inside a .deb: control fields, scripts, conffiles, files.
    Inspect(commands::inspect::Args),
    /// Make a minisign key pair for signing releases.
    Keygen(commands::keygen::Args),
    /// Upload .debs and point a channel at them (signed).
    Publish(commands::publish::Args),
    /// Pack, publish and watch in one step, from ferry.toml's [deploy] table (CI's command).
    Deploy(commands::deploy::Args),
    /// List the history of a channel.
    Releases(commands::releases::Args),
    /// Point a channel back at an earlier release (a new, higher serial).
    Rollback(commands::rollback::Args),
    /// Point one channel at the release another channel names.
    Promote(commands::promote::Args),
    /// Check a channel's signatures and re-hash its artifacts.
    Verify(commands::verify::Args),
    /// Hold a channel's rollout: agents install nothing new until `ferry resume`.
    Pause(commands::pause::Args),
    /// Release a paused rollout (waves keep their original time base).
    Resume(commands::pause::ResumeArgs),
    /// Show the fleet: every host's version and state, a summary per version, wave progress.
    Status(commands::status::Args),
    /// Follow a rollout and halt it (pause or roll back) when too many hosts fail.
    Watch(commands::watch::Args),
    /// Serve a read-only web page with the fleet's status, refreshing itself.
    Dashboard(commands::dashboard::Args),
    /// Run the update agent on a server (or `ferry agent status`).
    Agent(commands::agent::Args),
    /// Print cloud-init user-data that installs and starts the agent on a new server.
    CloudInit(commands::cloud_init::Args),
    /// Ship configuration without repackaging: push, show, history, rollback.
    Config(commands::config::Args),
    /// Supervise a service: hold its sockets and swap processes without dropping requests.
    Run(commands::run::Args),
    /// The app's keyring: root keys, release keys per channel, thresholds, revocation.
    Keyring(commands::keyring::Args),
    /// Add your signature to a staged pointer; the channel moves once enough have signed.
    Sign(commands::sign::Args),
    /// Ask a `ferry run` for a zero-downtime swap and wait until it is done (ExecReload=).
    Reload(commands::reload::Args),
    /// Install a .deb on a throwaway Debian host with systemd and check it is healthy.
    Try(commands::try_host::Args),
    /// Run the whole loop locally: pack, publish, install, swap, roll back.
    Quickstart(commands::quickstart::Args),
    /// Print a shell completion script: `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions(commands::completions::Args),
    /// Write ferry's man pages (ferry.1 and one per command) into a directory.
    Manpages(commands::completions::ManpagesArgs),
}

impl Command {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Pack(args) => commands::pack::run(args),
            Command::Inspect(args) => commands::inspect::run(args),
            Command::Keygen(args) => commands::keygen::run(args),
            Command::Publish(args) => commands::publish::run(args),
            Command::Deploy(args) => commands::deploy::run(args),
            Command::Releases(args) => commands::releases::run(args),
            Command::Rollback(args) => commands::rollback::run(args),
            Command::Promote(args) => commands::promote::run(args),
            Command::Verify(args) => commands::verify::run(args),
            Command::Pause(args) => commands::pause::run(args),
            Command::Resume(args) => commands::pause::run_resume(args),
            Command::Status(args) => commands::status::run(args),
            Command::Watch(args) => commands::watch::run(args),
            Command::Dashboard(args) => commands::dashboard::run(args),
            Command::Agent(args) => commands::agent::run(args),
            Command::CloudInit(args) => commands::cloud_init::run(args),
            Command::Config(args) => commands::config::run(args),
            Command::Run(args) => commands::run::run(args),
            Command::Keyring(args) => commands::keyring::run(args),
            Command::Sign(args) => commands::sign::run(args),
            Command::Reload(args) => commands::reload::run(args),
            Command::Try(args) => commands::try_host::run(args),
            Command::Quickstart(args) => commands::quickstart::run(args),
            Command::Completions(args) => commands::completions::run(args),
            Command::Manpages(args) => commands::completions::run_manpages(args),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_line_is_well_formed() {
        // clap's own checks (unique names, valid defaults) for every subcommand, which it
        // otherwise runs only when that subcommand is parsed.
        super::Cli::command().debug_assert();
    }
}
