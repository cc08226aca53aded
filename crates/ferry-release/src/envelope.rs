//! Signed envelopes and their verification. A document is stored as
//! `{"payload":"<JSON text>","signature":"<minisign signature>"}`: one object, so a reader never
//! sees a document without its signature, and the payload text is exactly the bytes that were
//! signed, so the stock `minisign -V` tool can check it.

use std::io::{Cursor, Read, Seek};

use minisign::SignatureBox;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::document::{ChannelPointer, Release, SCHEMA};
use crate::keys::{KeyId, SigningKey, TrustedKeys};
use crate::{Error, Result};

/// The largest document (envelope) ferry reads; bigger ones are refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A signed document as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The payload JSON text, exactly as signed.
    pub payload: String,
    /// The minisign signature of `payload` (the four-line `.minisig` text).
    pub signature: String,
    /// More signatures of the same payload, one per further signer, for channels whose
    /// keyring asks for several (docs/trust.md). Absent when there is one signer, so a
    /// single-signature envelope is exactly what older readers know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

impl Envelope {
    /// The envelope as the bytes written to the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The key id the signature claims, without checking the signature (for listings).
    pub fn claimed_key_id(&self) -> Option<KeyId> {
        SignatureBox::from_string(&self.signature)
            .ok()
            .map(|signature_box| KeyId::from_keynum(signature_box.keynum()))
    }

    /// Every signature: `signature`, then `signatures`.
    pub fn all_signatures(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.signature.as_str()).chain(self.signatures.iter().map(String::as_str))
    }

    /// The key ids the signatures claim (not checked).
    pub fn claimed_key_ids(&self) -> Vec<KeyId> {
        self.all_signatures()
            .filter_map(|text| SignatureBox::from_string(text).ok())
            .map(|signature_box| KeyId::from_keynum(signature_box.keynum()))
            .collect()
    }

    /// Add `key`'s signature of the payload (a key that already signed is not added twice).
    pub fn add_signature(&mut self, key: &SigningKey, trusted_comment: &str) -> Result<()> {
        if self.claimed_key_ids().contains(&key.id()) {
            return Ok(());
        }
        let signature = sign_reader(key, Cursor::new(self.payload.as_bytes()), trusted_comment)?;
        self.signatures.push(signature);
        Ok(())
    }

    /// Parse stored bytes (size-capped) into an envelope, without checking the signature.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Envelope> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::DocumentTooLarge {
                what: what.to_owned(),
                size: bytes.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        serde_json::from_slice(bytes).map_err(|error| Error::Malformed {
            what: what.to_owned(),
            message: format!("not a signed envelope: {error}"),
        })
    }
}

/// Sign a document payload. `trusted_comment` is covered by the signature and shown by
/// `minisign -V` (keep it one line).
pub fn sign_document<T: Serialize>(
    key: &SigningKey,
    payload: &T,
    trusted_comment: &str,
) -> Result<Envelope> {
    let payload = serde_json::to_string(payload).map_err(|error| Error::Sign {
        what: trusted_comment.to_owned(),
        message: error.to_string(),
    })?;
    let signature = sign_reader(key, Cursor::new(payload.as_bytes()), trusted_comment)?;
    Ok(Envelope {
        payload,
        signature,
        signatures: Vec::new(),
    })
}

/// Sign an artifact's bytes as they are read; returns the `.minisig` text.
pub fn sign_artifact<R: Read>(
    key: &SigningKey,
    reader: R,
    trusted_comment: &str,
) -> Result<String> {
    sign_reader(key, reader, trusted_comment)
}

fn sign_reader<R: Read>(key: &SigningKey, reader: R, trusted_comment: &str) -> Result<String> {
    let trusted_comment = trusted_comment.replace(['\n', '\r'], " ");
    minisign::sign(
        Some(key.public()),
        key.secret(),
        reader,
        Some(&trusted_comment),
        None,
    )
    .map(SignatureBox::into_string)
    .map_err(|error| Error::Sign {
        what: trusted_comment.clone(),
        message: error.to_string(),
    })
}

/// Check a detached signature over `data` against the trusted keys; returns the signer.
fn check_signature<R: Read + Seek>(
    data: R,
    signature: &str,
    trusted: &TrustedKeys,
    what: &str,
) -> Result<KeyId> {
    if trusted.is_empty() {
        return Err(Error::NoTrustedKeys);
    }
    let signature_box = SignatureBox::from_string(signature).map_err(|error| Error::Malformed {
        what: what.to_owned(),
        message: format!("signature is not minisign text: {error}"),
    })?;
    let key_id = KeyId::from_keynum(signature_box.keynum());
    let Some(public) = trusted.find(key_id) else {
        return Err(Error::UntrustedKey {
            what: what.to_owned(),
            key_id: key_id.to_string(),
            trusted: trusted.describe(),
        });
    };
    minisign::verify(public, &signature_box, data, true, false, false).map_err(|error| {
        Error::BadSignature {
            what: what.to_owned(),
            message: error.to_string(),
        }
    })?;
    Ok(key_id)
}

/// Verify an envelope's signatures: at least `trusted.threshold()` distinct trusted keys
/// (one with a plain trust list) must have signed the payload. Returns the payload text and
/// the first signer.
pub fn verify_envelope(bytes: &[u8], trusted: &TrustedKeys, what: &str) -> Result<(String, KeyId)> {
    let (payload, signers) = verify_envelope_signers(bytes, trusted, what)?;
    Ok((payload, signers[0]))
}

/// [`verify_envelope`], returning every trusted key that signed (at least the threshold).
pub fn verify_envelope_signers(
    bytes: &[u8],
    trusted: &TrustedKeys,
    what: &str,
) -> Result<(String, Vec<KeyId>)> {
    let envelope = Envelope::from_bytes(bytes, what)?;
    let mut signers: Vec<KeyId> = Vec::new();
    let mut first_error = None;
    for signature in envelope.all_signatures() {
        match check_signature(
            Cursor::new(envelope.payload.as_bytes()),
            signature,
            trusted,
            what,
        ) {
            Ok(key_id) if !signers.contains(&key_id) => signers.push(key_id),
            Ok(_) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let need = trusted.threshold();
    if signers.len() >= need {
        return Ok((envelope.payload, signers));
    }
    match first_error {
        Some(error) if signers.is_empty() => Err(error),
        _ => Err(Error::BelowThreshold {
            what: what.to_owned(),
            have: signers.len(),
            need,
            signers: signers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Verify an artifact against its `.minisig` text; returns the signer.
pub fn verify_artifact_signature<R: Read + Seek>(
    artifact: R,
    signature: &str,
    trusted: &TrustedKeys,
    what: &str,
) -> Result<KeyId> {
    check_signature(artifact, signature, trusted, what)
}

/// What a verifier expects of a channel pointer.
#[derive(Debug, Clone)]
pub struct PointerCheck<'a> {
    /// The app it must name.
    pub app: &'a str,
    /// The channel it must name.
    pub channel: &'a str,
    /// The highest serial accepted before; a lower one is refused (equal is fine: the same
    /// pointer read again).
    pub highest_seen: Option<u64>,
    /// The time to judge `expires_at` against.
    pub now: OffsetDateTime,
}

/// A pointer whose signature, app, channel, serial and expiry were checked.
#[derive(Debug, Clone)]
pub struct VerifiedPointer {
    /// The payload.
    pub pointer: ChannelPointer,
    /// The key that signed it.
    pub key_id: KeyId,
}

/// Verify a stored channel pointer (envelope bytes) completely.
pub fn verify_pointer(
    bytes: &[u8],
    trusted: &TrustedKeys,
    check: &PointerCheck<'_>,
) -> Result<VerifiedPointer> {
    let what = format!("channel pointer {}/{}", check.app, check.channel);
    let (payload, key_id) = verify_envelope(bytes, trusted, &what)?;
    let pointer: ChannelPointer = parse_payload(&payload, &what)?;
    expect_schema(pointer.schema, &what)?;
    expect_equal(&what, "app", &pointer.app, check.app)?;
    expect_equal(&what, "channel", &pointer.channel, check.channel)?;
    if !crate::serial_is_possible(pointer.serial) {
        return Err(Error::ImpossibleSerial {
            what,
            serial: pointer.serial,
            max: crate::MAX_SERIAL,
        });
    }
    if let Some(highest_seen) = check.highest_seen {
        if pointer.serial < highest_seen {
            return Err(Error::SerialRegressed {
                app: pointer.app,
                channel: pointer.channel,
                serial: pointer.serial,
                highest_seen,
            });
        }
    }
    if pointer.is_expired(check.now) {
        let expires_at = pointer
            .expires_at
            .and_then(|moment| {
                moment
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        return Err(Error::Expired {
            app: pointer.app,
            channel: pointer.channel,
            serial: pointer.serial,
            expires_at,
        });
    }
    Ok(VerifiedPointer { pointer, key_id })
}

/// A release whose signature, app and version were checked.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    /// The payload.
    pub release: Release,
    /// The key that signed it.
    pub key_id: KeyId,
}

/// Verify a stored release document for `app`, version `version`.
pub fn verify_release(
    bytes: &[u8],
    trusted: &TrustedKeys,
    app: &str,
    version: &str,
) -> Result<VerifiedRelease> {
    let what = format!("release {app} {version}");
    let (payload, key_id) = verify_envelope(bytes, trusted, &what)?;
    let release: Release = parse_payload(&payload, &what)?;
    expect_schema(release.schema, &what)?;
    expect_equal(&what, "app", &release.app, app)?;
    expect_equal(&what, "version", &release.version, version)?;
    Ok(VerifiedRelease { release, key_id })
}

fn parse_payload<T: for<'de> Deserialize<'de>>(payload: &str, what: &str) -> Result<T> {
    serde_json::from_str(payload).map_err(|error| Error::Malformed {
        what: what.to_owned(),
        message: error.to_string(),
    })
}

fn expect_schema(schema: u32, what: &str) -> Result<()> {
    if schema == SCHEMA {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.to_owned(),
            field: "schema",
            found: schema.to_string(),
            expected: SCHEMA.to_string(),
        })
    }
}

fn expect_equal(what: &str, field: &'static str, found: &str, expected: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.to_owned(),
            field,
            found: found.to_owned(),
            expected: expected.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::document::{ArtifactRef, ReleaseRef, Rollout};
    use crate::keys::generate_key_pair;

    fn key(dir: &std::path::Path, name: &str) -> SigningKey {
        let pair = generate_key_pair(&dir.join(name)).unwrap();
        SigningKey::from_file(&pair.secret_path, None).unwrap()
    }

    fn pointer(serial: u64) -> ChannelPointer {
        let mut artifacts = BTreeMap::new();
        artifacts.insert("amd64".to_owned(), ArtifactRef::new(&"a".repeat(64), 10));
        ChannelPointer {
            schema: SCHEMA,
            app: "hello".into(),
            channel: "stable".into(),
            serial,
            release: ReleaseRef {
                version: "1.0-1".into(),
                artifacts,
            },
            rollout: Rollout::default(),
            paused: false,
            urgent: false,
            published_at: crate::now_utc(),
            expires_at: None,
        }
    }

    fn check(highest_seen: Option<u64>) -> PointerCheck<'static> {
        PointerCheck {
            app: "hello",
            channel: "stable",
            highest_seen,
            now: crate::now_utc(),
        }
    }

    #[test]
    fn signed_pointer_verifies_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let signer = key(dir.path(), "a");
        let mut trusted = TrustedKeys::new();
        trusted.add_signing_key(&signer);
        let envelope = sign_document(&signer, &pointer(7), "ferry pointer").unwrap();
        let bytes = envelope.to_bytes();
        let verified = verify_pointer(&bytes, &trusted, &check(Some(7))).unwrap();
        assert_eq!(verified.pointer.serial, 7);
        assert_eq!(verified.key_id, signer.id());

        let tampered = Envelope {
            payload: envelope.payload.replace("\"serial\":7", "\"serial\":8"),
            ..envelope.clone()
        };
        let error = verify_pointer(&tampered.to_bytes(), &trusted, &check(None)).unwrap_err();
        assert!(matches!(error, Error::BadSignature { .. }), "{error}");

        let error = verify_pointer(&bytes, &trusted, &check(Some(8))).unwrap_err();
        assert!(
            matches!(
                error,
                Error::SerialRegressed {
                    serial: 7,
                    highest_seen: 8,
                    ..
                }
            ),
            "{error}"
        );

        let wrong_channel = PointerCheck {
            channel: "beta",
            ..check(None)
        };
        assert!(matches!(
            verify_pointer(&bytes, &trusted, &wrong_channel),
            Err(Error::Mismatch { .. })
        ));
    }

    #[test]
    fn pointer_from_an_untrusted_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = key(dir.path(), "a");
        let other = key(dir.path(), "b");
        let mut trusted = TrustedKeys::new();
        trusted.add_signing_key(&other);
        let bytes = sign_document(&signer, &pointer(1), "x").unwrap().to_bytes();
        let error = verify_pointer(&bytes, &trusted, &check(None)).unwrap_err();
        assert!(matches!(error, Error::UntrustedKey { .. }), "{error}");
        assert!(verify_pointer(&bytes, &TrustedKeys::new(), &check(None)).is_err());
    }

    #[test]
    fn expired_pointer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = key(dir.path(), "a");
        let mut trusted = TrustedKeys::new();
        trusted.add_signing_key(&signer);
        let mut expired = pointer(3);
        expired.expires_at = Some(crate::now_utc() - time::Duration::hours(1));
        let bytes = sign_document(&signer, &expired, "x").unwrap().to_bytes();
        assert!(matches!(
            verify_pointer(&bytes, &trusted, &check(None)),
            Err(Error::Expired { .. })
        ));
    }

    #[test]
    fn oversized_document_is_refused_before_parsing() {
        let bytes = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        let error = verify_envelope(&bytes, &TrustedKeys::new(), "doc").unwrap_err();
        assert!(matches!(error, Error::DocumentTooLarge { .. }), "{error}");
    }

    #[test]
    fn artifact_signature_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let signer = key(dir.path(), "a");
        let mut trusted = TrustedKeys::new();
        trusted.add_signing_key(&signer);
        let data = b"some deb bytes".to_vec();
        let signature = sign_artifact(&signer, Cursor::new(&data), "artifact").unwrap();
        verify_artifact_signature(Cursor::new(&data), &signature, &trusted, "artifact").unwrap();
        let mut changed = data.clone();
        changed[0] ^= 1;
        assert!(
            verify_artifact_signature(Cursor::new(&changed), &signature, &trusted, "artifact")
                .is_err()
        );
    }
}
