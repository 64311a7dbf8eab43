//! The self-service portal: server-rendered pages (askama templates, checked at compile time and
//! escaped) over the same services as the JSON API, with htmx only as an enhancement — every
//! page works without JavaScript. `docs/portal.md` lists the pages and what each requires.

mod account_pages;
mod admin_pages;
mod assets;
mod audit_pages;
mod charts;
mod flag_pages;
mod key_pages;
mod member_pages;
mod mfa_pages;
mod oidc_pages;
pub(crate) use oidc_pages::to_provider as to_oidc_provider;
mod org_pages;
mod passkey_pages;
mod role_pages;
mod session;
mod usage_pages;
mod webhook_pages;

pub use session::{
    caller, kept_oidc_state, CookieChanges, CsrfToken, MaybeSignedIn, OrgPage, PortalForm, SignedIn,
};

use crate::error::ApiError;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use fluxgate_store::OrgRecord;

/// What a new password must be, under every field that asks for one.
pub const PASSWORD_HINT: &str = "8 to 128 characters, not a common password.";

/// Portal page results.
pub type PortalResult<T> = Result<T, PortalError>;

/// Why a page could not be shown as asked.
#[derive(Debug)]
pub enum PortalError {
    /// Nobody is signed in: to the login page, then back to `next`.
    SignIn {
        /// Where to return after logging in.
        next: String,
    },
    /// A form post without this browser's CSRF token (an old tab, or a forgery).
    StaleForm,
    /// A service refused or failed.
    Api(ApiError),
}

impl From<ApiError> for PortalError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<askama::Error> for PortalError {
    fn from(error: askama::Error) -> Self {
        Self::Api(ApiError::Internal(anyhow::anyhow!("template: {error}")))
    }
}

/// A page explaining an error, in the portal's frame.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    title: &'static str,
    message: String,
    /// A refusal for want of a second factor: the page points to where one is set up.
    needs_second_factor: bool,
}

impl PortalError {
    /// The answer: a redirect to the login page, or a page with the status and a message.
    pub fn into_page(self) -> Response {
        let error = match self {
            Self::SignIn { next } => {
                let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                return Redirect::to(&format!("/login?next={next}")).into_response();
            }
            Self::StaleForm => ApiError::Refused(
                "this form has expired or did not come from this site; reload the page and try again"
                    .into(),
            ),
            Self::Api(ApiError::Unauthorized) => {
                return Redirect::to("/login").into_response();
            }
            Self::Api(error) => error,
        };
        error.log();
        let (status, message) = error.status_and_message();
        let title = match status.as_u16() {
            403 => "Not allowed",
            404 => "Not found",
            409 => "Conflict",
            422 => "Check the form",
            429 => "Too many requests",
            503 => "Unavailable",
            500.. => "Something went wrong",
            _ => "Request refused",
        };
        let message = match &error {
            ApiError::Internal(_) => format!(
                "An internal error occurred (request {}). It was logged.",
                crate::error::request_id()
            ),
            _ => sentence(&message),
        };
        let page = ErrorPage {
            chrome: Chrome::bare(),
            status: status.as_u16(),
            title,
            message,
            needs_second_factor: matches!(error, ApiError::SecondFactorRequired(_)),
        };
        let mut response = render_status(status, &page);
        if let ApiError::RateLimited { retry_after } = error {
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        self.into_page()
    }
}

/// Any extractor whose refusal is an [`ApiError`], refusing with a page instead of JSON.
pub struct Portal<E>(pub E);

impl<E> axum::extract::FromRequestParts<AppState> for Portal<E>
where
    E: axum::extract::FromRequestParts<AppState, Rejection = ApiError> + Send,
{
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        E::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(PortalError::from)
    }
}

/// A message as a sentence: capitalised, with a full stop.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut text = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// The signed-in user's account record.
pub async fn account_of(
    state: &AppState,
    user: &AuthUser,
) -> PortalResult<fluxgate_store::UserRecord> {
    Ok(crate::services::accounts::account_of(state, user).await?)
}

/// An org in the frame's switcher.
pub struct OrgLink {
    /// `org_…`
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The signed-in user as the frame shows them.
pub struct UserNav {
    /// Their email.
    pub email: String,
    /// Every org they belong to.
    pub orgs: Vec<OrgLink>,
    /// Whether they belong to the operator org.
    pub is_operator: bool,
}

/// What every page's frame needs: the CSRF token for its forms, the asset URLs, who is signed
/// in, which org is being looked at and which section of it.
pub struct Chrome {
    /// The browser's CSRF token.
    pub csrf: String,
    /// The embedded assets' URLs.
    pub assets: &'static assets::AssetUrls,
    /// The signed-in user.
    pub user: Option<UserNav>,
    /// The org the page is about.
    pub org: Option<OrgLink>,
    /// The nav entry to mark current (`overview`, `keys`, …).
    pub section: &'static str,
}

impl Chrome {
    /// A frame without a user (error pages).
    pub fn bare() -> Self {
        Self {
            csrf: String::new(),
            assets: assets::urls(),
            user: None,
            org: None,
            section: "",
        }
    }

    /// A frame for a page seen by `user` (if signed in), about `org` (if any).
    pub async fn new(
        state: &AppState,
        csrf: &CsrfToken,
        user: Option<&AuthUser>,
        org: Option<&OrgRecord>,
        section: &'static str,
    ) -> PortalResult<Self> {
        let user = match user {
            Some(user) => {
                let record = account_of(state, user).await?;
                let memberships = state
                    .store
                    .memberships_of_user(user.user_id())
                    .await
                    .map_err(ApiError::from)?;
                Some(UserNav {
                    email: record.email,
                    is_operator: memberships.iter().any(|m| m.is_operator),
                    orgs: memberships
                        .into_iter()
                        .map(|m| OrgLink {
                            id: m.org_id.into(),
                            name: m.org_name,
                        })
                        .collect(),
                })
            }
            None => None,
        };
        Ok(Self {
            csrf: csrf.0.clone(),
            assets: assets::urls(),
            user,
            org: org.map(|o| OrgLink {
                id: o.id.to_string(),
                name: o.name.clone(),
            }),
            section,
        })
    }
}

/// Errors of a form, by field (the same field names as the API's `VALIDATION_FAILED`), in the
/// order the form shows them, plus one for the form as a whole.
#[derive(Debug, Default)]
pub struct FormErrors {
    fields: Vec<(String, String)>,
    /// A message about the whole form (wrong password, a conflict, a wait).
    pub general: Option<String>,
}

impl FormErrors {
    /// No errors.
    pub fn none() -> Self {
        Self::default()
    }

    /// One message for the whole form.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            general: Some(message.into()),
        }
    }

    /// A form whose `field` held a wrong password (the service said `INVALID_CREDENTIALS`).
    pub fn wrong_password(field: &str) -> Self {
        Self {
            fields: vec![(field.to_owned(), sentence("is not your password"))],
            general: None,
        }
    }

    /// The errors a service's refusal means for a form whose fields are `order`; refusals that
    /// are not about the input (not found, unavailable, a bug) stay errors of the page.
    pub fn from_refusal(error: ApiError, order: &[&str]) -> PortalResult<Self> {
        match error {
            ApiError::Validation(errors) => {
                let mut fields: Vec<(String, String)> = errors
                    .iter()
                    .map(|(k, v)| (k.to_owned(), sentence(v)))
                    .collect();
                fields.sort_by_key(|(name, _)| {
                    order
                        .iter()
                        .position(|o| name == o || name.starts_with(&format!("{o}[")))
                        .unwrap_or(order.len())
                });
                Ok(Self {
                    fields,
                    general: None,
                })
            }
            ApiError::InvalidMfaCode => {
                let (_, message) = error.status_and_message();
                Ok(Self {
                    fields: vec![("code".to_owned(), sentence(&message))],
                    general: None,
                })
            }
            ApiError::InvalidCredentials
            | ApiError::MfaChallengeInvalid
            | ApiError::EmailNotVerified
            | ApiError::Conflict(_)
            | ApiError::Refused(_)
            | ApiError::Forbidden(_)
            | ApiError::RateLimited { .. }
            | ApiError::BadRequest(_) => {
                let (_, message) = error.status_and_message();
                Ok(Self::general(sentence(&message)))
            }
            other => Err(PortalError::Api(other)),
        }
    }

    /// The error of a field (or of one of its entries, `scopes[2]`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name || k.strip_prefix(name).is_some_and(|r| r.starts_with('[')))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is the first field in error (it gets the focus).
    pub fn is_first(&self, name: &str) -> bool {
        self.general.is_none()
            && self
                .fields
                .first()
                .is_some_and(|(k, _)| k == name || k.starts_with(&format!("{name}[")))
    }

    /// Whether there is any error.
    pub fn any(&self) -> bool {
        self.general.is_some() || !self.fields.is_empty()
    }

    /// The status of a page showing these errors: 422 when there is any, else 200.
    pub fn status(&self) -> StatusCode {
        if self.any() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }

    /// Every field error, in form order (the summary at the top).
    pub fn list(&self) -> &[(String, String)] {
        &self.fields
    }

    /// Files the errors of the service's field `from` under the form's field `to` (a form
    /// that asks for the same thing differently).
    pub fn rename(&mut self, from: &str, to: &str) {
        for (field, _) in &mut self.fields {
            if field == from {
                to.clone_into(field);
            }
        }
    }
}

/// A rendered page with status 200.
pub fn render(template: &impl Template) -> Response {
    render_status(StatusCode::OK, template)
}

/// A rendered page with a status.
pub fn render_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            let error = ApiError::Internal(anyhow::anyhow!("template: {error}"));
            error.log();
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A rendered page that must never be stored (it shows a secret).
pub fn render_no_store(template: &impl Template) -> Response {
    let mut response = render(template);
    crate::user_auth::no_store(&mut response);
    response
}

/// After a successful post: to the page showing its result.
pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// A sign-in's answer: the session's cookies set, on to `next`.
pub fn signed_in_to(state: &AppState, pair: &crate::user_auth::TokenPair, next: &str) -> Response {
    let mut response = see_other(next);
    CookieChanges::sign_in(state, pair).apply(&mut response);
    response
}

/// The form's message once the login lockout holds: how long to wait.
pub fn locked_out(retry_after: u64) -> FormErrors {
    FormErrors::general(format!(
        "Too many failed attempts for this account. Try again in {}.",
        account_pages::wait(retry_after)
    ))
}

/// A `next` that stays on this site (a path, never `//host` or a scheme).
pub fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.contains(['\r', '\n']) =>
        {
            path
        }
        _ => "/",
    }
}

/// The Content-Security-Policy of every portal page: scripts and styles only from this origin
/// (no inline code, no `eval` — htmx runs with `allowEval: false`), no framing, forms posting
/// only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// [`CONTENT_SECURITY_POLICY`] with the OpenID providers' origins added to `form-action`: the
/// "Sign in with …" and "Link …" forms post here and are redirected there, and browsers hold
/// a form's redirects to the policy too.
fn content_security_policy(state: &AppState) -> HeaderValue {
    let origins = state.oidc.origins();
    let policy = if origins.is_empty() {
        CONTENT_SECURITY_POLICY.to_owned()
    } else {
        CONTENT_SECURITY_POLICY.replace(
            "form-action 'self'",
            &format!("form-action 'self' {}", origins.join(" ")),
        )
    };
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY))
}

async fn security_headers(policy: HeaderValue, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    response
}

/// What an unknown path answers: a page for a browser asking for HTML outside `/api/`, the
/// JSON envelope for everyone else.
pub async fn not_found(request: Request) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && !request.uri().path().starts_with("/api/") {
        let mut response = PortalError::Api(ApiError::NotFound).into_page();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    } else {
        ApiError::NotFound.into_response()
    }
}

/// Every portal route.
pub fn router(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .merge(account_pages::router())
        .merge(admin_pages::router())
        .merge(flag_pages::router())
        .merge(audit_pages::router())
        .merge(webhook_pages::router())
        .merge(org_pages::router())
        .merge(key_pages::router())
        .merge(member_pages::router())
        .merge(mfa_pages::router())
        .merge(passkey_pages::router())
        .merge(oidc_pages::router())
        .merge(role_pages::router())
        .merge(usage_pages::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session::track_viewer,
        ));
    let policy = content_security_policy(state);
    Router::new()
        .merge(pages)
        .route("/assets/{version}/{name}", get(assets::serve))
        .layer(middleware::from_fn(move |request, next| {
            security_headers(policy.clone(), request, next)
        }))
}
