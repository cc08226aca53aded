//! How long transfers report progress without the library printing anything: the caller
//! passes a [`Progress`]; the CLI draws a bar on a terminal, the agent logs, tests ignore it.

/// Receives progress of one transfer at a time.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes named `label` starts.
    fn start(&self, label: &str, total: u64);
    /// `bytes` more bytes were transferred.
    fn advance(&self, bytes: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}
