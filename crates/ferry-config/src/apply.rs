//! Files in and out of bundles: reading the operator's files into a bundle (with checks), and
//! applying a bundle on a host — secret references resolved, every file written to a temp name,
//! fsynced and renamed into place, files the bundle dropped removed, the directory fsynced.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::document::{Bundle, BundleFile, MAX_BUNDLE_FILES, check_name};

/// A secret referenced with `KEY=@file:/path` is one value: a few KiB at most.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// The largest file a bundle takes (the whole signed document is capped at 1 MiB).
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// The prefix of a secret reference in an `.env` value.
const SECRET_PREFIX: &str = "@file:";

/// Read the operator's files into bundle entries: named by their file name, mode from the
/// file's permission bits, UTF-8 text only; `.env` files are checked line by line.
pub fn bundle_from_files(paths: &[PathBuf]) -> Result<Vec<BundleFile>, Error> {
    if paths.is_empty() {
        return Err(Error::InvalidFile {
            name: String::new(),
            message: "no files given".to_owned(),
        });
    }
    if paths.len() > MAX_BUNDLE_FILES {
        return Err(Error::InvalidFile {
            name: paths[MAX_BUNDLE_FILES].display().to_string(),
            message: format!("a bundle holds at most {MAX_BUNDLE_FILES} files"),
        });
    }
    let mut files: Vec<BundleFile> = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let invalid = |message: String| Error::InvalidFile {
            name: shown.clone(),
            message,
        };
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| invalid("has no usable file name".to_owned()))?
            .to_owned();
        check_name(&name).map_err(&invalid)?;
        if files.iter().any(|file| file.name == name) {
            return Err(invalid(format!(
                "a second file named {name:?}: names must be unique (they land in one directory)"
            )));
        }
        let io = |source| Error::Io {
            action: "read config file",
            path: path.clone(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(io)?;
        if !metadata.is_file() {
            return Err(invalid("is not a regular file".to_owned()));
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(invalid(format!(
                "is {} bytes; a config file may have at most {MAX_FILE_BYTES}",
                metadata.len()
            )));
        }
        // Re-checked on the opened file: the metadata above may describe another file by now.
        let bytes = ferry_release::read_local_file(path, MAX_FILE_BYTES).map_err(io)?;
        let content = String::from_utf8(bytes)
            .map_err(|_| invalid("is not UTF-8 text (bundles carry text files only)".to_owned()))?;
        if is_env_file(&name) {
            check_env_text(&name, &content)?;
        }
        files.push(BundleFile {
            name,
            mode: metadata.permissions().mode() & 0o777,
            content,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn is_env_file(name: &str) -> bool {
    name.ends_with(".env")
}

/// One `KEY=VALUE` line of an env file, or `None` for blanks and comments.
fn env_line<'a>(
    file: &str,
    number: usize,
    line: &'a str,
) -> Result<Option<(&'a str, &'a str)>, Error> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let invalid = |message: String| Error::InvalidFile {
        name: file.to_owned(),
        message: format!("line {number}: {message}"),
    };
    let (key, value) = trimmed
        .split_once('=')
        .ok_or_else(|| invalid(format!("{trimmed:?} is not KEY=VALUE")))?;
    let key = key
        .trim()
        .strip_prefix("export ")
        .unwrap_or(key.trim())
        .trim();
    let valid_key = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return Err(invalid(format!("{key:?} is not a variable name")));
    }
    Ok(Some((key, value.trim())))
}

fn check_env_text(file: &str, content: &str) -> Result<(), Error> {
    for (index, line) in content.lines().enumerate() {
        if let Some((key, value)) = env_line(file, index + 1, line)? {
            if let Some(path) = value.strip_prefix(SECRET_PREFIX) {
                if !Path::new(path).is_absolute() {
                    return Err(Error::InvalidFile {
                        name: file.to_owned(),
                        message: format!(
                            "line {}: {key}={SECRET_PREFIX}{path}: the secret's path must be absolute",
                            index + 1
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Resolve the secret references of an env file's text on this host: each
/// `KEY=@file:/path` becomes `KEY='<contents of /path without its final newline>'`.
/// Returns the text and whether a secret was resolved.
pub fn resolve_env_text(file: &str, content: &str) -> Result<(String, bool), Error> {
    let mut out = String::with_capacity(content.len());
    let mut resolved_any = false;
    for (index, line) in content.lines().enumerate() {
        let reference = env_line(file, index + 1, line)?
            .and_then(|(key, value)| Some((key, value.strip_prefix(SECRET_PREFIX)?)));
        let Some((key, path)) = reference else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let secret_error = |message: String| Error::Secret {
            file: file.to_owned(),
            key: key.to_owned(),
            path: PathBuf::from(path),
            message,
        };
        let value = ferry_release::read_local_text(Path::new(path), MAX_SECRET_BYTES)
            .map_err(|error| secret_error(error.to_string()))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.contains(['\'', '\n', '\r', '\0']) {
            // Single quotes mean "literally" to both systemd and sh; these cannot be inside.
            return Err(secret_error(
                "the value holds a quote, a newline or a NUL, which an env file cannot carry literally"
                    .to_owned(),
            ));
        }
        out.push_str(&format!("{key}='{value}'\n"));
        resolved_any = true;
    }
    Ok((out, resolved_any))
}

/// What applying a bundle changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written.
    pub written: Vec<String>,
    /// Files removed because the bundle no longer has them.
    pub removed: Vec<String>,
}

/// Write `bundle`'s files into `dir` atomically, one by one (temp name, fsync, rename), and
/// remove the files `previous` had that `bundle` does not. An env file that received a secret
/// is written without group or other access, whatever the bundle's mode says. Secrets are
/// resolved before anything is written, so a missing secret changes nothing.
pub fn apply_bundle(
    dir: &Path,
    bundle: &Bundle,
    previous: Option<&Bundle>,
) -> Result<Applied, Error> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let mut prepared = Vec::with_capacity(bundle.files.len());
    for file in &bundle.files {
        check_name(&file.name).map_err(|message| Error::InvalidFile {
            name: file.name.clone(),
            message,
        })?;
        let (content, secret) = if is_env_file(&file.name) {
            resolve_env_text(&file.name, &file.content)?
        } else {
            (file.content.clone(), false)
        };
        let mode = if secret { file.mode & 0o700 } else { file.mode };
        prepared.push((file.name.as_str(), content, mode));
    }
    std::fs::create_dir_all(dir).map_err(io("create config directory", dir))?;
    let mut applied = Applied::default();
    for (name, content, mode) in prepared {
        let target = dir.join(name);
        let temporary = dir.join(format!(".{name}.ferry-tmp"));
        let _ = std::fs::remove_file(&temporary);
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io("write config file", &temporary))?;
        handle
            .write_all(content.as_bytes())
            .and_then(|()| handle.set_permissions(std::fs::Permissions::from_mode(mode)))
            .and_then(|()| handle.sync_all())
            .map_err(io("write config file", &temporary))?;
        drop(handle);
        std::fs::rename(&temporary, &target).map_err(io("replace config file", &target))?;
        applied.written.push(name.to_owned());
    }
    if let Some(previous) = previous {
        for old in &previous.files {
            if bundle.files.iter().any(|file| file.name == old.name)
                || check_name(&old.name).is_err()
            {
                continue;
            }
            let path = dir.join(&old.name);
            match std::fs::remove_file(&path) {
                Ok(()) => applied.removed.push(old.name.clone()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "remove config file",
                        path,
                        source,
                    });
                }
            }
        }
    }
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io("sync config directory", dir))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::SCHEMA;

    fn bundle(files: &[(&str, &str)]) -> Bundle {
        Bundle {
            schema: SCHEMA,
            app: "hello".to_owned(),
            channel: "stable".to_owned(),
            serial: 1,
            files: files
                .iter()
                .map(|(name, content)| BundleFile {
                    name: (*name).to_owned(),
                    mode: 0o644,
                    content: (*content).to_owned(),
                })
                .collect(),
            pushed_at: time::OffsetDateTime::UNIX_EPOCH,
            copied_from: None,
        }
    }

    #[test]
    fn env_files_are_checked_when_bundled() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = write(
            "good.env",
            "# comment\n\nGREETING=hello world\nexport TOKEN=@file:/etc/x\n",
        );
        let files = bundle_from_files(&[good]).unwrap();
        assert_eq!(files[0].name, "good.env");
        for (name, text, wanted) in [
            ("a.env", "NOEQUALS\n", "is not KEY=VALUE"),
            ("b.env", "1X=2\n", "not a variable name"),
            ("c.env", "K=@file:relative/path\n", "must be absolute"),
        ] {
            let error = bundle_from_files(&[write(name, text)])
                .unwrap_err()
                .to_string();
            assert!(error.contains(wanted), "{name}: {error}");
        }
        let binary = write("blob.bin", "");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(
            bundle_from_files(&[binary])
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let error = bundle_from_files(&[write("x.toml", "a"), dir.path().join("sub/x.toml")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("second file") || error.contains("cannot read"),
            "{error}"
        );
    }

    #[test]
    fn secrets_are_resolved_on_the_host_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t value\n").unwrap();
        let text = format!("PLAIN=1\nTOKEN=@file:{}\n", secret.display());
        let (resolved, any) = resolve_env_text("app.env", &text).unwrap();
        assert!(any);
        assert_eq!(resolved, "PLAIN=1\nTOKEN='s3cr3t value'\n");

        let target = dir.path().join("config");
        let applied = apply_bundle(&target, &bundle(&[("app.env", &text)]), None).unwrap();
        assert_eq!(applied.written, ["app.env"]);
        let mode = std::fs::metadata(target.join("app.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "a resolved secret is readable by others: {mode:o}"
        );

        // A missing secret: an error naming it, and nothing written.
        let missing = "TOKEN=@file:/nonexistent/ferry-secret\n";
        let error = apply_bundle(
            &target,
            &bundle(&[("app.env", missing), ("b.toml", "x")]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("/nonexistent/ferry-secret") && error.contains("TOKEN"),
            "{error}"
        );
        assert!(!target.join("b.toml").exists());
        assert_eq!(
            std::fs::read_to_string(target.join("app.env")).unwrap(),
            resolved
        );

        std::fs::write(&secret, "it's\n").unwrap();
        assert!(
            resolve_env_text("app.env", &text)
                .unwrap_err()
                .to_string()
                .contains("quote")
        );
    }

    #[test]
    fn apply_replaces_files_and_removes_dropped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = bundle(&[("a.toml", "one\n"), ("b.env", "X=1\n")]);
        apply_bundle(dir.path(), &first, None).unwrap();
        let second = bundle(&[("a.toml", "two\n")]);
        let applied = apply_bundle(dir.path(), &second, Some(&first)).unwrap();
        assert_eq!(applied.removed, ["b.env"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.toml")).unwrap(),
            "two\n"
        );
        assert!(!dir.path().join("b.env").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().contains("ferry-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
