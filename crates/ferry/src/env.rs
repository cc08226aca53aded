//! Every environment variable ferry reads, in one place. Flags override these; these
//! override config files; config files override defaults.

/// The store URL (`file:///srv/ferry`, `s3://bucket/prefix`); stands for `--store`.
pub const FERRY_STORE: &str = "FERRY_STORE";
/// A custom S3 endpoint (MinIO, Garage, a local test server); stands for `--s3-endpoint`.
/// The standard `AWS_ENDPOINT_URL` is honoured too.
pub const FERRY_S3_ENDPOINT: &str = "FERRY_S3_ENDPOINT";
/// Reproducible builds: the timestamp written into every packed file.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
