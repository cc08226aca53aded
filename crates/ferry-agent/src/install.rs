//! Install methods. `unpack` puts a package's data.tar into `<root>/releases/<version>/`
//! (refusing any entry that would land outside it) and switches the `current` link
//! atomically; `dpkg` runs a non-interactive `dpkg -i`, recovering an interrupted run first
//! and waiting for the dpkg lock.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;
use crate::fsutil::sync_dir;

/// How a release is installed.
#[derive(Debug, Clone, PartialEq)]
pub enum Install {
    /// data.tar into `<root>/releases/<version>/`, then an atomic `current` switch.
    Unpack {
        /// The root directory.
        root: PathBuf,
        /// Releases kept.
        keep: usize,
    },
    /// `dpkg -i`.
    Dpkg {
        /// The dpkg program.
        program: PathBuf,
        /// Extra arguments before the action.
        extra_args: Vec<String>,
        /// How long to wait for the dpkg lock.
        lock_timeout: Duration,
    },
}

/// Install the package at `package` as `version`: [`prepare`], then [`activate`].
/// `recovering` is true when a previous install may have been interrupted.
pub fn install(
    method: &Install,
    package: &Path,
    version: &str,
    recovering: bool,
) -> Result<(), Error> {
    prepare(method, package, version)?;
    activate(method, package, version, recovering)
}

/// Everything that can be done without touching what runs: `unpack` extracts the release
/// into its own directory (refusing unsafe entries); `dpkg` checks the package is readable.
/// An error here means nothing on the host changed.
pub fn prepare(method: &Install, package: &Path, version: &str) -> Result<(), Error> {
    match method {
        Install::Unpack { root, .. } => unpack_release(package, root, version).map(drop),
        Install::Dpkg { extra_args, .. } => {
            let deb = ferry_deb::DebReader::open(package).map_err(|error| Error::Install {
                version: version.to_string(),
                message: format!(
                    "{} is not a readable .deb: {}",
                    package.display(),
                    with_causes(&error)
                ),
            })?;
            if deb.control().package().is_none_or(str::is_empty) {
                return Err(Error::Install {
                    version: version.to_string(),
                    message: "the package has no Package field".into(),
                });
            }
            // dpkg half-unpacking a package onto a full disk leaves it for `--configure -a`;
            // better not to start. Installed-Size is in KiB.
            let installed_kib = deb
                .control()
                .get("Installed-Size")
                .and_then(|size| size.trim().parse::<u64>().ok())
                .unwrap_or(0);
            crate::fsutil::require_space(&dpkg_root(extra_args), installed_kib.saturating_mul(1024))
        }
    }
}

/// Which part of an install to run with [`run_off_thread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// [`prepare`]: nothing running is touched.
    Prepare,
    /// [`activate`]: the prepared release becomes the installed one.
    Activate,
    /// [`install`]: both.
    Whole,
}

/// Run `part` of installing `package` as `version` on tokio's blocking pool (unpacking and
/// dpkg block), so the agent's one thread stays free; a part that panicked is an install
/// error of `version`.
pub async fn run_off_thread(
    part: Part,
    method: &Install,
    package: &Path,
    version: &str,
    recovering: bool,
) -> Result<(), Error> {
    let (method, package, owned_version) = (method.clone(), package.to_owned(), version.to_owned());
    tokio::task::spawn_blocking(move || match part {
        Part::Prepare => prepare(&method, &package, &owned_version),
        Part::Activate => activate(&method, &package, &owned_version, recovering),
        Part::Whole => install(&method, &package, &owned_version, recovering),
    })
    .await
    .unwrap_or_else(|join| {
        Err(Error::Install {
            version: version.to_owned(),
            message: join.to_string(),
        })
    })
}

/// [`install`] (prepare, then activate) off the agent's thread.
pub async fn install_off_thread(
    method: &Install,
    package: &Path,
    version: &str,
    recovering: bool,
) -> Result<(), Error> {
    run_off_thread(Part::Whole, method, package, version, recovering).await
}

/// The root dpkg installs into: its `--root` / `--instdir` argument, else `/`.
fn dpkg_root(extra_args: &[String]) -> PathBuf {
    let mut arguments = extra_args.iter();
    while let Some(argument) = arguments.next() {
        for flag in ["--root", "--instdir"] {
            if let Some(value) = argument.strip_prefix(&format!("{flag}=")) {
                return PathBuf::from(value);
            }
            if argument == flag {
                if let Some(value) = arguments.clone().next() {
                    return PathBuf::from(value);
                }
            }
        }
    }
    PathBuf::from("/")
}

/// Make the prepared release the installed one: `unpack` switches `current` atomically
/// (and prunes old releases); `dpkg` runs `dpkg -i`.
pub fn activate(
    method: &Install,
    package: &Path,
    version: &str,
    recovering: bool,
) -> Result<(), Error> {
    match method {
        Install::Unpack { root, keep } => {
            let release_dir = release_dir(root, version);
            if !release_dir.is_dir() {
                unpack_release(package, root, version)?;
            }
            switch_current(root, &release_dir)?;
            prune_releases(root, *keep)
        }
        Install::Dpkg {
            program,
            extra_args,
            lock_timeout,
        } => {
            if recovering {
                run_dpkg(
                    program,
                    extra_args,
                    &["--configure", "-a"],
                    version,
                    *lock_timeout,
                )?;
            }
            let package_text = package.to_string_lossy();
            run_dpkg(
                program,
                extra_args,
                &["--force-confdef", "--force-confold", "-i", &package_text],
                version,
                *lock_timeout,
            )
        }
    }
}

/// The directory a version is unpacked into.
pub fn release_dir(root: &Path, version: &str) -> PathBuf {
    root.join("releases").join(version)
}

/// Unpack `package` into `<root>/releases/<version>/` unless it is already there. The tree
/// is built under a temp name and renamed into place, so the directory existing means it is
/// complete.
pub fn unpack_release(package: &Path, root: &Path, version: &str) -> Result<PathBuf, Error> {
    if version.is_empty() || version.contains('/') || version.starts_with('.') {
        return Err(Error::Install {
            version: version.to_string(),
            message: "the version is not a safe directory name".into(),
        });
    }
    let releases = root.join("releases");
    std::fs::create_dir_all(&releases).map_err(|e| Error::io("create directory", &releases, e))?;
    let target = release_dir(root, version);
    if target.is_dir() {
        return Ok(target);
    }
    let temp = releases.join(format!(".unpack-{version}-{}", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp)
            .map_err(|e| Error::io("remove a stale unpack directory", &temp, e))?;
    }
    std::fs::create_dir(&temp).map_err(|e| Error::io("create directory", &temp, e))?;
    let result = (|| {
        let data = open_data_tar(package, root)?;
        unpack_tar(data, &temp, package)?;
        std::fs::rename(&temp, &target).map_err(|e| Error::io("rename into place", &target, e))?;
        sync_dir(&releases)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result.map(|()| target)
}

/// Open the package's data.tar, first checking that `root` has room for the unpacked tree
/// (the control file's Installed-Size, in KiB).
fn open_data_tar(package: &Path, root: &Path) -> Result<Box<dyn Read>, Error> {
    let not_readable = |error: ferry_deb::Error| Error::Install {
        version: package.display().to_string(),
        message: format!("not a readable .deb: {}", with_causes(&error)),
    };
    let deb = ferry_deb::DebReader::open(package).map_err(not_readable)?;
    let installed_kib = deb
        .control()
        .get("Installed-Size")
        .and_then(|size| size.trim().parse::<u64>().ok())
        .unwrap_or(0);
    crate::fsutil::require_space(root, installed_kib.saturating_mul(1024))?;
    Ok(Box::new(deb.into_data().map_err(not_readable)?))
}

/// Copy an entry's bytes to `file`, telling the two sides' failures apart: a read error is the
/// package's fault (corrupt data.tar), a write error is the disk's (full, read-only, failing).
fn copy_entry(
    entry: &mut impl Read,
    file: &mut std::fs::File,
    target: &Path,
    package: &Path,
) -> Result<(), Error> {
    use std::io::Write;
    let mut buffer = vec![0u8; 128 * 1024];
    loop {
        let read = entry.read(&mut buffer).map_err(|error| Error::Install {
            version: package.display().to_string(),
            message: format!("corrupt data.tar: {error}"),
        })?;
        if read == 0 {
            return Ok(());
        }
        file.write_all(&buffer[..read])
            .map_err(|error| Error::io("write", target, error))?;
    }
}

/// An error and its causes, `a: b: c` (ferry-deb keeps the cause in `source()`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Check one entry path: relative, no `..`, not empty. Returns the cleaned relative path
/// (`./usr/bin/x` → `usr/bin/x`); `None` for the root entry itself (`./`).
fn safe_relative(path: &Path, package: &Path) -> Result<Option<PathBuf>, Error> {
    let unsafe_entry = |reason| Error::UnsafeEntry {
        package: package.to_path_buf(),
        entry: path.display().to_string(),
        reason,
    };
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err(unsafe_entry("contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("is an absolute path"));
            }
        }
    }
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

/// Whether a symlink at `link` (relative to the root) with target `target` stays inside the root.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1; // the link's directory
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Refuse to write through a symlink: every parent of `relative` under `dest` must be a real directory.
fn ensure_real_parents(dest: &Path, relative: &Path, package: &Path) -> Result<(), Error> {
    let mut current = dest.to_path_buf();
    let parents: Vec<_> = relative
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for component in parents {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(Error::UnsafeEntry {
                    package: package.to_path_buf(),
                    entry: relative.display().to_string(),
                    reason: "would be written through a symlink",
                });
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(&current)
                .map_err(|e| Error::io("create directory", &current, e))?,
        }
    }
    Ok(())
}

/// Extract a (decompressed) tar stream into `dest`, refusing entries that would escape it:
/// `..`, absolute paths, symlinks pointing out, hard links to outside, device files.
pub fn unpack_tar(data: impl Read, dest: &Path, package: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let tar_error = |error: std::io::Error| Error::Install {
        version: package.display().to_string(),
        message: format!("corrupt data.tar: {error}"),
    };
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let raw_path = entry.path().map_err(tar_error)?.into_owned();
        let Some(relative) = safe_relative(&raw_path, package)? else {
            continue;
        };
        let unsafe_entry = |reason| Error::UnsafeEntry {
            package: package.to_path_buf(),
            entry: raw_path.display().to_string(),
            reason,
        };
        ensure_real_parents(dest, &relative, package)?;
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        if kind.is_dir() {
            match std::fs::symlink_metadata(&target) {
                Ok(metadata) if metadata.is_dir() => {}
                Ok(_) => return Err(unsafe_entry("replaces a non-directory")),
                Err(_) => std::fs::create_dir(&target)
                    .map_err(|e| Error::io("create directory", &target, e))?,
            }
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))
                .map_err(|e| Error::io("set permissions of", &target, e))?;
        } else if kind.is_file()
            || kind == tar::EntryType::Continuous
            // A GNU sparse file: the tar reader expands its holes into zeros as it is read.
            || kind.is_gnu_sparse()
        {
            if std::fs::symlink_metadata(&target).is_ok() {
                std::fs::remove_file(&target).map_err(|e| Error::io("replace", &target, e))?;
            }
            let mut file =
                std::fs::File::create(&target).map_err(|e| Error::io("create", &target, e))?;
            copy_entry(&mut entry, &mut file, &target, package)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("set permissions of", &target, e))?;
        } else if kind.is_symlink() {
            let link_target = entry
                .link_name()
                .map_err(tar_error)?
                .ok_or_else(|| unsafe_entry("is a symlink without a target"))?;
            if !symlink_stays_inside(&relative, &link_target) {
                return Err(unsafe_entry("is a symlink pointing out of the root"));
            }
            if std::fs::symlink_metadata(&target).is_ok() {
                std::fs::remove_file(&target).map_err(|e| Error::io("replace", &target, e))?;
            }
            std::os::unix::fs::symlink(&link_target, &target)
                .map_err(|e| Error::io("create symlink", &target, e))?;
        } else if kind.is_hard_link() {
            let link_target = entry
                .link_name()
                .map_err(tar_error)?
                .ok_or_else(|| unsafe_entry("is a hard link without a target"))?;
            let Some(source) = safe_relative(&link_target, package)? else {
                return Err(unsafe_entry("is a hard link to the root"));
            };
            ensure_real_parents(dest, &source, package)?;
            std::fs::hard_link(dest.join(&source), &target)
                .map_err(|e| Error::io("create hard link", &target, e))?;
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(unsafe_entry(
                "is a device file, fifo or other special entry",
            ));
        }
    }
    Ok(())
}

/// Point `<root>/current` at `release_dir` atomically: a symlink under a temp name renamed
/// over `current`. The link is relative (`releases/<version>`), so the root can move.
pub fn switch_current(root: &Path, release_dir: &Path) -> Result<(), Error> {
    let relative = release_dir.strip_prefix(root).unwrap_or(release_dir);
    let temp = root.join(format!(".current.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(relative, &temp)
        .map_err(|e| Error::io("create symlink", &temp, e))?;
    let current = root.join("current");
    std::fs::rename(&temp, &current).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io("switch", &current, e)
    })?;
    sync_dir(root)
}

/// The version `<root>/current` points at, if any.
pub fn current_version(root: &Path) -> Option<String> {
    let target = std::fs::read_link(root.join("current")).ok()?;
    target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

/// Keep the `keep` most recently unpacked releases (by modification time) plus whatever
/// `current` points at; remove the others and any leftover temp directories.
pub fn prune_releases(root: &Path, keep: usize) -> Result<(), Error> {
    let releases = root.join("releases");
    let current = current_version(root);
    let mut entries = Vec::new();
    let listing = std::fs::read_dir(&releases).map_err(|e| Error::io("list", &releases, e))?;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".unpack-") {
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        entries.push((modified, name, entry.path()));
    }
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    for (index, (_, name, path)) in entries.into_iter().enumerate() {
        if index >= keep && current.as_deref() != Some(name.as_str()) {
            std::fs::remove_dir_all(&path)
                .map_err(|e| Error::io("remove an old release", &path, e))?;
        }
    }
    Ok(())
}

/// Run dpkg non-interactively, retrying while another dpkg holds the lock (up to `lock_timeout`).
fn run_dpkg(
    program: &Path,
    extra_args: &[String],
    action: &[&str],
    version: &str,
    lock_timeout: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let output = Command::new(program)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(extra_args)
            .args(action)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::Install {
                version: version.to_string(),
                message: format!("cannot run {}: {e}", program.display()),
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let locked = stderr.contains("lock")
            && (stderr.contains("locked") || stderr.contains("Resource temporarily unavailable"));
        if locked && started.elapsed() < lock_timeout {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "dpkg is locked by another process; waiting"
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        return Err(Error::Install {
            version: version.to_string(),
            message: format!(
                "`{} {} {}` exited with {}: {}",
                program.display(),
                extra_args.join(" "),
                action.join(" "),
                output.status,
                stderr.trim()
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    /// A tar stream built with raw headers, so it can hold the hostile paths the `tar`
    /// builder itself refuses to write.
    fn tar_of(items: &[Item]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            let mut header = tar::Header::new_old();
            let (name, kind, data, link): (&str, tar::EntryType, &[u8], &str) = match item {
                Item::File(name, data) => (name, tar::EntryType::Regular, data, ""),
                Item::Dir(name) => (name, tar::EntryType::Directory, b"", ""),
                Item::Symlink(name, target) => (name, tar::EntryType::Symlink, b"", target),
                Item::HardLink(name, target) => (name, tar::EntryType::Link, b"", target),
            };
            let bytes = header.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn unpack(items: &[Item]) -> (tempfile::TempDir, Result<(), Error>) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("root/releases/1");
        std::fs::create_dir_all(&dest).unwrap();
        let result = unpack_tar(&tar_of(items)[..], &dest, Path::new("app.deb"));
        (dir, result)
    }

    #[test]
    fn a_normal_package_tree_unpacks() {
        let (dir, result) = unpack(&[
            Item::Dir("./"),
            Item::Dir("./usr/"),
            Item::Dir("./usr/bin/"),
            Item::File("./usr/bin/hello", b"binary"),
            Item::Symlink("./usr/bin/hi", "hello"),
            Item::Symlink("./usr/share/doc/link", "../../bin/hello"),
            Item::HardLink("./usr/bin/hello2", "./usr/bin/hello"),
        ]);
        result.unwrap();
        let dest = dir.path().join("root/releases/1");
        assert_eq!(std::fs::read(dest.join("usr/bin/hi")).unwrap(), b"binary");
        assert_eq!(
            std::fs::read(dest.join("usr/share/doc/link")).unwrap(),
            b"binary"
        );
        assert_eq!(
            std::fs::read(dest.join("usr/bin/hello2")).unwrap(),
            b"binary"
        );
    }

    #[test]
    fn escaping_entries_are_refused_and_nothing_lands_outside() {
        let cases: Vec<(Vec<Item>, &str)> = vec![
            (vec![Item::File("./../../evil", b"x")], "`..`"),
            (vec![Item::File("/tmp/evil", b"x")], "absolute"),
            (
                vec![Item::Symlink("./usr/escape", "../../../..")],
                "pointing out",
            ),
            (
                vec![Item::Symlink("./usr/abs", "/etc/passwd")],
                "pointing out",
            ),
            (vec![Item::HardLink("./usr/h", "../../../x")], "`..`"),
            (
                vec![Item::Symlink("./dir", "."), Item::File("./dir/x", b"x")],
                "through a symlink",
            ),
        ];
        for (items, expected) in cases {
            let (dir, result) = unpack(&items);
            let error = result.unwrap_err();
            assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
            assert!(
                error.to_string().contains(expected),
                "{error} should say {expected}"
            );
            assert!(!dir.path().join("evil").exists() && !dir.path().join("root/evil").exists());
        }
    }

    #[test]
    fn switch_current_replaces_the_link_atomically_and_prune_keeps_current() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for version in ["1", "2", "3", "4"] {
            let release = release_dir(root, version);
            std::fs::create_dir_all(&release).unwrap();
            std::fs::write(release.join("version"), version).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        switch_current(root, &release_dir(root, "1")).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("current/version")).unwrap(),
            "1"
        );
        assert_eq!(current_version(root).as_deref(), Some("1"));
        prune_releases(root, 2).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(root.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1", "3", "4"]);
        switch_current(root, &release_dir(root, "4")).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("current/version")).unwrap(),
            "4"
        );
        let stray: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            stray.iter().all(|name| !name.starts_with(".current")),
            "{stray:?}"
        );
    }
}
