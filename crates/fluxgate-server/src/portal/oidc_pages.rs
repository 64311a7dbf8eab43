//! Pages of sign-in with OpenID providers: the login page's "Sign in with …" buttons, the
//! provider's callback (which signs the browser in, asks for the second factor, or links the
//! identity), and linking and unlinking identities from the account page — each through
//! [`services::oidc`](crate::services::oidc), like `/auth/identities`.

use super::account_pages::{account_page, AccountForms, Identifiers, LoginPage};
use super::mfa_pages::{second_factor_page, Offered};
use crate::extract::{ClientInfo, IdPath};
use crate::portal::{
    kept_oidc_state, local_path, render_status, see_other, signed_in_to, Chrome, CookieChanges,
    CsrfToken, FormErrors, MaybeSignedIn, Portal, PortalForm, PortalResult, SignedIn,
};
use crate::request_limits::IpLimit;
use crate::services::oidc::{self, Callback, EndsIn, Outcome};
use crate::state::AppState;
use crate::user_auth::{set_mfa_cookie, set_token_cookies};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_core::secret::ExposeSecret;
use fluxgate_store::IdentityId;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login/oidc/{provider}", post(start_sign_in))
        .route("/auth/oidc/{provider}/callback", get(callback))
        // one name for the segment (matchit wants it): a provider's id to link, an identity's to unlink
        .route("/account/identities/{id}/link", post(start_linking))
        .route("/account/identities/{id}/unlink", post(unlink))
}

/// Sends the browser to the provider, keeping the flow's `state` in a cookie.
pub(crate) fn to_provider(state: &AppState, authorisation: &oidc::Authorisation) -> Response {
    let mut response = see_other(&authorisation.url);
    let kept = authorisation.state.expose_secret();
    CookieChanges::keep_oidc_state(state, kept, oidc::FLOW_TTL_SECS).apply(&mut response);
    response
}

/// "Sign in with …" (as the login page's button posts it).
async fn start_sign_in(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    axum::extract::Path(provider): axum::extract::Path<String>,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next"));
    let now = crate::clock::now();
    let authorisation = oidc::begin(&state, &provider, None, next, EndsIn::Portal, now).await?;
    Ok(to_provider(&state, &authorisation))
}

/// "Link …" on the account page.
async fn start_linking(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    axum::extract::Path(provider): axum::extract::Path<String>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let now = crate::clock::now();
    let account = "/account";
    let authorisation =
        oidc::begin(&state, &provider, Some(&user), account, EndsIn::Portal, now).await?;
    Ok(to_provider(&state, &authorisation))
}

/// Unlinks an identity (as `DELETE /auth/identities/{id}`).
async fn unlink(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(id)): Portal<IdPath<IdentityId>>,
    csrf: CsrfToken,
    _form: PortalForm,
) -> PortalResult<Response> {
    match oidc::unlink(&state, &user, &client, &id, crate::clock::now()).await {
        Ok(()) => {
            let notice = Some("The sign-in was unlinked.".to_owned());
            account_page(&state, &csrf, &user, notice, AccountForms::default()).await
        }
        Err(refusal) => {
            let errors = FormErrors::from_refusal(refusal, &[])?;
            account_page(&state, &csrf, &user, None, AccountForms::identities(errors)).await
        }
    }
}

/// What the provider's redirect brought back: the query's parameters, and the `state` this
/// browser kept in its cookie.
struct Returned {
    params: Vec<(String, String)>,
    kept_state: Option<String>,
}

impl Returned {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl FromRequestParts<AppState> for Returned {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self {
            params: form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
            kept_state: kept_oidc_state(state, &parts.headers),
        })
    }
}

/// The provider sends the browser back here: with a code (and the `state`), or an error.
async fn callback(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    axum::extract::Path(provider): axum::extract::Path<String>,
    returned: Returned,
    csrf: CsrfToken,
    MaybeSignedIn(viewer): MaybeSignedIn,
) -> PortalResult<Response> {
    let name = state.oidc.get(&provider)?.name.clone();
    let now = crate::clock::now();
    let mut response = match (returned.param("code"), returned.param("state")) {
        (Some(code), Some(returned_state)) if returned.param("error").is_none() => {
            let callback = Callback {
                provider_id: &provider,
                code,
                state: returned_state,
                kept_state: returned.kept_state.as_deref(),
            };
            let finished = oidc::finish(&state, &client, &callback, now).await?;
            if finished.ends_in == EndsIn::Api {
                let mut response = api_ending(&state, finished);
                CookieChanges::forget_oidc_state(&state).apply(&mut response);
                return Ok(response);
            }
            let next = finished.next;
            match finished.outcome {
                Ok(Outcome::SignedIn(pair)) => signed_in_to(&state, &pair, &next),
                Ok(Outcome::Challenge(challenge)) => {
                    let chrome = Chrome::new(&state, &csrf, None, None, "").await?;
                    let token = challenge.token.expose_secret().to_owned();
                    let offered = Offered::of(&challenge.methods);
                    second_factor_page(chrome, token, next, offered, FormErrors::none())
                }
                Ok(Outcome::Linked(_)) => see_other(&next),
                Err(refusal) => refused(&state, &csrf, viewer, &refusal.message).await?,
            }
        }
        _ => {
            let message = match returned.param("error") {
                Some("access_denied") => format!("Signing in with {name} was cancelled."),
                _ => format!("{name} did not sign you in. Start again."),
            };
            refused(&state, &csrf, viewer, &message).await?
        }
    };
    CookieChanges::forget_oidc_state(&state).apply(&mut response);
    Ok(response)
}

/// The end of a sign-in an app started (`GET /api/v1/auth/oidc/{id}/start`): back to its
/// `next` with the API's cookies, or with `mfa_required=<methods>` and the challenge in its
/// cookie, or with `oidc_error=<code>`.
fn api_ending(state: &AppState, finished: oidc::Finished) -> Response {
    let next = finished.next;
    match finished.outcome {
        Ok(Outcome::SignedIn(pair)) => {
            let mut response = see_other(&next);
            set_token_cookies(state, &pair, &mut response);
            response
        }
        Ok(Outcome::Challenge(challenge)) => {
            let methods = challenge.methods.join(",");
            let mut response = see_other(&with_query(&next, "mfa_required", &methods));
            let ttl = crate::services::mfa::CHALLENGE_TTL_SECS;
            set_mfa_cookie(state, &challenge.token, ttl, &mut response);
            response
        }
        Ok(Outcome::Linked(_)) => see_other(&next),
        Err(refusal) => see_other(&with_query(&next, "oidc_error", refusal.code)),
    }
}

/// A local path with one more query parameter.
fn with_query(path: &str, name: &str, value: &str) -> String {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{path}{joiner}{name}={value}")
}

/// A refused authorisation: on the account page for a signed-in browser (a link), else on the
/// login page.
async fn refused(
    state: &AppState,
    csrf: &CsrfToken,
    viewer: Option<crate::user_auth::AuthUser>,
    message: &str,
) -> PortalResult<Response> {
    let errors = FormErrors::general(message);
    if let Some(user) = viewer {
        return account_page(state, csrf, &user, None, AccountForms::identities(errors)).await;
    }
    let login = LoginPage {
        chrome: Chrome::new(state, csrf, None, None, "").await?,
        ids: Identifiers::of(state),
        errors,
        email: String::new(),
        next: "/".into(),
        notice: None,
        unverified: false,
    };
    Ok(render_status(StatusCode::UNAUTHORIZED, &login))
}
