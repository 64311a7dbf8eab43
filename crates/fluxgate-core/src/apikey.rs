//! The API-key format: `{prefix}_{env}_{secret}{checksum}` — a configurable prefix, `live` or
//! `test`, 24 base62 characters (≈142 bits) from the OS CSPRNG, and the CRC32 of everything
//! before it as 6 base62 characters. The checksum lets anyone (and secret scanners) reject a
//! mistyped or truncated key without a lookup; keys are stored only as SHA-256 hashes.

use crate::secret::{random_base62, sha256_hex, SecretString};

/// Characters of the random part.
pub const SECRET_LEN: usize = 24;
/// Characters of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the random part shown in `start` (after `{prefix}_{env}_`).
const START_CHARS: usize = 4;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

crate::stored::text_enum!(
    /// Whether a key is for production or testing (as written in keys and the API).
    Environment {
        /// `live`
        Live = "live",
        /// `test`
        Test = "test",
    }
);

/// Why a string is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Not `{prefix}_{env}_{body}` with a valid prefix and environment.
    #[error("not an API key")]
    Shape,
    /// The body has the wrong length or characters.
    #[error("malformed API key")]
    Body,
    /// The checksum does not match: mistyped or truncated.
    #[error("API key checksum mismatch")]
    Checksum,
}

/// Checks a configured prefix: 1–16 characters, `a-z0-9`, starting with a letter.
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=16).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A key that has the right shape and checksum (it may still be unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The prefix, e.g. `fg`.
    pub prefix: &'a str,
    /// `live` or `test`.
    pub environment: Environment,
    /// The whole key.
    pub text: &'a str,
}

impl ParsedKey<'_> {
    /// The SHA-256 (hex) under which the key is stored.
    pub fn hash(&self) -> String {
        sha256_hex(self.text)
    }

    /// The displayable beginning, e.g. `fg_live_3xKq`.
    pub fn start(&self) -> &str {
        let head = self.prefix.len() + 1 + self.environment.as_str().len() + 1;
        &self.text[..head + START_CHARS]
    }
}

/// Parses a presented key, checking its shape and checksum (no lookup).
pub fn parse(text: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    let mut parts = text.splitn(3, '_');
    let (Some(prefix), Some(env), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyFormatError::Shape);
    };
    let environment = Environment::parse(env).ok_or(KeyFormatError::Shape)?;
    if !valid_prefix(prefix) {
        return Err(KeyFormatError::Shape);
    }
    if body.len() != SECRET_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Body);
    }
    let signed = &text[..text.len() - CHECKSUM_LEN];
    if checksum(signed) != text.as_bytes()[text.len() - CHECKSUM_LEN..] {
        return Err(KeyFormatError::Checksum);
    }
    Ok(ParsedKey {
        prefix,
        environment,
        text,
    })
}

/// True when `text` has the shape of a key — `{prefix}_{live|test}_` and 30 base62 characters
/// — which tells a key from an access token in `Authorization` without computing the checksum
/// (a key-shaped value that fails it is then refused as a malformed key).
pub fn looks_like_key(text: &str) -> bool {
    let Some(head_len) = text.len().checked_sub(SECRET_LEN + CHECKSUM_LEN) else {
        return false;
    };
    let (head, body) = text.as_bytes().split_at(head_len);
    let Some((prefix, env)) = head.strip_suffix(b"_").and_then(|head| {
        head.iter()
            .position(|&b| b == b'_')
            .map(|at| head.split_at(at))
    }) else {
        return false;
    };
    matches!(env, b"_live" | b"_test")
        && body.iter().all(u8::is_ascii_alphanumeric)
        && std::str::from_utf8(prefix).is_ok_and(valid_prefix)
}

/// The value of an `Authorization: Bearer …` header (scheme case-insensitive), if that is what
/// `authorization` holds.
pub fn bearer_value(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The API key a request presents, from its `X-API-Key` and `Authorization` header values: the
/// `X-API-Key` value (even empty or malformed, so it is refused rather than ignored), else a bearer
/// value that parses as a key (any other bearer value is a JWT, not a key).
pub fn presented_key<'a>(
    x_api_key: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(value) = x_api_key {
        return Some(value.trim());
    }
    authorization
        .and_then(bearer_value)
        .filter(|token| looks_like_key(token))
}

/// A fresh key.
pub fn generate(prefix: &str, environment: Environment) -> SecretString {
    let mut key = format!(
        "{prefix}_{}_{}",
        environment.as_str(),
        random_base62(SECRET_LEN)
    );
    let sum = checksum(&key);
    key.extend(sum.map(char::from));
    SecretString::from(key)
}

/// CRC32 of `text` as exactly 6 base62 characters (62⁶ > 2³²), without allocating: every
/// presented bearer value is checked with it.
fn checksum(text: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(text.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// The format as a regular expression, for secret scanners (with the default prefix `fg`).
pub const KEY_REGEX: &str = r"\bfg_(live|test)_[0-9A-Za-z]{30}\b";

#[cfg(test)]
mod tests {
    use crate::secret::ExposeSecret;
    #[test]
    fn a_request_presents_its_x_api_key_or_a_bearer_that_is_a_key() {
        let key = super::generate("fg", super::Environment::Live);
        let key = key.expose_secret();
        let bearer = format!("Bearer {key}");
        assert_eq!(super::presented_key(Some(key), None), Some(key));
        assert_eq!(super::presented_key(None, Some(&bearer)), Some(key));
        assert_eq!(
            super::presented_key(None, Some(&format!("bearer  {key} "))),
            Some(key)
        );
        // a JWT in Authorization is not a key; a junk X-API-Key still is one (and gets refused)
        assert_eq!(
            super::presented_key(None, Some("Bearer eyJhbGciOi.x.y")),
            None
        );
        assert_eq!(
            super::presented_key(None, Some(&format!("Basic {key}"))),
            None
        );
        assert_eq!(
            super::presented_key(Some(" junk "), Some(&bearer)),
            Some("junk")
        );
        assert_eq!(super::presented_key(None, None), None);
        // a key-shaped bearer with a wrong checksum is a (malformed) key, not an access token
        let mistyped = format!(
            "{}{}",
            &key[..key.len() - 1],
            if key.ends_with('A') { 'B' } else { 'A' }
        );
        assert_eq!(
            super::presented_key(None, Some(&format!("Bearer {mistyped}"))),
            Some(mistyped.as_str())
        );
        assert_eq!(
            super::parse(&mistyped),
            Err(super::KeyFormatError::Checksum)
        );
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse() {
        let key = generate("fg", Environment::Live);
        let parsed = parse(key.expose_secret()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.prefix, "fg");
        assert_eq!(parsed.environment, Environment::Live);
        assert_eq!(key.expose_secret().len(), "fg_live_".len() + 30);
        assert!(parsed.start().starts_with("fg_live_") && parsed.start().len() == 12);
        assert_eq!(parsed.hash().len(), 64);
    }

    #[test]
    fn malformed_keys_are_named() {
        assert_eq!(parse("fg_live"), Err(KeyFormatError::Shape));
        assert_eq!(parse("fg_prod_abc"), Err(KeyFormatError::Shape));
        assert_eq!(parse("FG_live_abc"), Err(KeyFormatError::Shape));
        assert_eq!(parse("fg_live_short"), Err(KeyFormatError::Body));
        assert_eq!(
            parse(&format!("fg_live_{}", "a".repeat(30))),
            Err(KeyFormatError::Checksum)
        );
        assert_eq!(
            parse("eyJhbGciOiJFZERTQSJ9.e30.sig"),
            Err(KeyFormatError::Shape)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_and_headers_never_panic(text in ".{0,80}", header in "(Bearer |bearer |Basic )?.{0,80}") {
            let _ = parse(&text);
            let _ = presented_key(Some(&text), Some(&header));
            let _ = presented_key(None, Some(&header));
        }

        #[test]
        fn a_key_shape_is_what_parses_but_for_the_checksum(text in prop_oneof![
            "([a-z][a-z0-9]{0,3}|FG|x_y|9a)?_?(live|test|prod)?_?[0-9A-Za-z_]{0,32}",
            "([a-z][a-z0-9]{0,3}|FG|x_y|9a)_(live|test|prod)_[0-9A-Za-z]{29,31}_?",
        ]) {
            let shaped = matches!(parse(&text), Ok(_) | Err(KeyFormatError::Checksum));
            prop_assert_eq!(looks_like_key(&text), shaped, "{}", text);
        }

        #[test]
        fn round_trip(prefix in "[a-z][a-z0-9]{0,15}", live in any::<bool>()) {
            let env = if live { Environment::Live } else { Environment::Test };
            let key = generate(&prefix, env);
            let parsed = parse(key.expose_secret());
            prop_assert!(parsed.is_ok());
            let parsed = parsed.unwrap_or_else(|_| unreachable!());
            prop_assert_eq!(parsed.prefix, prefix.as_str());
            prop_assert_eq!(parsed.environment, env);
        }

        #[test]
        fn any_single_character_change_is_rejected(index in 0usize..38, replacement in "[0-9A-Za-z_]") {
            let key = generate("fg", Environment::Live);
            let text = key.expose_secret();
            let index = index % text.len();
            let replacement = replacement.chars().next().unwrap_or('x');
            prop_assume!(text.as_bytes()[index] != replacement as u8);
            let mut changed: Vec<char> = text.chars().collect();
            changed[index] = replacement;
            let changed: String = changed.into_iter().collect();
            prop_assert!(parse(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn truncated_keys_are_rejected(cut in 1usize..37) {
            let key = generate("fg", Environment::Test);
            let text = key.expose_secret();
            prop_assert!(parse(&text[..text.len() - cut.min(text.len())]).is_err());
        }
    }
}
