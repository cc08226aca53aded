//! The one error type of ferry-store. Messages name the object and store involved and, where
//! the cause is recognisable (no such bucket, bad credentials, nothing listening), say what to
//! check next.

/// Everything that can go wrong talking to a store or running the publish protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL is not one ferry understands.
    #[error("invalid store URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// No way to authenticate to S3 was found.
    #[error(
        "no S3 credentials for {url}: AWS_EC2_METADATA_DISABLED is set and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not"
    )]
    NoCredentials {
        /// The store URL.
        url: String,
    },
    /// The store could not be set up (bad endpoint, bad options).
    #[error("cannot open store {url}")]
    Open {
        /// The store URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<object_store::Error>,
    },
    /// A request to the store failed.
    #[error("{operation} {location} failed{hint} ({cause})")]
    Request {
        /// What was attempted (`read`, `write`, `list`, …).
        operation: &'static str,
        /// The object, as `<store URL>/<path>`.
        location: String,
        /// A hint on what to check, starting with ": " (or empty).
        hint: String,
        /// The innermost cause, as text. object_store's own chain repeats every layer's
        /// message, so the whole error is kept in `error` (not chained as a source) and only
        /// its root cause is shown.
        cause: String,
        /// The full error from the store client.
        error: Box<object_store::Error>,
    },
    /// A write (or a listing) was asked of an `http(s)://` store, which is read-only.
    #[error(
        "cannot {operation} {location}: an http(s):// store is read-only (a static server or CDN agents read through); use the s3:// or file:// store behind it"
    )]
    ReadOnly {
        /// What was attempted.
        operation: &'static str,
        /// The object, as `<store URL>/<path>`.
        location: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {operation} {path}")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An object is bigger than the caller allowed.
    #[error("{location} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The object.
        location: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An object that must exist does not.
    #[error("{what} not found at {location}{hint}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// Where.
        location: String,
        /// What to check, starting with ": " (or empty).
        hint: String,
    },
    /// The store accepts conditional writes but does not honour them.
    #[error(
        "store {url} ignores conditional writes (If-None-Match / If-Match on PUT): two publishers at once could silently lose an update. Use a store that honours them (AWS S3, MinIO, R2, …), or pass --single-publisher if you are sure only one publish runs at a time"
    )]
    ConditionalPutIgnored {
        /// The store URL.
        url: String,
    },
    /// A release of this version exists with other artifacts.
    #[error(
        "release {app} {version} already exists with different artifacts ({existing}); releases are immutable: bump the version and publish again"
    )]
    ReleaseConflict {
        /// The app.
        app: String,
        /// The version.
        version: String,
        /// What the existing release holds.
        existing: String,
    },
    /// Something about the requested publish makes no sense.
    #[error("{0}")]
    InvalidRequest(String),
    /// Too many publishers raced for too long.
    #[error(
        "gave up advancing {what} after {attempts} conflicting attempts; other publishers keep winning, try again"
    )]
    TooManyConflicts {
        /// The pointer, with its location.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The pointer state a publish would build on does not verify.
    #[error(
        "refusing to build on {what}: {reason}. Agents refuse it too and stay where they are. If another key you trust signed it, pass --trust with its public key; if it was written without a signing key, `--force-reset` continues from the highest verified serial in its history (`ferry verify` shows what agents see)"
    )]
    UnverifiedPointer {
        /// The pointer, with its location.
        what: String,
        /// Why it cannot be built on.
        reason: String,
    },
    /// The current pointer state was signed by another key than the one signing now.
    #[error(
        "{what} (serial {serial}) is signed by key {signed_by}, but this publish signs with key {signing_with}: agents that trust only {signed_by} would refuse every update from now on. If the agents already trust {signing_with} (a key rotation), pass --new-key; otherwise sign with the channel's key"
    )]
    SignerChanged {
        /// The pointer, with its location.
        what: String,
        /// The serial of the current state.
        serial: u64,
        /// The key that signed the current state.
        signed_by: String,
        /// The key signing now.
        signing_with: String,
    },
    /// No serial is left to advance to.
    #[error(
        "{what} is at serial {serial}, the highest ferry writes ({max}); no further publish is possible on this channel"
    , max = ferry_release::MAX_SERIAL)]
    SerialExhausted {
        /// The pointer, with its location.
        what: String,
        /// The serial reached.
        serial: u64,
    },
    /// `--force-reset` found nothing trustworthy to continue from.
    #[error(
        "cannot reset {what}: no entry of its history verifies with the trusted keys (pass --trust with the key that signed the channel)"
    )]
    NoVerifiedHistory {
        /// The pointer, with its location.
        what: String,
    },
    /// An artifact's content does not match what the documents say.
    #[error("artifact {location} does not match the release: {message}")]
    ArtifactMismatch {
        /// The artifact.
        location: String,
        /// What differs.
        message: String,
    },
    /// A document or signature is wrong.
    #[error(transparent)]
    Release(#[from] ferry_release::Error),
}

impl Error {
    /// Whether trying again later may succeed without anyone changing the request: the store
    /// was unreachable, answered an error, or lost a race. Callers back off and retry on
    /// these, and treat everything else as an answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Request { error, .. } => !matches!(
                error.as_ref(),
                object_store::Error::NotImplemented { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
                    | object_store::Error::InvalidPath { .. }
            ),
            Error::Io { .. } | Error::TooManyConflicts { .. } | Error::NotFound { .. } => true,
            _ => false,
        }
    }
}

/// The error and all its causes as one text.
fn full_text(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The innermost cause of an error, one line, trimmed to a readable length.
pub(crate) fn root_cause(error: &object_store::Error) -> String {
    let mut deepest: &dyn std::error::Error = error;
    while let Some(cause) = deepest.source() {
        deepest = cause;
    }
    let text = deepest.to_string();
    let line = text.lines().next().unwrap_or_default().trim();
    let mut short: String = line.chars().take(300).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    // Error bodies of S3 are XML on one line: the code is what matters.
    if let (Some(start), Some(end)) = (text.find("<Code>"), text.find("</Code>")) {
        if start < end {
            return format!("S3 error code {}", &text[start + 6..end]);
        }
    }
    short
}

/// True when a "not found" is about the bucket, not the object.
pub(crate) fn is_missing_bucket(error: &object_store::Error) -> bool {
    full_text(error).contains("NoSuchBucket")
}

/// Recognise common causes in an object_store error and say what to check.
pub(crate) fn hint_for(error: &object_store::Error) -> String {
    let text = full_text(error);
    let hint = if text.contains("NoSuchBucket") {
        "the bucket does not exist (create it, or check the bucket name in the store URL)"
    } else if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("403 Forbidden")
    {
        "access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance profile, and the bucket policy)"
    } else if text.contains("onnection refused")
        || text.contains("error sending request")
        || text.contains("timed out")
        || text.contains("dns error")
    {
        "cannot reach the store (is the endpoint right and the server up? see --s3-endpoint / FERRY_S3_ENDPOINT)"
    } else {
        ""
    };
    if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    }
}
