//! Throwaway Debian hosts with real systemd as PID 1, booted with `systemd-nspawn` on the
//! machine ferry runs on — for `ferry try` (install a package on a clean host before
//! publishing it) and for ferry's own booted-host tests.
//!
//! - [`Image`]: a Debian bookworm root filesystem built once with `mmdebstrap` (systemd,
//!   D-Bus, curl, cloud-init, openssh-server) and cached in a directory.
//! - [`Host`]: one booted container on that image. Its changes go to an overlay layer of
//!   its own, so hosts share one image, and the layer outlives a power-off: booting the host
//!   again continues from its disk as a real server would. Commands run inside with
//!   `nsenter`; the host has only `lo` unless the caller binds something in.
//!
//! Everything runs as root; a host is always stopped when its [`Host`] is dropped.

mod error;
mod host;
mod image;
mod process;

pub use error::{Error, Result};
pub use host::{Bind, Host, HostConfig};
pub use image::{DEFAULT_MIRROR, Image, PACKAGES, SUITE};
pub use process::{Finished, run_bounded};

/// Fail with [`Error::NotRoot`] unless this process is root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// Fail with [`Error::MissingTool`] unless `program` is on PATH.
pub fn require_tool(program: &'static str, package: &'static str) -> Result<()> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|meta| meta.is_file()))
    });
    if found {
        Ok(())
    } else {
        Err(Error::MissingTool { program, package })
    }
}

/// Why hosts cannot be booted on this machine, or `None` when they can: root, and the
/// programs a host needs (`systemd-nspawn`, `nsenter`).
pub fn unavailable() -> Option<Error> {
    require_root()
        .and_then(|()| require_tool("systemd-nspawn", "systemd-container"))
        .and_then(|()| require_tool("nsenter", "util-linux"))
        .err()
}
