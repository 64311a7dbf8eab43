//! `/auth/mfa/*`: the HTTP face of [`services::mfa`](crate::services::mfa) — enrolling,
//! confirming and removing a TOTP factor, recovery codes, and completing a login's challenge.

use crate::clock;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientInfo};
use crate::request_limits::IpLimit;
use crate::services::mfa::{self, Answer};
use crate::state::AppState;
use crate::user_auth::{mfa_token, token_pair_response, AuthUser};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Json;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_proto::{Data, ErrorEnvelope, RecoveryCodes, Tokens, TotpEnrolment};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enrol_totp, disable_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_recovery_codes))
        .routes(routes!(verify))
}

/// The account's password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// A code from the authenticator app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// Six digits.
    code: String,
}

/// The password and a second factor: `code` (from the app) or `recovery_code`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// Six digits from the authenticator app.
    code: Option<String>,
    /// Or one of the recovery codes.
    #[schema(value_type = Option<String>)]
    recovery_code: Option<SecretString>,
}

/// A login's challenge and its second factor: `code` (from the app), `recovery_code`, or
/// `passkey`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// From `POST /auth/login` (or, after a provider's sign-in, the `mfa_token` cookie).
    #[schema(value_type = Option<String>)]
    mfa_token: Option<SecretString>,
    /// Six digits from the authenticator app.
    code: Option<String>,
    /// Or one of the recovery codes.
    #[schema(value_type = Option<String>)]
    recovery_code: Option<SecretString>,
    /// Or the `PublicKeyCredential` that `navigator.credentials.get` answered to the options
    /// of `POST /auth/mfa/passkey`, as JSON.
    #[schema(value_type = Option<Object>)]
    passkey: Option<Box<webauthn_rs::prelude::PublicKeyCredential>>,
}

/// The app's current code; an account with only passkeys may leave it out when its session
/// signed in with one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateBody {
    /// Six digits.
    code: Option<String>,
}

/// Starts enrolling a TOTP factor (replacing an unconfirmed one): the secret, its `otpauth://`
/// URI and a QR code. Nothing changes at login until a first code confirms it.
#[utoipa::path(post, path = "/auth/mfa/totp", tag = "auth", security(("bearer" = [])), request_body = PasswordBody,
    responses((status = 200, description = "the new secret", body = Data<TotpEnrolment>),
              (status = 401, description = "wrong password", body = ErrorEnvelope),
              (status = 409, description = "a TOTP factor is already enabled", body = ErrorEnvelope)))]
async fn enrol_totp(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Json<Data<TotpEnrolment>>> {
    let enrolment = mfa::enrol(&state, &user, &client, body.password, clock::now()).await?;
    Ok(Json(Data {
        data: TotpEnrolment {
            secret: enrolment.secret,
            otpauth_uri: enrolment.uri,
            qr_svg: enrolment.qr_svg,
        },
    }))
}

/// Confirms the pending TOTP factor with the app's current code: login asks for a code from
/// now on. Answers the ten recovery codes, shown this once.
#[utoipa::path(post, path = "/auth/mfa/totp/confirm", tag = "auth", security(("bearer" = [])), request_body = CodeBody,
    responses((status = 200, description = "enabled; the recovery codes", body = Data<RecoveryCodes>),
              (status = 409, description = "no enrolment pending", body = ErrorEnvelope),
              (status = 422, description = "not the current code", body = ErrorEnvelope)))]
async fn confirm_totp(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CodeBody>,
) -> ApiResult<Json<Data<RecoveryCodes>>> {
    let codes = mfa::confirm(&state, &user, &client, &body.code, clock::now()).await?;
    Ok(recovery_codes(codes))
}

/// Turns the TOTP factor off (its recovery codes too): needs the password and a current code
/// or a recovery code; a wrong one counts against the login lockout.
#[utoipa::path(delete, path = "/auth/mfa/totp", tag = "auth", security(("bearer" = [])), request_body = DisableBody,
    responses((status = 204, description = "turned off"),
              (status = 401, description = "wrong password or code", body = ErrorEnvelope),
              (status = 404, description = "no TOTP factor", body = ErrorEnvelope)))]
async fn disable_totp(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<DisableBody>,
) -> ApiResult<Response> {
    let answer = Answer::from_fields(body.code, body.recovery_code)?;
    mfa::disable(&state, &user, &client, body.password, &answer, clock::now()).await?;
    Ok(super::no_content())
}

/// Replaces the recovery codes (the app's current code proves the factor is at hand; an
/// account with only passkeys needs a session that signed in with one instead); the new codes
/// are shown this once and the old ones stop working.
#[utoipa::path(post, path = "/auth/mfa/recovery-codes", tag = "auth", security(("bearer" = [])), request_body = RegenerateBody,
    responses((status = 200, description = "the new recovery codes", body = Data<RecoveryCodes>),
              (status = 401, description = "wrong code", body = ErrorEnvelope),
              (status = 404, description = "no second factor", body = ErrorEnvelope)))]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<RegenerateBody>,
) -> ApiResult<Json<Data<RecoveryCodes>>> {
    let code = body.code.as_deref();
    let codes = mfa::regenerate_recovery_codes(&state, &user, &client, code, clock::now()).await?;
    Ok(recovery_codes(codes))
}

/// Completes a login's second-factor challenge, from the client that logged in, with a code,
/// a recovery code or a passkey: a token pair (body and cookies) whose access token's `amr`
/// names the factor. Each challenge signs in
/// once, within five minutes and five codes; each wrong code also counts against the account's
/// login lockout.
#[utoipa::path(post, path = "/auth/mfa/verify", tag = "auth", request_body = VerifyBody,
    responses((status = 200, description = "access and refresh tokens", body = Data<Tokens>),
              (status = 401, description = "INVALID_MFA_CODE, or MFA_CHALLENGE_INVALID (log in again)", body = ErrorEnvelope),
              (status = 429, description = "account locked", body = ErrorEnvelope)))]
async fn verify(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerifyBody>,
) -> ApiResult<Response> {
    let token = mfa_token(&state, &Method::POST, &headers, body.mfa_token)?;
    let answer = match body.passkey {
        Some(credential) if body.code.is_none() && body.recovery_code.is_none() => {
            Answer::Passkey(credential)
        }
        Some(_) => {
            return Err(crate::error::ApiError::field(
                "passkey",
                "give one of `code`, `recovery_code` or `passkey`",
            ))
        }
        None => Answer::from_fields(body.code, body.recovery_code)?,
    };
    let pair = mfa::complete(&state, &client, &token, &answer, clock::now()).await?;
    Ok(token_pair_response(&state, pair))
}

fn recovery_codes(codes: Vec<SecretString>) -> Json<Data<RecoveryCodes>> {
    Json(Data {
        data: RecoveryCodes {
            recovery_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
        },
    })
}
