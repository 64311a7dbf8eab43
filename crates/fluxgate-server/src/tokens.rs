//! Access tokens: Ed25519 signing keys kept in the database (private halves encrypted under the
//! instance secret), signing, pinned verification, the JWKS, and refresh-token derivation.

use crate::clock::now;
use crate::secrets::Sealer;
use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use fluxgate_core::claims::{
    access_token_kid, access_token_validation, AccessClaims, ACCESS_TOKEN_TYPE, LEEWAY_SECS,
};
use fluxgate_core::secret::{random_bytes, ExposeSecret, SecretKey, SecretString};
use fluxgate_store::{AuditRecord, SigningKeyRecord, Store};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const ALGORITHM: &str = "EdDSA";
/// How long a retired key stays verifiable beyond the access-token lifetime, covering nodes that
/// have not reloaded yet and clock skew.
const RETIRED_KEY_GRACE_SECS: i64 = 120;
/// Unknown `kid`s reload the keys at most this often.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// At most this many verified access tokens are remembered (about 300 bytes each).
const VERIFIED_TOKENS: usize = 50_000;

/// The signing keys of this instance, as this node knows them.
pub struct Keyring {
    store: Arc<dyn Store>,
    /// Seals the private halves in the database.
    sealer: Sealer,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    state: RwLock<KeyringState>,
    /// Access tokens whose signature this node has checked, by the SHA-256 of the token:
    /// the same bytes presented again skip the Ed25519 verification (which was most of a
    /// `GET /auth/me`); expiry is checked on every use, and a change of keys empties it.
    verified: Mutex<HashMap<[u8; 32], AccessClaims>>,
    /// Bumped when the accepted keys change: a token verified under the old set is not
    /// remembered after the change emptied the memo.
    key_set_generation: AtomicU64,
}

#[derive(Default)]
struct KeyringState {
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: Vec<Value>,
    loaded_at: Option<Instant>,
}

impl Keyring {
    /// A keyring for `issuer`/`audience`; call [`Keyring::load_or_create`] before use.
    pub fn new(
        store: Arc<dyn Store>,
        encryption_key: SecretKey,
        issuer: String,
        audience: String,
        access_ttl: Duration,
    ) -> Self {
        Self {
            store,
            sealer: Sealer::new(encryption_key),
            issuer,
            audience,
            access_ttl,
            state: RwLock::new(KeyringState::default()),
            verified: Mutex::new(HashMap::new()),
            key_set_generation: AtomicU64::new(0),
        }
    }

    /// Reads the keys from the database; creates the first key if there is none in use.
    pub async fn load_or_create(&self) -> anyhow::Result<()> {
        let records = self.store.signing_keys().await?;
        if !records.iter().any(|k| k.retired_at.is_none()) {
            self.rotate(system_audit("signing_key.created")).await?;
            return Ok(());
        }
        self.install(&records)
    }

    /// Re-reads the keys (another node or the CLI may have rotated them).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let records = self.store.signing_keys().await?;
        self.install(&records)
    }

    /// Generates a new key, makes it the signing key and retires the previous one.
    pub async fn rotate(&self, mut audit: AuditRecord) -> anyhow::Result<String> {
        let signing_key = SigningKey::from_bytes(&random_bytes::<32>());
        let kid = format!("fgk_{}", ulid::Ulid::new().to_string().to_lowercase());
        let public_key = URL_SAFE_NO_PAD.encode(signing_key.verifying_key().as_bytes());
        let private_key_encrypted = self.sealer.seal(&kid, signing_key.as_bytes())?;
        let record = SigningKeyRecord {
            kid: kid.clone(),
            algorithm: ALGORITHM.into(),
            public_key,
            private_key_encrypted,
            created_at: now(),
            retired_at: None,
        };
        audit.target_type = Some("signing_key".into());
        audit.target_id = Some(kid.clone());
        self.store.add_signing_key(&record, &audit).await?;
        self.reload().await?;
        Ok(kid)
    }

    fn install(&self, records: &[SigningKeyRecord]) -> anyhow::Result<()> {
        let now = now();
        let keep_until_after_retired = self.access_ttl.as_secs() as i64 + RETIRED_KEY_GRACE_SECS;
        let mut next = KeyringState {
            loaded_at: Some(Instant::now()),
            ..KeyringState::default()
        };
        for record in records {
            if record.algorithm != ALGORITHM {
                continue;
            }
            if let Some(retired) = record.retired_at {
                if retired + keep_until_after_retired < now {
                    continue;
                }
            }
            let decoding = DecodingKey::from_ed_components(&record.public_key)
                .with_context(|| format!("public key of {}", record.kid))?;
            next.verifying.insert(record.kid.clone(), decoding);
            next.jwks.push(json!({
                "kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig",
                "kid": record.kid, "x": record.public_key,
            }));
            if record.retired_at.is_none() && next.signing.is_none() {
                let seed = self
                    .sealer
                    .open(&record.kid, &record.private_key_encrypted)
                    .with_context(|| format!("signing key {}", record.kid))?;
                let seed: [u8; 32] = seed
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow!("bad key length"))?;
                let der = SigningKey::from_bytes(&seed)
                    .to_pkcs8_der()
                    .map_err(|e| anyhow!("encoding signing key: {e}"))?;
                next.signing = Some((record.kid.clone(), EncodingKey::from_ed_der(der.as_bytes())));
            }
        }
        anyhow::ensure!(next.signing.is_some(), "no signing key in use");
        let mut state = self
            .state
            .write()
            .map_err(|_| anyhow!("keyring lock poisoned"))?;
        let same_keys = state.verifying.len() == next.verifying.len()
            && next
                .verifying
                .keys()
                .all(|kid| state.verifying.contains_key(kid));
        *state = next;
        drop(state);
        if !same_keys {
            // a token remembered under a key no longer accepted must be refused
            self.key_set_generation.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut verified) = self.verified.lock() {
                verified.clear();
            }
        }
        Ok(())
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let state = self
            .state
            .read()
            .map_err(|_| anyhow!("keyring lock poisoned"))?;
        let (kid, key) = state
            .signing
            .as_ref()
            .ok_or_else(|| anyhow!("no signing key loaded"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Verifies an access token: EdDSA only, `typ: at+jwt`, a known `kid`, our issuer and
    /// audience, and `exp`/`nbf`. Session revocation is checked by the caller.
    pub async fn verify(&self, token: &str) -> Option<AccessClaims> {
        let digest: [u8; 32] = <Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Some(claims) = self.remembered(&digest) {
            return Some(claims);
        }
        let key_set = self.key_set_generation.load(Ordering::Acquire);
        let claims = self.verify_signed(token).await?;
        self.remember(digest, &claims, key_set);
        Some(claims)
    }

    /// The claims of a token verified before, while its `exp` and `nbf` still allow it.
    fn remembered(&self, digest: &[u8; 32]) -> Option<AccessClaims> {
        let (now, leeway) = (now(), LEEWAY_SECS as i64);
        let verified = self.verified.lock().ok()?;
        verified
            .get(digest)
            .filter(|claims| claims.exp >= now - leeway && claims.nbf <= now + leeway)
            .cloned()
    }

    /// Remembers a token verified under the key set `key_set`, unless the keys changed since.
    fn remember(&self, digest: [u8; 32], claims: &AccessClaims, key_set: u64) {
        let Ok(mut verified) = self.verified.lock() else {
            return;
        };
        if self.key_set_generation.load(Ordering::Acquire) != key_set {
            return;
        }
        if verified.len() >= VERIFIED_TOKENS {
            let oldest = now() - LEEWAY_SECS as i64;
            verified.retain(|_, claims| claims.exp >= oldest);
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(digest, claims.clone());
    }

    /// The full check: header, a known key, the signature, the claims.
    async fn verify_signed(&self, token: &str) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = access_token_kid(header).ok()?;
        if let Some(result) = self.verify_with(&kid, token) {
            return result;
        }
        // An unknown kid may be a key rotated in on another node: reload, at most every 2 s.
        let stale = self
            .state
            .read()
            .ok()?
            .loaded_at
            .is_none_or(|t| t.elapsed() >= RELOAD_AT_MOST_EVERY);
        if stale && self.reload().await.is_ok() {
            return self.verify_with(&kid, token).flatten();
        }
        None
    }

    /// `None` when the kid is unknown; `Some(None)` when the token fails verification.
    fn verify_with(&self, kid: &str, token: &str) -> Option<Option<AccessClaims>> {
        let state = self.state.read().ok()?;
        let key = state.verifying.get(kid)?;
        let validation = access_token_validation(&self.issuer, &self.audience);
        Some(
            jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
                .ok()
                .map(|d| d.claims),
        )
    }

    /// The public keys still accepted, as a JWK set.
    pub fn jwks(&self) -> Value {
        let keys = self
            .state
            .read()
            .map(|s| s.jwks.clone())
            .unwrap_or_default();
        json!({ "keys": keys })
    }

    /// The issuer (`iss`) of tokens signed here.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience (`aud`) of tokens signed here.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

fn system_audit(action: &str) -> AuditRecord {
    AuditRecord {
        id: fluxgate_core::ids::EventId::generate(),
        org_id: None,
        actor_type: fluxgate_core::stored::ActorKind::System,
        actor_id: None,
        action: action.into(),
        target_type: None,
        target_id: None,
        ip: None,
        user_agent: None,
        data: "{}".into(),
        created_at: now(),
    }
}

/// Derives the successor of a refresh token: HMAC-SHA256 under a key derived from the instance
/// secret. Deterministic, so a duplicate refresh within the reuse interval can be answered with
/// the very same new token without ever storing a token in the clear.
pub struct RefreshTokenDeriver(SecretKey);

impl RefreshTokenDeriver {
    /// A deriver with its own key.
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// The token that replaces `token`.
    pub fn successor(&self, token: &str) -> SecretString {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret()) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        mac.update(token.as_bytes());
        SecretString::from(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-size-key MACs; HMAC has none.
    std::process::abort()
}
