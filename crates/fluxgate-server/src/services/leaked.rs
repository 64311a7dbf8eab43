//! Keys found in public: a secret scanner (GitHub's secret-scanning partner program, or any
//! that speaks its format) reports tokens it found — a signed JSON list of `{token, type, url,
//! source}` — and each that is one of our keys is revoked at once or flagged `LEAKED`, as its
//! org chose, audited as `key.leaked`. The report's ECDSA P-256 signature is checked against
//! the configured scanner keys before anything else is read.

use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::state::AppState;
use base64::Engine;
use fluxgate_core::apikey;
use fluxgate_core::secret::sha256_hex;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::DerSignature;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The most tokens one report may carry.
pub const MAX_TOKENS: usize = 1000;

/// One token a scanner found.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FoundToken {
    /// The token as found.
    pub token: String,
    /// The scanner's name for its kind, e.g. `fluxgate_api_key`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place that is, e.g. `content`, `commit`.
    #[serde(default)]
    pub source: Option<String>,
}

/// The answer for one token, in the scanner's format: never the token itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenLabel {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The `type` the report gave.
    pub token_type: String,
    /// `true_positive` (one of our keys, live or not) or `false_positive`.
    pub label: &'static str,
}

/// The headers that carry a report's signature.
pub struct Signed<'a> {
    /// `Github-Public-Key-Identifier`: which configured key signed it.
    pub key_id: Option<&'a str>,
    /// `Github-Public-Key-Signature`: base64 of the DER signature over the raw body.
    pub signature: Option<&'a str>,
}

/// Checks the report's signature over `body` (401 when it does not verify against a configured
/// scanner key, or none is configured), then acts on each token: revoked or flagged per its
/// org's `leaked_key_action`, audited and announced. The labels, in the report's order.
pub async fn report(
    state: &AppState,
    signed: &Signed<'_>,
    body: &[u8],
    client: &ClientInfo,
    now: i64,
) -> ApiResult<Vec<TokenLabel>> {
    if !signature_verifies(state, signed, body) {
        return Err(ApiError::Unauthorized);
    }
    let found: Vec<FoundToken> = serde_json::from_slice(body).map_err(|_| {
        ApiError::field("body", "must be a JSON list of {token, type, url, source}")
    })?;
    if found.len() > MAX_TOKENS {
        return Err(ApiError::field(
            "body",
            format!("at most {MAX_TOKENS} tokens a report"),
        ));
    }
    let mut labels = Vec::with_capacity(found.len());
    for token in &found {
        let ours = act_on(state, token, client, now).await?;
        labels.push(TokenLabel {
            token_hash: sha256_hex(&token.token),
            token_type: token.kind.clone().unwrap_or_default(),
            label: if ours {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Ok(labels)
}

fn signature_verifies(state: &AppState, signed: &Signed<'_>, body: &[u8]) -> bool {
    let (Some(key_id), Some(signature)) = (signed.key_id, signed.signature) else {
        return false;
    };
    let Some(scanner) = state.config.scanner_keys.iter().find(|k| k.id == key_id) else {
        return false;
    };
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(signature) = DerSignature::from_bytes(&der) else {
        return false;
    };
    scanner.key.verify(body, &signature).is_ok()
}

/// Whether the token is one of our keys; if so, revoked or flagged (once) and audited.
async fn act_on(
    state: &AppState,
    found: &FoundToken,
    client: &ClientInfo,
    now: i64,
) -> ApiResult<bool> {
    let Ok(parsed) = apikey::parse(found.token.trim()) else {
        return Ok(false);
    };
    let Some(lookup) = state.store.key_by_hash(&parsed.hash()).await? else {
        return Ok(false);
    };
    let key = &lookup.key;
    let revoke = lookup.org_leaked_key_action != "flag";
    let audit = AuditEvent::new("key.leaked", None, client)
        .at(now)
        .org(Some(&key.org_id))
        .target("key", &key.id)
        .data(json!({
            "action": if revoke { "revoked" } else { "flagged" },
            "type": found.kind,
            "url": found.url,
            "source": found.source,
        }))
        .build();
    let acted = if revoke {
        state
            .store
            .revoke_key(&key.org_id, &key.id, now, &audit)
            .await?
    } else {
        state.store.flag_key_leaked(&key.id, now, &audit).await?
    };
    if acted {
        tracing::warn!(key_id = %key.id, org_id = %key.org_id, revoke, "key reported found in public");
        state
            .invalidation
            .publish(Change::Key(key.id.clone()))
            .await;
    }
    Ok(true)
}
