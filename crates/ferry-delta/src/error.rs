/// What can go wrong making or applying a patch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The package could not be read.
    #[error("cannot expand the package: {0}")]
    Deb(#[from] ferry_deb::Error),
    /// Its expanded form is larger than allowed.
    #[error("the expanded package is larger than {limit} bytes; deltas are skipped for it")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// bsdiff failed, or a patch does not apply.
    #[error("{0}")]
    Patch(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_store::Error),
    /// Signing failed.
    #[error(transparent)]
    Release(#[from] ferry_release::Error),
}
