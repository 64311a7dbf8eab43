//! Pages of the account itself: sign up, the mailed verification link, log in and out, the
//! forgotten-password pair, and the landing page that sends a user to their org.

use crate::error::ApiError;
use crate::extract::{ApiQuery, ClientInfo, IdPath};
use crate::portal::{
    local_path, locked_out, render, render_status, see_other, signed_in_to, Chrome, CookieChanges,
    CsrfToken, FormErrors, MaybeSignedIn, Portal, PortalForm, PortalResult, SignedIn,
};
use crate::request_limits::IpLimit;
use crate::services::sessions::{LoginName, SignIn};
use crate::services::{accounts, sessions};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_store::{OrgId, SessionId};
use serde::Deserialize;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/switch", get(switch))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/signup", get(signup_page).post(signup))
        .route("/verify-email", get(verify_email))
        .route("/verify-email/resend", post(resend_verification))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/reset-password", get(reset_page).post(reset))
        .route("/account", get(account))
        .route("/account/confirm", post(confirm_password))
        .route("/account/profile", post(change_profile))
        .route("/account/password", post(change_password))
        .route("/account/sessions/end-others", post(end_other_sessions))
        .route("/account/sessions/{session_id}/end", post(end_session))
}

/// A page of a few paragraphs and perhaps one link onwards.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub title: &'static str,
    pub paragraphs: Vec<String>,
    pub link: Option<(String, &'static str)>,
}

#[derive(Template)]
#[template(path = "welcome.html")]
pub struct WelcomePage {
    pub chrome: Chrome,
    pub errors: FormErrors,
    pub name: String,
}

/// `/`: the signed-in user's org (the one their session is in, else their first), or a page to
/// create one; anyone else logs in.
async fn home(
    State(state): State<AppState>,
    csrf: CsrfToken,
    MaybeSignedIn(user): MaybeSignedIn,
) -> PortalResult<Response> {
    let Some(user) = user else {
        return Ok(see_other("/login"));
    };
    let memberships = state
        .store
        .memberships_of_user(user.user_id())
        .await
        .map_err(ApiError::from)?;
    let preferred = user.claims.org.as_ref();
    let org = memberships
        .iter()
        .find(|m| Some(&m.org_id) == preferred)
        .or_else(|| memberships.first());
    match org {
        Some(m) => Ok(see_other(&format!("/orgs/{}", m.org_id))),
        None => Ok(render(&WelcomePage {
            chrome: Chrome::new(&state, &csrf, Some(&user), None, "").await?,
            errors: FormErrors::none(),
            name: String::new(),
        })),
    }
}

#[derive(Deserialize)]
struct SwitchQuery {
    org: String,
}

/// `/switch?org=…`: the org switcher's target, for browsers without JavaScript.
async fn switch(
    _user: SignedIn,
    Portal(ApiQuery(query)): Portal<ApiQuery<SwitchQuery>>,
) -> PortalResult<Response> {
    let org: OrgId = query.org.parse().map_err(|_| ApiError::NotFound)?;
    Ok(see_other(&format!("/orgs/{org}")))
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    pub(super) chrome: Chrome,
    /// What the one login field takes.
    pub(super) ids: Identifiers,
    pub(super) errors: FormErrors,
    pub(super) email: String,
    pub(super) next: String,
    pub(super) notice: Option<&'static str>,
    pub(super) unverified: bool,
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    reset: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    MaybeSignedIn(user): MaybeSignedIn,
    Portal(ApiQuery(query)): Portal<ApiQuery<LoginQuery>>,
) -> PortalResult<Response> {
    let next = local_path(query.next.as_deref()).to_owned();
    if user.is_some() {
        return Ok(see_other(&next));
    }
    Ok(render(&LoginPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        ids: Identifiers::of(&state),
        errors: FormErrors::none(),
        email: String::new(),
        next,
        notice: query
            .reset
            .is_some()
            .then_some("Your password was changed. Log in with the new one."),
        unverified: false,
    }))
}

/// Logs in through the same service as `POST /auth/login` (lockout, one argon2 verification on
/// every path); the session's tokens go into the portal's cookies.
async fn login(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let email = form.get("email").unwrap_or_default().to_owned();
    let password = SecretString::from(form.raw("password").to_owned());
    let name = LoginName::typed(&state.config, &email);
    let refusal = match sessions::login(&state, &client, &name, password, crate::clock::now()).await
    {
        Ok(SignIn::Tokens(pair)) => return Ok(signed_in_to(&state, &pair, &next)),
        Ok(SignIn::Challenge(challenge)) => {
            let chrome = Chrome::new(&state, &csrf, None, None, "").await?;
            let token = challenge.token.expose_secret().to_owned();
            let offered = super::mfa_pages::Offered::of(&challenge.methods);
            let page = super::mfa_pages::second_factor_page(
                chrome,
                token,
                next,
                offered,
                FormErrors::none(),
            );
            return Ok(page);
        }
        Err(refusal) => refusal,
    };
    let unverified = matches!(refusal, ApiError::EmailNotVerified);
    let (status, errors) = match refusal {
        ApiError::RateLimited { retry_after } => {
            (StatusCode::TOO_MANY_REQUESTS, locked_out(retry_after))
        }
        other => {
            let (status, _) = other.status_and_message();
            (
                status,
                FormErrors::from_refusal(other, &["email", "password"])?,
            )
        }
    };
    Ok(render_status(
        status,
        &LoginPage {
            chrome: Chrome::new(&state, &csrf, None, None, "").await?,
            ids: Identifiers::of(&state),
            errors,
            email,
            next,
            notice: None,
            unverified,
        },
    ))
}

/// A wait in words: `45 seconds`, `3 minutes`.
pub(super) fn wait(seconds: u64) -> String {
    match seconds {
        0..=1 => "a second".to_owned(),
        2..=90 => format!("{seconds} seconds"),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

/// Ends the session (as `POST /auth/logout`) and clears the cookies.
async fn logout(
    State(state): State<AppState>,
    MaybeSignedIn(user): MaybeSignedIn,
    Portal(client): Portal<ClientInfo>,
    _form: PortalForm,
) -> PortalResult<Response> {
    if let Some(user) = user {
        sessions::logout(&state, &user, &client, crate::clock::now()).await?;
    }
    let mut response = see_other("/login");
    CookieChanges::sign_out(&state).apply(&mut response);
    Ok(response)
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    errors: FormErrors,
    ids: Identifiers,
    email: String,
    username: String,
    document: String,
    name: String,
    organization_name: String,
}

/// The login identifiers this instance uses, as its forms name them, and whether passkeys sign
/// in.
pub(super) struct Identifiers {
    /// Whether the login page offers a passkey.
    pub(super) passkeys: bool,
    /// The OpenID providers it offers: (id, name).
    pub(super) providers: Vec<(String, String)>,
    /// The login field's label: `Email`, `Email or username`, `Email, username or CPF`.
    pub(super) login_label: String,
    /// The username field's label at signup, when usernames are used.
    username: Option<&'static str>,
    /// The document field's label at signup, when documents are used.
    document: Option<String>,
}

impl Identifiers {
    /// As the configuration says.
    pub(super) fn of(state: &AppState) -> Self {
        use crate::config::IdentifierUse;
        let config = &state.config;
        let username = match config.auth.username {
            IdentifierUse::Off => None,
            IdentifierUse::Optional => Some("Username (optional)"),
            IdentifierUse::Required => Some("Username"),
        };
        let document = config.auth.document.as_ref().map(|d| {
            let optional = if d.required { "" } else { " (optional)" };
            format!("{} number{optional}", d.rule.label)
        });
        let mut names = vec!["Email".to_owned()];
        if username.is_some() {
            names.push("username".into());
        }
        if let Some(d) = &config.auth.document {
            names.push(d.rule.label.clone());
        }
        let login_label = match names.len() {
            1 => "Email".to_owned(),
            2 => names.join(" or "),
            _ => format!("{}, {} or {}", names[0], names[1], names[2]),
        };
        Self {
            passkeys: state.relying_party.enabled(),
            providers: state
                .oidc
                .list()
                .iter()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect(),
            login_label,
            username,
            document,
        }
    }
}

async fn signup_page(State(state): State<AppState>, csrf: CsrfToken) -> PortalResult<Response> {
    Ok(render(&SignupPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        errors: FormErrors::none(),
        ids: Identifiers::of(&state),
        email: String::new(),
        username: String::new(),
        document: String::new(),
        name: String::new(),
        organization_name: String::new(),
    }))
}

/// Creates the account (and its org) through the same service as `POST /auth/signup`.
async fn signup(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let input = accounts::Signup {
        email: form.get("email").unwrap_or_default().to_owned(),
        password: SecretString::from(form.raw("password").to_owned()),
        name: form.get("name").map(str::to_owned),
        organization_name: form.get("organization_name").map(str::to_owned),
        username: form.get("username").map(str::to_owned),
        document: form.get("document").map(str::to_owned),
    };
    let email = input.email.clone();
    match accounts::signup(&state, &client, input, crate::clock::now()).await {
        Ok(_) => Ok(render(&MessagePage {
            chrome: Chrome::new(&state, &csrf, None, None, "").await?,
            title: "Check your email",
            paragraphs: vec![
                format!("We sent a link to {email}. Open it to confirm the address, then log in."),
                "The link works once and expires after a day. Nothing arrived? Check the spam folder, or log in to have it sent again.".to_owned(),
            ],
            link: Some(("/login".to_owned(), "Go to log in")),
        })),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors = FormErrors::from_refusal(
                refusal,
                &["email", "username", "document", "password", "name", "organization_name"],
            )?;
            Ok(render_status(
                status,
                &SignupPage {
                    chrome: Chrome::new(&state, &csrf, None, None, "").await?,
                    errors,
                    ids: Identifiers::of(&state),
                    email,
                    username: form.get("username").unwrap_or_default().to_owned(),
                    document: form.get("document").unwrap_or_default().to_owned(),
                    name: form.get("name").unwrap_or_default().to_owned(),
                    organization_name: form
                        .get("organization_name")
                        .unwrap_or_default()
                        .to_owned(),
                },
            ))
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The link in the verification mail: spends the token and says so.
async fn verify_email(
    State(state): State<AppState>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    MaybeSignedIn(user): MaybeSignedIn,
    Portal(ApiQuery(query)): Portal<ApiQuery<TokenQuery>>,
) -> PortalResult<Response> {
    let token = SecretString::from(query.token.unwrap_or_default());
    let chrome = Chrome::new(&state, &csrf, user.as_ref(), None, "").await?;
    match accounts::verify_email(&state, &client, &token, crate::clock::now()).await {
        Ok(()) => Ok(render(&MessagePage {
            chrome,
            title: "Email confirmed",
            paragraphs: vec!["Your email address is confirmed. You can log in now.".to_owned()],
            link: Some(("/login".to_owned(), "Log in")),
        })),
        Err(ApiError::Validation(_)) => Ok(render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &MessagePage {
                chrome,
                title: "This link does not work",
                paragraphs: vec![
                    "The link is invalid, was used already or has expired.".to_owned(),
                    "Log in with your email and password to have a new one sent.".to_owned(),
                ],
                link: Some(("/login".to_owned(), "Log in")),
            },
        )),
        Err(other) => Err(other.into()),
    }
}

/// Sends the verification link again (the same answer whether or not the account exists).
async fn resend_verification(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let email = form.get("email").unwrap_or_default();
    accounts::resend_verification(&state, email)?;
    Ok(render(&MessagePage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        title: "Check your email",
        paragraphs: vec![format!(
            "If {email} has an account that is not confirmed yet, a new link is on its way."
        )],
        link: Some(("/login".to_owned(), "Go to log in")),
    }))
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    chrome: Chrome,
    errors: FormErrors,
    email: String,
}

async fn forgot_page(State(state): State<AppState>, csrf: CsrfToken) -> PortalResult<Response> {
    Ok(render(&ForgotPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        errors: FormErrors::none(),
        email: String::new(),
    }))
}

/// Mails a reset link through the same service as `POST /auth/password/forgot`; the answer never
/// says whether the address has an account.
async fn forgot(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let email = form.get("email").unwrap_or_default().to_owned();
    match accounts::forgot_password(&state, &email) {
        Ok(()) => Ok(render(&MessagePage {
            chrome: Chrome::new(&state, &csrf, None, None, "").await?,
            title: "Check your email",
            paragraphs: vec![format!(
                "If {email} has an account, a link to choose a new password is on its way. It works once and expires after an hour."
            )],
            link: None,
        })),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            Ok(render_status(
                status,
                &ForgotPage {
                    chrome: Chrome::new(&state, &csrf, None, None, "").await?,
                    errors: FormErrors::from_refusal(refusal, &["email"])?,
                    email,
                },
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    chrome: Chrome,
    errors: FormErrors,
    token: String,
}

/// The link in the reset mail: the form for the new password (the token rides along in it).
async fn reset_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    Portal(ApiQuery(query)): Portal<ApiQuery<TokenQuery>>,
) -> PortalResult<Response> {
    let mut response = render(&ResetPage {
        chrome: Chrome::new(&state, &csrf, None, None, "").await?,
        errors: FormErrors::none(),
        token: query.token.unwrap_or_default(),
    });
    crate::user_auth::no_store(&mut response);
    Ok(response)
}

/// Sets the new password through the same service as `POST /auth/password/reset` (every
/// session ends) and sends the user to log in.
async fn reset(
    State(state): State<AppState>,
    _limit: Portal<IpLimit>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let token = SecretString::from(form.raw("token").to_owned());
    let password = SecretString::from(form.raw("password").to_owned());
    match accounts::reset_password(&state, &client, &token, &password, crate::clock::now()).await {
        Ok(()) => {
            let mut response = see_other("/login?reset=1");
            CookieChanges::sign_out(&state).apply(&mut response);
            Ok(response)
        }
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let mut response = render_status(
                status,
                &ResetPage {
                    chrome: Chrome::new(&state, &csrf, None, None, "").await?,
                    errors: FormErrors::from_refusal(refusal, &["password", "token"])?,
                    token: form.raw("token").to_owned(),
                },
            );
            crate::user_auth::no_store(&mut response);
            Ok(response)
        }
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    email: String,
    /// The name in the profile form: the stored one, or what was typed when it was refused.
    name: String,
    sessions: Vec<fluxgate_proto::Session>,
    notice: Option<String>,
    forms: AccountForms,
    /// Whether two-step sign-in is on.
    totp: bool,
    recovery_codes_left: i64,
    /// The account's passkeys.
    passkeys: Vec<fluxgate_proto::Passkey>,
    /// Whether passkeys work on this instance.
    passkeys_enabled: bool,
    /// The linked identities: (id, provider's name, email, linked, last used).
    identities: Vec<LinkedIdentity>,
    /// Providers not linked yet: (id, name).
    linkable: Vec<(String, String)>,
    /// Whether the account has a password (one made by a provider has none until reset).
    has_password: bool,
}

/// A linked identity as the account page lists it.
struct LinkedIdentity {
    id: String,
    provider: String,
    email: String,
    created_at: String,
}

/// What the account page's forms show after a refused post: each form its own errors.
#[derive(Default)]
pub(super) struct AccountForms {
    profile: FormErrors,
    /// The name as typed, when the profile form was refused.
    typed_name: Option<String>,
    password: FormErrors,
    /// The two-step sign-in form's.
    mfa: FormErrors,
    /// The passkey forms'.
    passkeys: FormErrors,
    /// The linked sign-in forms'.
    identities: FormErrors,
}

impl AccountForms {
    /// The linked sign-in forms refused with `errors`.
    pub(super) fn identities(errors: FormErrors) -> Self {
        Self {
            identities: errors,
            ..Self::default()
        }
    }

    /// The passkey forms refused with `errors`.
    pub(super) fn passkeys(errors: FormErrors) -> Self {
        Self {
            passkeys: errors,
            ..Self::default()
        }
    }

    /// The two-step sign-in form refused with `errors`.
    pub(super) fn mfa(errors: FormErrors) -> Self {
        Self {
            mfa: errors,
            ..Self::default()
        }
    }
}

pub(super) async fn account_page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &crate::user_auth::AuthUser,
    notice: Option<String>,
    mut forms: AccountForms,
) -> PortalResult<Response> {
    let record = crate::portal::account_of(state, user).await?;
    let sessions = sessions::list(state, user, crate::clock::now())
        .await?
        .iter()
        .map(|s| crate::routes::auth::session_view(s, user))
        .collect();
    let who = accounts::who_am_i(state, user).await?;
    let refused = [
        &forms.profile,
        &forms.password,
        &forms.mfa,
        &forms.passkeys,
        &forms.identities,
    ];
    let linked = &who.identities;
    let provider_name = |id: &str| {
        state
            .oidc
            .get(id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|_| id.to_owned())
    };
    let linkable = state
        .oidc
        .list()
        .iter()
        .filter(|p| !linked.iter().any(|l| l.provider == p.id))
        .map(|p| (p.id.clone(), p.name.clone()))
        .collect();
    let identities = linked
        .iter()
        .map(|l| LinkedIdentity {
            id: l.id.to_string(),
            provider: provider_name(&l.provider),
            email: l.email.clone().unwrap_or_default(),
            created_at: crate::clock::rfc3339(l.created_at),
        })
        .collect();
    let status = if refused.iter().any(|f| f.any()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render_status(
        status,
        &AccountPage {
            chrome: Chrome::new(state, csrf, Some(user), None, "account").await?,
            email: record.email,
            name: forms
                .typed_name
                .take()
                .unwrap_or_else(|| record.name.unwrap_or_default()),
            sessions,
            notice,
            forms,
            totp: who.totp,
            recovery_codes_left: who.recovery_codes_left,
            passkeys: who
                .passkeys
                .iter()
                .map(crate::routes::passkeys::passkey_json)
                .collect(),
            passkeys_enabled: state.relying_party.enabled(),
            identities,
            linkable,
            has_password: !who.user.password_hash.is_empty(),
        },
    ))
}

/// The account: profile and the live sessions (as `GET /auth/sessions`).
async fn account(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    account_page(&state, &csrf, &user, None, AccountForms::default()).await
}

/// Changes the display name (as `PATCH /auth/me`).
async fn change_profile(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let name = form.get("name").unwrap_or_default();
    match accounts::rename(&state, &user, &client, Some(name), crate::clock::now()).await {
        Ok(()) => {
            let notice = Some("Your profile was saved.".to_owned());
            account_page(&state, &csrf, &user, notice, AccountForms::default()).await
        }
        Err(refusal) => {
            let forms = AccountForms {
                profile: FormErrors::from_refusal(refusal, &["name"])?,
                typed_name: Some(name.to_owned()),
                ..AccountForms::default()
            };
            account_page(&state, &csrf, &user, None, forms).await
        }
    }
}

/// Ends one session (as `DELETE /auth/sessions/{id}`).
async fn end_session(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(session_id)): Portal<IdPath<SessionId>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    sessions::end(&state, &user, &client, &session_id, crate::clock::now()).await?;
    Ok(see_other("/account"))
}

/// Ends every other session (as `DELETE /auth/sessions`).
async fn end_other_sessions(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    _form: PortalForm,
) -> PortalResult<Response> {
    let ended = sessions::end_others(&state, &user, &client, crate::clock::now()).await?;
    let notice = others_ended(ended);
    account_page(&state, &csrf, &user, Some(notice), AccountForms::default()).await
}

/// "1 other session ended." / "3 other sessions ended."
fn others_ended(count: u64) -> String {
    match count {
        1 => "1 other session ended.".to_owned(),
        n => format!("{n} other sessions ended."),
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    errors: FormErrors,
    next: String,
    window: String,
    /// For an account without a password: the providers it signs in with again, (id, name).
    sign_in_again: Option<Vec<(String, String)>>,
}

/// The page asking for the password again, when the session last proved it longer ago than
/// `auth.reauthenticate_after`; `None` when it is recent enough for a sensitive change. `next`
/// is where the confirmation leads back to.
pub async fn password_confirmation(
    state: &AppState,
    csrf: &CsrfToken,
    user: &crate::user_auth::AuthUser,
    next: &str,
) -> PortalResult<Option<Response>> {
    if sessions::recently_authenticated(state, user, crate::clock::now()).await? {
        return Ok(None);
    }
    let page = confirm_page(state, csrf, user, next, FormErrors::none()).await?;
    Ok(Some(render_status(StatusCode::FORBIDDEN, &page)))
}

async fn confirm_page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &crate::user_auth::AuthUser,
    next: &str,
    errors: FormErrors,
) -> PortalResult<ConfirmPage> {
    let who = accounts::who_am_i(state, user).await?;
    let sign_in_again = who.user.password_hash.is_empty().then(|| {
        who.identities
            .iter()
            .filter_map(|i| state.oidc.get(&i.provider).ok())
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect()
    });
    Ok(ConfirmPage {
        chrome: Chrome::new(state, csrf, Some(user), None, "").await?,
        errors,
        next: local_path(Some(next)).to_owned(),
        window: fluxgate_core::units::format_duration(state.config.auth.reauthenticate_after),
        sign_in_again,
    })
}

/// Checks the password (as a login would, lockout included) and goes back to `next`.
async fn confirm_password(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let next = local_path(form.get("next")).to_owned();
    let password = SecretString::from(form.raw("password").to_owned());
    match sessions::confirm_password(&state, &user, &client, password, crate::clock::now()).await {
        Ok(()) => Ok(see_other(&next)),
        Err(refusal) => {
            let (status, errors) = match refusal {
                ApiError::InvalidCredentials => (
                    StatusCode::UNAUTHORIZED,
                    FormErrors::wrong_password("password"),
                ),
                ApiError::RateLimited { retry_after } => {
                    (StatusCode::TOO_MANY_REQUESTS, locked_out(retry_after))
                }
                other => return Err(other.into()),
            };
            let page = confirm_page(&state, &csrf, &user, &next, errors).await?;
            Ok(render_status(status, &page))
        }
    }
}

/// Changes the password (as `POST /auth/password/change`): every other session ends.
async fn change_password(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let change = accounts::PasswordChange {
        current_password: SecretString::from(form.raw("current_password").to_owned()),
        new_password: SecretString::from(form.raw("new_password").to_owned()),
    };
    match accounts::change_password(&state, &user, &client, change, crate::clock::now()).await {
        Ok(ended) => {
            let notice = format!("Your password was changed; {}", others_ended(ended));
            account_page(&state, &csrf, &user, Some(notice), AccountForms::default()).await
        }
        Err(ApiError::InvalidCredentials) => {
            let password = FormErrors::wrong_password("current_password");
            let forms = AccountForms {
                password,
                ..AccountForms::default()
            };
            account_page(&state, &csrf, &user, None, forms).await
        }
        Err(refusal) => {
            let password =
                FormErrors::from_refusal(refusal, &["current_password", "new_password"])?;
            let forms = AccountForms {
                password,
                ..AccountForms::default()
            };
            account_page(&state, &csrf, &user, None, forms).await
        }
    }
}
