//! The claims carried by Fluxgate's access tokens (JWT, `typ: at+jwt`).

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
    pub sub: String,
    /// The session id (`ses_…`); revoking the session revokes the token.
    pub sid: String,
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
    pub org: Option<String>,
    /// The user's role in the active organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Effective permissions in the active organization, expanded and sorted.
    #[serde(default)]
    pub perms: Vec<String>,
}
