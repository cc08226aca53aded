//! From a manifest and options to the `PackageSpec` ferry-deb writes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_deb::systemd::{UnitPolicy, UpgradeAction};
use ferry_deb::writer::{changelog_name, generated_changelog, generated_copyright, year_of};
use ferry_deb::{Compression, Control, Entry, EntrySource, PackageSpec, Source};

use crate::error::{Context, Result, bail};
use crate::manifest::{Manifest, OnUpgrade, parse_mode, resolve};

/// What the command line adds to a manifest.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Overrides `[package] version`.
    pub version: Option<String>,
    /// Overrides the architecture (default: `[package] architecture`, else the ELF headers).
    pub architecture: Option<String>,
    /// The data.tar compression.
    pub compression: Compression,
    /// Its level.
    pub level: u32,
    /// The timestamp of every packed file (SOURCE_DATE_EPOCH for reproducible builds).
    pub mtime: u64,
}

/// Turn the manifest and flags into everything the writer needs.
pub fn plan(manifest: &Manifest, base: &Path, options: &PackOptions) -> Result<PackageSpec> {
    let (compression, level, mtime) = (options.compression, options.level, options.mtime);
    let package = &manifest.package;
    ferry_deb::validate_package_name(&package.name)?;
    let version = match (&options.version, &package.version) {
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
    let mut supervised = false;
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
            supervised |= runs_under_ferry_run(&source)?;
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

    // The ELF files as they are on disk, for `$auto` dependencies (before stripping turns
    // them into bytes).
    let mut elf_files = Vec::new();
    for entry in &entries {
        if let EntrySource::File(Source::Path(path)) = &entry.source {
            if is_elf(path)? {
                elf_files.push(path.clone());
            }
        }
    }
    if package.strip {
        for entry in &mut entries {
            if let EntrySource::File(Source::Path(path)) = &entry.source {
                if is_elf(path)? {
                    let stripped = strip_copy(path)?;
                    entry.source = EntrySource::File(Source::Bytes(stripped));
                }
            }
        }
    }

    // Architecture: flag, then manifest, then the executables themselves.
    let architecture = match (&options.architecture, &package.architecture) {
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
            on_upgrade: match systemd.on_upgrade.unwrap_or(if supervised {
                OnUpgrade::Reload
            } else {
                OnUpgrade::Restart
            }) {
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
    let depends = resolve_auto_depends(&package.depends, &elf_files)?;
    for (field, values) in [
        ("Pre-Depends", &package.pre_depends),
        ("Depends", &depends),
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
        // The synopsis without the name is usually the better one.
        let rest = synopsis
            .trim_start_matches(package)
            .trim_start_matches([' ', ':', '-', ','])
            .trim();
        let suggestion = if rest.is_empty() {
            "say what it does, e.g. \"HTTP greeting service\"".to_owned()
        } else {
            format!("say what it does without the name, e.g. {rest:?}")
        };
        tracing::warn!(
            "the description starts with the package name {package:?}; lintian reports description-starts-with-package-name ({suggestion})"
        );
    }
    if lines.all(|line| line.trim().is_empty()) {
        tracing::warn!(
            "the description has no extended part; lintian reports extended-description-is-empty (add lines after the first)"
        );
    }
}

/// Add a file, or a whole directory tree, from `source` at `dest`.
pub fn add_source(
    entries: &mut Vec<Entry>,
    source: &Path,
    dest: &str,
    mode: Option<u32>,
) -> Result<()> {
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
pub fn detect_architecture(entries: &[Entry]) -> Result<String> {
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

/// The word in `depends` that stands for the shared libraries the ELF files need.
pub const AUTO_DEPENDS: &str = "$auto";

/// `depends` with [`AUTO_DEPENDS`] replaced by what `dpkg-shlibdeps` (dpkg-dev) computes
/// for `elf_files`, as Debian's own packages and cargo-deb get theirs: each needed library's
/// package with the lowest version that has every symbol used.
fn resolve_auto_depends(depends: &[String], elf_files: &[PathBuf]) -> Result<Vec<String>> {
    if !depends.iter().any(|entry| entry == AUTO_DEPENDS) {
        return Ok(depends.to_vec());
    }
    let computed = if elf_files.is_empty() {
        tracing::debug!("depends = [\"$auto\"] but the package has no ELF files");
        Vec::new()
    } else {
        shlibdeps(elf_files)?
    };
    let mut resolved: Vec<String> = Vec::new();
    for entry in depends {
        let expanded = if entry == AUTO_DEPENDS {
            computed.clone()
        } else {
            vec![entry.clone()]
        };
        for dependency in expanded {
            if !resolved.contains(&dependency) {
                resolved.push(dependency);
            }
        }
    }
    Ok(resolved)
}

/// Run `dpkg-shlibdeps` on `files` in a scratch directory holding the minimal
/// `debian/control` it insists on; returns the `shlibs:Depends` entries.
fn shlibdeps(files: &[PathBuf]) -> Result<Vec<String>> {
    let scratch = std::env::temp_dir().join(format!("ferry-pack-shlibdeps-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("debian"))
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = (|| {
        std::fs::write(
            scratch.join("debian/control"),
            "Source: ferry-auto\n\nPackage: ferry-auto\nArchitecture: any\n",
        )
        .with_context(|| format!("cannot write {}", scratch.display()))?;
        let mut command = std::process::Command::new("dpkg-shlibdeps");
        command
            .args(["-O", "--ignore-missing-info"])
            .current_dir(&scratch)
            .stdin(std::process::Stdio::null());
        for file in files {
            let absolute = std::fs::canonicalize(file)
                .with_context(|| format!("cannot find {}", file.display()))?;
            command.arg(format!("-e{}", absolute.display()));
        }
        let output = command.output().map_err(|error| {
            crate::error::Error::Invalid(format!(
                "depends = [\"$auto\"] needs dpkg-shlibdeps (Debian package dpkg-dev): {error}"
            ))
        })?;
        if !output.status.success() {
            return Err(crate::error::Error::Invalid(format!(
                "dpkg-shlibdeps could not work out the libraries of {}: {}",
                files
                    .iter()
                    .map(|file| file.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(stdout
            .lines()
            .filter_map(|line| line.strip_prefix("shlibs:Depends="))
            .flat_map(|list| list.split(','))
            .map(|entry| entry.trim().to_owned())
            .filter(|entry| !entry.is_empty())
            .collect())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Does `path` start with the ELF magic?
fn is_elf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let read = file
        .read(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(read == 4 && &magic == b"\x7fELF")
}

/// The bytes of `path` after `strip --strip-unneeded` (the source is left as it is).
fn strip_copy(path: &Path) -> Result<Vec<u8>> {
    let output = std::env::temp_dir().join(format!(
        "ferry-pack-strip-{}-{}",
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let status = std::process::Command::new("strip")
        .arg("--strip-unneeded")
        .arg("-o")
        .arg(&output)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .status();
    let result = match status {
        Ok(status) if status.success() => std::fs::read(&output)
            .with_context(|| format!("cannot read the stripped copy of {}", path.display())),
        Ok(status) => Err(crate::error::Error::Invalid(format!(
            "`strip --strip-unneeded {}` failed ({status}); fix the file or set strip = false",
            path.display()
        ))),
        Err(error) => Err(crate::error::Error::Invalid(format!(
            "strip = true needs the `strip` program (Debian package binutils): {error}"
        ))),
    };
    let _ = std::fs::remove_file(&output);
    result
}

/// Does this unit file start its service under `ferry run` (an `ExecStart=` whose program is
/// `ferry` with `run` as its first argument)? Such a unit reloads with zero downtime, so
/// that is what an upgrade does to it by default.
fn runs_under_ferry_run(unit: &Path) -> Result<bool> {
    let text = ferry_release::read_local_text(unit, 1024 * 1024)
        .with_context(|| format!("cannot read systemd unit {}", unit.display()))?;
    let supervised = text.lines().any(|line| {
        let Some(command) = line.trim().strip_prefix("ExecStart=") else {
            return false;
        };
        // systemd's prefixes: `-`, `@`, `:`, `+`, `!`.
        let mut words = command
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .split_whitespace();
        let program = words.next().unwrap_or_default();
        (program == "ferry" || program.ends_with("/ferry")) && words.next() == Some("run")
    });
    let signals_reload = text.lines().any(|line| {
        line.trim()
            .strip_prefix("ExecReload=")
            .is_some_and(|command| command.contains("kill") && command.contains("HUP"))
    });
    if supervised && signals_reload {
        tracing::warn!(
            "{}: ExecReload= sends SIGHUP, so `systemctl reload` returns before ferry run's swap \
             is done and cannot fail when it fails; use ExecReload=/usr/bin/ferry reload --control PATH \
             (docs/run.md)",
            unit.display()
        );
    }
    Ok(supervised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ferry-pack-unit-{}-{}.service",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_unit_under_ferry_run_is_recognised() {
        for (text, expected) in [
            (
                "[Service]\nExecStart=/usr/bin/ferry run --listen http=:8080 -- /usr/bin/app\n",
                true,
            ),
            ("[Service]\nExecStart=-ferry run -- app\n", true),
            ("[Service]\nExecStart=/usr/bin/app --ferry run\n", false),
            (
                "[Service]\nExecStart=/usr/bin/ferry agent --config /etc/ferry/agent.toml\n",
                false,
            ),
            (
                "[Service]\n# ExecStart=/usr/bin/ferry run -- app\nExecStart=/usr/bin/app\n",
                false,
            ),
        ] {
            let path = unit_file(text);
            assert_eq!(runs_under_ferry_run(&path).unwrap(), expected, "{text}");
            std::fs::remove_file(path).unwrap();
        }
    }
}
