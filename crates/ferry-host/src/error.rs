use std::path::PathBuf;

/// What can go wrong building an image or running a host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program ferry-host runs is not installed.
    #[error(
        "{program} is not installed: install the Debian package {package} (apt-get install {package})"
    )]
    MissingTool {
        /// The program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// Booting a container needs root.
    #[error("booting a host with systemd-nspawn needs root: run this as root (or with sudo)")]
    NotRoot,
    /// A local file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A command failed or did not finish in time.
    #[error("{what} failed: {detail}")]
    Command {
        /// What the command was for.
        what: String,
        /// Its status and the end of its output.
        detail: String,
    },
    /// The host did not boot.
    #[error("host {name} did not boot: {detail}")]
    Boot {
        /// The host's name.
        name: String,
        /// Why, with the end of its console log.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
