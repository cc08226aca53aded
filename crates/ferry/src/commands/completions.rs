//! `ferry completions SHELL` and `ferry manpages DIR`: generated from the command-line
//! definition itself, so they never drift from it. ferry's own .deb ships both
//! (packaging/build.sh makes them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write `ferry.1` and `ferry-<command>.1` into (created if missing).
    pub dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut command = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut script);
    // A closed pipe (`| head`) is the reader's choice, not an error.
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write the completion script")?
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_manpages(args: ManpagesArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let command = crate::cli::Cli::command();
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("cannot write the man pages into {}", args.dir.display()))?;
    let mut written: Vec<String> = std::fs::read_dir(&args.dir)?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1"))
        .collect();
    written.sort();
    println!(
        "wrote {} man pages into {}",
        written.len(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
