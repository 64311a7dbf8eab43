//! Sign-in with an outside provider: OpenID Connect (through the `openidconnect` crate — the
//! authorisation code flow with PKCE, `state` and `nonce`; the ID token's signature checked
//! against the provider's JWKS and its issuer, audience, expiry and nonce checked) or plain
//! OAuth 2.0 (through `oauth2` — the code flow with PKCE and `state`, the person read with the
//! access token from a userinfo endpoint or GitHub's API); accounts found by a linked identity,
//! linked by a *verified* email only, or created; and linking, listing and unlinking identities,
//! never leaving an account without a way in.

use crate::audit::AuditEvent;
use crate::config::{OidcProviderConfig, ProfileApi, ProviderProtocol};
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::services::{mfa, sessions};
use crate::state::AppState;
use crate::user_auth::{AuthUser, TokenPair};
use fluxgate_core::email::Email;
use fluxgate_core::secret::{
    constant_time_eq, random_token, sha256_hex, ExposeSecret, SecretString,
};
use fluxgate_store::{IdentityId, IdentityRecord, LoginKind, OidcFlowRecord, UserId, UserRecord};
use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, TokenResponse as _, TokenUrl};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// How long an authorisation at a provider may take.
pub const FLOW_TTL_SECS: i64 = 600;
/// How long a provider's discovery document (and its JWKS) is kept before it is read again.
const METADATA_TTL: Duration = Duration::from_secs(300);
/// The most a provider's profile answer may weigh.
const MAX_PROFILE_BYTES: usize = 256 * 1024;
/// How a session that signed in through a provider counts (`amr`; not in RFC 8176's registry,
/// named like its entries: federated).
pub const AMR_FEDERATED: &str = "fed";

/// The configured providers, each provider's discovery document cached for a while.
pub struct Providers {
    configs: Vec<OidcProviderConfig>,
    http: openidconnect::reqwest::Client,
    metadata: RwLock<HashMap<String, (Instant, CoreProviderMetadata)>>,
    callback_base: String,
}

impl Providers {
    /// The providers of the configuration; callbacks come back to `public_url`.
    pub fn new(configs: &[OidcProviderConfig], public_url: &str) -> anyhow::Result<Self> {
        let http = openidconnect::reqwest::Client::builder()
            // following redirects would let a provider's answer point the server anywhere
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            // GitHub's API refuses requests without one
            .user_agent(concat!("fluxgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            configs: configs.to_vec(),
            http,
            metadata: RwLock::new(HashMap::new()),
            callback_base: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Every configured provider, in the configuration's order.
    pub fn list(&self) -> &[OidcProviderConfig] {
        &self.configs
    }

    /// The provider with this id, or 404.
    pub fn get(&self, id: &str) -> ApiResult<&OidcProviderConfig> {
        self.configs
            .iter()
            .find(|p| p.id == id)
            .ok_or(ApiError::NotFound)
    }

    /// The origins (`scheme://host[:port]`) of the providers' authorisation pages: an OpenID
    /// provider's issuer, an OAuth 2.0 provider's authorisation endpoint.
    pub fn origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .configs
            .iter()
            .filter_map(|p| openidconnect::url::Url::parse(p.protocol.browser_url()).ok())
            .map(|u| u.origin().ascii_serialization())
            .collect();
        origins.sort();
        origins.dedup();
        origins
    }

    /// Where the provider sends the browser back: `{public_url}/auth/oidc/{id}/callback`.
    pub fn callback_url(&self, id: &str) -> String {
        format!("{}/auth/oidc/{id}/callback", self.callback_base)
    }

    /// An OpenID provider's client, from its discovery document (read again when older than
    /// [`METADATA_TTL`]); 503 when the provider cannot be reached.
    async fn openid_client(
        &self,
        provider: &OidcProviderConfig,
        issuer: &str,
    ) -> ApiResult<DiscoveredClient> {
        let cached = self.metadata.read().await.get(&provider.id).cloned();
        let metadata = match cached {
            Some((read_at, metadata)) if read_at.elapsed() < METADATA_TTL => metadata,
            _ => {
                let issuer = IssuerUrl::new(issuer.to_owned())
                    .map_err(|e| anyhow::anyhow!("issuer of {}: {e}", provider.id))?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| {
                        tracing::warn!(provider = %provider.id, error = %e, "OpenID discovery failed");
                        ApiError::Unavailable
                    })?;
                self.metadata
                    .write()
                    .await
                    .insert(provider.id.clone(), (Instant::now(), metadata.clone()));
                metadata
            }
        };
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.clone()),
            Some(self.client_secret(provider)),
        )
        .set_redirect_uri(self.redirect_url(provider)?))
    }

    /// A plain OAuth 2.0 provider's client, from its configured endpoints.
    fn oauth2_client(
        &self,
        provider: &OidcProviderConfig,
        authorization_url: &str,
        token_url: &str,
    ) -> ApiResult<ConfiguredClient> {
        let endpoint = |e: oauth2::url::ParseError| anyhow::anyhow!("{}: {e}", provider.id);
        Ok(BasicClient::new(ClientId::new(provider.client_id.clone()))
            .set_client_secret(self.client_secret(provider))
            .set_auth_uri(AuthUrl::new(authorization_url.to_owned()).map_err(endpoint)?)
            .set_token_uri(TokenUrl::new(token_url.to_owned()).map_err(endpoint)?)
            .set_redirect_uri(self.redirect_url(provider)?))
    }

    fn client_secret(&self, provider: &OidcProviderConfig) -> ClientSecret {
        ClientSecret::new(provider.client_secret.expose_secret().to_owned())
    }

    fn redirect_url(&self, provider: &OidcProviderConfig) -> ApiResult<RedirectUrl> {
        Ok(RedirectUrl::new(self.callback_url(&provider.id))
            .map_err(|e| anyhow::anyhow!("callback URL: {e}"))?)
    }
}

type ConfiguredClient = BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

type DiscoveredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// What a sign-in through a provider ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndsIn {
    /// A portal session (the portal's cookies).
    Portal,
    /// The JSON API's cookies (`access_token`, `refresh_token`), for an app on this origin.
    Api,
}

impl EndsIn {
    fn stored(self) -> &'static str {
        match self {
            Self::Portal => "portal",
            Self::Api => "api",
        }
    }
}

/// An authorisation started: where to send the browser, and the `state` it must keep (in a
/// cookie) to come back with.
pub struct Authorisation {
    /// The provider's authorisation URL.
    pub url: String,
    /// The `state` value, also held by the browser.
    pub state: SecretString,
}

/// Starts an authorisation at `provider_id`: to sign in (`linking` None) or to link an
/// identity to the signed-in `linking` user; `next` is the local path to end on, in a portal
/// session or the API's cookies.
pub async fn begin(
    state: &AppState,
    provider_id: &str,
    linking: Option<&AuthUser>,
    next: &str,
    ends_in: EndsIn,
    now: i64,
) -> ApiResult<Authorisation> {
    let provider = state.oidc.get(provider_id)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let flow_state = random_token();
    let returned_state = flow_state.expose_secret().to_owned();
    let scopes = provider.scopes.iter().map(|s| Scope::new(s.clone()));
    let (url, nonce) = match &provider.protocol {
        ProviderProtocol::OpenId { issuer } => {
            let client = state.oidc.openid_client(provider, issuer).await?;
            let (url, _, nonce) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    move || CsrfToken::new(returned_state),
                    Nonce::new_random,
                )
                .set_pkce_challenge(challenge)
                .add_scopes(scopes)
                .url();
            (url, nonce.secret().clone())
        }
        ProviderProtocol::OAuth2 {
            authorization_url,
            token_url,
            ..
        } => {
            let client = state
                .oidc
                .oauth2_client(provider, authorization_url, token_url)?;
            let (url, _) = client
                .authorize_url(move || CsrfToken::new(returned_state))
                .set_pkce_challenge(challenge)
                .add_scopes(scopes)
                .url();
            // no ID token, so no nonce: `state` and PKCE bind the code to this flow
            (url, String::new())
        }
    };
    let state_hash = sha256_hex(flow_state.expose_secret());
    let record = OidcFlowRecord {
        state_hash: state_hash.clone(),
        provider: provider.id.clone(),
        user_id: linking.map(|u| u.user_id().clone()),
        nonce,
        pkce_verifier: state
            .flow_sealer
            .seal(&state_hash, verifier.secret().as_bytes())?,
        next: next.to_owned(),
        ends_in: ends_in.stored().to_owned(),
        created_at: now,
        expires_at: now.saturating_add(FLOW_TTL_SECS),
    };
    state.store.put_oidc_flow(&record).await?;
    Ok(Authorisation {
        url: url.to_string(),
        state: flow_state,
    })
}

/// What the provider's callback carried.
pub struct Callback<'a> {
    /// The provider in the callback's path.
    pub provider_id: &'a str,
    /// `code`.
    pub code: &'a str,
    /// `state`, as the provider returned it.
    pub state: &'a str,
    /// The `state` the browser kept in its cookie.
    pub kept_state: Option<&'a str>,
}

/// How an authorisation ended.
pub enum Outcome {
    /// Signed in.
    SignedIn(TokenPair),
    /// The account has a second factor: its challenge follows.
    Challenge(mfa::Challenge),
    /// The identity was linked to the signed-in account.
    Linked(IdentityRecord),
}

/// Why an authorisation was refused: a code for an app (`state`, `token`, `unverified_email`,
/// `account_unverified`, `linked_elsewhere`, `gone`), and words for the person (nothing secret).
#[derive(Debug)]
pub struct Refusal {
    /// For an app: the `oidc_error` it is sent back with.
    pub code: &'static str,
    /// For the person.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// How an authorisation ended, where it returns to, and in which session.
pub struct Finished {
    /// Signed in, challenged, linked — or refused.
    pub outcome: Result<Outcome, Refusal>,
    /// The local path the flow returns to.
    pub next: String,
    /// The portal's session or the API's cookies.
    pub ends_in: EndsIn,
}

/// Finishes an authorisation: the flow must be this browser's (its `state` cookie equal to the
/// returned `state`), live and for this provider; the code is exchanged with the PKCE verifier
/// and the ID token verified (signature by the provider's keys, issuer, audience, expiry, the
/// flow's nonce). Then the identity signs in its account, or links to the signed-in one, or —
/// with a verified email — links to the account of that email or creates one. The flow's
/// `next` comes back with the outcome (a callback that matches no flow ends in the portal).
pub async fn finish(
    state: &AppState,
    client: &ClientInfo,
    callback: &Callback<'_>,
    now: i64,
) -> ApiResult<Finished> {
    let same_browser = callback
        .kept_state
        .is_some_and(|kept| constant_time_eq(kept.as_bytes(), callback.state.as_bytes()));
    let state_hash = sha256_hex(callback.state);
    let flow = match state.store.take_oidc_flow(&state_hash, now).await? {
        Some(flow) if same_browser && flow.provider == callback.provider_id => flow,
        _ => {
            audit_refusal(state, client, callback.provider_id, "state", now).await?;
            let refusal = Refusal::new(
                "state",
                "This sign-in was not started in this browser, or it expired. Start again.",
            );
            return Ok(Finished {
                outcome: Err(refusal),
                next: "/".into(),
                ends_in: EndsIn::Portal,
            });
        }
    };
    let next = flow.next.clone();
    let ends_in = if flow.ends_in == EndsIn::Api.stored() {
        EndsIn::Api
    } else {
        EndsIn::Portal
    };
    let finished = |outcome| Finished {
        outcome,
        next: next.clone(),
        ends_in,
    };
    let provider = state.oidc.get(&flow.provider)?;
    let verified = match verified_claims(state, provider, &flow, callback.code).await? {
        Ok(claims) => claims,
        Err(reason) => {
            audit_refusal(state, client, &provider.id, reason, now).await?;
            let refusal = Refusal::new(
                "token",
                format!(
                    "{} did not sign you in: its answer did not check out ({reason}). Start again.",
                    provider.name
                ),
            );
            return Ok(finished(Err(refusal)));
        }
    };
    let outcome = match &flow.user_id {
        Some(user_id) => link(state, client, provider, user_id, &verified, now).await?,
        None => sign_in(state, client, provider, &verified, now).await?,
    };
    Ok(finished(outcome))
}

/// Who signed in, as the provider vouched: a verified ID token's claims, or the profile read
/// with the access token.
struct VerifiedClaims {
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
}

/// Exchanges the code and reads who signed in — from the verified ID token, or with the access
/// token from the provider's profile API; Err names the check that failed.
async fn verified_claims(
    state: &AppState,
    provider: &OidcProviderConfig,
    flow: &OidcFlowRecord,
    code: &str,
) -> ApiResult<Result<VerifiedClaims, &'static str>> {
    let verifier = state
        .flow_sealer
        .open(&flow.state_hash, &flow.pkce_verifier)?;
    let verifier = String::from_utf8(verifier).map_err(|_| anyhow::anyhow!("a PKCE verifier"))?;
    let verifier = PkceCodeVerifier::new(verifier);
    let code = AuthorizationCode::new(code.to_owned());
    let http = &state.oidc.http;
    match &provider.protocol {
        ProviderProtocol::OpenId { issuer } => {
            let client = state.oidc.openid_client(provider, issuer).await?;
            let exchange = client
                .exchange_code(code)
                .map_err(|e| anyhow::anyhow!("the provider has no token endpoint: {e}"))?
                .set_pkce_verifier(verifier);
            let Ok(tokens) = exchange.request_async(http).await else {
                return Ok(Err("the code was refused"));
            };
            let Some(id_token) = tokens.id_token() else {
                return Ok(Err("no ID token"));
            };
            let verifier = client.id_token_verifier();
            let Ok(claims) = id_token.claims(&verifier, &Nonce::new(flow.nonce.clone())) else {
                return Ok(Err("the ID token failed verification"));
            };
            Ok(Ok(VerifiedClaims {
                subject: claims.subject().as_str().to_owned(),
                email: claims.email().map(|e| e.as_str().to_owned()),
                email_verified: claims.email_verified().unwrap_or(false),
                name: claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.as_str().to_owned()),
            }))
        }
        ProviderProtocol::OAuth2 {
            authorization_url,
            token_url,
            profile,
        } => {
            let client = state
                .oidc
                .oauth2_client(provider, authorization_url, token_url)?;
            let exchange = client.exchange_code(code).set_pkce_verifier(verifier);
            let Ok(tokens) = exchange.request_async(http).await else {
                return Ok(Err("the code was refused"));
            };
            let access_token = tokens.access_token().secret();
            let claims = match profile {
                ProfileApi::Userinfo(url) => userinfo_profile(http, url, access_token).await,
                ProfileApi::GitHub(api) => github_profile(http, api, access_token).await,
            };
            Ok(claims.ok_or("the profile could not be read"))
        }
    }
}

/// An OpenID-style userinfo answer (which many plain OAuth 2.0 providers give as well).
#[derive(Deserialize)]
struct UserinfoAnswer {
    sub: String,
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    name: Option<String>,
}

async fn userinfo_profile(
    http: &openidconnect::reqwest::Client,
    url: &str,
    access_token: &str,
) -> Option<VerifiedClaims> {
    let answer: UserinfoAnswer = read_json(http, url, access_token).await?;
    Some(VerifiedClaims {
        subject: answer.sub,
        email: answer.email,
        email_verified: answer.email_verified,
        name: answer.name,
    })
}

/// GitHub's `GET /user`: the numeric id never changes (the login can).
#[derive(Deserialize)]
struct GitHubUser {
    id: u64,
    name: Option<String>,
}

/// One of GitHub's `GET /user/emails`.
#[derive(Deserialize)]
struct GitHubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

async fn github_profile(
    http: &openidconnect::reqwest::Client,
    api: &str,
    access_token: &str,
) -> Option<VerifiedClaims> {
    let user: GitHubUser = read_json(http, &format!("{api}/user"), access_token).await?;
    let emails: Vec<GitHubEmail> =
        read_json(http, &format!("{api}/user/emails"), access_token).await?;
    Some(github_claims(user, emails))
}

/// The account's primary email, with GitHub's word on whether it was verified.
fn github_claims(user: GitHubUser, emails: Vec<GitHubEmail>) -> VerifiedClaims {
    let primary = emails.into_iter().find(|e| e.primary);
    VerifiedClaims {
        subject: user.id.to_string(),
        email_verified: primary.as_ref().is_some_and(|e| e.verified),
        email: primary.map(|e| e.email),
        name: user.name,
    }
}

/// GETs `url` with the access token and reads its JSON answer (at most
/// [`MAX_PROFILE_BYTES`]); None on any failure.
async fn read_json<T: DeserializeOwned>(
    http: &openidconnect::reqwest::Client,
    url: &str,
    access_token: &str,
) -> Option<T> {
    let mut response = http
        .get(url)
        .bearer_auth(access_token)
        .header("accept", "application/json")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len().saturating_add(chunk.len()) > MAX_PROFILE_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).ok()
}

/// A sign-in with a verified identity.
async fn sign_in(
    state: &AppState,
    client: &ClientInfo,
    provider: &OidcProviderConfig,
    claims: &VerifiedClaims,
    now: i64,
) -> ApiResult<Result<Outcome, Refusal>> {
    let account = match state
        .store
        .identity_by_subject(&provider.id, &claims.subject)
        .await?
    {
        Some(identity) => {
            state.store.identity_used(&identity.id, now).await?;
            state.store.user_by_id(&identity.user_id).await?
        }
        None => match account_by_verified_email(state, client, provider, claims, now).await? {
            Ok(account) => Some(account),
            Err(refusal) => return Ok(Err(refusal)),
        },
    };
    let Some(account) = account else {
        return Ok(Err(Refusal::new("gone", "That account no longer exists.")));
    };
    if let Some(challenge) =
        mfa::challenge_if_enrolled(state, client, &account, AMR_FEDERATED, now).await?
    {
        return Ok(Ok(Outcome::Challenge(challenge)));
    }
    let pair = sessions::start_session(state, client, &account, AMR_FEDERATED, now).await?;
    Ok(Ok(Outcome::SignedIn(pair)))
}

/// An identity seen for the first time: linked to the account of its email when the provider
/// verified that email (and the account had verified it too, so nobody who merely typed that
/// address at signup gains the provider's person), or a new account. An unverified email links
/// nothing and creates nothing.
async fn account_by_verified_email(
    state: &AppState,
    client: &ClientInfo,
    provider: &OidcProviderConfig,
    claims: &VerifiedClaims,
    now: i64,
) -> ApiResult<Result<UserRecord, Refusal>> {
    let email = match (&claims.email, claims.email_verified) {
        (Some(email), true) => Email::parse(email).ok(),
        _ => None,
    };
    let Some(email) = email else {
        audit_refusal(state, client, &provider.id, "unverified email", now).await?;
        return Ok(Err(Refusal::new(
            "unverified_email",
            format!(
                "{} did not confirm an email address for you, so it cannot sign you in here. Sign \
                 in with your password and link {} from your account page.",
                provider.name, provider.name
            ),
        )));
    };
    let identity = |user_id: &UserId| IdentityRecord {
        id: IdentityId::generate(),
        user_id: user_id.clone(),
        provider: provider.id.clone(),
        subject: claims.subject.clone(),
        email: Some(email.as_str().to_owned()),
        created_at: now,
        last_used_at: Some(now),
    };
    match state
        .store
        .user_by_login(LoginKind::Email, email.as_str())
        .await?
    {
        Some(account) if account.email_verified_at.is_none() => {
            audit_refusal(state, client, &provider.id, "account email unverified", now).await?;
            Ok(Err(Refusal::new(
                "account_unverified",
                format!(
                    "An account with this email address exists but has not confirmed it. Confirm \
                     it (or reset its password) first, then sign in with {}.",
                    provider.name
                ),
            )))
        }
        Some(account) => {
            let linked = identity(&account.id);
            let audit = identity_event("user.identity_linked", &account.id, &linked, client, now);
            if !state.store.link_identity(&linked, &audit).await? {
                return Ok(Err(Refusal::new("linked_elsewhere", "Try again.")));
            }
            identity_mail(state, &account, provider, "linked to").await;
            Ok(Ok(account))
        }
        None => {
            let user = UserRecord {
                id: UserId::generate(),
                email: email.as_str().to_owned(),
                username: None,
                document: None,
                name: claims.name.clone(),
                // no password: only the provider (or a reset link, later) signs in
                password_hash: String::new(),
                email_verified_at: Some(now),
                created_at: now,
                updated_at: now,
            };
            let linked = identity(&user.id);
            let audit = [
                AuditEvent::new("user.signed_up", Some(&user.id), client)
                    .at(now)
                    .target("user", &user.id)
                    .data(serde_json::json!({ "provider": provider.id }))
                    .build(),
                identity_event("user.identity_linked", &user.id, &linked, client, now),
            ];
            state
                .store
                .create_user_with_identity(&user, &linked, &audit)
                .await?;
            Ok(Ok(user))
        }
    }
}

/// Links a verified identity to the signed-in user who started the flow.
async fn link(
    state: &AppState,
    client: &ClientInfo,
    provider: &OidcProviderConfig,
    user_id: &UserId,
    claims: &VerifiedClaims,
    now: i64,
) -> ApiResult<Result<Outcome, Refusal>> {
    let account = state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if let Some(existing) = state
        .store
        .identity_by_subject(&provider.id, &claims.subject)
        .await?
    {
        return Ok(if &existing.user_id == user_id {
            Ok(Outcome::Linked(existing))
        } else {
            Err(linked_elsewhere(provider))
        });
    }
    let identity = IdentityRecord {
        id: IdentityId::generate(),
        user_id: user_id.clone(),
        provider: provider.id.clone(),
        subject: claims.subject.clone(),
        email: claims.email.clone(),
        created_at: now,
        last_used_at: None,
    };
    let audit = identity_event("user.identity_linked", user_id, &identity, client, now);
    if !state.store.link_identity(&identity, &audit).await? {
        return Ok(Err(linked_elsewhere(provider)));
    }
    identity_mail(state, &account, provider, "linked to").await;
    Ok(Ok(Outcome::Linked(identity)))
}

fn linked_elsewhere(provider: &OidcProviderConfig) -> Refusal {
    Refusal::new(
        "linked_elsewhere",
        format!(
            "That {} account is linked to another account here.",
            provider.name
        ),
    )
}

/// The signed-in user's linked identities, oldest first.
pub async fn identities(state: &AppState, user: &AuthUser) -> ApiResult<Vec<IdentityRecord>> {
    Ok(state.store.identities(user.user_id()).await?)
}

/// Unlinks one of the signed-in user's identities — unless it is their only way in (no
/// password, no passkey, no other identity): 409 saying what to add first. 404 unless theirs.
pub async fn unlink(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    id: &IdentityId,
    now: i64,
) -> ApiResult<()> {
    let account = crate::services::accounts::account_of(state, user).await?;
    let identities = state.store.identities(&account.id).await?;
    let identity = identities
        .iter()
        .find(|i| &i.id == id)
        .ok_or(ApiError::NotFound)?;
    let other_way_in = !account.password_hash.is_empty()
        || identities.len() > 1
        || !state.store.passkeys(&account.id).await?.is_empty();
    if !other_way_in {
        return Err(ApiError::Conflict(
            "this is the only way into the account: set a password (\"forgot your password\" mails a link) or add a passkey first".into(),
        ));
    }
    let audit = identity_event("user.identity_unlinked", &account.id, identity, client, now);
    if !state.store.unlink_identity(&account.id, id, &audit).await? {
        return Err(ApiError::NotFound);
    }
    if let Ok(provider) = state.oidc.get(&identity.provider) {
        identity_mail(state, &account, provider, "unlinked from").await;
    }
    Ok(())
}

fn identity_event(
    action: &str,
    user_id: &UserId,
    identity: &IdentityRecord,
    client: &ClientInfo,
    now: i64,
) -> fluxgate_store::AuditRecord {
    AuditEvent::new(action, Some(user_id), client)
        .at(now)
        .target("identity", &identity.id)
        .data(serde_json::json!({ "provider": identity.provider }))
        .build()
}

/// A refused authorisation, audited with the check that failed (nothing secret).
async fn audit_refusal(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &str,
    now: i64,
) -> ApiResult<()> {
    let entry = AuditEvent::new("user.oidc_refused", None, client)
        .at(now)
        .data(serde_json::json!({ "provider": provider, "reason": reason }))
        .build();
    Ok(state.store.append_audit(&[entry]).await?)
}

async fn identity_mail(
    state: &AppState,
    account: &UserRecord,
    provider: &OidcProviderConfig,
    linked: &str,
) {
    let subject = format!("{} sign-in was {linked} your account", provider.name);
    let body = format!(
        "Signing in with {} was {linked} your account.",
        provider.name
    );
    mfa::factors_changed(state, account, &subject, &body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_github_account_is_its_numeric_id_and_its_primary_email() {
        // shaped as GitHub's REST API documents `GET /user` and `GET /user/emails`
        let user: GitHubUser = serde_json::from_str(
            r#"{"login":"octocat","id":583231,"name":"The Octocat","email":null,"type":"User"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let emails: Vec<GitHubEmail> = serde_json::from_str(
            r#"[{"email":"old@example.com","verified":true,"primary":false,"visibility":null},
                {"email":"octocat@example.com","verified":false,"primary":true,"visibility":"public"}]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let claims = github_claims(user, emails);
        assert_eq!(claims.subject, "583231");
        assert_eq!(claims.email.as_deref(), Some("octocat@example.com"));
        assert!(
            !claims.email_verified,
            "an unverified primary email is not vouched for, even with another verified one"
        );
        assert_eq!(claims.name.as_deref(), Some("The Octocat"));
    }
}
