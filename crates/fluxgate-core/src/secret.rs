//! Secrets that never print and are wiped on drop (the `secrecy` crate), random tokens from the OS CSPRNG, hashing and constant-time checks.

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

pub use secrecy::{ExposeSecret, SecretBox, SecretString};

/// A 32-byte key (HMAC, encryption, derivation): never printed, wiped from memory on drop.
pub type SecretKey = SecretBox<[u8; 32]>;

/// Wraps a 32-byte key.
pub fn secret_key(bytes: [u8; 32]) -> SecretKey {
    SecretBox::new(Box::new(bytes))
}

/// A random base62 string of `len` characters from the OS CSPRNG (≈5.95 bits per character).
pub fn random_base62(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A fresh opaque token (256 bits of entropy) for refresh, verification and reset links.
pub fn random_token() -> SecretString {
    SecretString::from(random_base62(43))
}

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill(&mut bytes[..]);
    bytes
}

/// Lower-case hex SHA-256 of a token: how tokens and keys are stored at rest.
pub fn sha256_hex(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hex of bytes (the form hashes are stored in).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(HEX[(byte >> 4) as usize]));
        out.push(char::from(HEX[(byte & 0x0f) as usize]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compares two secrets in time that depends only on their lengths: eight bytes at a time (a
/// key presented on every request is compared on the verify path), the rest byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let words = a_words
        .iter()
        .zip(b_words)
        .fold(Choice::from(1), |same, (x, y)| {
            same & u64::from_ne_bytes(*x).ct_eq(&u64::from_ne_bytes(*y))
        });
    bool::from(words & a_rest.ct_eq(b_rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = SecretString::from("hunter22".to_string());
        assert!(!format!("{s:?}").contains("hunter22"));
        assert_eq!(s.expose_secret(), "hunter22");
        let key = secret_key([7; 32]);
        assert!(!format!("{key:?}").contains('7'));
    }

    #[test]
    fn tokens_are_base62_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.expose_secret().len(), 43);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn hashing_and_comparison() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"samey"));
        // longer than a word: a difference in any byte, in the words or the rest, is seen
        let key = b"fg_live_0123456789abcdefghijklmnopqrst";
        assert!(constant_time_eq(key, key));
        for at in 0..key.len() {
            let mut other = *key;
            other[at] ^= 1;
            assert!(!constant_time_eq(key, &other), "byte {at}");
        }
        assert!(constant_time_eq(b"", b""));
    }
}
