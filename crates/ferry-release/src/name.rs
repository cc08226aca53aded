//! The one name rule, for everything that becomes one segment of a store path or a file name on
//! a host: apps, channels, host ids, config file names. Letters, digits and `. _ - +`, 1 to 128
//! characters, not starting with `.` — so a name is never a path, never hidden, never `..`.
//! Publishers, agents and bundles all check with it, so nothing one accepts is refused by
//! another.

use crate::Error;

/// The longest name.
pub const MAX_NAME_CHARS: usize = 128;

/// Why `name` breaks the rule, or `Ok`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_CHARS {
        return Err(format!("a name must have 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.starts_with('.') {
        return Err("a name must not start with '.'".to_owned());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Err(format!(
            "{bad:?} is not allowed in a name (letters, digits, . _ - + only)"
        ));
    }
    Ok(())
}

/// [`check_name`] as this crate's error, naming what the name is for (`app`, `channel`, …).
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), Error> {
    check_name(name).map_err(|message| Error::InvalidName {
        kind,
        name: name.to_owned(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_flat_and_visible() {
        for good in [
            "hello",
            "hello.env",
            "app-1_x+y.toml",
            "a",
            &"x".repeat(128),
        ] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            ".env",
            "..",
            "../x",
            "a/b",
            "a b",
            "ü",
            "a\\b",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        let error = validate_name("app", "a/b").unwrap_err();
        assert!(error.to_string().contains("app \"a/b\""), "{error}");
    }
}
