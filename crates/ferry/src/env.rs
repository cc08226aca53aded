//! Every environment variable ferry reads, in one place. Flags override these; these
//! override config files; config files override defaults.

/// The store URL (`file:///srv/ferry`, `s3://bucket/prefix`); stands for `--store`.
pub const FERRY_STORE: &str = "FERRY_STORE";
/// A custom S3 endpoint (MinIO, Garage, a local test server); stands for `--s3-endpoint`.
/// The standard `AWS_ENDPOINT_URL` is honoured too.
pub const FERRY_S3_ENDPOINT: &str = "FERRY_S3_ENDPOINT";
/// The Cache-Control max-age of pointers written to S3; stands for `--pointer-max-age`.
pub const FERRY_POINTER_MAX_AGE: &str = "FERRY_POINTER_MAX_AGE";
/// Reproducible builds: the timestamp written into every packed file.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

// `ferry agent` (each overrides the key of the same name in the agent's TOML file).
/// The agent's config file; stands for `ferry agent --config`.
pub const FERRY_AGENT_CONFIG: &str = "FERRY_AGENT_CONFIG";
/// The app the agent follows (`app`).
pub const FERRY_APP: &str = "FERRY_APP";
/// The channel the agent follows (`channel`).
pub const FERRY_CHANNEL: &str = "FERRY_CHANNEL";
/// Trusted public key files, separated by `,` or `:` (`trust`). Publishers read it too, as
/// the default of `--trust`: the keys whose pointer states they may build on.
pub const FERRY_TRUST: &str = "FERRY_TRUST";
/// Time between polls, e.g. `30s` (`interval`).
pub const FERRY_AGENT_INTERVAL: &str = "FERRY_AGENT_INTERVAL";
/// The agent's journal directory (`state-dir`).
pub const FERRY_STATE_DIR: &str = "FERRY_STATE_DIR";
/// The agent's artifact cache (`cache-dir`).
pub const FERRY_CACHE_DIR: &str = "FERRY_CACHE_DIR";
/// This host's id in status reports and rollout waves (`host-id`; default /etc/machine-id).
pub const FERRY_HOST_ID: &str = "FERRY_HOST_ID";
/// The Debian architecture the agent installs (`architecture`).
pub const FERRY_ARCHITECTURE: &str = "FERRY_ARCHITECTURE";
/// This boot's id, which `apply = "on-reboot"` compares (default: the kernel's boot_id).
pub const FERRY_BOOT_ID: &str = "FERRY_BOOT_ID";
/// systemd's notify socket for `Type=notify` units: `ferry run` forwards `READY=1` there once
/// the first process is ready (and never passes it on to the app, which gets its own).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

// `ferry publish` / `rollback` / `promote` / `verify`.
/// The minisign secret key file that signs releases; stands for `--key`.
pub const FERRY_KEY: &str = "FERRY_KEY";
/// The password of an encrypted minisign secret key (keys from `ferry keygen` and
/// `minisign -G -W` have none).
pub const FERRY_KEY_PASSWORD: &str = "FERRY_KEY_PASSWORD";
/// Where `ferry verify` remembers the highest serial it accepted per channel; stands for
/// `ferry verify --state`.
pub const FERRY_VERIFY_STATE: &str = "FERRY_VERIFY_STATE";

/// The files listed in [`FERRY_TRUST`] (separated by `,` or `:`, blanks ignored); `None` when
/// it is unset or empty. The one place that list is parsed.
pub fn trust_from_env() -> Option<Vec<std::path::PathBuf>> {
    let listed = std::env::var(FERRY_TRUST).ok()?;
    let paths: Vec<std::path::PathBuf> = listed
        .split([',', ':'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(std::path::PathBuf::from)
        .collect();
    (!paths.is_empty()).then_some(paths)
}

// The AWS variables ferry itself looks at (the S3 client reads the credential ones too).
/// An S3 endpoint for every AWS tool; `FERRY_S3_ENDPOINT` / `--s3-endpoint` win over it.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// The S3-only form of [`AWS_ENDPOINT_URL`], which it wins over.
pub const AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
/// `true`: never ask the EC2 instance metadata service for credentials.
pub const AWS_EC2_METADATA_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
/// The credential sources that work without the instance metadata service.
const AWS_CREDENTIAL_VARIABLES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Store options from the environment: `flag` (`--s3-endpoint`, which clap already filled
/// from `FERRY_S3_ENDPOINT`) else `AWS_ENDPOINT_URL_S3` else `AWS_ENDPOINT_URL`; credentials
/// missing when the metadata service is switched off and no other source is set.
pub fn store_options(flag: Option<String>) -> ferry_store::StoreOptions {
    let s3_endpoint = flag
        .filter(|value| !value.is_empty())
        .or_else(|| set(AWS_ENDPOINT_URL_S3))
        .or_else(|| set(AWS_ENDPOINT_URL));
    let metadata_disabled =
        set(AWS_EC2_METADATA_DISABLED).is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let credentials = if metadata_disabled
        && !AWS_CREDENTIAL_VARIABLES
            .iter()
            .any(|name| set(name).is_some())
    {
        ferry_store::Credentials::Missing
    } else {
        ferry_store::Credentials::Standard
    };
    ferry_store::StoreOptions {
        s3_endpoint,
        credentials,
        ..ferry_store::StoreOptions::default()
    }
}

/// Where `ferry verify` keeps its state by default: `$XDG_STATE_HOME/ferry/verify-state.json`,
/// else `$HOME/.local/state/ferry/verify-state.json`; `None` when neither is set.
pub fn default_verify_state() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|value| !value.is_empty()) {
        return Some(std::path::PathBuf::from(dir).join("ferry/verify-state.json"));
    }
    let home = std::env::var_os("HOME")?;
    Some(std::path::PathBuf::from(home).join(".local/state/ferry/verify-state.json"))
}
