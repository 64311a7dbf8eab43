//! Usage-widget tokens: short-lived, HMAC-signed capabilities that can read one org's usage and
//! nothing else — `wgt_{base64url(org_id.expiry)}.{base64url(HMAC-SHA256)}`, checked in constant
//! time. They are neither access tokens nor API keys, so every other route refuses them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fluxgate_core::ids::OrgId;
use fluxgate_core::secret::{constant_time_eq, ExposeSecret, SecretKey, SecretString};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "wgt_";

/// Issues and checks widget tokens with a key derived from the instance secret (so every node
/// accepts every node's tokens).
pub struct WidgetTokens(SecretKey);

impl WidgetTokens {
    /// With the derived key.
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    fn mac(&self, payload: &str) -> Option<Vec<u8>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret()).ok()?;
        mac.update(payload.as_bytes());
        Some(mac.finalize().into_bytes().to_vec())
    }

    /// A token for `org_id` valid until `expires_at` (Unix seconds).
    pub fn issue(&self, org_id: &OrgId, expires_at: i64) -> Option<SecretString> {
        let payload = format!("{org_id}.{expires_at}");
        let mac = self.mac(&payload)?;
        Some(SecretString::from(format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac)
        )))
    }

    /// The org a token grants, if it is genuine and not expired at `now`.
    pub fn check(&self, token: &str, now: i64) -> Option<OrgId> {
        let (payload, mac) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let presented = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(&payload)?;
        if !constant_time_eq(&presented, &expected) {
            return None;
        }
        let (org_id, expires_at) = payload.rsplit_once('.')?;
        if expires_at.parse::<i64>().ok()? <= now {
            return None;
        }
        org_id.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_one_org_until_they_expire() {
        let tokens = WidgetTokens::new(fluxgate_core::secret::secret_key([7; 32]));
        let org = OrgId::generate();
        let token = tokens
            .issue(&org, 100)
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default();
        assert_eq!(tokens.check(&token, 99), Some(org));
        assert_eq!(tokens.check(&token, 100), None, "expired");
        let mut chars: Vec<char> = token.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(tokens.check(&tampered, 50), None);
        let other_key = WidgetTokens::new(fluxgate_core::secret::secret_key([8; 32]));
        assert_eq!(other_key.check(&token, 50), None);
        assert_eq!(tokens.check("wgt_garbage", 50), None);
    }
}
