//! Field-level validation errors: which input field was wrong and why.

use std::collections::BTreeMap;

/// A set of `field → reason` pairs, reported to clients as `422 VALIDATION_FAILED`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one error.
    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, reason);
        errors
    }

    /// Records `reason` for `field`, keeping the first reason given for a field.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| reason.into());
    }

    /// Runs a parser and records its error under `field`, returning the parsed value if any.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    /// Takes a result whose error is itself a set of field errors, recording them all.
    pub fn absorb<T>(&mut self, result: Result<T, FieldErrors>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(errors) => {
                for (field, reason) in errors.0 {
                    self.add(field, reason);
                }
                None
            }
        }
    }

    /// True when no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when empty, else the errors themselves.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The recorded pairs, ordered by field name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Whether `c` may be stored in any text the API takes: not NUL (PostgreSQL refuses it) and not
/// a control character other than tab, line feed and carriage return (C0, DEL and C1).
pub fn is_storable(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

/// Whether `c` is invisible or changes the direction of text — zero-width characters, joiners,
/// bidirectional embeddings, overrides and isolates, the soft hyphen, fillers, tags — which make
/// two different names or addresses look the same (Unicode's format characters and the like).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A trimmed, single-line text of 1 to `max` characters (names, labels, external ids), without
/// control characters or invisible ones ([`is_invisible`]).
pub fn single_line(input: &str, max: usize) -> Result<String, String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if text.chars().any(is_invisible) {
        return Err("must not contain invisible or direction-changing characters".into());
    }
    Ok(text.to_owned())
}

/// Like [`single_line`], but empty (or blank) is allowed and stays empty: an optional note.
pub fn optional_line(input: &str, max: usize) -> Result<String, String> {
    if input.trim().is_empty() {
        return Ok(String::new());
    }
    single_line(input, max)
}

/// A lowercase slug of 1 to 64 characters: `a-z`, `0-9`, `_`, `-`, starting with a letter or
/// digit (role names).
pub fn slug(input: &str) -> Result<String, String> {
    let valid = !input.is_empty()
        && input.len() <= 64
        && input.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && input
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(input.to_owned())
    } else {
        Err(
            "must be 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
                .into(),
        )
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_unstorable_characters() {
        for c in [
            '\u{200B}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_invisible(c), "{c:?}");
            assert!(single_line(&format!("Ad{c}a"), 10).is_err(), "{c:?}");
        }
        for c in ['a', 'é', 'ß', '中', '😀', ' ', '-'] {
            assert!(!is_invisible(c) && is_storable(c), "{c:?}");
        }
        for c in ['\0', '\u{7}', '\u{1B}', '\u{7F}', '\u{85}'] {
            assert!(!is_storable(c), "{c:?}");
        }
        for c in ['\t', '\n', '\r'] {
            assert!(is_storable(c), "{c:?}");
        }
    }

    #[test]
    fn single_line_text() {
        assert_eq!(single_line("  Acme  ", 10), Ok("Acme".into()));
        assert!(single_line("   ", 10).is_err());
        assert!(single_line("abcdefghijk", 10).is_err());
        assert!(single_line("a\nb", 10).is_err());
    }

    #[test]
    fn slugs() {
        assert!(slug("billing-admin_2").is_ok());
        for bad in ["", "-x", "Upper", "with space", &"x".repeat(65)] {
            assert!(slug(bad).is_err(), "{bad}");
        }
    }
}
