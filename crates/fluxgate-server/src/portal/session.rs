//! Who is using the portal, from its cookies: the access token (renewed in place from the refresh
//! token when it has expired), and the CSRF token every form carries back; plus the checks every
//! form post passes before a page sees it.

use crate::access::{Caller, OrgAccess, Required};
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::portal::{PortalError, PortalResult};
use crate::services::sessions;
use crate::state::AppState;
use crate::user_auth::{
    authenticate_access_token, check_same_origin, cookie_value, AuthUser, TokenPair,
};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum_extra::extract::cookie::{Cookie, SameSite};
use fluxgate_core::secret::{constant_time_eq, random_token, ExposeSecret, SecretString};
use fluxgate_store::OrgId;

/// The portal's cookie names: `__Host-` prefixed (bound to this exact origin, never settable by
/// a sibling subdomain) whenever cookies are `Secure`, which the prefix requires.
struct CookieNames {
    session: &'static str,
    refresh: &'static str,
    csrf: &'static str,
    oidc_state: &'static str,
}

fn names(secure: bool) -> CookieNames {
    if secure {
        CookieNames {
            session: "__Host-fg_portal",
            refresh: "__Host-fg_portal_refresh",
            csrf: "__Host-fg_csrf",
            oidc_state: "__Host-fg_oidc_state",
        }
    } else {
        CookieNames {
            session: "fg_portal",
            refresh: "fg_portal_refresh",
            csrf: "fg_csrf",
            oidc_state: "fg_oidc_state",
        }
    }
}

/// The OpenID authorisation `state` this browser keeps, if any.
pub fn kept_oidc_state(state: &AppState, headers: &axum::http::HeaderMap) -> Option<String> {
    cookie_value(headers, names(state.config.auth.cookie_secure).oidc_state)
}

/// The CSRF token of this browser, for the forms a page renders.
#[derive(Clone)]
pub struct CsrfToken(pub String);

/// The signed-in user, when there is one (set by [`track_viewer`]).
#[derive(Clone)]
struct Viewer(AuthUser);

/// Cookies a page wants set or cleared on its answer (a login, a logout).
#[derive(Default)]
pub struct CookieChanges(Vec<Cookie<'static>>);

fn cookie(state: &AppState, name: &'static str, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.auth.cookie_secure)
        .path("/")
        .max_age(time::Duration::seconds(max_age))
        .build()
}

impl CookieChanges {
    /// Signs the browser in with a fresh token pair.
    pub fn sign_in(state: &AppState, pair: &TokenPair) -> Self {
        let names = names(state.config.auth.cookie_secure);
        let auth = &state.config.auth;
        Self(vec![
            cookie(
                state,
                names.session,
                pair.access_token.clone(),
                auth.access_token_ttl.as_secs() as i64,
            ),
            cookie(
                state,
                names.refresh,
                pair.refresh_token.expose_secret().to_owned(),
                auth.refresh_token_ttl.as_secs() as i64,
            ),
        ])
    }

    /// Drops the access token, so the next page renews it from the refresh token (with what
    /// the session now carries, such as a second factor it just used).
    pub fn renew_on_next_page(state: &AppState) -> Self {
        let names = names(state.config.auth.cookie_secure);
        Self(vec![cookie(state, names.session, String::new(), 0)])
    }

    /// Keeps an OpenID authorisation's `state` in the browser until the provider sends it back
    /// (`SameSite=Lax`: the provider's redirect is a top-level navigation, so it comes along).
    pub fn keep_oidc_state(state: &AppState, value: &str, max_age: i64) -> Self {
        let names = names(state.config.auth.cookie_secure);
        Self(vec![cookie(
            state,
            names.oidc_state,
            value.to_owned(),
            max_age,
        )])
    }

    /// Forgets the OpenID authorisation's `state` (it is used once).
    pub fn forget_oidc_state(state: &AppState) -> Self {
        let names = names(state.config.auth.cookie_secure);
        Self(vec![cookie(state, names.oidc_state, String::new(), 0)])
    }

    /// Signs the browser out.
    pub fn sign_out(state: &AppState) -> Self {
        let names = names(state.config.auth.cookie_secure);
        Self(vec![
            cookie(state, names.session, String::new(), 0),
            cookie(state, names.refresh, String::new(), 0),
        ])
    }

    /// Adds the changes to a response.
    pub fn apply(&self, response: &mut Response) {
        for cookie in &self.0 {
            if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
    }
}

/// Middleware for every portal page: gives the browser a CSRF token if it has none, finds the
/// signed-in user — renewing an expired access token from the refresh token, as the JSON API's
/// refresh would (same rotation, same reuse detection) — and writes any renewed cookies.
pub async fn track_viewer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let names = names(state.config.auth.cookie_secure);
    let mut changes = CookieChanges::default();
    let csrf = match cookie_value(&parts.headers, names.csrf) {
        Some(token) if token.len() >= 32 => token,
        _ => {
            let token = random_token().expose_secret().to_owned();
            changes.0.push(cookie(
                &state,
                names.csrf,
                token.clone(),
                // as long as a refresh token lives: a form left open overnight still posts
                state.config.auth.refresh_token_ttl.as_secs() as i64,
            ));
            token
        }
    };
    parts.extensions.insert(CsrfToken(csrf));
    let mut viewer = None;
    if let Some(token) = cookie_value(&parts.headers, names.session) {
        match authenticate_access_token(&state, &parts, &token).await {
            Ok(user) => viewer = Some(user),
            Err(error @ (ApiError::RateLimited { .. } | ApiError::Unavailable)) => {
                return PortalError::from(error).into_page();
            }
            Err(_) => {}
        }
    }
    if viewer.is_none() {
        if let Some(refresh) = cookie_value(&parts.headers, names.refresh) {
            match renew(&state, &mut parts, refresh).await {
                Ok((user, pair)) => {
                    changes.0.extend(CookieChanges::sign_in(&state, &pair).0);
                    viewer = Some(user);
                }
                Err(error @ (ApiError::RateLimited { .. } | ApiError::Unavailable)) => {
                    return PortalError::from(error).into_page();
                }
                Err(_) => changes.0.extend(CookieChanges::sign_out(&state).0),
            }
        }
    }
    if let Some(user) = viewer {
        parts.extensions.insert(Viewer(user));
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    changes.apply(&mut response);
    response
}

async fn renew(
    state: &AppState,
    parts: &mut Parts,
    refresh: String,
) -> Result<(AuthUser, TokenPair), ApiError> {
    let client = ClientInfo::from_request_parts(parts, state).await?;
    let pair = sessions::refresh(
        state,
        &client,
        SecretString::from(refresh),
        crate::clock::now(),
    )
    .await?;
    let user = authenticate_access_token(state, parts, &pair.access_token).await?;
    Ok((user, pair))
}

/// A signed-in user; anyone else is sent to the login page, and back here afterwards.
pub struct SignedIn(pub AuthUser);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Viewer>() {
            Some(Viewer(user)) => Ok(Self(user.clone())),
            None => Err(PortalError::SignIn {
                next: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".to_owned()),
            }),
        }
    }
}

/// A signed-in user's standing in the org the path names (`{org_id}`), checked to hold `P`:
/// the portal's counterpart of the API's [`OrgAccess`] extractor, refusing with a page (404 for
/// an org that is not theirs, 403 naming the permission).
pub struct OrgPage<P: Required> {
    /// Who is looking.
    pub user: AuthUser,
    /// Their standing in the org.
    pub access: OrgAccess<P>,
}

impl<P: Required> FromRequestParts<AppState> for OrgPage<P> {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(user) = SignedIn::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let org_id: OrgId = params
            .iter()
            .find(|(name, _)| *name == "org_id")
            .and_then(|(_, value)| value.parse().ok())
            .ok_or(ApiError::NotFound)?;
        let access = OrgAccess::check(state, caller(&user), &org_id).await?;
        Ok(Self { user, access })
    }
}

impl<P: Required> OrgPage<P> {
    /// The same user's standing with another permission `Q`, or `None` when they lack it (a
    /// section of the page they may not see).
    pub async fn also<Q: Required>(&self, state: &AppState) -> PortalResult<Option<OrgAccess<Q>>> {
        match OrgAccess::check(state, caller(&self.user), &self.access.org.id).await {
            Ok(access) => Ok(Some(access)),
            Err(ApiError::Forbidden(_)) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// The org's id.
    pub fn org_id(&self) -> &OrgId {
        &self.access.org.id
    }
}

/// A signed-in user as the caller of a service.
pub fn caller(user: &AuthUser) -> Caller {
    Caller::User(Box::new(user.clone()))
}

/// The signed-in user if there is one (pages such as the login page look different then).
pub struct MaybeSignedIn(pub Option<AuthUser>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeSignedIn {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Viewer>().map(|v| v.0.clone())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .unwrap_or_else(|| CsrfToken(String::new())))
    }
}

/// Whether the `Origin` names the host the request was sent to (`localhost:8080` opened as
/// `127.0.0.1:8080`, say): a cross-site form cannot forge that pair, since the browser writes
/// both headers.
fn origin_is_this_host(headers: &axum::http::HeaderMap) -> bool {
    let header_text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match (header_text(header::ORIGIN), header_text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// A posted form that passed the CSRF defence: same origin (the `Origin` header naming this
/// host or the configured public URL) and the browser's CSRF token in the `csrf` field (or the
/// `X-CSRF-Token` header htmx sends), compared in constant time. Fields keep their order and
/// may repeat (checkboxes).
pub struct PortalForm(pub Vec<(String, String)>);

impl PortalForm {
    /// The first value of a field, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A field's value as typed (untrimmed), or empty.
    pub fn raw(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl FromRequest<AppState> for PortalForm {
    type Rejection = PortalError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !origin_is_this_host(request.headers()) {
            check_same_origin(
                request.method(),
                request.headers(),
                &state.config.public_url,
            )?;
        }
        let expected = request
            .extensions()
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let header_token = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| PortalError::from(ApiError::PayloadTooLarge))?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let presented = header_token.or_else(|| {
            fields
                .iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.clone())
        });
        let genuine = presented.is_some_and(|p| {
            !expected.is_empty() && constant_time_eq(p.as_bytes(), expected.as_bytes())
        });
        if !genuine {
            return Err(PortalError::StaleForm);
        }
        crate::extract::refuse_unstorable_pairs(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        Ok(Self(fields))
    }
}
