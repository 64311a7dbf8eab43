//! Pages of second factors: the login's second step (the app's code or a recovery code), and
//! setting up, confirming, renewing the codes of and turning off two-step sign-in from the
//! account page — each through the same service as its `/auth/mfa/*` endpoint.

use super::account_pages::{account_page, AccountForms, LoginPage};
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::portal::{
    local_path, locked_out, render, render_status, see_other, signed_in_to, Chrome, CookieChanges,
    CsrfToken, FormErrors, Portal, PortalForm, PortalResult, SignedIn,
};
use crate::request_limits::IpLimit;
use crate::services::mfa::{self, Answer, Enrolment};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use fluxgate_core::secret::{ExposeSecret, SecretString};

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login/second-factor", post(login_second_factor))
        .route("/login/second-factor/recovery", post(recovery_code_form))
        .route("/account/mfa/setup", get(setup_page).post(start_setup))
        .route("/account/mfa/confirm", post(confirm))
        .route("/account/mfa/recovery-codes", post(new_recovery_codes))
        .route("/account/mfa/off", post(turn_off))
}

/// The second step of a login whose account has a second factor: a code from the app, or a
/// recovery code. The challenge travels in a hidden field (never the URL).
#[derive(Template)]
#[template(path = "login_second_factor.html")]
struct SecondFactorPage {
    chrome: Chrome,
    errors: FormErrors,
    mfa_token: String,
    next: String,
    use_recovery_code: bool,
    offered: Offered,
}

/// Which second factors the login's second step offers besides recovery codes (carried in
/// its forms' hidden fields).
#[derive(Debug, Clone, Copy)]
pub(super) struct Offered {
    /// The authenticator app's code.
    pub(super) totp: bool,
    /// A passkey.
    pub(super) passkey: bool,
}

impl Offered {
    /// As a challenge's methods name them.
    pub(super) fn of(methods: &[&str]) -> Self {
        Self {
            totp: methods.contains(&"totp"),
            passkey: methods.contains(&"passkey"),
        }
    }

    /// As the page's forms carried them.
    pub(super) fn posted(form: &PortalForm) -> Self {
        Self {
            totp: form.get("totp").is_some(),
            passkey: form.get("passkey").is_some(),
        }
    }
}

/// The second step, as a right password leads to it, or again with `errors`.
pub(super) fn second_factor_page(
    chrome: Chrome,
    mfa_token: String,
    next: String,
    offered: Offered,
    errors: FormErrors,
) -> Response {
    let status = errors.status();
    render_status(
        status,
        &SecondFactorPage {
            chrome,
            errors,
            mfa_token,
            next,
            use_recovery_code: !offered.totp && !offered.passkey,
            offered,
        },
    )
}

/// The second step again, asking for a recovery code instead of the app's code.
async fn recovery_code_form(
    State(state): State<AppState>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    Ok(render(&SecondFactorPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        errors: FormErrors::none(),
        mfa_token: form.raw("mfa_token").to_owned(),
        next: local_path(form.get("next")).to_owned(),
        use_recovery_code: true,
        offered: Offered::posted(&form),
    }))
}

/// Completes the login's challenge (as `POST /auth/mfa/verify`); a wrong code is shown next to
/// the field, a dead challenge sends the user back to log in.
async fn login_second_factor(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let mfa_token = form.raw("mfa_token").to_owned();
    let use_recovery_code = form.get("method") == Some("recovery_code");
    let offered = Offered::posted(&form);
    let typed = form.raw("code").to_owned();
    let answer = match form.get("method") {
        Some("recovery_code") => Answer::RecoveryCode(SecretString::from(typed)),
        Some("passkey") => match super::passkey_pages::second_factor_answer(&form) {
            Ok(answer) => answer,
            Err(errors) => {
                let chrome = Chrome::new(&state, &csrf, None, None, "").await?;
                return Ok(second_factor_page(chrome, mfa_token, next, offered, errors));
            }
        },
        _ => Answer::Totp(typed),
    };
    let token = SecretString::from(mfa_token.clone());
    let refusal = match mfa::complete(&state, &client, &token, &answer, crate::clock::now()).await {
        Ok(pair) => return Ok(signed_in_to(&state, &pair, &next)),
        Err(refusal) => refusal,
    };
    let chrome = Chrome::new(&state, &csrf, None, None, "").await?;
    let (status, _) = refusal.status_and_message();
    let errors = match refusal {
        ApiError::RateLimited { retry_after } => locked_out(retry_after),
        ApiError::MfaChallengeInvalid => {
            let login = LoginPage {
                chrome,
                ids: super::account_pages::Identifiers::of(&state),
                errors: FormErrors::general("This sign-in expired or was used up. Log in again."),
                email: String::new(),
                next,
                notice: None,
                unverified: false,
            };
            return Ok(render_status(status, &login));
        }
        other => FormErrors::from_refusal(other, &["code"])?,
    };
    let page = SecondFactorPage {
        chrome,
        errors,
        mfa_token,
        next,
        use_recovery_code,
        offered,
    };
    Ok(render_status(status, &page))
}

/// Setting up an authenticator app: the QR code, the secret, and the form for the first code.
#[derive(Template)]
#[template(path = "mfa_setup.html")]
struct SetupPage {
    chrome: Chrome,
    errors: FormErrors,
    secret: String,
    /// The QR code's SVG as a `data:` URI (the CSP allows `data:` images, not inline markup).
    qr_data_uri: String,
}

async fn setup(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    enrolment: Enrolment,
    errors: FormErrors,
) -> PortalResult<Response> {
    let status = errors.status();
    let svg = base64::engine::general_purpose::STANDARD.encode(enrolment.qr_svg);
    let page = SetupPage {
        chrome: Chrome::new(state, csrf, Some(user), None, "account").await?,
        errors,
        secret: enrolment.secret,
        qr_data_uri: format!("data:image/svg+xml;base64,{svg}"),
    };
    Ok(render_status(status, &page))
}

/// The account page with the two-step form's errors.
async fn refused(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    refusal: ApiError,
) -> PortalResult<Response> {
    let errors = match refusal {
        ApiError::InvalidCredentials => FormErrors::wrong_password("password"),
        other => FormErrors::from_refusal(other, &["code", "password"])?,
    };
    account_page(state, csrf, user, None, AccountForms::mfa(errors)).await
}

/// Starts setting up (as `POST /auth/mfa/totp`; the password confirms it).
async fn start_setup(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let password = SecretString::from(form.raw("password").to_owned());
    match mfa::enrol(&state, &user, &client, password, crate::clock::now()).await {
        Ok(enrolment) => setup(&state, &csrf, &user, enrolment, FormErrors::none()).await,
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// The pending set-up again (after a reload), or the account page when nothing is pending.
async fn setup_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    match mfa::pending(&state, &user).await? {
        Some(enrolment) => setup(&state, &csrf, &user, enrolment, FormErrors::none()).await,
        None => Ok(see_other("/account")),
    }
}

/// The recovery codes, shown once.
#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    chrome: Chrome,
    heading: &'static str,
    codes: Vec<String>,
}

pub(super) async fn show_codes(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    heading: &'static str,
    codes: &[SecretString],
) -> PortalResult<Response> {
    Ok(render(&RecoveryCodesPage {
        chrome: Chrome::new(state, csrf, Some(user), None, "account").await?,
        heading,
        codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }))
}

/// Confirms the set-up with the app's first code (as `POST /auth/mfa/totp/confirm`).
async fn confirm(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let code = form.raw("code");
    match mfa::confirm(&state, &user, &client, code, crate::clock::now()).await {
        Ok(codes) => {
            let heading = "Two-step sign-in is on";
            let mut page = show_codes(&state, &csrf, &user, heading, &codes).await?;
            // this session just used the factor: its next access token says so
            CookieChanges::renew_on_next_page(&state).apply(&mut page);
            Ok(page)
        }
        Err(refusal @ ApiError::Validation(_)) => match mfa::pending(&state, &user).await? {
            Some(enrolment) => {
                let errors = FormErrors::from_refusal(refusal, &["code"])?;
                setup(&state, &csrf, &user, enrolment, errors).await
            }
            None => Ok(see_other("/account")),
        },
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// New recovery codes (as `POST /auth/mfa/recovery-codes`).
async fn new_recovery_codes(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let code = form.get("code");
    let now = crate::clock::now();
    match mfa::regenerate_recovery_codes(&state, &user, &client, code, now).await {
        Ok(codes) => show_codes(&state, &csrf, &user, "New recovery codes", &codes).await,
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// Turns two-step sign-in off (as `DELETE /auth/mfa/totp`): the password and a code.
async fn turn_off(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let password = SecretString::from(form.raw("password").to_owned());
    let answer = Answer::typed(form.raw("code"));
    match mfa::disable(
        &state,
        &user,
        &client,
        password,
        &answer,
        crate::clock::now(),
    )
    .await
    {
        Ok(()) => {
            let notice = Some("Two-step sign-in is off.".to_owned());
            account_page(&state, &csrf, &user, notice, AccountForms::default()).await
        }
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}
