//! A ferry store on any backend: opening one from a URL (`file:///path`, `s3://bucket/prefix`),
//! and the few operations the protocol needs — capped reads, conditional reads, create-only
//! and compare-and-swap writes, ranged reads, multipart uploads — with errors that say what
//! to check. On `file://` the compare-and-swap is done under a lock file because the local
//! backend of `object_store` has no If-Match.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::error::{Error, hint_for, is_missing_bucket, root_cause};
use crate::progress::Progress;

/// Objects at least this big are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of one uploaded part.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once.
const PART_CONCURRENCY: usize = 10;
/// The marker that caches "this store honours conditional PUT".
const CONDITIONAL_PUT_MARKER: &str = ".ferry/conditional-put-ok";

/// The default `max-age` of pointers for caches in front of the store.
pub const DEFAULT_POINTER_MAX_AGE: Duration = Duration::from_secs(10);

/// How to reach a store. The defaults make a dead store fail within seconds.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A custom S3 endpoint (`http://127.0.0.1:9000`, `https://minio.example`); AWS itself
    /// when unset. The binary fills it from `--s3-endpoint`, `FERRY_S3_ENDPOINT`,
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
    pub s3_endpoint: Option<String>,
    /// Where S3 credentials can come from, as the caller found the environment.
    pub credentials: Credentials,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request (one part of a multipart upload).
    pub request_timeout: Duration,
    /// Retries of a failed request (transient errors only).
    pub max_retries: usize,
    /// No retry starts after this long.
    pub retry_timeout: Duration,
    /// Create the directory of a `file://` store if it does not exist (for writers).
    pub create_local_root: bool,
    /// Treat a missing `file://` directory as an empty store instead of an error (for
    /// planning a publish without writing anything).
    pub missing_local_root_is_empty: bool,
    /// How long a cache in front of the store may serve a pointer (channel, config, keyring):
    /// the `max-age` of the `Cache-Control` header written with them on S3. Immutable objects
    /// get a year, host reports `no-store` ([`ferry_release::layout::caching`]).
    pub pointer_max_age: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            s3_endpoint: None,
            credentials: Credentials::Standard,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            create_local_root: false,
            missing_local_root_is_empty: false,
            pointer_max_age: DEFAULT_POINTER_MAX_AGE,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Backend {
    /// `planned`: the directory does not exist yet and reads see an empty in-memory store.
    Local {
        root: PathBuf,
        planned: bool,
    },
    S3,
    /// `http://` or `https://`: a static server or CDN in front of a store, read-only.
    Http,
}

/// Where S3 credentials can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The standard chain: environment, web identity, container, instance metadata.
    Standard,
    /// None: the instance metadata service is switched off (`AWS_EC2_METADATA_DISABLED`) and
    /// the environment names no credentials. Opening an S3 store says so instead of trying.
    Missing,
}

/// An object read from the store.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its ETag (the version token for [`Store::put_if_match`]).
    pub etag: Option<String>,
}

/// The answer to a conditional read.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// The object still has the ETag the caller knew.
    NotModified,
    /// There is no such object.
    Missing,
    /// The object (new or changed).
    Changed(Object),
}

/// Size and version of a stored object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Path relative to the store root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, if the backend gives one.
    pub etag: Option<String>,
}

/// The result of a create-only write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The object was written.
    Created,
    /// An object was there already; nothing was written.
    AlreadyExists,
}

/// The result of a compare-and-swap write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Written; the new ETag.
    Written(Option<String>),
    /// The object changed (or appeared) since it was read; nothing was written.
    Conflict,
}

/// Whether the store honours conditional writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalPut {
    /// Create-only and If-Match writes are enforced.
    Honoured,
    /// The server accepts the headers but overwrites anyway.
    Ignored,
}

/// A ferry store: the layout of DESIGN.md on one backend.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) url: String,
    pub(crate) backend: Arc<Backend>,
    pub(crate) pointer_max_age: Duration,
}

impl Store {
    /// The store URL (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for `file://` stores.
    pub fn is_local(&self) -> bool {
        matches!(*self.backend, Backend::Local { .. })
    }

    /// True for `http(s)://` stores, which agents read through and nobody writes to.
    pub fn is_read_only(&self) -> bool {
        matches!(*self.backend, Backend::Http)
    }

    /// `<store URL>/<path>`, for messages.
    pub fn location(&self, path: &str) -> String {
        format!("{}/{}", self.url, path)
    }

    /// A `file://` store whose directory is gone (removed, or its disk not mounted) is a store
    /// that is down, not an empty one: reading "nothing published" from it would be a lie.
    fn require_local_root(&self) -> Result<(), Error> {
        match &*self.backend {
            Backend::Local {
                root,
                planned: false,
            } if !root.is_dir() => Err(Error::NotFound {
                what: "store directory".into(),
                location: root.display().to_string(),
                hint: ": it was removed or its disk is not mounted (agents retry until it is back; check the store URL)"
                    .into(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes (and listings, which a static server cannot answer) go to the store behind an
    /// `http(s)://` one. A `file://` store whose directory is gone takes no write either: the
    /// write would make the directory again, empty, and the next read would find "nothing
    /// published" where the store is only down (an agent's report racing an unmount).
    fn require_writable(&self, operation: &'static str, path: &str) -> Result<(), Error> {
        if self.is_read_only() {
            return Err(Error::ReadOnly {
                operation,
                location: self.location(path),
            });
        }
        self.require_local_root()
    }

    /// The `Cache-Control` header for an object written at `path`: set on S3 only (a
    /// directory has nowhere to keep it; a static server in front of one sets it by path).
    fn attributes(&self, path: &str) -> Attributes {
        let mut attributes = Attributes::new();
        if matches!(*self.backend, Backend::S3) {
            let value = match ferry_release::layout::caching(path) {
                ferry_release::layout::Caching::Immutable => {
                    "public, max-age=31536000, immutable".to_owned()
                }
                ferry_release::layout::Caching::Mutable => {
                    format!("public, max-age={}", self.pointer_max_age.as_secs())
                }
                ferry_release::layout::Caching::Private => "no-store".to_owned(),
            };
            attributes.insert(Attribute::CacheControl, value.into());
        }
        attributes
    }

    fn put_options(&self, path: &str, mode: PutMode) -> PutOptions {
        PutOptions {
            mode,
            attributes: self.attributes(path),
            ..Default::default()
        }
    }

    fn request_error(
        &self,
        operation: &'static str,
        path: &str,
        source: object_store::Error,
    ) -> Error {
        Error::Request {
            operation,
            location: self.location(path),
            hint: hint_for(&source),
            cause: root_cause(&source),
            error: Box::new(source),
        }
    }

    /// Read a whole object of at most `limit` bytes; `None` when it does not exist.
    pub async fn get(&self, path: &str, limit: u64) -> Result<Option<Object>, Error> {
        match self.get_if_changed(path, None, limit).await? {
            Fetched::Changed(object) => Ok(Some(object)),
            Fetched::Missing | Fetched::NotModified => Ok(None),
        }
    }

    /// Read an object unless its ETag is still `known_etag` (a conditional GET with
    /// If-None-Match; stores that ignore the header are caught by comparing ETags).
    pub async fn get_if_changed(
        &self,
        path: &str,
        known_etag: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, Error> {
        let location = Path::from(path);
        let options = GetOptions {
            if_none_match: known_etag.map(str::to_owned),
            ..Default::default()
        };
        let result = match self.inner.get_opts(&location, options).await {
            Ok(result) => result,
            Err(error @ object_store::Error::NotFound { .. }) if is_missing_bucket(&error) => {
                return Err(self.request_error("read", path, error));
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.require_local_root()?;
                return Ok(Fetched::Missing);
            }
            Err(object_store::Error::NotModified { .. }) => return Ok(Fetched::NotModified),
            Err(source) => return Err(self.request_error("read", path, source)),
        };
        let etag = result.meta.e_tag.clone();
        if known_etag.is_some() && etag.as_deref() == known_etag {
            return Ok(Fetched::NotModified);
        }
        if result.meta.size > limit {
            return Err(Error::TooLarge {
                location: self.location(path),
                size: result.meta.size,
                limit,
            });
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|source| self.request_error("read", path, source))?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                location: self.location(path),
                size: bytes.len() as u64,
                limit,
            });
        }
        Ok(Fetched::Changed(Object { bytes, etag }))
    }

    /// Size and ETag of an object; `None` when it does not exist.
    pub async fn head(&self, path: &str) -> Result<Option<ObjectInfo>, Error> {
        match self.inner.head(&Path::from(path)).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                path: path.to_owned(),
                size: meta.size,
                etag: meta.e_tag,
            })),
            Err(error @ object_store::Error::NotFound { .. }) if is_missing_bucket(&error) => {
                Err(self.request_error("look up", path, error))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.require_local_root()?;
                Ok(None)
            }
            Err(source) => Err(self.request_error("look up", path, source)),
        }
    }

    /// Read bytes `range` of an object (for resuming a download).
    pub async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, Error> {
        self.inner
            .get_range(&Path::from(path), range)
            .await
            .map_err(|source| self.request_error("read", path, source))
    }

    /// Stream an object from byte `start` to its end (a ranged GET when `start > 0`); also
    /// returns the object's total size.
    pub async fn stream_from(
        &self,
        path: &str,
        start: u64,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, Error>>), Error> {
        let options = GetOptions {
            range: (start > 0).then_some(GetRange::Offset(start)),
            ..Default::default()
        };
        let result = match self.inner.get_opts(&Path::from(path), options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: "object".into(),
                    location: self.location(path),
                    hint: String::new(),
                });
            }
            Err(source) => return Err(self.request_error("read", path, source)),
        };
        let size = result.meta.size;
        let store = self.clone();
        let owned_path = path.to_owned();
        let stream = result
            .into_stream()
            .map(move |chunk| {
                chunk.map_err(|source| store.request_error("read", &owned_path, source))
            })
            .boxed();
        Ok((size, stream))
    }

    /// Write an object only if none exists at `path`.
    pub async fn put_create(&self, path: &str, bytes: Bytes) -> Result<CreateOutcome, Error> {
        self.require_writable("write", path)?;
        let location = Path::from(path);
        let options = self.put_options(path, PutMode::Create);
        match self
            .inner
            .put_opts(&location, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(CreateOutcome::AlreadyExists),
            Err(source) => Err(self.request_error("write", path, source)),
        }
    }

    /// Write an object whatever is there (host reports).
    pub async fn put_overwrite(&self, path: &str, bytes: impl Into<Bytes>) -> Result<(), Error> {
        self.require_writable("write", path)?;
        let options = self.put_options(path, PutMode::Overwrite);
        self.inner
            .put_opts(&Path::from(path), PutPayload::from(bytes.into()), options)
            .await
            .map(|_| ())
            .map_err(|source| self.request_error("write", path, source))
    }

    /// Compare-and-swap: write `bytes` only if the object still has ETag `expected`, or — when
    /// `expected` is `None` — only if it does not exist yet.
    pub async fn put_if_match(
        &self,
        path: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<SwapOutcome, Error> {
        self.require_writable("write", path)?;
        match &*self.backend {
            Backend::Local { root, .. } => {
                self.put_if_match_local(root, path, bytes, expected).await
            }
            Backend::S3 | Backend::Http => {
                let mode = match expected {
                    None => PutMode::Create,
                    Some(etag) => PutMode::Update(UpdateVersion {
                        e_tag: Some(etag.to_owned()),
                        version: None,
                    }),
                };
                let options = self.put_options(path, mode);
                match self
                    .inner
                    .put_opts(&Path::from(path), PutPayload::from(bytes), options)
                    .await
                {
                    Ok(result) => Ok(SwapOutcome::Written(result.e_tag)),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => Ok(SwapOutcome::Conflict),
                    Err(source) => Err(self.request_error("write", path, source)),
                }
            }
        }
    }

    /// The local backend has no If-Match: hold an exclusive lock on a lock file beside the
    /// store's data, compare the current ETag, then write with an atomic rename.
    async fn put_if_match_local(
        &self,
        root: &FsPath,
        path: &str,
        bytes: Bytes,
        expected: Option<&str>,
    ) -> Result<SwapOutcome, Error> {
        let lock_path = root.join(".ferry").join("swap.lock");
        let lock = tokio::task::spawn_blocking({
            let lock_path = lock_path.clone();
            move || lock_exclusive(&lock_path)
        })
        .await
        .map_err(|join| Error::Io {
            operation: "lock",
            path: lock_path.clone(),
            source: std::io::Error::other(join),
        })?
        .map_err(|source| Error::Io {
            operation: "lock",
            path: lock_path.clone(),
            source,
        })?;
        let current = self.head(path).await?;
        let matches = match (expected, &current) {
            (None, None) => true,
            (Some(expected), Some(info)) => info.etag.as_deref() == Some(expected),
            _ => false,
        };
        let outcome = if matches {
            let result = self
                .inner
                .put(&Path::from(path), PutPayload::from(bytes))
                .await
                .map_err(|source| self.request_error("write", path, source))?;
            SwapOutcome::Written(result.e_tag)
        } else {
            SwapOutcome::Conflict
        };
        drop(lock);
        Ok(outcome)
    }

    /// Delete an object (missing is fine).
    pub async fn delete(&self, path: &str) -> Result<(), Error> {
        self.require_writable("delete", path)?;
        match self.inner.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.request_error("delete", path, source)),
        }
    }

    /// Every object under `prefix` (a folder path without trailing slash).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        self.require_writable("list", prefix)?;
        let location = Path::from(prefix);
        let mut stream = self.inner.list(Some(&location));
        let mut objects = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(meta) => objects.push(ObjectInfo {
                    path: meta.location.to_string(),
                    size: meta.size,
                    etag: meta.e_tag,
                }),
                Err(error @ object_store::Error::NotFound { .. }) if is_missing_bucket(&error) => {
                    return Err(self.request_error("list", prefix, error));
                }
                Err(object_store::Error::NotFound { .. }) => break,
                Err(source) => return Err(self.request_error("list", prefix, source)),
            }
        }
        Ok(objects)
    }

    /// Upload a local file to `path`: in parts, several at once, when it is large. Used for
    /// content-addressed artifacts, so a concurrent identical upload is harmless.
    pub async fn upload_file(
        &self,
        path: &str,
        file: &FsPath,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let io_error = |source| Error::Io {
            operation: "read",
            path: file.to_owned(),
            source,
        };
        self.require_writable("upload", path)?;
        let mut reader = tokio::fs::File::open(file).await.map_err(io_error)?;
        let size = reader.metadata().await.map_err(io_error)?.len();
        progress.start(path, size);
        let result = async {
            if size < MULTIPART_THRESHOLD {
                let mut buffer = Vec::with_capacity(size as usize);
                reader.read_to_end(&mut buffer).await.map_err(io_error)?;
                let length = buffer.len() as u64;
                match self.put_create(path, Bytes::from(buffer)).await? {
                    CreateOutcome::Created | CreateOutcome::AlreadyExists => {}
                }
                progress.advance(length);
                return Ok(());
            }
            let location = Path::from(path);
            let options = PutMultipartOptions {
                attributes: self.attributes(path),
                ..Default::default()
            };
            let upload = self
                .inner
                .put_multipart_opts(&location, options)
                .await
                .map_err(|source| self.request_error("start upload of", path, source))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            loop {
                let mut chunk = BytesMut::with_capacity(PART_SIZE);
                while chunk.len() < PART_SIZE {
                    let read = reader.read_buf(&mut chunk).await.map_err(io_error)?;
                    if read == 0 {
                        break;
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                let length = chunk.len() as u64;
                if let Err(source) = writer.wait_for_capacity(PART_CONCURRENCY).await {
                    let _ = writer.abort().await;
                    return Err(self.request_error("upload", path, source));
                }
                writer.put(chunk.freeze());
                progress.advance(length);
            }
            writer
                .finish()
                .await
                .map_err(|source| self.request_error("finish upload of", path, source))?;
            Ok(())
        }
        .await;
        progress.finish();
        result
    }

    /// Find out whether the store enforces create-only and If-Match writes. The answer
    /// "honoured" is cached in the store (`.ferry/conditional-put-ok`); delete that object to
    /// probe again. Always honoured on `file://`.
    pub async fn check_conditional_put(&self) -> Result<ConditionalPut, Error> {
        if self.is_local() {
            return Ok(ConditionalPut::Honoured);
        }
        self.require_writable("write", CONDITIONAL_PUT_MARKER)?;
        if self.head(CONDITIONAL_PUT_MARKER).await?.is_some() {
            return Ok(ConditionalPut::Honoured);
        }
        let probe = format!(
            "{}/probe/{:016x}",
            ferry_release::layout::FERRY_PRIVATE,
            rand::random::<u64>()
        );
        // Each step runs only if the previous one behaved; any misstep means "ignored".
        let honoured = self.put_create(&probe, Bytes::from_static(b"1")).await?
            == CreateOutcome::Created
            && self.put_create(&probe, Bytes::from_static(b"2")).await?
                == CreateOutcome::AlreadyExists
            && self
                .put_if_match(
                    &probe,
                    Bytes::from_static(b"3"),
                    Some("\"ferry-probe-wrong-etag\""),
                )
                .await?
                == SwapOutcome::Conflict;
        let verdict = if honoured {
            ConditionalPut::Honoured
        } else {
            ConditionalPut::Ignored
        };
        if let Err(error) = self.delete(&probe).await {
            tracing::debug!(%error, "could not delete the conditional-put probe object");
        }
        if verdict == ConditionalPut::Honoured {
            self.put_create(
                CONDITIONAL_PUT_MARKER,
                Bytes::from_static(b"conditional PUT honoured\n"),
            )
            .await?;
        }
        tracing::debug!(store = %self.url, ?verdict, "probed conditional PUT");
        Ok(verdict)
    }
}

/// Take an exclusive flock on `path`, polling for at most 30 s so a stuck holder cannot hang
/// a publish forever. The lock is released when the returned file is dropped.
fn lock_exclusive(path: &FsPath) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is touched.
        let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if status == 0 {
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::WouldBlock {
            return Err(error);
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "another ferry process held the store lock for 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    fn local() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("store").display());
        let options = StoreOptions {
            create_local_root: true,
            ..StoreOptions::default()
        };
        let store = Store::open(&url, &options).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_write_to_a_removed_store_directory_fails_and_does_not_make_it_again() {
        let (dir, store) = local();
        let root = dir.path().join("store");
        std::fs::remove_dir(&root).unwrap();
        let error = store
            .put_overwrite("apps/a/hosts/h.json", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("store directory"), "{error}");
        assert!(!root.exists(), "the write made the store directory again");
        // And reading it is "down", not "nothing published".
        assert!(store.get("apps/a/channels/c.json", 100).await.is_err());
    }

    #[tokio::test]
    async fn compare_and_swap_on_a_directory() {
        let (_dir, store) = local();
        let path = "apps/a/channels/c.json";
        assert!(matches!(
            store
                .put_if_match(path, Bytes::from_static(b"1"), None)
                .await
                .unwrap(),
            SwapOutcome::Written(_)
        ));
        assert_eq!(
            store
                .put_if_match(path, Bytes::from_static(b"x"), None)
                .await
                .unwrap(),
            SwapOutcome::Conflict
        );
        let first = store.get(path, 100).await.unwrap().unwrap();
        assert_eq!(&first.bytes[..], b"1");
        let stale = Some("\"not-the-etag\"");
        assert_eq!(
            store
                .put_if_match(path, Bytes::from_static(b"x"), stale)
                .await
                .unwrap(),
            SwapOutcome::Conflict
        );
        let written = store
            .put_if_match(path, Bytes::from_static(b"2"), first.etag.as_deref())
            .await
            .unwrap();
        assert!(matches!(written, SwapOutcome::Written(_)));
        // The old ETag is now stale.
        assert_eq!(
            store
                .put_if_match(path, Bytes::from_static(b"3"), first.etag.as_deref())
                .await
                .unwrap(),
            SwapOutcome::Conflict
        );
        assert_eq!(
            &store.get(path, 100).await.unwrap().unwrap().bytes[..],
            b"2"
        );
    }

    #[tokio::test]
    async fn conditional_get_capped_get_and_ranges() {
        let (_dir, store) = local();
        assert_eq!(
            store
                .put_create("a/b", Bytes::from_static(b"hello world"))
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store
                .put_create("a/b", Bytes::from_static(b"other"))
                .await
                .unwrap(),
            CreateOutcome::AlreadyExists
        );
        let Fetched::Changed(object) = store.get_if_changed("a/b", None, 100).await.unwrap() else {
            panic!("changed")
        };
        assert!(matches!(
            store
                .get_if_changed("a/b", object.etag.as_deref(), 100)
                .await
                .unwrap(),
            Fetched::NotModified
        ));
        assert!(matches!(
            store.get_if_changed("a/missing", None, 100).await.unwrap(),
            Fetched::Missing
        ));
        assert!(matches!(
            store.get("a/b", 5).await,
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(&store.get_range("a/b", 6..11).await.unwrap()[..], b"world");
        let (size, stream) = store.stream_from("a/b", 6).await.unwrap();
        assert_eq!(size, 11);
        let rest: Vec<Bytes> = stream.map(|chunk| chunk.unwrap()).collect().await;
        assert_eq!(rest.concat(), b"world");
        assert_eq!(
            store.check_conditional_put().await.unwrap(),
            ConditionalPut::Honoured
        );
    }

    #[tokio::test]
    async fn multipart_upload_round_trips() {
        let (dir, store) = local();
        let file = dir.path().join("big");
        let data: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize + 12345))
            .map(|index| (index % 251) as u8)
            .collect();
        std::fs::write(&file, &data).unwrap();
        store
            .upload_file("artifacts/big.deb", &file, &NoProgress)
            .await
            .unwrap();
        let stored = store
            .get("artifacts/big.deb", u64::MAX)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.bytes == data, "uploaded bytes differ");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in ["ftp://x", "file://relative/path", "s3:///prefix"] {
            let error = Store::open(url, &StoreOptions::default()).unwrap_err();
            assert!(matches!(error, Error::InvalidUrl { .. }), "{url}: {error}");
        }
    }
}
