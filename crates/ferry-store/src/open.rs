//! Opening a store from its URL: `file:///path` (a directory, optionally created),
//! `s3://bucket/prefix` (credentials the standard AWS way, a custom endpoint), or
//! `http(s)://host/path` (a static server or CDN in front of a store, read-only); with
//! timeouts and retries that make a dead store fail within seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::Error;
use crate::store::{Backend, Credentials, Store, StoreOptions};

impl Store {
    /// Open a store from its URL.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Store, Error> {
        let invalid = |message: &str| Error::InvalidUrl {
            url: url.to_owned(),
            message: message.to_owned(),
        };
        let url_clean = url.trim_end_matches('/').to_owned();
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file:// URL needs an absolute path, like file:///srv/ferry",
                ));
            }
            let root = PathBuf::from(path);
            if options.create_local_root {
                std::fs::create_dir_all(&root).map_err(|source| Error::Io {
                    operation: "create store directory",
                    path: root.clone(),
                    source,
                })?;
            } else if !root.exists() && options.missing_local_root_is_empty {
                return Ok(Store {
                    inner: Arc::new(object_store::memory::InMemory::new()),
                    url: url_clean,
                    backend: Arc::new(Backend::Local {
                        root,
                        planned: true,
                    }),
                    pointer_max_age: options.pointer_max_age,
                });
            } else if !root.is_dir() {
                return Err(Error::NotFound {
                    what: "store directory".into(),
                    location: root.display().to_string(),
                    hint: ": check the --store URL (nothing has been published there yet?)".into(),
                });
            }
            let local = LocalFileSystem::new_with_prefix(&root).map_err(|source| Error::Open {
                url: url_clean.clone(),
                source: Box::new(source),
            })?;
            return Ok(Store {
                inner: Arc::new(local),
                url: url_clean,
                backend: Arc::new(Backend::Local {
                    root,
                    planned: false,
                }),
                pointer_max_age: options.pointer_max_age,
            });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let http = HttpBuilder::new()
                .with_url(url_clean.clone())
                .with_client_options(client_options(options, url.starts_with("http://")))
                .with_retry(retry_config(options))
                .build()
                .map_err(|source| Error::Open {
                    url: url_clean.clone(),
                    source: Box::new(source),
                })?;
            return Ok(Store {
                inner: Arc::new(http),
                url: url_clean,
                backend: Arc::new(Backend::Http),
                pointer_max_age: options.pointer_max_age,
            });
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(invalid(
                "expected file:///path, s3://bucket/prefix or http(s)://host/path",
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket name after s3://"));
        }
        let prefix = prefix.trim_matches('/');
        // The caller (the binary's env.rs) resolved the endpoint and the credential sources;
        // the S3 client itself reads the standard AWS credential variables.
        let endpoint = options
            .s3_endpoint
            .clone()
            .filter(|endpoint| !endpoint.is_empty());
        if options.credentials == Credentials::Missing {
            // object_store would ask the instance metadata service anyway; honour the standard
            // AWS switch instead and say what is missing.
            return Err(Error::NoCredentials { url: url_clean });
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let allow_http = match &endpoint {
            Some(endpoint) if endpoint.starts_with("http://") => true,
            Some(endpoint) if endpoint.starts_with("https://") => false,
            Some(_) => {
                return Err(invalid(
                    "the S3 endpoint must start with http:// or https://",
                ));
            }
            None => false,
        };
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let s3 = builder
            .with_allow_http(allow_http)
            .with_client_options(client_options(options, allow_http))
            .with_retry(retry_config(options))
            .build()
            .map_err(|source| Error::Open {
                url: url_clean.clone(),
                source: Box::new(source),
            })?;
        let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Store {
            inner,
            url: url_clean,
            backend: Arc::new(Backend::S3),
            pointer_max_age: options.pointer_max_age,
        })
    }
}

fn client_options(options: &StoreOptions, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(options.connect_timeout)
        .with_timeout(options.request_timeout)
}

fn retry_config(options: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: options.max_retries,
        retry_timeout: options.retry_timeout,
    }
}
