//! The same client for synchronous code, as `reqwest::blocking` is to reqwest: every call blocks
//! until Fluxgate answers (or the timeout passes).
//!
//! ```no_run
//! # fn f() -> Result<(), fluxgate_sdk::Error> {
//! use fluxgate_sdk::blocking::Flux;
//!
//! let flux = Flux::init("fg_live_…your operator key…");
//! let ctx = flux.keys().verify("fg_live_…the key your caller sent…")?;
//! println!("org {} with scopes {:?}", ctx.org.id, ctx.scopes);
//! # Ok(())
//! # }
//! ```
//!
//! The requests run on a small runtime of the client's own (one background thread), so these
//! calls work from any thread — although inside async code the async [`crate::Flux`] is the one
//! to use, since a blocking call holds its thread.

use crate::client::{Error, FluxBuilder};
use crate::keys::{CreateKey, IssuedKey, KeyContext, KeyInfo};
use crate::tokens::AccessClaims;
use crate::usage::{TrackEvent, TrackOutcome};
use std::future::Future;
use std::sync::Arc;

/// A blocking Fluxgate client. Cheap to clone; share one per process.
///
/// ```no_run
/// let flux = fluxgate_sdk::blocking::Flux::init("fg_live_…");
/// let same_client = flux.clone();
/// ```
#[derive(Debug, Clone)]
pub struct Flux {
    inner: crate::Flux,
    runtime: Arc<Background>,
}

/// The runtime the requests run on; shut down without waiting when the last client goes, so
/// dropping a client is safe anywhere (even inside another runtime).
#[derive(Debug)]
struct Background(Result<Option<tokio::runtime::Runtime>, String>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(runtime) = &mut self.0 {
            if let Some(runtime) = runtime.take() {
                runtime.shutdown_background();
            }
        }
    }
}

impl FluxBuilder {
    /// The blocking client with these settings.
    ///
    /// ```no_run
    /// let flux = fluxgate_sdk::Flux::builder("fg_live_…")
    ///     .base_url("https://auth.example.com")
    ///     .build_blocking();
    /// ```
    pub fn build_blocking(self) -> Flux {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fluxgate-sdk")
            .enable_all()
            .build()
            .map(Some)
            .map_err(|e| format!("cannot start the client's runtime: {e}"));
        Flux {
            inner: self.build(),
            runtime: Arc::new(Background(runtime)),
        }
    }
}

impl Flux {
    /// A client with default settings authenticating with `api_key`.
    pub fn init(api_key: impl Into<String>) -> Self {
        crate::Flux::builder(api_key).build_blocking()
    }

    /// API keys: verify, issue, list, rotate, revoke.
    pub fn keys(&self) -> Keys<'_> {
        Keys { flux: self }
    }

    /// Entitlement checks on a verified key's context (no call to Fluxgate).
    pub fn entitlements(&self) -> crate::Entitlements {
        crate::Entitlements
    }

    /// Metered usage.
    pub fn usage(&self) -> Usage<'_> {
        Usage { flux: self }
    }

    /// Offline verification of users' access tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens { flux: self }
    }

    /// Runs `call` on the async client in the background runtime and waits for its answer.
    fn run<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(crate::Flux) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let runtime = match &self.runtime.0 {
            Ok(Some(runtime)) => runtime,
            Ok(None) => return Err(Error::Unreachable("the client is shutting down".into())),
            Err(why) => return Err(Error::Unreachable(why.clone())),
        };
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let future = call(self.inner.clone());
        runtime.spawn(async move {
            let _ = answer.send(future.await);
        });
        answered
            .recv()
            .unwrap_or_else(|_| Err(Error::Unreachable("the request was abandoned".into())))
    }
}

/// `flux.keys()` of the blocking client.
pub struct Keys<'a> {
    flux: &'a Flux,
}

impl Keys<'_> {
    /// Verifies a key your caller presented; see [`crate::Keys::verify`].
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) {
    /// match flux.keys().verify("fg_live_…") {
    ///     Ok(ctx) => println!("{} may call us", ctx.org.name),
    ///     Err(fluxgate_sdk::Error::InvalidKey { code, .. }) => println!("refused: {code}"),
    ///     Err(other) => println!("cannot tell right now: {other}"),
    /// }
    /// # }
    /// ```
    pub fn verify(&self, key: &str) -> Result<KeyContext, Error> {
        self.verify_with(key, &[])
    }

    /// Verifies a key and requires `scopes` of it.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let ctx = flux.keys().verify_with("fg_live_…", &["events:write"])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_with(&self, key: &str, scopes: &[&str]) -> Result<KeyContext, Error> {
        let key = key.to_owned();
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.flux.run(move |flux| async move {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            flux.keys().verify_with(&key, &scopes).await
        })
    }

    /// Verifies a key, requiring `scopes`, and spends its named limits `(name, cost)`.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let ctx = flux.keys().verify_spending("fg_live_…", &[], &[("tokens", 1200)])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_spending(
        &self,
        key: &str,
        scopes: &[&str],
        limits: &[(&str, u64)],
    ) -> Result<KeyContext, Error> {
        let key = key.to_owned();
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let limits: Vec<(String, u64)> = limits.iter().map(|&(n, c)| (n.to_owned(), c)).collect();
        self.flux.run(move |flux| async move {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let limits: Vec<(&str, u64)> = limits.iter().map(|(n, c)| (n.as_str(), *c)).collect();
            flux.keys().verify_spending(&key, &scopes, &limits).await
        })
    }

    /// Starts issuing a key; finish with [`CreateKey::issue`](CreateKey#method.issue-1).
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let issued = flux.keys().create()
    ///     .for_org("org_01…")
    ///     .with_scopes(["accounts:read"])
    ///     .expires_in_days(90)
    ///     .issue()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn create(&self) -> CreateKey<Flux> {
        CreateKey::new(self.flux.clone())
    }

    /// An org's keys (first page, up to 200).
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let keys = flux.keys().list("org_01…")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn list(&self, org_id: &str) -> Result<Vec<KeyInfo>, Error> {
        let org_id = org_id.to_owned();
        self.flux
            .run(move |flux| async move { flux.keys().list(&org_id).await })
    }

    /// A new secret for a key; the old one works for `grace_period_seconds` more.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let rotated = flux.keys().rotate("org_01…", "key_01…", 0)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn rotate(
        &self,
        org_id: &str,
        key_id: &str,
        grace_period_seconds: u64,
    ) -> Result<IssuedKey, Error> {
        let (org_id, key_id) = (org_id.to_owned(), key_id.to_owned());
        self.flux.run(move |flux| async move {
            flux.keys()
                .rotate(&org_id, &key_id, grace_period_seconds)
                .await
        })
    }

    /// Sets, tops up or re-plans a key's usage credits; the key as it now stands.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let set = fluxgate_sdk::CreditsChange { remaining: Some(500), ..Default::default() };
    /// flux.keys().change_credits("org_01…", "key_01…", set)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn change_credits(
        &self,
        org_id: &str,
        key_id: &str,
        change: crate::CreditsChange,
    ) -> Result<KeyInfo, Error> {
        let (org_id, key_id) = (org_id.to_owned(), key_id.to_owned());
        self.flux.run(move |flux| async move {
            flux.keys().change_credits(&org_id, &key_id, change).await
        })
    }

    /// Revokes a key at once.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// flux.keys().revoke("org_01…", "key_01…")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn revoke(&self, org_id: &str, key_id: &str) -> Result<(), Error> {
        let (org_id, key_id) = (org_id.to_owned(), key_id.to_owned());
        self.flux
            .run(move |flux| async move { flux.keys().revoke(&org_id, &key_id).await })
    }
}

impl CreateKey<Flux> {
    /// Issues it.
    pub fn issue(self) -> Result<IssuedKey, Error> {
        let (org_id, body) = (self.org_id, self.body);
        self.client.run(move |flux| {
            let mut create = CreateKey::new(flux);
            create.org_id = org_id;
            create.body = body;
            create.issue()
        })
    }
}

/// `flux.usage()` of the blocking client.
pub struct Usage<'a> {
    flux: &'a Flux,
}

impl Usage<'_> {
    /// Records one event; see [`crate::Usage::track`].
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// flux.usage().track(fluxgate_sdk::TrackEvent::new("tokens", "org_01…", 2.0))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn track(&self, event: TrackEvent) -> Result<TrackOutcome, Error> {
        self.flux
            .run(move |flux| async move { flux.usage().track(event).await })
    }

    /// Records up to 1,000 events in one request; one outcome per event, in order.
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// flux.usage().track_batch(vec![fluxgate_sdk::TrackEvent::new("tokens", "org_01…", 2.0)])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn track_batch(&self, events: Vec<TrackEvent>) -> Result<Vec<TrackOutcome>, Error> {
        self.flux
            .run(move |flux| async move { flux.usage().track_batch(events).await })
    }
}

/// `flux.tokens()` of the blocking client.
pub struct Tokens<'a> {
    flux: &'a Flux,
}

impl Tokens<'_> {
    /// Verifies an access token offline; see [`crate::Tokens::verify_access_token`].
    ///
    /// ```no_run
    /// # fn f(flux: fluxgate_sdk::blocking::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// let claims = flux.tokens().verify_access_token("eyJ…")?;
    /// println!("user {}", claims.sub);
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, Error> {
        let token = token.to_owned();
        self.flux
            .run(move |flux| async move { flux.tokens().verify_access_token(&token).await })
    }
}
