//! The connection to Fluxgate: base URL, credentials, timeouts, safe retries, and the one error
//! type, which tells "Fluxgate could not be reached" from "Fluxgate said no".

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to Fluxgate.
///
/// ```no_run
/// # async fn f(flux: fluxgate_sdk::Flux, incoming: &str) {
/// use fluxgate_sdk::Error;
/// match flux.keys().verify(incoming).await {
///     Ok(ctx) => println!("welcome, {}", ctx.org.name),
///     Err(Error::InvalidKey { code, .. }) => println!("401 for the caller: {code}"),
///     Err(Error::Unreachable(why)) => println!("503 for the caller: {why}"),
///     Err(other) => println!("misconfigured: {other}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fluxgate could not be reached, or did not answer within the timeout.
    #[error("Fluxgate unreachable: {0}")]
    Unreachable(String),
    /// The key presented for verification is not valid; `code` says why (`NOT_FOUND`,
    /// `REVOKED`, `EXPIRED`, `RATE_LIMITED`, …).
    #[error("key not valid: {code}")]
    InvalidKey {
        /// The verify code.
        code: String,
        /// The answer's `data`, with whatever context the key has.
        details: Value,
    },
    /// An access token failed offline verification; the text names the failed check (`expired`,
    /// `bad signature`, …) and never the token.
    #[error("access token not valid: {0}")]
    InvalidToken(String),
    /// Fluxgate refused the request with its error envelope (`status`, `code`, `message`).
    #[error("Fluxgate answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The envelope's `code`, e.g. `FORBIDDEN`.
        code: String,
        /// The envelope's `message`.
        message: String,
        /// The whole `error` object (e.g. `fields`, `required_scope`).
        details: Value,
    },
}

/// Settings of a [`Flux`] client.
///
/// ```no_run
/// use std::time::Duration;
/// let flux = fluxgate_sdk::Flux::builder("fg_live_…")
///     .base_url("https://auth.example.com")
///     .timeout(Duration::from_secs(2))
///     .retries(2)
///     .build();
/// ```
#[derive(Clone)]
pub struct FluxBuilder {
    api_key: String,
    base_url: String,
    timeout: Duration,
    retries: u32,
    user_agent: String,
    token_issuer: Option<String>,
    pub(crate) token_audience: String,
}

impl std::fmt::Debug for FluxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the API key never reaches logs
        f.debug_struct("FluxBuilder")
            .field("api_key", &"[redacted]")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl FluxBuilder {
    /// Where Fluxgate listens (default: `FLUXGATE_URL`, else `http://127.0.0.1:8080`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// How long one attempt may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Extra attempts when a request could not be delivered (default 2). Only requests that
    /// never reached Fluxgate are retried, so nothing is applied twice.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The `User-Agent` sent (default `fluxgate-sdk/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The `iss` access tokens must carry: the instance's `public_url` (default: the base URL).
    pub fn token_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.token_issuer = Some(issuer.into().trim_end_matches('/').to_owned());
        self
    }

    /// The `aud` access tokens must carry: the instance's `auth.audience` (default `fluxgate`).
    pub fn token_audience(mut self, audience: impl Into<String>) -> Self {
        self.token_audience = audience.into();
        self
    }

    /// The issuer access tokens are checked against.
    pub(crate) fn expected_issuer(&self) -> &str {
        self.token_issuer.as_deref().unwrap_or(&self.base_url)
    }

    /// The client (connections are pooled and reused).
    pub fn build(self) -> Flux {
        let with_timeout = || reqwest::Client::builder().timeout(self.timeout);
        // a user agent that is not a valid header value is dropped, never the timeout
        let http = with_timeout()
            .user_agent(self.user_agent.clone())
            .build()
            .or_else(|_| with_timeout().build())
            .unwrap_or_default();
        Flux {
            http,
            settings: self,
            jwks: Arc::default(),
        }
    }
}

/// A Fluxgate client. Cheap to clone; share one per process.
///
/// ```no_run
/// # async fn f() -> Result<(), fluxgate_sdk::Error> {
/// let flux = fluxgate_sdk::Flux::init("fg_live_…");
/// let for_the_layer = flux.clone(); // same connection pool and JWKS cache
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Flux {
    http: reqwest::Client,
    settings: FluxBuilder,
    pub(crate) jwks: Arc<crate::tokens::JwksCache>,
}

impl std::fmt::Debug for Flux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flux")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Flux {
    /// A client with default settings authenticating with `api_key`.
    ///
    /// ```no_run
    /// let flux = fluxgate_sdk::Flux::init("fg_live_…");
    /// ```
    pub fn init(api_key: impl Into<String>) -> Self {
        Self::builder(api_key).build()
    }

    /// Settings for a client authenticating with `api_key`.
    pub fn builder(api_key: impl Into<String>) -> FluxBuilder {
        FluxBuilder {
            api_key: api_key.into(),
            base_url: std::env::var("FLUXGATE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_owned(),
            timeout: Duration::from_secs(5),
            retries: 2,
            user_agent: concat!("fluxgate-sdk/", env!("CARGO_PKG_VERSION")).into(),
            token_issuer: None,
            token_audience: "fluxgate".into(),
        }
    }

    /// API keys: verify, issue, list, rotate, revoke.
    pub fn keys(&self) -> crate::Keys<'_> {
        crate::Keys { flux: self }
    }

    /// Entitlement checks on a verified key's context (no call to Fluxgate).
    pub fn entitlements(&self) -> crate::Entitlements {
        crate::Entitlements
    }

    /// Feature-flag variants on a verified key's context (no call to Fluxgate).
    pub fn flags(&self) -> crate::Flags {
        crate::Flags
    }

    /// Metered usage.
    pub fn usage(&self) -> crate::Usage<'_> {
        crate::Usage { flux: self }
    }

    /// Offline verification of users' access tokens.
    pub fn tokens(&self) -> crate::Tokens<'_> {
        crate::Tokens { flux: self }
    }

    pub(crate) fn settings(&self) -> &FluxBuilder {
        &self.settings
    }

    /// Fetches a public document outside the API (`/.well-known/…`) as plain JSON.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let url = format!("{}{path}", self.settings.base_url);
        let response = self.send(|http| http.get(&url)).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Error::Unreachable(format!("{path} answered {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| Error::Unreachable(format!("unreadable {path}: {e}")))
    }

    /// Sends the request `build` makes, again (with backoff) while it fails before reaching
    /// Fluxgate, so nothing is applied twice.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 0;
        loop {
            match build(&self.http).send().await {
                Ok(response) => return Ok(response),
                Err(error) if error.is_connect() && attempt < self.settings.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
                }
                Err(error) => return Err(Error::Unreachable(error.to_string())),
            }
        }
    }

    /// Sends a request to `/api/v1{path}` and returns the answer's `data`, retrying only
    /// deliveries that failed before reaching Fluxgate.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        let url = format!("{}/api/v1{path}", self.settings.base_url);
        let response = self
            .send(|http| {
                let request = http
                    .request(method.clone(), &url)
                    .header("x-api-key", &self.settings.api_key);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        let status = response.status().as_u16();
        if status == 204 {
            return serde_json::from_value(Value::Null)
                .map_err(|e| Error::Unreachable(format!("unexpected empty answer: {e}")));
        }
        let value: Value = response
            .json()
            .await
            .map_err(|e| Error::Unreachable(format!("unreadable answer: {e}")))?;
        if status >= 400 {
            let error = value.get("error").cloned().unwrap_or(Value::Null);
            return Err(Error::Api {
                status,
                code: error["code"].as_str().unwrap_or("").to_owned(),
                message: error["message"].as_str().unwrap_or("").to_owned(),
                details: error,
            });
        }
        serde_json::from_value(value.get("data").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::Unreachable(format!("unexpected answer: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    #[tokio::test]
    async fn a_bad_user_agent_does_not_cost_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // accepts, then never answers
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let flux = super::Flux::builder("fg_live_x")
            .base_url(format!("http://{addr}"))
            .user_agent("bad\nagent")
            .timeout(std::time::Duration::from_millis(200))
            .build();
        let started = std::time::Instant::now();
        let answer = flux.keys().verify("fg_live_x").await;
        assert!(
            matches!(answer, Err(super::Error::Unreachable(_))),
            "{answer:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let flux = super::Flux::init("fg_live_supersecretvalue1234567890ab");
        assert!(!format!("{flux:?}").contains("supersecret"));
    }
}
