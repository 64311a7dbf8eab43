//! Pages of passkeys: adding, renaming and removing them from the account page, signing in with
//! one from the login page, and one as a login's second step — each through the same service
//! as its `/auth/passkeys/*` endpoint. A ceremony takes two posts: the first (the password, or
//! the login's challenge) renders a page carrying the server's options; its button runs the
//! browser's part (portal.js) and posts the answer back.

use super::account_pages::{account_page, AccountForms, Identifiers, LoginPage};
use super::mfa_pages::second_factor_page;
use crate::error::ApiError;
use crate::extract::{ClientInfo, IdPath};
use crate::portal::{
    local_path, render, render_status, signed_in_to, Chrome, CookieChanges, CsrfToken, FormErrors,
    Portal, PortalForm, PortalResult, SignedIn,
};
use crate::request_limits::IpLimit;
use crate::services::passkeys::{self, Ceremony};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_store::PasskeyId;
use serde::de::DeserializeOwned;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account/passkeys/new", post(start_adding))
        .route("/account/passkeys", post(add))
        .route("/account/passkeys/{passkey_id}/rename", post(rename))
        .route("/account/passkeys/{passkey_id}/remove", post(remove))
        .route("/login/passkey/start", post(start_sign_in))
        .route("/login/passkey", post(sign_in))
        .route("/login/second-factor/passkey", post(start_second_factor))
}

/// A ceremony under way: the server's options, and the form its answer is posted with.
#[derive(Template)]
#[template(path = "passkey_ceremony.html")]
struct CeremonyPage {
    chrome: Chrome,
    heading: &'static str,
    explanation: &'static str,
    button: &'static str,
    /// `create` or `get`.
    kind: &'static str,
    /// The options as JSON (an attribute of the form; escaped like any value).
    options: String,
    action: &'static str,
    /// Hidden fields posted with the answer.
    fields: Vec<(&'static str, String)>,
    back: String,
}

fn options_json(ceremony: &Ceremony) -> String {
    ceremony.options.to_string()
}

/// A credential as the page's script posted it (JSON), or the field's error.
fn posted_credential<T: DeserializeOwned>(form: &PortalForm) -> Result<T, FormErrors> {
    serde_json::from_str(form.raw("credential")).map_err(|_| {
        FormErrors::general(
            "The browser sent no passkey (it needs JavaScript, and the passkey must be used). Try again.",
        )
    })
}

/// The account page with the passkey forms' errors.
async fn refused(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    refusal: ApiError,
) -> PortalResult<Response> {
    let errors = match refusal {
        ApiError::InvalidCredentials => FormErrors::wrong_password("passkey_password"),
        // the account page has other forms' `name` and `password`: these fields are prefixed
        ApiError::Validation(fields) => {
            let mut prefixed = fluxgate_core::validation::FieldErrors::new();
            for (field, reason) in fields.iter() {
                prefixed.add(format!("passkey_{field}"), reason);
            }
            FormErrors::from_refusal(ApiError::Validation(prefixed), &["passkey_name"])?
        }
        other => FormErrors::from_refusal(other, &["passkey_name", "passkey_password"])?,
    };
    account_page(state, csrf, user, None, AccountForms::passkeys(errors)).await
}

/// Starts adding a passkey (as `POST /auth/passkeys/registration-options`): the name is
/// checked and the password confirmed before the browser is asked.
async fn start_adding(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let name = match passkeys::passkey_name(form.raw("passkey_name")) {
        Ok(name) => name,
        Err(refusal) => return refused(&state, &csrf, &user, refusal).await,
    };
    let password = SecretString::from(form.raw("passkey_password").to_owned());
    let now = crate::clock::now();
    match passkeys::begin_registration(&state, &user, &client, password, now).await {
        Ok(ceremony) => Ok(render(&CeremonyPage {
            chrome: Chrome::new(&state, &csrf, Some(&user), None, "account").await?,
            heading: "Add a passkey",
            explanation: "Your browser will ask your device (this computer, a phone or a security key) to make a passkey for this account, confirmed with its screen lock or PIN.",
            button: "Create the passkey",
            kind: "create",
            options: options_json(&ceremony),
            action: "/account/passkeys",
            fields: vec![
                ("ceremony", ceremony.token.expose_secret().to_owned()),
                ("name", name),
            ],
            back: "/account".into(),
        })),
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// Finishes adding a passkey (as `POST /auth/passkeys`): the recovery codes when it is the
/// account's first second factor, else the account page.
async fn add(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let credential = match posted_credential(&form) {
        Ok(credential) => credential,
        Err(errors) => {
            return account_page(&state, &csrf, &user, None, AccountForms::passkeys(errors)).await
        }
    };
    let ceremony = SecretString::from(form.raw("ceremony").to_owned());
    let name = form.raw("name");
    let now = crate::clock::now();
    match passkeys::finish_registration(&state, &user, &client, &ceremony, name, &credential, now)
        .await
    {
        Ok((passkey, codes)) => {
            let mut page = if codes.is_empty() {
                let notice = format!("The passkey “{}” was added.", passkey.name);
                account_page(&state, &csrf, &user, Some(notice), AccountForms::default()).await?
            } else {
                let heading = "Passkey added: save your recovery codes";
                super::mfa_pages::show_codes(&state, &csrf, &user, heading, &codes).await?
            };
            // this session just used the passkey: its next access token says so
            CookieChanges::renew_on_next_page(&state).apply(&mut page);
            Ok(page)
        }
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// Renames a passkey (as `PATCH /auth/passkeys/{id}`).
async fn rename(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(id)): Portal<IdPath<PasskeyId>>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let name = form.raw("name");
    match passkeys::rename(&state, &user, &client, &id, name, crate::clock::now()).await {
        Ok(passkey) => {
            let notice = format!("The passkey is now called “{}”.", passkey.name);
            account_page(&state, &csrf, &user, Some(notice), AccountForms::default()).await
        }
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// Removes a passkey (as `DELETE /auth/passkeys/{id}`; the password confirms it).
async fn remove(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(id)): Portal<IdPath<PasskeyId>>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let password = SecretString::from(form.raw("passkey_password").to_owned());
    match passkeys::remove(&state, &user, &client, &id, password, crate::clock::now()).await {
        Ok(()) => {
            let notice = Some("The passkey was removed.".to_owned());
            account_page(&state, &csrf, &user, notice, AccountForms::default()).await
        }
        Err(refusal) => refused(&state, &csrf, &user, refusal).await,
    }
}

/// The login page again, with a message about the passkey.
async fn login_refused(
    state: &AppState,
    csrf: &CsrfToken,
    next: String,
    errors: FormErrors,
    status: axum::http::StatusCode,
) -> PortalResult<Response> {
    let login = LoginPage {
        chrome: Chrome::new(state, csrf, None, None, "").await?,
        ids: Identifiers::of(state),
        errors,
        email: String::new(),
        next,
        notice: None,
        unverified: false,
    };
    Ok(render_status(status, &login))
}

/// Starts a sign-in with a passkey alone (as `POST /auth/passkeys/sign-in-options`).
async fn start_sign_in(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let ceremony = passkeys::begin_sign_in(&state, &client, crate::clock::now()).await?;
    Ok(render(&CeremonyPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        heading: "Sign in with a passkey",
        explanation: "Your browser will ask which passkey to use and for your device's screen lock or PIN; nothing to type here.",
        button: "Use a passkey",
        kind: "get",
        options: options_json(&ceremony),
        action: "/login/passkey",
        fields: vec![
            ("ceremony", ceremony.token.expose_secret().to_owned()),
            ("next", next),
        ],
        back: "/login".into(),
    }))
}

/// Finishes a passkey sign-in (as `POST /auth/passkeys/sign-in`).
async fn sign_in(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let credential = match posted_credential(&form) {
        Ok(credential) => credential,
        Err(errors) => {
            let status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return login_refused(&state, &csrf, next, errors, status).await;
        }
    };
    let ceremony = SecretString::from(form.raw("ceremony").to_owned());
    let now = crate::clock::now();
    match passkeys::finish_sign_in(&state, &client, &ceremony, &credential, now).await {
        Ok(pair) => Ok(signed_in_to(&state, &pair, &next)),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let message = match refusal {
                ApiError::InvalidCredentials => "That passkey is not registered to an account here (or was removed). Log in with your password.",
                ApiError::EmailNotVerified => "Verify your email address first: follow the link we mailed you.",
                ApiError::Validation(_) => "This passkey sign-in expired or was used up. Try again.",
                other => return Err(other.into()),
            };
            login_refused(&state, &csrf, next, FormErrors::general(message), status).await
        }
    }
}

/// Starts completing a login's challenge with a passkey (as `POST /auth/mfa/passkey`).
async fn start_second_factor(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let mfa_token = form.raw("mfa_token").to_owned();
    let offered_totp = form.raw("totp").to_owned();
    let token = SecretString::from(mfa_token.clone());
    let now = crate::clock::now();
    let chrome = Chrome::new(&state, &csrf, None, None, "").await?;
    match passkeys::begin_second_factor(&state, &client, &token, now).await {
        Ok(ceremony) => Ok(render(&CeremonyPage {
            chrome,
            heading: "Two-step sign-in",
            explanation: "Confirm it is you with one of your passkeys: your browser will ask for it and your device's screen lock or PIN.",
            button: "Use a passkey",
            kind: "get",
            options: options_json(&ceremony),
            action: "/login/second-factor",
            fields: vec![
                ("mfa_token", mfa_token),
                ("next", next),
                ("method", "passkey".into()),
                ("passkey", "1".into()),
                ("totp", offered_totp),
            ],
            back: "/login".into(),
        })),
        Err(ApiError::MfaChallengeInvalid) => {
            let errors = FormErrors::general("This sign-in expired or was used up. Log in again.");
            let status = axum::http::StatusCode::UNAUTHORIZED;
            login_refused(&state, &csrf, next, errors, status).await
        }
        Err(refusal) => {
            let errors = FormErrors::from_refusal(refusal, &["code"])?;
            let offered = super::mfa_pages::Offered::posted(&form);
            Ok(second_factor_page(chrome, mfa_token, next, offered, errors))
        }
    }
}

/// A passkey's answer on the login's second step, as the page's script posted it.
pub(super) fn second_factor_answer(
    form: &PortalForm,
) -> Result<crate::services::mfa::Answer, FormErrors> {
    posted_credential(form).map(|c| crate::services::mfa::Answer::Passkey(Box::new(c)))
}
