//! The `ferry.toml` format read by `ferry pack`: the file structs (kebab-case, unknown keys
//! are errors that name the key) and their resolution — paths made relative to the file,
//! flags applied over the file — into a plan with nothing left optional.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result, bail};
use serde::Deserialize;

/// A file mode, which must be a string: TOML reads `755` as the decimal number, which is
/// not the mode meant, so a bare number is refused with the form to write.
fn mode_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(i64),
    }
    match Mode::deserialize(deserializer)? {
        Mode::Text(text) => Ok(Some(text)),
        Mode::Number(number) => Err(serde::de::Error::custom(format!(
            "mode = {number} is a number; write the octal mode as a string: mode = \"0{number}\""
        ))),
    }
}

/// The whole `ferry.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// `[package]`.
    pub package: PackageSection,
    /// `[[files]]`, in order.
    #[serde(default)]
    pub files: Vec<FileSection>,
    /// `[[symlinks]]`.
    #[serde(default)]
    pub symlinks: Vec<SymlinkSection>,
    /// `[systemd]`, when the package ships units.
    pub systemd: Option<SystemdSection>,
    /// `[scripts]`.
    #[serde(default)]
    pub scripts: ScriptsSection,
    /// `[deploy]`: what `ferry deploy` does with the package (ferry pack ignores it).
    pub deploy: Option<DeploySection>,
}

/// `[deploy]`: where and how `ferry deploy` ships the package. Every key can also be given as
/// a flag, which wins; paths are relative to the manifest's directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeploySection {
    /// The store URL (`s3://bucket/prefix`, `file:///srv/ferry`).
    pub store: Option<String>,
    /// A custom S3 endpoint.
    pub s3_endpoint: Option<String>,
    /// The app (default: the package name).
    pub app: Option<String>,
    /// The channel (default `stable`).
    pub channel: Option<String>,
    /// The secret key file, or `env:VAR` for a key held in an environment variable.
    pub key: Option<String>,
    /// Rollout waves, as `ferry publish --waves`.
    pub waves: Option<String>,
    /// Halt above this many failed hosts (`5%` or a count), as `ferry watch`.
    pub max_failures: Option<String>,
    /// Halt by rolling back instead of pausing.
    pub rollback: Option<bool>,
    /// Give up watching after this long (`1h`).
    pub timeout: Option<String>,
    /// A silent heartbeat host is gone after this long (`1h`).
    pub stale_after: Option<String>,
    /// Patches from this many earlier releases.
    pub deltas: Option<usize>,
    /// Where the .deb is written (default `target/ferry`).
    pub out: Option<PathBuf>,
    /// Commands run (with `sh -c`, in the manifest's directory) before packing; any failure
    /// stops the deploy before anything is published.
    #[serde(default)]
    pub pre: Vec<String>,
    /// Commands run after the rollout ended, with `FERRY_DEPLOY_RESULT` set.
    #[serde(default)]
    pub post: Vec<String>,
    /// Deploy from a git tree with uncommitted changes.
    pub allow_dirty: Option<bool>,
    /// Webhooks that get a JSON event for each step of the rollout.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// `[package]`: the control fields and package-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PackageSection {
    /// The Debian package name.
    pub name: String,
    /// Optional here when `--version` is given.
    pub version: Option<String>,
    /// Strip every ELF file (`strip --strip-unneeded`, from binutils) as it is packed: a
    /// smaller package, lintian's `unstripped-binary-or-object` gone, and patches between
    /// releases 2–8× smaller (docs/delta.md).
    #[serde(default)]
    pub strip: bool,
    /// `Maintainer`: `Name <email>`.
    pub maintainer: String,
    /// `Description`: a synopsis line, then the extended part.
    pub description: String,
    /// `Section` (e.g. `net`).
    pub section: Option<String>,
    /// `Priority` (default `optional`).
    pub priority: Option<String>,
    /// Optional: detected from the ELF executables (`all` when there are none).
    pub architecture: Option<String>,
    /// `Homepage`.
    pub homepage: Option<String>,
    /// `Depends`.
    #[serde(default)]
    pub depends: Vec<String>,
    /// `Pre-Depends`.
    #[serde(default)]
    pub pre_depends: Vec<String>,
    /// `Recommends`.
    #[serde(default)]
    pub recommends: Vec<String>,
    /// `Suggests`.
    #[serde(default)]
    pub suggests: Vec<String>,
    /// `Conflicts`.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// `Breaks`.
    #[serde(default)]
    pub breaks: Vec<String>,
    /// `Replaces`.
    #[serde(default)]
    pub replaces: Vec<String>,
    /// `Provides`.
    #[serde(default)]
    pub provides: Vec<String>,
    /// Conffiles outside /etc (everything under /etc is one automatically).
    #[serde(default)]
    pub conffiles: Vec<String>,
    /// The license named in the generated copyright file.
    pub license: Option<String>,
    /// A copyright file to ship instead of the generated one.
    pub copyright: Option<PathBuf>,
    /// A changelog to ship (plain or .gz) instead of the generated one.
    pub changelog: Option<PathBuf>,
}

/// `[[files]]`: one file (or directory tree) to install.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSection {
    /// The file or directory to take, relative to the manifest.
    pub source: PathBuf,
    /// Where it is installed (absolute).
    pub dest: String,
    /// Octal permission bits as a string (`"0755"`); default: 0755 when the source is
    /// executable, else 0644.
    #[serde(default, deserialize_with = "mode_text")]
    pub mode: Option<String>,
}

/// `[[symlinks]]`: a symbolic link to create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SymlinkSection {
    /// The link itself (absolute).
    pub path: String,
    /// What it points at.
    pub target: String,
}

/// `[systemd]`: units to install and how to handle them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemdSection {
    /// Unit files to install under /usr/lib/systemd/system, relative to the manifest.
    #[serde(default)]
    pub units: Vec<PathBuf>,
    /// Enable the units on install (default true).
    #[serde(default = "yes")]
    pub enable: bool,
    /// Start them on install (default true).
    #[serde(default = "yes")]
    pub start: bool,
    /// What an upgrade does to running units. Default: `reload` when a unit runs under
    /// `ferry run` (a zero-downtime swap, where a restart would drop requests), else
    /// `restart`.
    #[serde(default)]
    pub on_upgrade: Option<OnUpgrade>,
}

fn yes() -> bool {
    true
}

/// What `[systemd] on-upgrade` may say.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnUpgrade {
    /// `restart`: restart the units.
    Restart,
    /// `reload`: reload them.
    Reload,
    /// `reload-or-restart`.
    ReloadOrRestart,
    /// `none`: leave them running.
    None,
}

/// `[scripts]`: maintainer scripts.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScriptsSection {
    /// A `preinst` script.
    pub preinst: Option<PathBuf>,
    /// A `postinst` script.
    pub postinst: Option<PathBuf>,
    /// A `prerm` script.
    pub prerm: Option<PathBuf>,
    /// A `postrm` script.
    pub postrm: Option<PathBuf>,
}

impl Manifest {
    /// Read and parse a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = ferry_release::read_local_text(path, 1024 * 1024).with_context(|| {
            format!(
                "cannot read {} (write one, see docs/pack.md, or pass --config)",
                path.display()
            )
        })?;
        let is_cargo = path.file_name().is_some_and(|name| name == "Cargo.toml");
        let parsed = if is_cargo {
            Manifest::parse_cargo(&text)
        } else {
            Manifest::parse(&text)
        };
        parsed.with_context(|| format!("invalid {}", path.display()))
    }

    /// Parse the `[package.metadata.ferry]` table of a Cargo.toml: the same keys as
    /// ferry.toml, with `name`, `version`, `description`, `homepage`, `license` and the
    /// maintainer (first of `authors`) taken from Cargo's `[package]` when not given.
    pub fn parse_cargo(text: &str) -> Result<Manifest> {
        let document: toml::Table = toml::from_str(text)?;
        let cargo = document
            .get("package")
            .and_then(toml::Value::as_table)
            .context("no [package] table")?;
        let mut ferry = cargo
            .get("metadata")
            .and_then(|metadata| metadata.get("ferry"))
            .and_then(toml::Value::as_table)
            .cloned()
            .context("no [package.metadata.ferry] table (see docs/pack.md)")?;
        let package = ferry
            .entry("package")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .context("[package.metadata.ferry.package] must be a table")?;
        for key in ["name", "description", "homepage", "license"] {
            if let Some(value) = cargo.get(key).filter(|value| value.is_str()) {
                package.entry(key).or_insert_with(|| value.clone());
            }
        }
        if let Some(version) = cargo.get("version").and_then(toml::Value::as_str) {
            // A semver pre-release (`1.0.0-rc.1`) sorts before its release; in Debian
            // that is `~`, and a `-` would start a Debian revision.
            let debian = version.replacen('-', "~", 1);
            package
                .entry("version")
                .or_insert_with(|| toml::Value::String(debian));
        }
        if let Some(author) = cargo
            .get("authors")
            .and_then(toml::Value::as_array)
            .and_then(|authors| authors.first())
            .filter(|author| author.is_str())
        {
            package
                .entry("maintainer")
                .or_insert_with(|| author.clone());
        }
        Ok(toml::Value::Table(ferry).try_into()?)
    }

    /// Parse a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest> {
        Ok(toml::from_str(text)?)
    }
}

/// Parse an octal mode string (`"0755"`, `"755"`, `"0o755"`).
pub fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777 && !digits.is_empty());
    match mode {
        Some(mode) => Ok(mode),
        None => bail!("mode {text:?} is not an octal permission like \"0755\" or \"0644\""),
    }
}

/// A path from the manifest, relative to the manifest's directory.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[package]
name = "hello"
version = "1.0.0-1"
maintainer = "Ops <ops@example.com>"
description = "Hello service"
section = "net"
depends = ["libc6 (>= 2.31)"]

[[files]]
source = "target/release/hello"
dest = "/usr/bin/hello"
mode = "0755"

[[files]]
source = "hello.conf"
dest = "/etc/hello/hello.conf"

[systemd]
units = ["hello.service"]

[scripts]
postinst = "scripts/postinst"
"#;

    #[test]
    fn the_documented_example_parses() {
        let manifest = Manifest::parse(EXAMPLE).unwrap();
        assert_eq!(manifest.package.name, "hello");
        assert_eq!(manifest.files.len(), 2);
        assert_eq!(manifest.systemd.unwrap().units.len(), 1);
        assert!(manifest.scripts.postinst.is_some());
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = EXAMPLE.replace("section = \"net\"", "sektion = \"net\"");
        let error = format!("{:#}", Manifest::parse(&text).unwrap_err());
        assert!(error.contains("sektion"), "{error}");
        let text = EXAMPLE.replace("mode = \"0755\"", "mod = \"0755\"");
        let error = format!("{:#}", Manifest::parse(&text).unwrap_err());
        assert!(error.contains("`mod`"), "{error}");
    }

    #[test]
    fn cargo_metadata() {
        let text = r#"
[package]
name = "hello"
version = "1.2.0-rc.1"
description = "Hello service"
authors = ["Ops <ops@example.com>"]

[package.metadata.ferry]
files = [{ source = "target/release/hello", dest = "/usr/bin/hello" }]

[package.metadata.ferry.package]
section = "net"
"#;
        let manifest = Manifest::parse_cargo(text).unwrap();
        assert_eq!(manifest.package.name, "hello");
        assert_eq!(manifest.package.version.as_deref(), Some("1.2.0~rc.1"));
        assert_eq!(manifest.package.maintainer, "Ops <ops@example.com>");
        assert_eq!(manifest.package.section.as_deref(), Some("net"));
        assert_eq!(manifest.files.len(), 1);
        let typo = text.replace("section =", "sektion =");
        let error = format!("{:#}", Manifest::parse_cargo(&typo).unwrap_err());
        assert!(error.contains("sektion"), "{error}");
        assert!(Manifest::parse_cargo("[package]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("4755").unwrap(), 0o4755);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rwx").is_err());
        assert!(parse_mode("").is_err());
    }
}
