//! Who is calling: the `AuthUser` extractor (bearer or cookie access token, pinned verification,
//! revocation check, CSRF defence for cookie-authenticated changes), and issuing token pairs.

use crate::error::{ApiError, ApiResult};
use crate::limiter::Sharing;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use fluxgate_core::claims::AccessClaims;
use fluxgate_core::ids::{SessionId, UserId};
use fluxgate_core::ratelimit::Quota;
use fluxgate_core::secret::{ExposeSecret, SecretString};

/// Name of the access-token cookie.
pub const ACCESS_COOKIE: &str = "access_token";
/// Name of the refresh-token cookie.
pub const REFRESH_COOKIE: &str = "refresh_token";
/// The refresh cookie is only sent to the auth endpoints.
const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";

/// A user authenticated by a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The verified claims.
    pub claims: AccessClaims,
}

impl AuthUser {
    /// `usr_…`
    pub fn user_id(&self) -> &UserId {
        &self.claims.sub
    }

    /// `ses_…`
    pub fn session_id(&self) -> &SessionId {
        &self.claims.sid
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, via_cookie) = match bearer_token(&parts.headers) {
            Some(token) => (token, false),
            None => (
                cookie_value(&parts.headers, ACCESS_COOKIE).ok_or(ApiError::Unauthorized)?,
                true,
            ),
        };
        if via_cookie {
            check_same_origin(&parts.method, &parts.headers, &state.config.public_url)?;
        }
        authenticate_access_token(state, parts, &token).await
    }
}

/// The user an access token names — signed by us, unexpired, of a session not revoked — with the
/// request charged to their rate limit.
pub async fn authenticate_access_token(
    state: &AppState,
    parts: &Parts,
    token: &str,
) -> ApiResult<AuthUser> {
    let claims = state
        .keyring
        .verify(token)
        .await
        .ok_or(ApiError::Unauthorized)?;
    if state.revocations.is_revoked(&claims.sid) {
        return Err(ApiError::Unauthorized);
    }
    let quota = Quota::from_rate(state.config.rate_limits.user);
    let key = format!("user:{}", claims.sub);
    crate::request_limits::enforce(state, parts, &key, quota, Sharing::Exact, 1).await?;
    Ok(AuthUser { claims })
}

/// The `Authorization: Bearer …` value, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    fluxgate_core::apikey::bearer_value(value).map(str::to_owned)
}

/// A cookie's value, if sent.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// CSRF defence for cookie-authenticated requests that change state: the `Origin` must be the
/// configured public URL's; without an `Origin`, a same-origin `Referer` or an
/// `X-Requested-With` header (which a cross-site form cannot set) is required.
pub fn check_same_origin(method: &Method, headers: &HeaderMap, public_url: &str) -> ApiResult<()> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let expected = origin_of(public_url);
    if let Some(origin) = headers.get(header::ORIGIN) {
        return if origin.to_str().ok() == Some(expected) {
            Ok(())
        } else {
            Err(ApiError::CrossSite)
        };
    }
    let referer_ok = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|r| r == expected || r.starts_with(&format!("{expected}/")));
    if referer_ok || headers.contains_key("x-requested-with") {
        Ok(())
    } else {
        Err(ApiError::CrossSite)
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// A freshly issued access + refresh token pair.
pub struct TokenPair {
    /// The signed JWT.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: SecretString,
}

/// The login/refresh answer: the pair in the body and in HttpOnly cookies.
pub fn token_pair_response(state: &AppState, pair: TokenPair) -> Response {
    let body = fluxgate_proto::Data {
        data: fluxgate_proto::Tokens {
            access_token: pair.access_token.clone(),
            refresh_token: pair.refresh_token.expose_secret().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: state.config.auth.access_token_ttl.as_secs(),
        },
    };
    let mut response = axum::Json(body).into_response();
    set_token_cookies(state, &pair, &mut response);
    response
}

/// Puts the pair in the API's HttpOnly cookies on `response` (not cacheable).
pub fn set_token_cookies(state: &AppState, pair: &TokenPair, response: &mut Response) {
    let auth = &state.config.auth;
    let access_ttl = auth.access_token_ttl.as_secs();
    let access = Cookie::build((ACCESS_COOKIE, pair.access_token.clone()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(auth.cookie_secure)
        .path("/")
        .max_age(time::Duration::seconds(access_ttl as i64));
    let refresh = Cookie::build((
        REFRESH_COOKIE,
        pair.refresh_token.expose_secret().to_owned(),
    ))
    .http_only(true)
    .same_site(SameSite::Lax)
    .secure(auth.cookie_secure)
    .path(REFRESH_COOKIE_PATH)
    .max_age(time::Duration::seconds(
        auth.refresh_token_ttl.as_secs() as i64
    ));
    append_cookie(response, &access.build());
    append_cookie(response, &refresh.build());
    no_store(response);
}

/// Name of the cookie that carries a second-factor challenge to an app whose sign-in went
/// through a provider (the redirect back could not carry it: no secret in a URL).
pub const MFA_COOKIE: &str = "mfa_token";
/// It is only sent to the second-factor endpoints.
const MFA_COOKIE_PATH: &str = "/api/v1/auth/mfa";

/// Puts a second-factor challenge in its HttpOnly cookie on `response`.
pub fn set_mfa_cookie(
    state: &AppState,
    token: &SecretString,
    max_age: i64,
    response: &mut Response,
) {
    let cookie = Cookie::build((MFA_COOKIE, token.expose_secret().to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.auth.cookie_secure)
        .path(MFA_COOKIE_PATH)
        .max_age(time::Duration::seconds(max_age))
        .build();
    append_cookie(response, &cookie);
    no_store(response);
}

/// A second-factor challenge's token: from the body, or else from its cookie — and then only
/// from this origin (the CSRF rule of cookie-authenticated changes). 422 on `mfa_token` when
/// there is neither.
pub fn mfa_token(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    body: Option<SecretString>,
) -> ApiResult<SecretString> {
    if let Some(token) = body {
        return Ok(token);
    }
    let Some(token) = cookie_value(headers, MFA_COOKIE) else {
        return Err(ApiError::field(
            "mfa_token",
            "is required (from POST /auth/login)",
        ));
    };
    check_same_origin(method, headers, &state.config.public_url)?;
    Ok(SecretString::from(token))
}

/// Expires both cookies.
pub fn clear_cookies(state: &AppState, response: &mut Response) {
    for (name, path) in [(ACCESS_COOKIE, "/"), (REFRESH_COOKIE, REFRESH_COOKIE_PATH)] {
        let cookie = Cookie::build((name, ""))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(state.config.auth.cookie_secure)
            .path(path)
            .max_age(time::Duration::ZERO)
            .build();
        append_cookie(response, &cookie);
    }
}

fn append_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Responses carrying credentials must not be cached.
pub fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn csrf_rules() {
        let url = "https://auth.example.com";
        let post = Method::POST;
        assert!(check_same_origin(&Method::GET, &headers(&[]), url).is_ok());
        assert!(check_same_origin(
            &post,
            &headers(&[("origin", "https://auth.example.com")]),
            url
        )
        .is_ok());
        assert!(
            check_same_origin(&post, &headers(&[("origin", "https://evil.example")]), url).is_err()
        );
        assert!(check_same_origin(
            &post,
            &headers(&[
                ("origin", "https://evil.example"),
                ("x-requested-with", "x")
            ]),
            url
        )
        .is_err());
        assert!(check_same_origin(&post, &headers(&[]), url).is_err());
        assert!(check_same_origin(&post, &headers(&[("x-requested-with", "fetch")]), url).is_ok());
        assert!(check_same_origin(
            &post,
            &headers(&[("referer", "https://auth.example.com/keys")]),
            url
        )
        .is_ok());
        assert!(check_same_origin(
            &post,
            &headers(&[("referer", "https://auth.example.com.evil.io/")]),
            url
        )
        .is_err());
    }

    #[test]
    fn bearer_and_cookie_parsing() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc".into())
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            cookie_value(
                &headers(&[("cookie", "a=1; access_token=tok")]),
                "access_token"
            ),
            Some("tok".into())
        );
        assert_eq!(
            cookie_value(&headers(&[("cookie", "access_token=")]), "access_token"),
            None
        );
    }
}
