//! Second factors: TOTP codes (RFC 6238 through the `totp-rs` crate — SHA-1, six digits,
//! 30-second steps, one step of clock skew either way, each step accepted once), single-use
//! recovery codes, and the authentication methods (`amr`, RFC 8176) a session's tokens carry.

use crate::secret::{random_bytes, sha256_hex, SecretString};
use totp_rs::{Algorithm, Totp};

/// Seconds per TOTP step.
pub const TOTP_STEP_SECS: u64 = 30;
/// Bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
pub const TOTP_SECRET_BYTES: usize = 20;
/// How many recovery codes a set holds.
pub const RECOVERY_CODES: usize = 10;

/// `amr` of a password.
pub const AMR_PASSWORD: &str = "pwd";
/// `amr` of a one-time code (TOTP).
pub const AMR_OTP: &str = "otp";
/// `amr` of a proof of possession of a key (a passkey).
pub const AMR_HARDWARE_KEY: &str = "hwk";
/// `amr` of any sign-in that used a second factor.
pub const AMR_MFA: &str = "mfa";
/// `amr` of a recovery code (not in RFC 8176's registry; named like its entries).
pub const AMR_RECOVERY_CODE: &str = "rc";

/// A TOTP factor's parameters around its secret, with the URI that hands it to an app.
pub struct TotpFactor {
    totp: Totp,
    uri: String,
}

impl TotpFactor {
    /// A fresh random secret.
    pub fn new_secret() -> [u8; TOTP_SECRET_BYTES] {
        random_bytes()
    }

    /// The factor of `secret`, labelled for authenticator apps with the `issuer` and the
    /// user's `account` (their email). None if the secret has the wrong length or a label
    /// holds a `:` (which the `otpauth` label cannot carry).
    pub fn new(secret: &[u8], issuer: &str, account: &str) -> Option<Self> {
        if secret.len() != TOTP_SECRET_BYTES {
            return None;
        }
        let totp = totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(TOTP_STEP_SECS)
            .with_secret(secret.to_vec())
            .with_issuer(Some(issuer.replace(':', " ")))
            .with_account_name(account.replace(':', " "))
            .build()
            .ok()?;
        let uri = totp.to_url().ok()?;
        Some(Self { totp, uri })
    }

    /// The factor an authenticator app makes of a base32 secret typed in (or read from the
    /// URI); None if it is not one.
    pub fn from_base32(secret: &str, issuer: &str, account: &str) -> Option<Self> {
        let bytes = totp_rs::Secret::try_from_base32(secret).ok()?;
        Self::new(bytes.as_ref(), issuer, account)
    }

    /// The `otpauth://totp/…` URI an authenticator app reads (it holds the secret).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The secret in base32, for typing into an app by hand.
    pub fn secret_base32(&self) -> String {
        self.totp.secret().to_base32()
    }

    /// The step `code` belongs to, if it is right at `now` (one step of skew either way) and
    /// later than `last_step`, the step last accepted: a code is accepted once. Compared in
    /// constant time.
    pub fn accepts(&self, code: &str, now: i64, last_step: Option<i64>) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = u64::try_from(now).ok()?;
        let step = i64::try_from(self.totp.check(&code, now)?).ok()?;
        match last_step {
            Some(last) if step <= last => None,
            _ => Some(step),
        }
    }

    /// The code of the step holding `now` (for tests and for the first code at enrolment).
    pub fn code_at(&self, now: i64) -> String {
        self.totp
            .generate(u64::try_from(now).unwrap_or(0))
            .to_string()
    }
}

/// The alphabet of recovery codes: lower-case letters and digits without the look-alikes
/// `0 o 1 l i`.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// A fresh set of recovery codes, as the user is shown them (`xxxxx-xxxxx`, ~49 bits each).
pub fn new_recovery_codes() -> Vec<SecretString> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes: [u8; 10] = random_bytes();
            let mut code = String::with_capacity(11);
            for (i, byte) in bytes.iter().enumerate() {
                if i == 5 {
                    code.push('-');
                }
                // 256 % 31 leaves a bias of under 1 %: negligible for a single-use code
                let index = usize::from(*byte) % RECOVERY_ALPHABET.len();
                code.push(char::from(RECOVERY_ALPHABET[index]));
            }
            SecretString::from(code)
        })
        .collect()
}

/// How a recovery code is stored: SHA-256 of its normalised form (case, spaces and dashes
/// ignored), or None if it cannot be one.
pub fn recovery_code_hash(code: &str) -> Option<String> {
    let normal: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = normal.len() == 10 && normal.bytes().all(|b| RECOVERY_ALPHABET.contains(&b));
    valid.then(|| sha256_hex(&normal))
}

/// The `amr` values of a sign-in, from its stored form (space-separated).
pub fn amr_list(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    fn factor() -> TotpFactor {
        TotpFactor::new(&[7u8; TOTP_SECRET_BYTES], "Fluxgate", "ada@example.com").unwrap()
    }

    #[test]
    fn the_rfc_6238_sha1_vectors_are_met() {
        // RFC 6238 appendix B uses the ASCII secret "12345678901234567890" and 8 digits; with
        // six digits the codes are those vectors' last six
        let factor = TotpFactor::new(b"12345678901234567890", "x", "y").unwrap();
        assert_eq!(factor.code_at(59), "287082");
        assert_eq!(factor.code_at(1_111_111_109), "081804");
        assert_eq!(factor.code_at(2_000_000_000), "279037");
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_once() {
        let f = factor();
        let now = 1_700_000_015;
        let step = now / 30;
        assert_eq!(f.accepts(&f.code_at(now), now, None), Some(step));
        assert_eq!(f.accepts(&f.code_at(now - 30), now, None), Some(step - 1));
        assert_eq!(f.accepts(&f.code_at(now + 30), now, None), Some(step + 1));
        assert_eq!(f.accepts(&f.code_at(now - 60), now, None), None);
        assert_eq!(f.accepts(&f.code_at(now + 60), now, None), None);
        // used once: the same step, or an earlier one, is refused
        assert_eq!(f.accepts(&f.code_at(now), now, Some(step)), None);
        assert_eq!(f.accepts(&f.code_at(now - 30), now, Some(step)), None);
        assert_eq!(
            f.accepts(&f.code_at(now + 30), now, Some(step)),
            Some(step + 1)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let f = factor();
        for code in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(f.accepts(code, 1_700_000_000, None), None, "{code}");
        }
    }

    #[test]
    fn the_uri_names_issuer_and_account_and_carries_the_secret() {
        let f = factor();
        let uri = f.uri();
        assert!(
            uri.starts_with("otpauth://totp/Fluxgate:ada%40example.com?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", f.secret_base32())),
            "{uri}"
        );
        assert!(uri.contains("issuer=Fluxgate"), "{uri}");
        let typed = TotpFactor::from_base32(&f.secret_base32(), "x", "y").unwrap();
        assert_eq!(typed.code_at(1_700_000_000), f.code_at(1_700_000_000));
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_whatever_their_typing() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let hashes: std::collections::HashSet<_> = codes
            .iter()
            .map(|c| recovery_code_hash(c.expose_secret()).unwrap())
            .collect();
        assert_eq!(hashes.len(), RECOVERY_CODES);
        let code = codes[0].expose_secret();
        let typed = format!(" {} ", code.to_uppercase().replace('-', " "));
        assert_eq!(recovery_code_hash(&typed), recovery_code_hash(code));
        assert_eq!(recovery_code_hash("not-a-code"), None);
        assert_eq!(recovery_code_hash("00000-00000"), None);
    }
}
