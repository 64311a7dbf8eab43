//! A tower layer for your own API: authenticates inbound `X-API-Key` / `Authorization: Bearer`
//! keys through Fluxgate, requires scopes, hands the [`KeyContext`](crate::KeyContext) to your handlers, sets the
//! `X-RateLimit-*` headers and answers refusals in Fluxgate's error envelope.

use crate::client::Flux;
use crate::gate::{ClientIpOf, EndpointOf, Gate, GateSettings, Refusal, MAX_CACHE_TTL};
use crate::keys::RateLimitState;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Protects every route it wraps with Fluxgate API keys.
///
/// Valid keys reach the handler with their [`KeyContext`](crate::KeyContext) in the request extensions (in axum:
/// `Extension<KeyContext>`). Refusals never reach it: `401 UNAUTHORIZED` (no key, or one that is
/// malformed, unknown, revoked, expired or of a disabled org — one message for all),
/// `403 INSUFFICIENT_SCOPE` with `required_scope`, `403 FORBIDDEN` with `required_entitlement`
/// (see [`KeyAuthLayer::require_entitlement`]), `429 RATE_LIMITED` with `retry_after` and
/// `Retry-After` (and the `limit` when a named one refused), `403 FORBIDDEN_IP` (a key with an
/// IP allowlist, from elsewhere — see [`KeyAuthLayer::client_ip`]), `429 QUOTA_EXCEEDED`, `429 USAGE_EXCEEDED` (the key's credits are spent), and
/// `503 UNAVAILABLE` when Fluxgate cannot be reached (fail closed).
///
/// Verdicts are cached for at most a second (see [`KeyAuthLayer::cache_for`]): a key's remaining
/// allowance is spent locally and charged on its next verify, so the rate limit and the monthly
/// quota still count every request. A key with usage credits is verified on every request, so
/// its credits are spent exactly.
///
/// ```no_run
/// use axum::{routing::get, Extension, Router};
/// use fluxgate_sdk::{Flux, KeyAuthLayer, KeyContext};
///
/// async fn events(Extension(key): Extension<KeyContext>) -> String {
///     format!("events of {}", key.org.name)
/// }
///
/// let flux = Flux::init("fg_live_…a key with keys:verify…");
/// let app: Router = Router::new()
///     .route("/v1/events", get(events))
///     .layer(KeyAuthLayer::new(flux).require_scopes(["events:read"]));
/// ```
#[derive(Clone)]
pub struct KeyAuthLayer {
    gate: Arc<Gate>,
}

impl KeyAuthLayer {
    /// Keys verified through `flux` (whose own key needs `keys:verify`), no scope required,
    /// verdicts cached for a second.
    pub fn new(flux: Flux) -> Self {
        Self {
            gate: Arc::new(Gate::new(GateSettings {
                flux,
                scopes: Vec::new(),
                cache_ttl: MAX_CACHE_TTL,
                endpoint_of: None,
                limits: Vec::new(),
                client_ip_of: None,
                entitlements: Vec::new(),
            })),
        }
    }

    /// Scopes every key must hold (`403 INSUFFICIENT_SCOPE` otherwise).
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// let layer = fluxgate_sdk::KeyAuthLayer::new(flux).require_scopes(["events:read"]);
    /// ```
    pub fn require_scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.reconfigure(|settings| settings.scopes = scopes)
    }

    /// An entitlement every key's org must have — by its plan, an operator's override or a
    /// feature flag — or the request is refused with `403 FORBIDDEN` naming
    /// `required_entitlement` (after the key is verified: the call counts against its limits).
    /// Call it again to require more than one.
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// let exports = fluxgate_sdk::KeyAuthLayer::new(flux).require_entitlement("bulk_export");
    /// ```
    pub fn require_entitlement(self, entitlement: impl Into<String>) -> Self {
        let entitlement = entitlement.into();
        self.reconfigure(|settings| settings.entitlements.push(entitlement))
    }

    /// How long a verdict is reused: at most one second (longer values are cut to one);
    /// `Duration::ZERO` asks Fluxgate on every request.
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// use std::time::Duration;
    /// let every_request = fluxgate_sdk::KeyAuthLayer::new(flux).cache_for(Duration::ZERO);
    /// ```
    pub fn cache_for(self, ttl: Duration) -> Self {
        self.reconfigure(|settings| settings.cache_ttl = ttl.min(MAX_CACHE_TTL))
    }

    /// Names each request's endpoint so Fluxgate attributes the call to it (`GET /usage?endpoint=`),
    /// calls served from the cache included. Return a route template, not the raw path, so that
    /// ids do not make every call its own endpoint.
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// use axum::extract::MatchedPath;
    /// let layer = fluxgate_sdk::KeyAuthLayer::new(flux).endpoint(|request| {
    ///     let route = request.extensions.get::<MatchedPath>()?;
    ///     Some(format!("{} {}", request.method, route.as_str()))
    /// });
    /// ```
    pub fn endpoint<F>(self, name: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        let name: EndpointOf = Arc::new(name);
        self.reconfigure(|settings| settings.endpoint_of = Some(name))
    }

    /// Named limits every request through the layer spends — `(name, cost)` each, the key's
    /// own limit of that name, else its org's — refused with `429 RATE_LIMITED` naming the
    /// `limit` and a `Retry-After`. Keys are then verified on every request (the spend is exact).
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// let layer = fluxgate_sdk::KeyAuthLayer::new(flux).spend_limits([("exports", 1)]);
    /// ```
    pub fn spend_limits<I, S>(self, limits: I) -> Self
    where
        I: IntoIterator<Item = (S, u64)>,
        S: Into<String>,
    {
        let limits = limits
            .into_iter()
            .map(|(name, cost)| fluxgate_proto::LimitSpend {
                name: name.into(),
                cost: Some(cost),
            })
            .collect();
        self.reconfigure(|settings| settings.limits = limits)
    }

    /// Tells each request's client address, which Fluxgate checks against a key's IP
    /// allowlist (and the layer, for verdicts it reuses). Without it, keys that have an
    /// allowlist are refused with `403 FORBIDDEN_IP` (fail closed); keys without one are not
    /// affected. Behind a proxy, return the address it forwarded — only from a proxy you trust.
    ///
    /// ```no_run
    /// # let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// use axum::extract::ConnectInfo;
    /// use std::net::SocketAddr;
    /// let layer = fluxgate_sdk::KeyAuthLayer::new(flux).client_ip(|request| {
    ///     let ConnectInfo(peer) = request.extensions.get::<ConnectInfo<SocketAddr>>()?;
    ///     Some(peer.ip())
    /// });
    /// ```
    pub fn client_ip<F>(self, of: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    {
        let of: ClientIpOf = Arc::new(of);
        self.reconfigure(|settings| settings.client_ip_of = Some(of))
    }

    fn reconfigure(self, change: impl FnOnce(&mut GateSettings)) -> Self {
        let mut settings = self.gate.settings.clone();
        change(&mut settings);
        Self {
            gate: Arc::new(Gate::new(settings)),
        }
    }
}

impl<S> tower_layer::Layer<S> for KeyAuthLayer {
    type Service = KeyAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyAuth {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service [`KeyAuthLayer`] wraps around yours.
#[derive(Clone)]
pub struct KeyAuth<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for KeyAuth<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // the clone that was polled ready serves this request; the fresh clone waits for the next
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let presented = presented_key(request.headers());
            let mut endpoint = String::new();
            let mut ip = None;
            if gate.settings.endpoint_of.is_some() || gate.settings.client_ip_of.is_some() {
                let (parts, body) = request.into_parts();
                if let Some(name) = &gate.settings.endpoint_of {
                    endpoint = name(&parts).unwrap_or_default();
                }
                if let Some(of) = &gate.settings.client_ip_of {
                    ip = of(&parts);
                }
                request = Request::from_parts(parts, body);
            }
            let admitted = gate
                .admit(presented.as_deref(), &endpoint, ip)
                .await
                .and_then(|context| {
                    let lacking = gate
                        .settings
                        .entitlements
                        .iter()
                        .find(|e| !context.entitlements.contains(e));
                    match lacking {
                        Some(required) => Err(Refusal::MissingEntitlement {
                            required: required.clone(),
                        }),
                        None => Ok(context),
                    }
                });
            match admitted {
                Ok(context) => {
                    let ratelimit = context.ratelimit;
                    request.extensions_mut().insert(context);
                    let mut response = inner.call(request).await?;
                    set_ratelimit_headers(response.headers_mut(), &ratelimit);
                    Ok(response)
                }
                Err(refusal) => Ok(refused(refusal)),
            }
        })
    }
}

/// The key in `X-API-Key`, or a bearer value that parses as one.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let header = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    fluxgate_core::apikey::presented_key(header("x-api-key"), header("authorization"))
        .map(str::to_owned)
}

fn set_ratelimit_headers(headers: &mut HeaderMap, ratelimit: &RateLimitState) {
    for (name, value) in [
        ("x-ratelimit-limit", ratelimit.limit),
        ("x-ratelimit-remaining", ratelimit.remaining),
        ("x-ratelimit-reset", ratelimit.reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// A refusal in Fluxgate's envelope: `{"error": {"code", "message", …details}}`.
fn refused<B: From<String>>(refusal: Refusal) -> Response<B> {
    let mut headers = HeaderMap::new();
    let (status, error) = match refusal {
        Refusal::Unauthorized => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            (
                StatusCode::UNAUTHORIZED,
                json!({ "code": "UNAUTHORIZED", "message": "missing or invalid API key" }),
            )
        }
        Refusal::InsufficientScope { required } => (
            StatusCode::FORBIDDEN,
            json!({ "code": "INSUFFICIENT_SCOPE", "message": "the API key lacks a required scope",
                    "required_scope": required }),
        ),
        Refusal::MissingEntitlement { required } => (
            StatusCode::FORBIDDEN,
            json!({ "code": "FORBIDDEN",
                    "message": "this API key's organization does not have this feature",
                    "required_entitlement": required }),
        ),
        Refusal::RateLimited(ratelimit) => {
            let retry_after = ratelimit.reset.saturating_sub(unix_now()).max(1);
            set_ratelimit_headers(&mut headers, &ratelimit);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "code": "RATE_LIMITED", "message": "rate limit exceeded",
                        "retry_after": retry_after }),
            )
        }
        Refusal::NamedLimited { name, reset } => {
            let retry_after = reset.saturating_sub(unix_now()).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "code": "RATE_LIMITED", "message": format!("the {name} limit is spent"),
                        "limit": name, "retry_after": retry_after }),
            )
        }
        Refusal::ForbiddenIp => (
            StatusCode::FORBIDDEN,
            json!({ "code": "FORBIDDEN_IP",
                    "message": "this API key may not be used from this address" }),
        ),
        Refusal::QuotaExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "code": "QUOTA_EXCEEDED",
                    "message": "the monthly request quota of this key's plan is used up" }),
        ),
        Refusal::UsageExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "code": "USAGE_EXCEEDED", "message": "this key has no usage credits left" }),
        ),
        Refusal::Unavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "code": "UNAVAILABLE", "message": "API keys cannot be verified right now" }),
            )
        }
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(B::from(json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
