//! Offline verification of Fluxgate access tokens (JWTs) against the instance's JWKS: EdDSA
//! only, `typ: at+jwt`, issuer and audience checked, keys cached and refetched on an unknown `kid`.

use crate::client::{Error, Flux};
pub use fluxgate_core::claims::AccessClaims;
use fluxgate_core::claims::{access_token_kid, access_token_validation};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// An unknown `kid` refetches the JWKS at most this often, so invented `kid`s cannot turn into a
/// flood of fetches.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// Known keys are refreshed this often, so retired keys stop being accepted.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(3600);

/// The JWKS as last fetched, shared by every clone of a [`Flux`].
#[derive(Default)]
pub(crate) struct JwksCache {
    keys: RwLock<FetchedKeys>,
    /// One fetch at a time; others wait for it and use its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FetchedKeys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

impl FetchedKeys {
    fn age(&self) -> Option<Duration> {
        self.fetched_at.map(|at| at.elapsed())
    }
}

/// `flux.tokens()`
pub struct Tokens<'a> {
    pub(crate) flux: &'a Flux,
}

impl Tokens<'_> {
    /// Verifies an access token issued by Fluxgate without calling it (except to fetch the
    /// public keys, on first use, on an unknown `kid` and hourly) and returns its claims.
    ///
    /// Offline verification cannot see a session revoked after the token was issued; access tokens
    /// are short-lived (15 minutes by default) for that reason. Call `GET /auth/me` when you need
    /// the live answer.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux, jwt: &str) {
    /// match flux.tokens().verify_access_token(jwt).await {
    ///     Ok(claims) => println!("user {} in org {:?} may {:?}", claims.sub, claims.org, claims.perms),
    ///     Err(fluxgate_sdk::Error::InvalidToken(why)) => println!("refused: {why}"),
    ///     Err(other) => println!("cannot tell right now: {other}"),
    /// }
    /// # }
    /// ```
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims, Error> {
        let invalid = |why: &str| Error::InvalidToken(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let kid = access_token_kid(header).map_err(invalid)?;
        let cache = &self.flux.jwks;
        let needs_fetch = {
            let keys = cache
                .keys
                .read()
                .map_err(|_| invalid("key cache poisoned"))?;
            match keys.age() {
                None => true,
                Some(age) if age >= KEYS_FRESH_FOR => true,
                Some(age) => !keys.by_kid.contains_key(&kid) && age >= REFETCH_AT_MOST_EVERY,
            }
        };
        if needs_fetch {
            self.refetch(&kid).await?;
        }
        let keys = cache
            .keys
            .read()
            .map_err(|_| invalid("key cache poisoned"))?;
        let key = keys
            .by_kid
            .get(&kid)
            .ok_or_else(|| invalid("signed by a key this instance does not publish"))?;
        let settings = self.flux.settings();
        let validation =
            access_token_validation(settings.expected_issuer(), &settings.token_audience);
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|error| Error::InvalidToken(describe(&error)))
    }

    /// Fetches the JWKS unless another task did so while this one waited for `kid`.
    async fn refetch(&self, kid: &str) -> Result<(), Error> {
        let cache = &self.flux.jwks;
        let _one_at_a_time = cache.fetching.lock().await;
        let fetched_meanwhile = cache.keys.read().is_ok_and(|keys| {
            keys.by_kid.contains_key(kid)
                && keys.age().is_some_and(|age| age < REFETCH_AT_MOST_EVERY)
        });
        if fetched_meanwhile {
            return Ok(());
        }
        let set: JwkSet = self.flux.get_json("/.well-known/jwks.json").await?;
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| {
                // keys we cannot use (other algorithms) are skipped, not fatal
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        let mut keys = cache
            .keys
            .write()
            .map_err(|_| Error::InvalidToken("key cache poisoned".into()))?;
        *keys = FetchedKeys {
            by_kid,
            fetched_at: Some(Instant::now()),
        };
        Ok(())
    }
}

/// Why a signed token was refused, in words that name the failed check and nothing secret.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet".into(),
        ErrorKind::InvalidIssuer => "issued by another instance (iss)".into(),
        ErrorKind::InvalidAudience => "meant for another audience (aud)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        _ => "malformed token".into(),
    }
}
