//! The one error type of ferry-pack. Packing errors are about the operator's inputs, so each
//! carries a sentence naming the manifest key, the file and what to do, plus the cause it wraps.

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong turning a manifest into a package spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest or an input it names is wrong; the message says which and how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// Something failed while doing what the message says.
    #[error("{message}")]
    Context {
        /// What was being done, on what.
        message: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The package format refused a value.
    #[error(transparent)]
    Deb(#[from] ferry_deb::Error),
    /// The manifest is not valid TOML for its schema.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// A file named by the manifest could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Adds what was being done to an error (or a missing value), as `Error::Context`.
pub trait Context<T> {
    /// With a fixed message.
    fn context(self, message: &str) -> Result<T>;
    /// With a message made only when it fails.
    fn with_context(self, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context(self, message: &str) -> Result<T> {
        self.with_context(|| message.to_owned())
    }

    fn with_context(self, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Context {
            message: message(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, message: &str) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(message.to_owned()))
    }

    fn with_context(self, message: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(message()))
    }
}

/// Return an [`Error::Invalid`] with a formatted message.
macro_rules! bail {
    ($($format:tt)+) => {
        return Err($crate::Error::Invalid(format!($($format)+)))
    };
}
pub(crate) use bail;
