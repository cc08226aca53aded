//! The control file: one deb822 paragraph of `Field: value` lines, kept in order so a
//! package's fields are shown (and written) the way its author laid them out.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{Error, Result};

/// The fields of a binary package's `control` file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    fields: Vec<(String, String)>,
}

impl Control {
    /// An empty control paragraph.
    pub fn new() -> Control {
        Control::default()
    }

    /// Parse the text of a `control` file. Continuation lines are kept verbatim (with
    /// their leading space) after a newline.
    pub fn parse(text: &str) -> Result<Control> {
        let mut control = Control::new();
        let mut ended = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                if !control.fields.is_empty() {
                    ended = true;
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if ended {
                return Err(Error::Control(format!(
                    "line {number}: more than one paragraph in a binary package's control file"
                )));
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some((_, value)) = control.fields.last_mut() else {
                    return Err(Error::Control(format!(
                        "line {number}: continuation line before any field"
                    )));
                };
                value.push('\n');
                value.push_str(line);
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(Error::Control(format!(
                    "line {number}: expected `Field: value`, found {line:?}"
                )));
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(Error::Control(format!(
                    "line {number}: bad field name {name:?}"
                )));
            }
            if control.get(name).is_some() {
                return Err(Error::Control(format!(
                    "line {number}: field {name} appears twice"
                )));
            }
            control
                .fields
                .push((name.to_string(), value.trim().to_string()));
        }
        if control.fields.is_empty() {
            return Err(Error::Control("the control file has no fields".into()));
        }
        Ok(control)
    }

    /// A field's value (field names are case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Set a field, replacing an existing value in place or appending a new field.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .fields
            .iter_mut()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
        {
            Some((_, existing)) => *existing = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }

    /// All fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// `Package`.
    pub fn package(&self) -> Option<&str> {
        self.get("Package")
    }

    /// `Version`.
    pub fn version(&self) -> Option<&str> {
        self.get("Version")
    }

    /// `Architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("Architecture")
    }

    /// The control file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (name, value) in &self.fields {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(value);
            text.push('\n');
        }
        text
    }
}

impl Serialize for Control {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (name, value) in &self.fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Turn free text into a `Description` value: the first line is the synopsis, the rest
/// the extended description with each line indented by one space and blank lines as ` .`.
pub fn format_description(text: &str) -> Result<String> {
    let text = text.trim();
    let mut lines = text.lines();
    let synopsis = lines.next().unwrap_or_default().trim();
    if synopsis.is_empty() {
        return Err(Error::Field {
            field: "Description".into(),
            reason: "empty; give at least a one-line summary".into(),
        });
    }
    let mut value = synopsis.to_string();
    for line in lines {
        let line = line.trim_end();
        value.push('\n');
        if line.trim().is_empty() {
            value.push_str(" .");
        } else {
            value.push(' ');
            value.push_str(line);
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_order_and_continuations() {
        let text = "Package: hello\nVersion: 1.0-1\nDescription: Hi\n more\n .\n end\n\n";
        let control = Control::parse(text).unwrap();
        assert_eq!(control.package(), Some("hello"));
        assert_eq!(control.get("description"), Some("Hi\n more\n .\n end"));
        assert_eq!(control.to_text(), text.trim_end().to_string() + "\n");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let error = Control::parse("Package: a\nnonsense\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(Control::parse(" lead\n").is_err());
        assert!(Control::parse("").is_err());
        assert!(Control::parse("A: 1\n\nB: 2\n").is_err());
        assert!(Control::parse("A: 1\na: 2\n").is_err());
    }

    #[test]
    fn description_formatting() {
        let value = format_description("Hello service\nIt says hello.\n\nTwice.\n").unwrap();
        assert_eq!(value, "Hello service\n It says hello.\n .\n Twice.");
        assert!(format_description("  \n").is_err());
    }
}
