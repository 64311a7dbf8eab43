//! Password policy: 8 to 128 characters, not on the built-in list of common passwords.

use crate::secret::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::sync::OnceLock;

/// Passwords of 8 characters or more from the 20,000 most common passwords list that Django
/// ships (`django/contrib/auth/common-passwords.txt.gz`, BSD licence), lower-cased.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// The shortest password accepted.
pub const MIN_LEN: usize = 8;
/// The longest password accepted (in characters).
pub const MAX_LEN: usize = 128;

/// A password that meets the policy, kept redacted.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than [`MIN_LEN`] characters.
    #[error("must be at least 8 characters")]
    TooShort,
    /// More than [`MAX_LEN`] characters.
    #[error("must be at most 128 characters")]
    TooLong,
    /// On the common-passwords list.
    #[error("is too common; choose a less guessable password")]
    TooCommon,
}

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().filter(|l| !l.is_empty()).collect())
}

impl Password {
    /// Checks a candidate password against the policy.
    pub fn parse(candidate: &str) -> Result<Self, PasswordError> {
        let chars = candidate.chars().count();
        if chars < MIN_LEN {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_LEN {
            return Err(PasswordError::TooLong);
        }
        if common_passwords().contains(candidate.to_lowercase().as_str()) {
            return Err(PasswordError::TooCommon);
        }
        Ok(Self(SecretString::from(candidate.to_owned())))
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(
            Password::parse("short").err(),
            Some(PasswordError::TooShort)
        );
        assert_eq!(
            Password::parse(&"x".repeat(129)).err(),
            Some(PasswordError::TooLong)
        );
        assert_eq!(
            Password::parse("password").err(),
            Some(PasswordError::TooCommon)
        );
        assert_eq!(
            Password::parse("PassWord1").err(),
            Some(PasswordError::TooCommon)
        );
        assert_eq!(
            Password::parse("12345678").err(),
            Some(PasswordError::TooCommon)
        );
        assert!(Password::parse("correct horse battery staple").is_ok());
        // length counts characters, not bytes
        assert!(Password::parse("ééééééé").is_err());
        assert!(Password::parse("éééééééé").is_ok());
        assert!(common_passwords().len() > 5000);
    }
}
