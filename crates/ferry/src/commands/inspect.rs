//! `ferry inspect FILE.deb [--json]`: show what a package contains — control fields,
//! maintainer scripts, conffiles, member compressions and every file with mode, owner,
//! size and sha256. Reads any Debian package, not only ferry's.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .deb to read.
    pub file: PathBuf,
    /// Print one JSON document (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let inspection = ferry_deb::inspect(BufReader::with_capacity(256 << 10, file))
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &inspection)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &inspection)
    };
    match written {
        // `ferry inspect x.deb | head` is fine.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error).context("writing to stdout"),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

fn write_text(out: &mut impl Write, inspection: &ferry_deb::Inspection) -> std::io::Result<()> {
    let control = &inspection.control;
    writeln!(
        out,
        "{} {} ({})",
        control.package().unwrap_or("?"),
        control.version().unwrap_or("?"),
        control.architecture().unwrap_or("?")
    )?;
    let members: Vec<String> = inspection
        .members
        .iter()
        .map(|member| match member.compression {
            Some(compression) => format!("{} ({} bytes, {compression})", member.name, member.size),
            None => format!("{} ({} bytes)", member.name, member.size),
        })
        .collect();
    writeln!(out, "format {}: {}", inspection.format, members.join(", "))?;
    writeln!(out, "\ncontrol:")?;
    for (name, value) in control.fields() {
        writeln!(out, "  {name}: {}", value.replace('\n', "\n  "))?;
    }
    if !inspection.conffiles.is_empty() {
        writeln!(out, "\nconffiles:")?;
        for conffile in &inspection.conffiles {
            writeln!(out, "  {conffile}")?;
        }
    }
    writeln!(out, "\ncontrol files:")?;
    for file in &inspection.control_files {
        writeln!(out, "  {} {:>8} {}", file.mode, file.size, file.name)?;
    }
    for file in &inspection.control_files {
        if ferry_deb::MAINTAINER_SCRIPTS.contains(&file.name.as_str()) {
            writeln!(out, "\n{}:", file.name)?;
            match &file.text {
                Some(text) => {
                    for line in text.lines() {
                        writeln!(out, "  | {line}")?;
                    }
                }
                None => writeln!(out, "  (binary, {} bytes)", file.size)?,
            }
        }
    }
    writeln!(out, "\nfiles:")?;
    for file in &inspection.files {
        let target = match &file.link_target {
            Some(target) => format!(" -> {target}"),
            None => String::new(),
        };
        let hash = file.sha256.as_deref().unwrap_or("");
        writeln!(
            out,
            "  {} {} {:>10} {}{} {}",
            file.mode_string(),
            file.owner,
            file.size,
            file.path,
            target,
            hash
        )?;
    }
    Ok(())
}
