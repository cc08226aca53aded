//! Validation of Debian package names and versions (Debian Policy 5.6.1 and 5.6.12), so a
//! bad value is refused when packing instead of by dpkg on a server.

use crate::error::{Error, Result};

/// Check a Debian version: `[epoch:]upstream[-revision]`. A leading `v` gets a hint.
pub fn validate_version(version: &str) -> Result<()> {
    let fail = |reason: String| Error::Version {
        version: version.to_string(),
        reason,
    };
    if version.is_empty() {
        return Err(fail("empty".into()));
    }
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) => (Some(epoch), rest),
        None => (None, version),
    };
    if let Some(epoch) = epoch {
        if epoch.is_empty() || !epoch.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(fail(format!("the epoch {epoch:?} must be a number")));
        }
    }
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((upstream, revision)) => (upstream, Some(revision)),
        None => (rest, None),
    };
    if upstream.is_empty() {
        return Err(fail("the upstream version is empty".into()));
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        let hint = match upstream.strip_prefix(['v', 'V']) {
            Some(stripped) if stripped.starts_with(|c: char| c.is_ascii_digit()) => {
                let suggestion = version.replacen(&upstream[..1], "", 1);
                format!(
                    "the version must start with a digit; drop the leading {:?} (use {suggestion:?})",
                    &upstream[..1]
                )
            }
            _ => "the version must start with a digit".to_string(),
        };
        return Err(fail(hint));
    }
    if let Some(bad) = upstream
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-')))
    {
        return Err(fail(format!(
            "{bad:?} is not allowed in the upstream version (use letters, digits and . + ~ -)"
        )));
    }
    if let Some(revision) = revision {
        if revision.is_empty() {
            return Err(fail(
                "the Debian revision after the last `-` is empty".into(),
            ));
        }
        if let Some(bad) = revision
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~')))
        {
            return Err(fail(format!(
                "{bad:?} is not allowed in the Debian revision (use letters, digits and . + ~)"
            )));
        }
    }
    Ok(())
}

/// Check a binary package name: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit.
pub fn validate_package_name(name: &str) -> Result<()> {
    let fail = |reason: &str| Error::PackageName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.len() < 2 {
        return Err(fail("must be at least two characters long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(fail("must start with a lowercase letter or a digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
    {
        return Err(fail(
            "may only contain lowercase letters, digits and + - . (no uppercase, no _)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_versions() {
        for version in [
            "1.0",
            "1.0.0-1",
            "2:1.4~rc1-0ubuntu1",
            "0.1+git20260101-3",
            "1-2-3",
        ] {
            validate_version(version).unwrap_or_else(|error| panic!("{version}: {error}"));
        }
    }

    #[test]
    fn bad_versions() {
        let error = validate_version("v1.0").unwrap_err().to_string();
        assert!(error.contains("\"1.0\""), "{error}");
        let error = validate_version("v1.0-1").unwrap_err().to_string();
        assert!(error.contains("\"1.0-1\""), "{error}");
        for version in ["", "1.0-", "a:1", "1.0_2", "1.0-1:2", "beta", "1 0"] {
            assert!(validate_version(version).is_err(), "{version}");
        }
    }

    #[test]
    fn package_names() {
        validate_package_name("hello-service").unwrap();
        validate_package_name("libc6").unwrap();
        for name in ["a", "Hello", "hello_service", "-x", ""] {
            assert!(validate_package_name(name).is_err(), "{name}");
        }
    }
}
