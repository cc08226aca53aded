//! minisign keys: generating a pair, loading a secret key (ours or one made by the stock
//! `minisign -G`), and the set of public keys a verifier trusts.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox};

use crate::{Error, Result};

/// Key files are tiny; anything bigger than this is not a key.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// A minisign key id, shown as 16 upper-case hex digits exactly like `minisign` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub(crate) fn from_keynum(keynum: &[u8]) -> KeyId {
        let mut bytes = [0u8; 8];
        let length = keynum.len().min(8);
        bytes[..length].copy_from_slice(&keynum[..length]);
        KeyId(bytes)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // minisign stores the key number little-endian and prints it as one u64.
        write!(formatter, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// A secret key ready to sign, with its public half. Its `Debug` shows only the key id.
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
    id: KeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn read_key_file(path: &Path) -> Result<String> {
    crate::read_local_text(path, MAX_KEY_FILE_BYTES).map_err(|source| Error::ReadKey {
        path: path.to_owned(),
        source,
    })
}

/// True for the text of a minisign public key file (`untrusted comment: minisign public key …`
/// and a 56-character base64 line), which users hand to `--key` by mistake.
fn looks_like_public_key(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let comment = lines.next().unwrap_or_default();
    let key = lines.next().unwrap_or_default();
    comment.contains("public key") || (key.len() == 56 && !comment.contains("secret key"))
}

impl SigningKey {
    /// Load a minisign secret key file. An unencrypted key (from `ferry keygen` or
    /// `minisign -G -W`) needs no password; an encrypted one needs `password`.
    pub fn from_file(path: &Path, password: Option<String>) -> Result<SigningKey> {
        let text = read_key_file(path)?;
        SigningKey::from_text(&text, path, password)
    }

    /// Parse the text of a secret key file; `origin` names it in errors.
    pub fn from_text(text: &str, origin: &Path, password: Option<String>) -> Result<SigningKey> {
        let invalid = |message: String| Error::InvalidKey {
            path: origin.to_owned(),
            kind: "secret",
            message,
        };
        if text.lines().count() < 2 {
            return Err(invalid(
                "expected a comment line and a base64 key line".into(),
            ));
        }
        if looks_like_public_key(text) {
            return Err(invalid(
                "this is a public key; signing needs the secret key (PREFIX.key from `ferry keygen`, or minisign.key), and the .pub file goes to agents and --trust".into(),
            ));
        }
        let secret = match SecretKey::from_unencrypted_box(SecretKeyBox::from_string(text)?) {
            Ok(secret) => secret,
            Err(error) if error.to_string().contains("might be encrypted") => match password {
                None => {
                    return Err(Error::EncryptedKey {
                        path: origin.to_owned(),
                    });
                }
                Some(password) => {
                    SecretKey::from_box(SecretKeyBox::from_string(text)?, Some(password)).map_err(
                        |error| Error::DecryptKey {
                            path: origin.to_owned(),
                            message: error.to_string(),
                        },
                    )?
                }
            },
            Err(error) => match unencrypted_without_checksum(text) {
                Some(secret) => secret,
                None => return Err(invalid(error.to_string())),
            },
        };
        let public =
            PublicKey::from_secret_key(&secret).map_err(|error| invalid(error.to_string()))?;
        let id = KeyId::from_keynum(public.keynum());
        // Prove the pair works (minisign checks the signature against the public key), which
        // also catches a corrupt key that had no checksum to catch it.
        minisign::sign(
            Some(&public),
            &secret,
            std::io::Cursor::new(b"ferry key check"),
            None,
            None,
        )
        .map_err(|error| invalid(format!("the key cannot sign: {error}")))?;
        Ok(SigningKey { secret, public, id })
    }

    /// The key id (same as `minisign` shows).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The public key file text (`untrusted comment: …` + base64 line).
    pub fn public_key_text(&self) -> Result<String> {
        self.public
            .to_box()
            .map(PublicKeyBox::into_string)
            .map_err(|error| Error::Sign {
                what: "public key".into(),
                message: error.to_string(),
            })
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// The byte layout of a minisign secret key: algorithm ids, KDF parameters, key id, the
/// ed25519 secret key, then a checksum.
const SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;

/// `minisign -G -W` (the C tool, 0.11) writes unencrypted keys with an all-zero checksum,
/// which the minisign crate refuses as "corrupted". Accept exactly that shape: no KDF and a
/// zero checksum; the caller then proves the key by signing with it.
fn unencrypted_without_checksum(text: &str) -> Option<SecretKey> {
    let encoded = text.lines().nth(1)?.trim();
    let bytes = decode_base64(encoded)?;
    if bytes.len() != SECRET_KEY_BYTES || bytes[2..4] != [0, 0] {
        return None;
    }
    if bytes[SECRET_KEY_BYTES - 32..].iter().any(|byte| *byte != 0) {
        return None;
    }
    SecretKey::from_bytes(&bytes).ok()
}

/// Standard base64 with padding, as minisign writes it; `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(symbol: u8) -> Option<u32> {
        match symbol {
            b'A'..=b'Z' => Some(u32::from(symbol - b'A')),
            b'a'..=b'z' => Some(u32::from(symbol - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(symbol - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let symbols = text.as_bytes();
    if symbols.len() % 4 != 0 {
        return None;
    }
    let mut output = Vec::with_capacity(symbols.len() / 4 * 3);
    for (index, group) in symbols.chunks(4).enumerate() {
        let last = index == symbols.len() / 4 - 1;
        let padding = group
            .iter()
            .rev()
            .take_while(|symbol| **symbol == b'=')
            .count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut accumulator = 0u32;
        for symbol in &group[..4 - padding] {
            accumulator = (accumulator << 6) | value(*symbol)?;
        }
        accumulator <<= 6 * padding as u32;
        let decoded = [
            (accumulator >> 16) as u8,
            (accumulator >> 8) as u8,
            accumulator as u8,
        ];
        output.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(output)
}

/// The public keys a verifier accepts signatures from (several, so keys can rotate).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, PublicKey)>,
    /// Distinct signatures needed (0 and 1 both mean one).
    threshold: usize,
}

impl TrustedKeys {
    /// An empty set (verifies nothing).
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Load public key files (`PREFIX.pub` from `ferry keygen`, or `minisign.pub`).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<TrustedKeys> {
        let mut trusted = TrustedKeys::new();
        for path in paths {
            let path = path.as_ref();
            let text = read_key_file(path)?;
            trusted.add_text(&text, path)?;
        }
        Ok(trusted)
    }

    /// Add a key from the text of a public key file, or from the bare base64 line (the form
    /// `minisign -P` takes); `origin` names it in errors.
    pub fn add_text(&mut self, text: &str, origin: &Path) -> Result<KeyId> {
        let invalid = |message: String| Error::InvalidKey {
            path: origin.to_owned(),
            kind: "public",
            message,
        };
        let trimmed = text.trim();
        let key = if trimmed.lines().count() >= 2 {
            PublicKeyBox::from_string(trimmed)
                .and_then(PublicKeyBox::into_public_key)
                .map_err(|error| invalid(error.to_string()))?
        } else {
            PublicKey::from_base64(trimmed).map_err(|error| invalid(error.to_string()))?
        };
        let id = KeyId::from_keynum(key.keynum());
        if !self.keys.iter().any(|(known, _)| *known == id) {
            self.keys.push((id, key));
        }
        Ok(id)
    }

    /// Add every key of `other` (its threshold is not taken).
    pub fn extend(&mut self, other: &TrustedKeys) {
        for (id, key) in &other.keys {
            if !self.keys.iter().any(|(known, _)| known == id) {
                self.keys.push((*id, key.clone()));
            }
        }
    }

    /// Trust the public half of a signing key.
    pub fn add_signing_key(&mut self, key: &SigningKey) {
        if !self.keys.iter().any(|(known, _)| *known == key.id) {
            self.keys.push((key.id, key.public.clone()));
        }
    }

    /// Require `threshold` distinct signatures from these keys (keyring thresholds).
    pub fn with_threshold(mut self, threshold: usize) -> TrustedKeys {
        self.threshold = threshold;
        self
    }

    /// Distinct signatures a document needs (at least one).
    pub fn threshold(&self) -> usize {
        self.threshold.max(1)
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key ids.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    pub(crate) fn find(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, key)| key)
    }

    pub(crate) fn describe(&self) -> String {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| id.to_string()).collect();
        ids.join(", ")
    }
}

/// A freshly generated pair, already in file form.
pub struct GeneratedKeyPair {
    /// The key id.
    pub id: KeyId,
    /// Where the secret key was written.
    pub secret_path: PathBuf,
    /// Where the public key was written.
    pub public_path: PathBuf,
}

/// Generate an unencrypted minisign key pair and write `PREFIX.key` (mode 0600, never
/// overwriting) and `PREFIX.pub`.
pub fn generate_key_pair(prefix: &Path) -> Result<GeneratedKeyPair> {
    let secret_path = with_suffix(prefix, ".key");
    let public_path = with_suffix(prefix, ".pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(Error::KeyExists { path: path.clone() });
        }
    }
    let pair = KeyPair::generate_unencrypted_keypair().map_err(|error| Error::Sign {
        what: "a new key pair".into(),
        message: error.to_string(),
    })?;
    let id = KeyId::from_keynum(pair.pk.keynum());
    let secret_text = pair
        .sk
        .to_box(Some(&format!("ferry secret key {id}")))
        .map(SecretKeyBox::into_string)
        .map_err(|error| Error::Sign {
            what: "secret key".into(),
            message: error.to_string(),
        })?;
    let public_text = pair
        .pk
        .to_box()
        .map(PublicKeyBox::into_string)
        .map_err(|error| Error::Sign {
            what: "public key".into(),
            message: error.to_string(),
        })?;

    write_new_file(&secret_path, secret_text.as_bytes(), 0o600)?;
    if let Err(error) = write_new_file(&public_path, public_text.as_bytes(), 0o644) {
        // Leave nothing half-made: a secret key without its public half is useless.
        let _ = std::fs::remove_file(&secret_path);
        return Err(error);
    }
    Ok(GeneratedKeyPair {
        id,
        secret_path,
        public_path,
    })
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        // create_new: O_EXCL, so a file that appeared since the check is never clobbered.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::KeyExists {
                path: path.to_owned(),
            }
        } else {
            Error::WriteKey {
                path: path.to_owned(),
                source,
            }
        }
    })
}

impl From<minisign::PError> for Error {
    fn from(error: minisign::PError) -> Error {
        Error::Malformed {
            what: "minisign data".into(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_loadable_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("release");
        let pair = generate_key_pair(&prefix).unwrap();
        let mode = std::fs::metadata(&pair.secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = SigningKey::from_file(&pair.secret_path, None).unwrap();
        assert_eq!(key.id(), pair.id);
        let trusted = TrustedKeys::from_files(&[&pair.public_path]).unwrap();
        assert_eq!(trusted.ids(), vec![pair.id]);
        assert!(matches!(
            generate_key_pair(&prefix),
            Err(Error::KeyExists { .. })
        ));
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.secret)));
    }

    #[test]
    fn publish_key_release_pub_says_that_is_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let pair = generate_key_pair(&dir.path().join("release")).unwrap();
        let error = SigningKey::from_file(&pair.public_path, None).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("this is a public key"), "{text}");
        assert!(text.contains("secret key"), "{text}");
        let error = SigningKey::from_file(Path::new("/dev/zero"), None).unwrap_err();
        assert!(matches!(error, Error::ReadKey { .. }), "{error}");
    }

    /// Made by `minisign -G -W` (minisign 0.11) for this test only.
    const STOCK_UNENCRYPTED_KEY: &str = "untrusted comment: minisign encrypted secret key\nRWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAGYfWfaanD2y77cXe7zED8mmRRCwt4yxlET7IrAQs6ZzUYq6A+hCBJOzUvF1F8Ls1CC0cGSo4Ufz7FEh5HpJzkETTNRVF/tLiAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    #[test]
    fn key_from_stock_minisign_without_password_loads() {
        assert!(
            decode_base64(STOCK_UNENCRYPTED_KEY.lines().nth(1).unwrap()).is_some(),
            "decode"
        );
        assert!(
            unencrypted_without_checksum(STOCK_UNENCRYPTED_KEY).is_some(),
            "shape"
        );
        let key =
            SigningKey::from_text(STOCK_UNENCRYPTED_KEY, Path::new("stock.key"), None).unwrap();
        assert_eq!(key.id().to_string().len(), 16);
    }

    #[test]
    fn base64_decoding_matches_known_values() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
        assert!(decode_base64("a=bc").is_none());
        assert!(decode_base64("abc").is_none());
    }

    #[test]
    fn encrypted_key_needs_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate_encrypted_keypair(Some("secret words".into())).unwrap();
        let path = dir.path().join("encrypted.key");
        std::fs::write(&path, pair.sk.to_box(None).unwrap().into_string()).unwrap();
        let error = SigningKey::from_file(&path, None).unwrap_err();
        assert!(matches!(error, Error::EncryptedKey { .. }), "{error}");
        assert!(error.to_string().contains("FERRY_KEY_PASSWORD"));
        assert!(matches!(
            SigningKey::from_file(&path, Some("wrong".into())),
            Err(Error::DecryptKey { .. })
        ));
        let key = SigningKey::from_file(&path, Some("secret words".into())).unwrap();
        assert_eq!(key.id(), KeyId::from_keynum(pair.pk.keynum()));
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "hello\nworld\n").unwrap();
        let error = SigningKey::from_file(&path, None).unwrap_err();
        assert!(error.to_string().contains("bad.key"), "{error}");
    }
}
