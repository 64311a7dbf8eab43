//! The claims carried by Fluxgate's access tokens (JWT, `typ: at+jwt`).

use crate::ids::{OrgId, SessionId, UserId};
use serde::{Deserialize, Serialize};

/// The `typ` header value of every access token.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Claims of an access token: who (`sub`), which session (`sid`), which org is active and what
/// the user may do there (`role`, `perms`), plus the registered time and audience claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the instance's public URL.
    pub iss: String,
    /// Audience the token is meant for.
    pub aud: String,
    /// The user id (`usr_…`).
    pub sub: UserId,
    /// The session id (`ses_…`); revoking the session revokes the token.
    pub sid: SessionId,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not valid before (Unix seconds).
    pub nbf: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The active organization, if the user belongs to any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgId>,
    /// The user's role in the active organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Effective permissions in the active organization, expanded and sorted.
    #[serde(default)]
    pub perms: Vec<String>,
    /// How the session signed in (RFC 8176): `pwd`, plus `otp` (a TOTP code) or `rc` (a
    /// recovery code) and `mfa` after a second factor. A product can demand `mfa` for its
    /// sensitive routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

impl AccessClaims {
    /// Whether the session signed in with a second factor (`amr` holds `mfa`).
    pub fn used_second_factor(&self) -> bool {
        self.amr.iter().any(|m| m == crate::mfa::AMR_MFA)
    }
}

/// The signing key id (`kid`) of a token whose header is an access token's — EdDSA and
/// `typ: at+jwt`, checked before any key is looked up (so `alg: HS256` signed with a public key is
/// refused) — or why it is not.
pub fn access_token_kid(header: jsonwebtoken::Header) -> Result<String, &'static str> {
    if header.alg != jsonwebtoken::Algorithm::EdDSA {
        return Err("algorithm not accepted (only EdDSA)");
    }
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err("not an access token (typ must be at+jwt)");
    }
    header.kid.ok_or("no kid")
}

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The checks an access token's claims must pass once its signing key is known — the same for
/// the server and for offline verifiers: EdDSA only, this `issuer` and `audience`, and `exp`,
/// `nbf`, `iss`, `aud`, `sub` all present, with [`LEEWAY_SECS`] of skew.
pub fn access_token_validation(issuer: &str, audience: &str) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.algorithms = vec![jsonwebtoken::Algorithm::EdDSA];
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, Header};

    #[test]
    fn only_an_eddsa_access_token_header_names_its_key() {
        let header = |alg, typ: Option<&str>, kid: Option<&str>| {
            let mut header = Header::new(alg);
            header.typ = typ.map(str::to_owned);
            header.kid = kid.map(str::to_owned);
            header
        };
        let kid = super::access_token_kid(header(Algorithm::EdDSA, Some("at+jwt"), Some("fgk_1")));
        assert_eq!(kid, Ok("fgk_1".to_owned()));
        for refused in [
            header(Algorithm::HS256, Some("at+jwt"), Some("fgk_1")),
            header(Algorithm::EdDSA, Some("JWT"), Some("fgk_1")),
            header(Algorithm::EdDSA, None, Some("fgk_1")),
            header(Algorithm::EdDSA, Some("at+jwt"), None),
        ] {
            assert!(super::access_token_kid(refused).is_err());
        }
    }
}
