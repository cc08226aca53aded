//! The one error type of this crate: every way reading or writing a .deb can fail, each
//! variant naming the member, path or value involved so the message is actionable.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a Debian package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the underlying stream failed.
    #[error("{action}")]
    Io {
        /// What was being done ("reading the ar archive", "writing data.tar").
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file named in the package description could not be read.
    #[error("cannot read {path}")]
    File {
        /// The file on disk.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a Debian binary package (no `!<arch>` magic, no `debian-binary`).
    #[error("not a Debian binary package: {0}")]
    NotADeb(String),
    /// The input looks like a .deb but its structure is broken (truncated, bad header,
    /// members out of order).
    #[error("malformed .deb: {0}")]
    Malformed(String),
    /// A member uses a compression this crate does not read (bzip2, for instance).
    #[error(
        "unsupported compression for member {member} (ferry reads gzip, xz, lzma, zstd and uncompressed members)"
    )]
    UnsupportedCompression {
        /// The ar member's name.
        member: String,
    },
    /// A tar member (control.tar or data.tar) could not be read.
    #[error("malformed {member}")]
    Tar {
        /// The ar member's name.
        member: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The control file has a syntax error.
    #[error("malformed control file: {0}")]
    Control(String),
    /// A version string is not a valid Debian version.
    #[error("invalid Debian version {version:?}: {reason}")]
    Version {
        /// The rejected version.
        version: String,
        /// Why, with a hint where one helps.
        reason: String,
    },
    /// A package name is not a valid Debian package name.
    #[error("invalid package name {name:?}: {reason}")]
    PackageName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A destination path inside the package is not acceptable (relative, `..`, empty).
    #[error("invalid path in package {path:?}: {reason}")]
    PackagePath {
        /// The rejected destination.
        path: String,
        /// Why.
        reason: String,
    },
    /// Two entries of the package claim the same path with different contents or types.
    #[error("{path} is listed twice in the package")]
    DuplicatePath {
        /// The path inside the package.
        path: String,
    },
    /// Executables in the package are built for different architectures.
    #[error(
        "executables disagree on the architecture: {first_path} is {first_arch}, {second_path} is {second_arch} (pack them separately or set the architecture explicitly)"
    )]
    ConflictingArchitectures {
        /// The first executable seen.
        first_path: PathBuf,
        /// Its architecture.
        first_arch: String,
        /// The executable that disagrees.
        second_path: PathBuf,
        /// Its architecture.
        second_arch: String,
    },
    /// A required control field is missing or a field value is unusable.
    #[error("control field {field}: {reason}")]
    Field {
        /// The field name.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A compression level out of the compressor's range.
    #[error("compression level {level} is out of range for {compression} ({range})")]
    Level {
        /// The compressor.
        compression: String,
        /// The rejected level.
        level: u32,
        /// The accepted range.
        range: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }

    pub(crate) fn tar(member: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Tar {
            member: member.to_string(),
            source,
        }
    }
}
