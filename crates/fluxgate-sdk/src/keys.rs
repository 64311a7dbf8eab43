//! API keys: verifying inbound keys into a [`KeyContext`], checking entitlements on it, and
//! issuing, listing, rotating and revoking keys.

use crate::client::{Error, Flux};
use crate::gate::Owed;
use fluxgate_proto::{
    CreditRefill, Credits, CreditsChange, KeyChanges, LimitSpend, NamedLimitState, NewCredits,
    NewKey, RateLimit, RotateKey, Verdict, VerifyRequest,
};
pub use fluxgate_proto::{IssuedKey, Key, OrgRef, RateLimitState};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

/// Everything Fluxgate knows about a valid key.
///
/// ```no_run
/// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
/// let ctx = flux.keys().verify("fg_live_…").await?;
/// println!(
///     "{} on {} may {:?}; {} of {} calls left",
///     ctx.org.name, ctx.plan, ctx.scopes, ctx.ratelimit.remaining, ctx.ratelimit.limit
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct KeyContext {
    /// `key_…`
    pub key_id: String,
    /// The key's org.
    pub org: OrgRef,
    /// The org's plan.
    pub plan: String,
    /// The key's scopes.
    pub scopes: Vec<String>,
    /// What the org may do: its plan's entitlements with the operator's overrides and the
    /// feature flags that are on for it.
    pub entitlements: Vec<String>,
    /// Feature-flag variants for the org: `on` (or the variant) for each flag that is on for
    /// it, the default variant of others that have one; a flag that is off is absent.
    pub flags: std::collections::BTreeMap<String, String>,
    /// Rate-limit state after this call.
    pub ratelimit: RateLimitState,
    /// When the key expires (RFC 3339).
    pub expires_at: Option<String>,
    /// The metadata stored with the key.
    pub metadata: Value,
    /// `live` or `test`.
    pub environment: String,
    /// The key's usage credits after this call, when it has credits.
    pub credits: Option<Credits>,
    /// The named limits this call spent, in the order asked.
    pub ratelimits: Vec<NamedLimitState>,
    /// The CIDR ranges the key may be used from (empty: any).
    pub ip_allowlist: Vec<String>,
}

impl KeyContext {
    /// The key's org id.
    pub fn org_id(&self) -> &str {
        &self.org.id
    }
}

/// A key as listed (never its secret): the wire type itself.
pub type KeyInfo = Key;

impl TryFrom<Verdict> for KeyContext {
    type Error = Error;

    /// The context of a `VALID` verdict (which always carries all of it).
    fn try_from(verdict: Verdict) -> Result<Self, Error> {
        let missing = |what: &str| Error::Unreachable(format!("verify answer without {what}"));
        Ok(Self {
            key_id: verdict.key_id.ok_or_else(|| missing("key_id"))?,
            org: verdict.org.ok_or_else(|| missing("org"))?,
            plan: verdict.plan.ok_or_else(|| missing("plan"))?,
            scopes: verdict.scopes.unwrap_or_default(),
            entitlements: verdict.entitlements.unwrap_or_default(),
            flags: verdict.flags.unwrap_or_default(),
            ratelimit: verdict.ratelimit.ok_or_else(|| missing("ratelimit"))?,
            expires_at: verdict.expires_at,
            metadata: verdict.metadata.unwrap_or(Value::Null),
            environment: verdict.environment.ok_or_else(|| missing("environment"))?,
            credits: verdict.credits,
            ratelimits: verdict.ratelimits.unwrap_or_default(),
            ip_allowlist: verdict.ip_allowlist.unwrap_or_default(),
        })
    }
}

/// `flux.keys()`
pub struct Keys<'a> {
    pub(crate) flux: &'a Flux,
}

impl Keys<'_> {
    /// Verifies a key your caller presented. `Ok` only for a valid key;
    /// [`Error::InvalidKey`] carries the reason (`REVOKED`, `RATE_LIMITED`, …).
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) {
    /// match flux.keys().verify("fg_live_…").await {
    ///     Ok(ctx) => println!("{} may call us", ctx.org.name),
    ///     Err(fluxgate_sdk::Error::InvalidKey { code, .. }) => println!("refused: {code}"),
    ///     Err(other) => println!("cannot tell right now: {other}"),
    /// }
    /// # }
    /// ```
    pub async fn verify(&self, key: &str) -> Result<KeyContext, Error> {
        self.verify_with(key, &[]).await
    }

    /// Verifies a key and requires `scopes` of it (`INSUFFICIENT_SCOPE` otherwise).
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let ctx = flux.keys().verify_with("fg_live_…", &["events:write"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_with(&self, key: &str, scopes: &[&str]) -> Result<KeyContext, Error> {
        self.verify_settling(key, scopes, "", &Owed::default(), &[], None)
            .await
    }

    /// Verifies a key, requiring `scopes`, and spends its named limits: `(name, cost)` each, in
    /// order — the key's own limit of that name, else its org's. `RATE_LIMITED` names the limit
    /// that refused in `rate_limited_by`; [`KeyContext::ratelimits`] shows what is left.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let ctx = flux.keys().verify_spending("fg_live_…", &[], &[("tokens", 1200)]).await?;
    /// println!("{:?} tokens left", ctx.ratelimits[0].remaining);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_spending(
        &self,
        key: &str,
        scopes: &[&str],
        limits: &[(&str, u64)],
    ) -> Result<KeyContext, Error> {
        let limits: Vec<LimitSpend> = limits
            .iter()
            .map(|&(name, cost)| LimitSpend {
                name: name.to_owned(),
                cost: Some(cost),
            })
            .collect();
        self.verify_settling(key, scopes, "", &Owed::default(), &limits, None)
            .await
    }

    /// Verifies with every field of the request yours to set — the caller's `ip` for a key
    /// with an IP allowlist, `cost`, `endpoint`, named `ratelimits`.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// use fluxgate_sdk::VerifyRequest;
    /// let ctx = flux.keys().verify_request(VerifyRequest {
    ///     key: "fg_live_…".into(),
    ///     ip: Some("203.0.113.7".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn verify_request(&self, request: VerifyRequest) -> Result<KeyContext, Error> {
        let verdict: Verdict = self
            .flux
            .call(Method::POST, "/keys/verify", Some(&to_body(&request)?))
            .await?;
        if verdict.valid {
            KeyContext::try_from(verdict)
        } else {
            Err(Error::InvalidKey {
                code: verdict.code.clone(),
                details: serde_json::to_value(&verdict).unwrap_or(Value::Null),
            })
        }
    }

    /// Verifies a key for a call to `endpoint` ("" when unnamed) from `ip`, requiring `scopes`
    /// and spending the named `limits`, and settles `owed` calls served from a cached verdict:
    /// attributed with this one and paid for in its cost.
    pub(crate) async fn verify_settling<S: AsRef<str>>(
        &self,
        key: &str,
        scopes: &[S],
        endpoint: &str,
        owed: &Owed,
        limits: &[LimitSpend],
        ip: Option<std::net::IpAddr>,
    ) -> Result<KeyContext, Error> {
        let request = VerifyRequest {
            key: key.to_owned(),
            scopes: scopes.iter().map(|s| s.as_ref().to_owned()).collect(),
            endpoint: (!endpoint.is_empty()).then(|| endpoint.to_owned()),
            cost: Some(owed.total() + 1),
            cached_calls: owed
                .by_endpoint()
                .iter()
                .map(|(endpoint, calls)| (endpoint.clone(), *calls))
                .collect(),
            ratelimits: limits.to_vec(),
            ip: ip.map(|ip| ip.to_string()),
        };
        self.verify_request(request).await
    }

    /// Starts issuing a key.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let issued = flux.keys().create()
    ///     .for_org("org_01…")
    ///     .with_scopes(["accounts:read"])
    ///     .expires_in_days(90)
    ///     .issue()
    ///     .await?;
    /// println!("give them {}", issued.key);
    /// # Ok(())
    /// # }
    /// ```
    pub fn create(&self) -> CreateKey {
        CreateKey::new(self.flux.clone())
    }

    /// An org's keys (first page, up to 200).
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// for key in flux.keys().list("org_01…").await? {
    ///     println!("{} {} {}", key.start, key.name, key.status);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list(&self, org_id: &str) -> Result<Vec<KeyInfo>, Error> {
        self.flux
            .call(Method::GET, &format!("/orgs/{org_id}/keys?limit=200"), None)
            .await
    }

    /// A new secret for a key; the old one works for `grace_period_seconds` more.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let rotated = flux.keys().rotate("org_01…", "key_01…", 24 * 3600).await?;
    /// println!("new secret {}; the old one works for a day", rotated.key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rotate(
        &self,
        org_id: &str,
        key_id: &str,
        grace_period_seconds: u64,
    ) -> Result<IssuedKey, Error> {
        let body = to_body(&RotateKey {
            grace_period_seconds: Some(grace_period_seconds),
        })?;
        self.flux
            .call(
                Method::POST,
                &format!("/orgs/{org_id}/keys/{key_id}/rotate"),
                Some(&body),
            )
            .await
    }

    /// Sets, tops up or re-plans a key's usage credits; the key as it now stands.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// use fluxgate_sdk::CreditsChange;
    /// let topped_up = CreditsChange { add: Some(10_000), ..Default::default() };
    /// let key = flux.keys().change_credits("org_01…", "key_01…", topped_up).await?;
    /// println!("{:?} credits left", key.credits.map(|c| c.remaining));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn change_credits(
        &self,
        org_id: &str,
        key_id: &str,
        change: CreditsChange,
    ) -> Result<KeyInfo, Error> {
        let body = to_body(&KeyChanges {
            credits: Some(Some(change)),
            ..KeyChanges::default()
        })?;
        self.flux
            .call(
                Method::PATCH,
                &format!("/orgs/{org_id}/keys/{key_id}"),
                Some(&body),
            )
            .await
    }

    /// Revokes a key at once.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// flux.keys().revoke("org_01…", "key_01…").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn revoke(&self, org_id: &str, key_id: &str) -> Result<(), Error> {
        self.flux
            .call(
                Method::DELETE,
                &format!("/orgs/{org_id}/keys/{key_id}"),
                None,
            )
            .await
    }
}

/// A key being issued: `flux.keys().create().for_org(…).with_scopes(…).issue()`, by the async
/// client (`C` = [`Flux`]) or the [`blocking`](crate::blocking) one.
pub struct CreateKey<C = Flux> {
    pub(crate) client: C,
    pub(crate) org_id: String,
    pub(crate) body: NewKey,
}

impl<C> CreateKey<C> {
    pub(crate) fn new(client: C) -> Self {
        Self {
            client,
            org_id: String::new(),
            body: NewKey {
                name: "API key".to_owned(),
                ..NewKey::default()
            },
        }
    }

    /// The org the key is for.
    pub fn for_org(mut self, org_id: &str) -> Self {
        self.org_id = org_id.to_owned();
        self
    }

    /// Its name (default `API key`).
    pub fn named(mut self, name: &str) -> Self {
        self.body.name = name.to_owned();
        self
    }

    /// Its scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.body.scopes = scopes.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// Expiry in days from now.
    pub fn expires_in_days(mut self, days: u32) -> Self {
        self.body.expires_in_days = Some(days);
        self
    }

    /// Its own rate limit (with several nodes, spent from each node's lease).
    pub fn rate_limit(mut self, limit: u64, window_seconds: u64) -> Self {
        self.body.rate_limit = Some(RateLimit {
            limit,
            window_seconds,
            exact: false,
        });
        self
    }

    /// Its own rate limit, decided exactly across nodes (a Redis round trip per call).
    pub fn exact_rate_limit(mut self, limit: u64, window_seconds: u64) -> Self {
        self.body.rate_limit = Some(RateLimit {
            limit,
            window_seconds,
            exact: true,
        });
        self
    }

    /// Metadata returned by every verify of the key.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.body.metadata = Some(metadata);
        self
    }

    /// The addresses and CIDR ranges (v4 or v6) the key may be used from; verify answers
    /// `FORBIDDEN_IP` for callers elsewhere.
    pub fn ip_allowlist<I, S>(mut self, entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.body.ip_allowlist = entries.into_iter().map(Into::into).collect();
        self
    }

    /// A named limit of the key (`tokens`, 50,000 an hour): verifies that name it spend it.
    pub fn named_limit(mut self, name: &str, limit: u64, window_seconds: u64) -> Self {
        self.body.ratelimits.push(fluxgate_proto::NamedLimit {
            name: name.to_owned(),
            limit,
            window_seconds,
        });
        self
    }

    /// Usage credits: each verify spends its cost, and at zero the key answers
    /// `USAGE_EXCEEDED`; with `refill`, they go back to its amount daily or monthly.
    pub fn credits(mut self, remaining: u64, refill: Option<CreditRefill>) -> Self {
        self.body.credits = Some(NewCredits { remaining, refill });
        self
    }
}

impl CreateKey<Flux> {
    /// Issues it.
    pub async fn issue(self) -> Result<IssuedKey, Error> {
        self.client
            .call(
                Method::POST,
                &format!("/orgs/{}/keys", self.org_id),
                Some(&to_body(&self.body)?),
            )
            .await
    }
}

/// `flux.entitlements()`: decided from a verified key's context, without a call.
pub struct Entitlements;

impl Entitlements {
    /// May the key's org use `entitlement` — by its plan, an override the operator set for it,
    /// or a feature flag that is on for it?
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::Flux, ctx: fluxgate_sdk::KeyContext) {
    /// if flux.entitlements().check_for_key(&ctx, "bulk_export") { /* … */ }
    /// # }
    /// ```
    pub fn check_for_key(&self, ctx: &KeyContext, entitlement: &str) -> bool {
        ctx.entitlements.iter().any(|e| e == entitlement)
    }
}

/// `flux.flags()`: feature-flag variants from a verified key's context, without a call.
pub struct Flags;

impl Flags {
    /// The variant of `flag` for the key's org: `on` for a boolean flag that is on for it, the
    /// flag's variant or default variant otherwise; `None` when the flag is off for the org
    /// (and has no default variant) or not defined. Whether a flag is on for the org is also whether its name is in
    /// the entitlements ([`Entitlements::check_for_key`]).
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::Flux, ctx: fluxgate_sdk::KeyContext) {
    /// if flux.flags().variant_for_key(&ctx, "new_billing") == Some("v2") { /* … */ }
    /// # }
    /// ```
    pub fn variant_for_key<'c>(&self, ctx: &'c KeyContext, flag: &str) -> Option<&'c str> {
        ctx.flags.get(flag).map(String::as_str)
    }
}

/// A request body as JSON.
pub(crate) fn to_body<T: serde::Serialize>(body: &T) -> Result<Value, Error> {
    serde_json::to_value(body).map_err(|e| Error::Unreachable(format!("unencodable request: {e}")))
}
