//! `ferry pack`: read a `ferry.toml`, gather the files, systemd units, scripts and docs it
//! names, and write `<name>_<version>_<arch>.deb` with ferry-deb. This file turns the
//! manifest and flags into a `PackageSpec` and shows progress; the format lives in the
//! library.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ferry_deb::{Compression, EntrySource, PackageSpec, Source};

use crate::env;
use ferry_pack::{Manifest, PackOptions};

#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct Args {
    /// The manifest to read; paths inside it are relative to its directory.
    #[arg(long, default_value = "ferry.toml")]
    pub config: PathBuf,
    /// Where to write the .deb (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Compression of control.tar and data.tar.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// Compression level (zstd 1-19, default 3; xz 0-9, default 6; gzip 1-9, default 9).
    #[arg(long)]
    pub level: Option<u32>,
    /// The Debian architecture; overrides the manifest and ELF detection.
    #[arg(long)]
    pub arch: Option<String>,
    /// The package version; overrides `[package] version`.
    #[arg(long)]
    pub version: Option<String>,
    /// Print a JSON summary on stdout instead of the path.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Xz,
    Gzip,
    None,
}

impl CompressionArg {
    fn compression(self) -> Compression {
        match self {
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Xz => Compression::Xz,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::None => Compression::None,
        }
    }
}

/// A package written by [`build`].
pub struct Packed {
    /// Where it is.
    pub path: PathBuf,
    /// What ferry-deb wrote.
    pub summary: ferry_deb::Summary,
    compression: Compression,
    level: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Packed {
        path: final_path,
        summary,
        compression,
        level,
    } = build(&args)?;
    if args.json {
        let document = serde_json::json!({
            "path": final_path,
            "package": summary.control.package(),
            "version": summary.control.version(),
            "architecture": summary.control.architecture(),
            "size": summary.package_size,
            "compression": compression.name(),
            "level": level,
            "files": summary.files,
            "conffiles": summary.conffiles,
            "installed_size_kib": summary.control.get("Installed-Size").and_then(|size| size.parse::<u64>().ok()),
        });
        println!("{document}");
    } else {
        println!("{}", final_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Pack the package `args` describe and log what was written.
pub fn build(args: &Args) -> anyhow::Result<Packed> {
    let started = Instant::now();
    let manifest = Manifest::load(&args.config)?;
    let base = match args.config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let compression = args.compression.compression();
    let level = args.level.unwrap_or_else(|| compression.default_level());
    compression.check_level(level)?;
    let mtime = source_date_epoch()?;
    let options = PackOptions {
        version: args.version.clone(),
        architecture: args.arch.clone(),
        compression,
        level,
        mtime,
    };
    let spec = ferry_pack::plan(&manifest, &base, &options)?;
    let file_name = ferry_deb::package_file_name(&spec.control);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output directory {}", args.out.display()))?;
    let final_path = args.out.join(&file_name);
    let partial_path = args
        .out
        .join(format!(".{file_name}.partial-{}", std::process::id()));
    let result = write(&spec, &args.out, &partial_path);
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&partial_path);
            return Err(error);
        }
    };
    std::fs::rename(&partial_path, &final_path)
        .with_context(|| format!("cannot move the package to {}", final_path.display()))?;

    let elapsed = started.elapsed();
    let ratio = if summary.data_size > 0 {
        100.0 * summary.data_compressed_size as f64 / summary.data_size as f64
    } else {
        0.0
    };
    tracing::info!(
        "packed {} {} ({}): {} files, {} dirs, {} conffiles; data.tar {} → {} ({}, {:.1}%); {} in {:.2} s",
        summary.control.package().unwrap_or_default(),
        summary.control.version().unwrap_or_default(),
        summary.control.architecture().unwrap_or_default(),
        summary.files,
        summary.directories,
        summary.conffiles.len(),
        human_size(summary.data_size),
        human_size(summary.data_compressed_size),
        compression,
        ratio,
        human_size(summary.package_size),
        elapsed.as_secs_f64(),
    );
    Ok(Packed {
        path: final_path,
        summary,
        compression,
        level,
    })
}

fn write(
    spec: &PackageSpec,
    out_dir: &Path,
    partial_path: &Path,
) -> anyhow::Result<ferry_deb::Summary> {
    let output = File::create(partial_path)
        .with_context(|| format!("cannot create {}", partial_path.display()))?;
    let mut listener = Progress::new();
    let mut writer = BufWriter::with_capacity(1 << 20, output);
    // data.tar is compressed into scratch space first (control.tar, which lists its md5sums,
    // comes before it). Packages of ordinary size keep it in memory; big ones use an
    // unlinked file beside the output, on the same disk.
    let input = input_size(spec);
    let summary = if input <= IN_MEMORY_LIMIT {
        // Room for the compressed data up front (untouched capacity costs nothing), so the
        // buffer never reallocates and copies itself while growing.
        let capacity = usize::try_from(input).unwrap_or(0) + (1 << 20);
        let mut scratch = std::io::Cursor::new(Vec::with_capacity(capacity));
        ferry_deb::write_package(spec, &mut writer, &mut scratch, &mut listener)?
    } else {
        let scratch_path = out_dir.join(format!(".ferry-pack-scratch-{}", std::process::id()));
        let mut scratch = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&scratch_path)
            .with_context(|| format!("cannot create a scratch file in {}", out_dir.display()))?;
        let _ = std::fs::remove_file(&scratch_path);
        ferry_deb::write_package(spec, &mut writer, &mut scratch, &mut listener)?
    };
    listener.finish();
    // No fsync: like dpkg-deb, a build artifact is not worth waiting for the disk; the
    // rename afterwards still means readers never see a half-written package.
    writer
        .into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| format!("cannot write {}", partial_path.display()))?;
    Ok(summary)
}

/// Up to this much content, data.tar is compressed in memory.
const IN_MEMORY_LIMIT: u64 = 512 << 20;

/// The bytes of content a spec packs (files that cannot be read count as 0 here; the
/// writer reports them).
fn input_size(spec: &PackageSpec) -> u64 {
    spec.entries
        .iter()
        .map(|entry| match &entry.source {
            EntrySource::File(Source::Bytes(bytes)) => bytes.len() as u64,
            EntrySource::File(Source::Path(path)) => std::fs::metadata(path)
                .map(|metadata| metadata.len())
                .unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// SOURCE_DATE_EPOCH when set (reproducible builds), else now.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var(env::SOURCE_DATE_EPOCH) {
        Ok(value) if !value.trim().is_empty() => value.trim().parse().with_context(|| {
            format!(
                "{} is {value:?}, not a number of seconds since 1970",
                env::SOURCE_DATE_EPOCH
            )
        }),
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|duration| duration.as_secs())
            .unwrap_or(0)),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A progress bar on a terminal; nothing otherwise (the summary line is logged).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        Progress { bar: None }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl ferry_deb::Listener for Progress {
    fn start(&mut self, files: usize, bytes: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "packing {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("{files} files"));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}
