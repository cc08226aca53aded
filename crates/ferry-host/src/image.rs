//! The root filesystem every host boots from: Debian bookworm (minbase) with systemd,
//! built once by `mmdebstrap` and kept in a directory. The recipe is written into the image
//! (`/etc/ferry-image`), so a changed recipe rebuilds it and a half-built one is never used.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Error, Result, require_root, require_tool, run_bounded};

/// The Debian release the image is.
pub const SUITE: &str = "bookworm";
/// Where its packages come from unless the caller names another mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The packages added to `minbase`: systemd as init with D-Bus, `procps` and `curl` for
/// checks, and real cloud-init (with `openssh-server`, whose `ssh-keygen` cloud-init's ssh
/// module expects) for provisioning through its NoCloud datasource.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "curl",
    "cloud-init",
    "openssh-server",
];
/// The file inside the image that records its recipe.
const STAMP: &str = "etc/ferry-image";
/// Changes inside the image the hosts rely on, run by mmdebstrap on the finished tree:
/// a UTF-8 locale (cloud-init's locale module fails without one), cloud-init looking only
/// at NoCloud, no apt timers waking up during a test, and no machine id or hostname baked
/// in (each host gets its own).
const HOOKS: &[&str] = &[
    r#"echo LANG=C.UTF-8 > "$1/etc/default/locale""#,
    r#"printf 'datasource_list: [ NoCloud, None ]\n' > "$1/etc/cloud/cloud.cfg.d/90-ferry-host.cfg""#,
    r#"chroot "$1" systemctl mask --quiet apt-daily.timer apt-daily-upgrade.timer"#,
    r#": > "$1/etc/machine-id"; rm -f "$1/etc/hostname" "$1/var/lib/dbus/machine-id""#,
    r#"rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin"#,
];
/// mmdebstrap takes about half a minute here; a slow mirror gets this long.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    root: PathBuf,
}

fn recipe() -> String {
    let mut text = format!(
        "ferry host image, recipe 1\nsuite {SUITE}\nvariant minbase\npackages {}\n",
        PACKAGES.join(",")
    );
    for hook in HOOKS {
        text.push_str("hook ");
        text.push_str(hook);
        text.push('\n');
    }
    text
}

impl Image {
    /// The image in `dir` when it is complete and built by this recipe.
    pub fn open(dir: &Path) -> Option<Image> {
        let stamp = std::fs::read_to_string(dir.join(STAMP)).ok()?;
        (stamp == recipe()).then(|| Image {
            root: dir.to_path_buf(),
        })
    }

    /// The image in `dir`, built first when it is missing or from an older recipe. Several
    /// processes may ask at once: one builds, the others wait for it. `progress` hears
    /// about a build before it starts.
    pub fn ensure(dir: &Path, mirror: &str, progress: &mut dyn FnMut(&str)) -> Result<Image> {
        if let Some(image) = Image::open(dir) {
            return Ok(image);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        let lock_path = sibling(dir, "lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                "lock",
                &lock_path,
                std::io::Error::last_os_error(),
            ));
        }
        if let Some(image) = Image::open(dir) {
            return Ok(image);
        }
        progress(&format!(
            "building a Debian {SUITE} host image in {} (mmdebstrap, about a minute, once)",
            dir.display()
        ));
        Image::build(dir, mirror)
    }

    /// Build the image into `dir` (replacing what is there) from `mirror`.
    pub fn build(dir: &Path, mirror: &str) -> Result<Image> {
        require_root()?;
        require_tool("mmdebstrap", "mmdebstrap")?;
        let building = sibling(dir, "building");
        remove_tree(&building)?;
        let mut command = Command::new("mmdebstrap");
        command
            .args(["--quiet", "--variant=minbase"])
            .arg(format!("--include={}", PACKAGES.join(",")));
        for hook in HOOKS {
            command.arg(format!("--customize-hook={hook}"));
        }
        command.arg(SUITE).arg(&building).arg(mirror);
        let finished = run_bounded(&mut command, BUILD_LIMIT)?;
        if !finished.success() {
            let _ = remove_tree(&building);
            return Err(Error::Command {
                what: format!("building the {SUITE} image with mmdebstrap from {mirror}"),
                detail: format!(
                    "{}\n(check that the mirror answers, or pass another one)",
                    finished.describe()
                ),
            });
        }
        let stamp = building.join(STAMP);
        std::fs::write(&stamp, recipe()).map_err(|e| Error::io("write", &stamp, e))?;
        let old = sibling(dir, "old");
        remove_tree(&old)?;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| Error::io("move aside", dir, e))?;
        }
        std::fs::rename(&building, dir).map_err(|e| Error::io("move into place", dir, e))?;
        remove_tree(&old)?;
        Ok(Image {
            root: dir.to_path_buf(),
        })
    }

    /// The root filesystem.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `<dir>.<suffix>` beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::io("remove", path, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_only_used_when_its_recipe_matches() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bookworm");
        assert!(Image::open(&image).is_none(), "no image yet");
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join(STAMP), "ferry host image, recipe 0\n").unwrap();
        assert!(Image::open(&image).is_none(), "an older recipe is rebuilt");
        std::fs::write(image.join(STAMP), recipe()).unwrap();
        assert_eq!(Image::open(&image).unwrap().root(), image);
        assert_eq!(sibling(&image, "lock"), dir.path().join("bookworm.lock"));
    }
}
