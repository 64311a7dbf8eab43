//! Email addresses, normalised (trimmed, lower-cased) and checked for a plausible shape.

use serde::Serialize;
use std::fmt;

/// A syntactically plausible, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Email(String);

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing was given.
    #[error("is required")]
    Empty,
    /// Longer than RFC 5321 allows.
    #[error("must be at most 254 characters")]
    TooLong,
    /// Not of the form `local@domain.tld`.
    #[error("is not a valid email address")]
    Invalid,
}

impl Email {
    /// Parses and normalises an address.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let value = input.trim().to_lowercase();
        if value.is_empty() {
            return Err(EmailError::Empty);
        }
        if value.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = value.rsplit_once('@').ok_or(EmailError::Invalid)?;
        let domain_ok = !domain.is_empty()
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local.chars().all(|c| {
                !c.is_whitespace()
                    && !c.is_control()
                    && !crate::validation::is_invisible(c)
                    && c != '<'
                    && c != '>'
            });
        if !domain_ok || !local_ok {
            return Err(EmailError::Invalid);
        }
        Ok(Self(value))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an address read back from storage, which only ever holds parsed ones.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".into())
        );
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "a b@example.com",
            "ad\u{200B}a@example.com",
            "\u{202E}ada@example.com",
            "ada@exa mple.com",
            "ada@.com",
            "a@b..c",
            "<a>@b.c",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Invalid), "{bad}");
        }
        assert_eq!(
            Email::parse(&format!("{}@example.com", "a".repeat(250))),
            Err(EmailError::TooLong)
        );
    }
}
