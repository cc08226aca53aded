//! `ferry pack`: read a `ferry.toml`, gather the files, systemd units, scripts and docs it
//! names, and write `<name>_<version>_<arch>.deb` with ferry-deb. This file turns the
//! manifest and flags into a `PackageSpec` and shows progress; the format lives in the
//! library.

mod config;

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use ferry_deb::systemd::{UnitPolicy, UpgradeAction};
use ferry_deb::writer::{changelog_name, generated_changelog, generated_copyright, year_of};
use ferry_deb::{Compression, Control, Entry, EntrySource, PackageSpec, Source};

use crate::env;
use config::{Manifest, OnUpgrade, parse_mode, resolve};

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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    let spec = plan(&manifest, &base, &args, compression, level, mtime)?;
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

/// Turn the manifest and flags into everything the writer needs.
fn plan(
    manifest: &Manifest,
    base: &Path,
    args: &Args,
    compression: Compression,
    level: u32,
    mtime: u64,
) -> anyhow::Result<PackageSpec> {
    let package = &manifest.package;
    ferry_deb::validate_package_name(&package.name)?;
    let version = match (&args.version, &package.version) {
        (Some(version), _) | (None, Some(version)) => version.clone(),
        (None, None) => bail!("no version: set `version` in [package] or pass --version"),
    };
    ferry_deb::validate_version(&version)?;

    let mut entries = Vec::new();
    for file in &manifest.files {
        let source = resolve(base, &file.source);
        let mode = file
            .mode
            .as_deref()
            .map(parse_mode)
            .transpose()
            .with_context(|| format!("[[files]] entry for {}", file.dest))?;
        add_source(&mut entries, &source, &file.dest, mode).with_context(|| {
            format!(
                "[[files]] source = {:?}, dest = {:?}",
                file.source.display().to_string(),
                file.dest
            )
        })?;
    }
    for link in &manifest.symlinks {
        entries.push(Entry {
            path: link.path.clone(),
            mode: 0o777,
            source: EntrySource::Symlink(link.target.clone()),
        });
    }

    // Systemd units.
    let mut unit_names = Vec::new();
    if let Some(systemd) = &manifest.systemd {
        for unit in &systemd.units {
            let source = resolve(base, unit);
            let name = unit
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .with_context(|| format!("[systemd] unit {} has no file name", unit.display()))?;
            if !source.is_file() {
                bail!(
                    "missing file: systemd unit {} (listed in [systemd] units; paths are relative to the manifest)",
                    source.display()
                );
            }
            entries.push(Entry {
                path: format!("/usr/lib/systemd/system/{name}"),
                mode: 0o644,
                source: EntrySource::File(Source::Path(source)),
            });
            unit_names.push(name);
        }
    }

    // Docs: copyright and changelog, generated unless given.
    let doc_dir = format!("/usr/share/doc/{}", package.name);
    let has_path = |entries: &[Entry], path: &str| entries.iter().any(|entry| entry.path == path);
    let copyright_path = format!("{doc_dir}/copyright");
    if !has_path(&entries, &copyright_path) {
        let source = match &package.copyright {
            Some(path) => {
                let path = resolve(base, path);
                if !path.is_file() {
                    bail!(
                        "missing file: copyright {} (from [package] copyright)",
                        path.display()
                    );
                }
                Source::Path(path)
            }
            None => Source::Bytes(
                generated_copyright(
                    &package.name,
                    &package.maintainer,
                    package.license.as_deref().unwrap_or("proprietary"),
                    package.homepage.as_deref(),
                    year_of(mtime),
                )
                .into_bytes(),
            ),
        };
        entries.push(Entry {
            path: copyright_path,
            mode: 0o644,
            source: EntrySource::File(source),
        });
    }
    let changelog_path = format!("{doc_dir}/{}", changelog_name(&version));
    if !has_path(&entries, &changelog_path) {
        let bytes = match &package.changelog {
            Some(path) => {
                let path = resolve(base, path);
                let bytes = std::fs::read(&path).with_context(|| {
                    format!(
                        "missing file: changelog {} (from [package] changelog)",
                        path.display()
                    )
                })?;
                if bytes.starts_with(&[0x1f, 0x8b]) {
                    bytes
                } else {
                    let mut compressor =
                        ferry_deb::Compressor::new(Vec::new(), Compression::Gzip, 9, 1)?;
                    std::io::Write::write_all(&mut compressor, &bytes)?;
                    compressor.finish()?
                }
            }
            None => generated_changelog(&package.name, &version, &package.maintainer, mtime)?,
        };
        entries.push(Entry {
            path: changelog_path,
            mode: 0o644,
            source: EntrySource::File(Source::Bytes(bytes)),
        });
    }

    // Architecture: flag, then manifest, then the executables themselves.
    let architecture = match (&args.arch, &package.architecture) {
        (Some(arch), _) | (None, Some(arch)) => arch.clone(),
        (None, None) => detect_architecture(&entries)?,
    };
    if architecture.is_empty()
        || !architecture
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("invalid architecture {architecture:?} (examples: amd64, arm64, all)");
    }

    // Maintainer scripts merged with the systemd snippets.
    let snippets = match &manifest.systemd {
        Some(systemd) if !unit_names.is_empty() => ferry_deb::systemd::snippets(&UnitPolicy {
            units: unit_names,
            enable: systemd.enable,
            start: systemd.start,
            on_upgrade: match systemd.on_upgrade {
                OnUpgrade::Restart => UpgradeAction::Restart,
                OnUpgrade::Reload => UpgradeAction::Reload,
                OnUpgrade::ReloadOrRestart => UpgradeAction::ReloadOrRestart,
                OnUpgrade::None => UpgradeAction::None,
            },
        }),
        _ => Default::default(),
    };
    let scripts = &manifest.scripts;
    let mut control_files = Vec::new();
    for (name, path, snippet) in [
        ("preinst", &scripts.preinst, ""),
        ("postinst", &scripts.postinst, snippets.postinst.as_str()),
        ("prerm", &scripts.prerm, snippets.prerm.as_str()),
        ("postrm", &scripts.postrm, snippets.postrm.as_str()),
    ] {
        let user = match path {
            Some(path) => {
                let path = resolve(base, path);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "missing file: {name} script {} (from [scripts])",
                        path.display()
                    )
                })?;
                if !text.starts_with("#!") {
                    bail!(
                        "the {name} script {} does not start with a #! line; dpkg could not run it",
                        path.display()
                    );
                }
                Some(text)
            }
            None => None,
        };
        let merged = ferry_deb::systemd::merge_script(user.as_deref(), snippet);
        if !merged.is_empty() {
            control_files.push((name.to_string(), 0o755, merged.into_bytes()));
        }
    }

    warn_about_description(&package.name, &package.description);

    // Control, in the order dpkg-gencontrol writes it.
    let mut control = Control::new();
    control.set("Package", package.name.clone());
    control.set("Version", version);
    control.set("Architecture", architecture);
    control.set("Maintainer", package.maintainer.clone());
    control.set("Installed-Size", "0");
    for (field, values) in [
        ("Pre-Depends", &package.pre_depends),
        ("Depends", &package.depends),
        ("Recommends", &package.recommends),
        ("Suggests", &package.suggests),
        ("Breaks", &package.breaks),
        ("Conflicts", &package.conflicts),
        ("Replaces", &package.replaces),
        ("Provides", &package.provides),
    ] {
        if !values.is_empty() {
            control.set(field, values.join(", "));
        }
    }
    control.set(
        "Section",
        package.section.clone().unwrap_or_else(|| "misc".into()),
    );
    control.set(
        "Priority",
        package
            .priority
            .clone()
            .unwrap_or_else(|| "optional".into()),
    );
    if let Some(homepage) = &package.homepage {
        control.set("Homepage", homepage.clone());
    }
    control.set(
        "Description",
        ferry_deb::control::format_description(&package.description)?,
    );

    Ok(PackageSpec {
        control,
        entries,
        conffiles: package.conffiles.clone(),
        control_files,
        compression,
        level,
        threads: std::thread::available_parallelism()
            .map(|count| count.get() as u32)
            .unwrap_or(1),
        mtime,
    })
}

/// lintian reports these as errors; they are the author's text, so ferry warns instead of
/// rewriting it.
fn warn_about_description(package: &str, description: &str) {
    let mut lines = description.trim().lines();
    let synopsis = lines.next().unwrap_or_default().trim().to_lowercase();
    if synopsis.split_whitespace().next() == Some(package) {
        tracing::warn!(
            "the description starts with the package name {package:?}; lintian reports description-starts-with-package-name (say what it does: \"HTTP greeting service\")"
        );
    }
    if lines.all(|line| line.trim().is_empty()) {
        tracing::warn!(
            "the description has no extended part; lintian reports extended-description-is-empty (add lines after the first)"
        );
    }
}

/// Add a file, or a whole directory tree, from `source` at `dest`.
fn add_source(
    entries: &mut Vec<Entry>,
    source: &Path,
    dest: &str,
    mode: Option<u32>,
) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(source).with_context(|| {
        format!(
            "missing file: {} (paths are relative to the manifest)",
            source.display()
        )
    })?;
    ferry_deb::writer::validate_package_path(dest)?;
    if metadata.is_dir() {
        let dest = dest.trim_end_matches('/');
        entries.push(Entry {
            path: dest.to_string(),
            mode: 0o755,
            source: EntrySource::Directory,
        });
        let mut children: Vec<_> = std::fs::read_dir(source)
            .with_context(|| format!("cannot list {}", source.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", source.display()))?;
        children.sort_by_key(|child| child.file_name());
        for child in children {
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                bail!(
                    "{} has a file name that is not UTF-8",
                    child.path().display()
                );
            };
            let child_dest = format!("{dest}/{name}");
            let file_type = child.file_type()?;
            if file_type.is_symlink() {
                let target = std::fs::read_link(child.path())?;
                entries.push(Entry {
                    path: child_dest,
                    mode: 0o777,
                    source: EntrySource::Symlink(target.to_string_lossy().into_owned()),
                });
            } else {
                add_source(entries, &child.path(), &child_dest, mode)?;
            }
        }
        return Ok(());
    }
    if !metadata.is_file() {
        bail!("{} is neither a file nor a directory", source.display());
    }
    let dest = if dest.ends_with('/') {
        let name = source
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{dest}{name}")
    } else {
        dest.to_string()
    };
    let executable = metadata.permissions().mode() & 0o111 != 0;
    entries.push(Entry {
        path: dest,
        mode: mode.unwrap_or(if executable { 0o755 } else { 0o644 }),
        source: EntrySource::File(Source::Path(source.to_path_buf())),
    });
    Ok(())
}

/// The architecture the packaged ELF executables agree on, or `all` when there are none.
fn detect_architecture(entries: &[Entry]) -> anyhow::Result<String> {
    let mut found: Option<(PathBuf, &'static str)> = None;
    for entry in entries {
        let EntrySource::File(Source::Path(path)) = &entry.source else {
            continue;
        };
        let Some(arch) = ferry_deb::elf::architecture_of_file(path)
            .with_context(|| format!("cannot read {}", path.display()))?
        else {
            continue;
        };
        match &found {
            None => found = Some((path.clone(), arch)),
            Some((first_path, first_arch)) if *first_arch != arch => {
                return Err(ferry_deb::Error::ConflictingArchitectures {
                    first_path: first_path.clone(),
                    first_arch: first_arch.to_string(),
                    second_path: path.clone(),
                    second_arch: arch.to_string(),
                }
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(found.map_or_else(|| "all".to_string(), |(_, arch)| arch.to_string()))
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
