//! `/auth/passkeys/*` and `/auth/mfa/passkey`: the HTTP face of
//! [`services::passkeys`](crate::services::passkeys) — registering, listing, naming and removing
//! passkeys, signing in with one alone, and the options for one as a login's second factor.

use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientInfo, IdPath};
use crate::request_limits::IpLimit;
use crate::services::passkeys::{self, Ceremony};
use crate::state::AppState;
use crate::user_auth::{token_pair_response, AuthUser};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_proto::{Data, ErrorEnvelope, Passkey, PasskeyAdded, PasskeyCeremony, Tokens};
use fluxgate_store::{PasskeyId, PasskeyRecord};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(passkey_registration_options))
        .routes(routes!(list_passkeys, add_passkey))
        .routes(routes!(rename_passkey, remove_passkey))
        .routes(routes!(passkey_sign_in_options))
        .routes(routes!(passkey_sign_in))
        .routes(routes!(passkey_second_factor_options))
}

/// The account's password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// A finished registration: the ceremony, the authenticator's answer, and a name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// From `POST /auth/passkeys/registration-options`.
    #[schema(value_type = String)]
    ceremony: SecretString,
    /// What to call it (1 to 64 characters), such as the device it lives on.
    name: String,
    /// The `PublicKeyCredential` that `navigator.credentials.create` answered, as JSON
    /// (binary fields in base64url).
    #[schema(value_type = Object)]
    credential: RegisterPublicKeyCredential,
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    /// 1 to 64 characters.
    name: String,
}

/// A finished passkey sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    /// From `POST /auth/passkeys/sign-in-options`.
    #[schema(value_type = String)]
    ceremony: SecretString,
    /// The `PublicKeyCredential` that `navigator.credentials.get` answered, as JSON.
    #[schema(value_type = Object)]
    credential: PublicKeyCredential,
}

/// A login's challenge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    /// From `POST /auth/login` (or, after a provider's sign-in, the `mfa_token` cookie).
    #[schema(value_type = Option<String>)]
    mfa_token: Option<SecretString>,
}

/// Starts registering a passkey: WebAuthn creation options for `navigator.credentials.create`
/// (asking for a discoverable credential where the authenticator can make one) and the
/// ceremony to finish with, from this client within five minutes.
#[utoipa::path(post, path = "/auth/passkeys/registration-options", tag = "auth", security(("bearer" = [])), request_body = PasswordBody,
    responses((status = 200, description = "the creation options", body = Data<PasskeyCeremony>),
              (status = 401, description = "wrong password", body = ErrorEnvelope),
              (status = 409, description = "passkeys are off: `public_url` names no host", body = ErrorEnvelope)))]
async fn passkey_registration_options(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Json<Data<PasskeyCeremony>>> {
    let now = clock::now();
    let ceremony = passkeys::begin_registration(&state, &user, &client, body.password, now).await?;
    Ok(ceremony_json(ceremony))
}

/// Finishes a registration: the passkey, and — when it is the account's first second factor —
/// ten recovery codes, shown this once. From now on a password login asks for a second factor,
/// and the passkey can sign in alone.
#[utoipa::path(post, path = "/auth/passkeys", tag = "auth", security(("bearer" = [])), request_body = AddBody,
    responses((status = 201, description = "registered", body = Data<PasskeyAdded>),
              (status = 409, description = "registered already", body = ErrorEnvelope),
              (status = 422, description = "unknown or expired ceremony, a bad name, or an answer that does not verify", body = ErrorEnvelope)))]
async fn add_passkey(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<AddBody>,
) -> ApiResult<Response> {
    let now = clock::now();
    let (passkey, codes) = passkeys::finish_registration(
        &state,
        &user,
        &client,
        &body.ceremony,
        &body.name,
        &body.credential,
        now,
    )
    .await?;
    let data = PasskeyAdded {
        passkey: passkey_json(&passkey),
        recovery_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    };
    Ok((StatusCode::CREATED, Json(Data { data })).into_response())
}

/// The account's passkeys, oldest first.
#[utoipa::path(get, path = "/auth/passkeys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "the passkeys", body = Data<Vec<Passkey>>)))]
async fn list_passkeys(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Data<Vec<Passkey>>>> {
    let passkeys = passkeys::list(&state, &user).await?;
    Ok(Json(Data {
        data: passkeys.iter().map(passkey_json).collect(),
    }))
}

/// Renames a passkey.
#[utoipa::path(patch, path = "/auth/passkeys/{passkey_id}", tag = "auth", security(("bearer" = [])), request_body = RenameBody,
    params(("passkey_id" = String, Path, description = "psk_…")),
    responses((status = 200, description = "renamed", body = Data<Passkey>),
              (status = 404, description = "no such passkey of yours", body = ErrorEnvelope)))]
async fn rename_passkey(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    IdPath(id): IdPath<PasskeyId>,
    ApiJson(body): ApiJson<RenameBody>,
) -> ApiResult<Json<Data<Passkey>>> {
    let now = clock::now();
    let passkey = passkeys::rename(&state, &user, &client, &id, &body.name, now).await?;
    Ok(Json(Data {
        data: passkey_json(&passkey),
    }))
}

/// Removes a passkey (the password confirms it); with the account's last second factor go its
/// recovery codes.
#[utoipa::path(delete, path = "/auth/passkeys/{passkey_id}", tag = "auth", security(("bearer" = [])), request_body = PasswordBody,
    params(("passkey_id" = String, Path, description = "psk_…")),
    responses((status = 204, description = "removed"),
              (status = 401, description = "wrong password", body = ErrorEnvelope),
              (status = 404, description = "no such passkey of yours", body = ErrorEnvelope)))]
async fn remove_passkey(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    IdPath(id): IdPath<PasskeyId>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Response> {
    passkeys::remove(&state, &user, &client, &id, body.password, clock::now()).await?;
    Ok(super::no_content())
}

/// Starts a sign-in with a passkey alone: request options naming no account (the
/// authenticator offers its discoverable credentials for this site) and the ceremony.
#[utoipa::path(post, path = "/auth/passkeys/sign-in-options", tag = "auth",
    responses((status = 200, description = "the request options", body = Data<PasskeyCeremony>),
              (status = 409, description = "passkeys are off: `public_url` names no host", body = ErrorEnvelope)))]
async fn passkey_sign_in_options(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
) -> ApiResult<Json<Data<PasskeyCeremony>>> {
    let ceremony = passkeys::begin_sign_in(&state, &client, clock::now()).await?;
    Ok(ceremony_json(ceremony))
}

/// Finishes a passkey sign-in, from the client that started it: a token pair (body and
/// cookies) whose access token's `amr` is `hwk mfa` — a user-verified passkey counts as a
/// second factor.
#[utoipa::path(post, path = "/auth/passkeys/sign-in", tag = "auth", request_body = SignInBody,
    responses((status = 200, description = "access and refresh tokens", body = Data<Tokens>),
              (status = 401, description = "unknown passkey or a signature that does not verify", body = ErrorEnvelope),
              (status = 422, description = "unknown, finished or expired ceremony", body = ErrorEnvelope)))]
async fn passkey_sign_in(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<SignInBody>,
) -> ApiResult<Response> {
    let now = clock::now();
    let pair =
        passkeys::finish_sign_in(&state, &client, &body.ceremony, &body.credential, now).await?;
    Ok(token_pair_response(&state, pair))
}

/// Options for completing a login's challenge with a passkey (its methods include `passkey`):
/// answer them with `navigator.credentials.get`, then send the credential as `passkey` to
/// `POST /auth/mfa/verify` with the same `mfa_token`. `ceremony` is that `mfa_token`. Counts as
/// one of the challenge's attempts.
#[utoipa::path(post, path = "/auth/mfa/passkey", tag = "auth", request_body = ChallengeBody,
    responses((status = 200, description = "the request options", body = Data<PasskeyCeremony>),
              (status = 401, description = "MFA_CHALLENGE_INVALID (log in again)", body = ErrorEnvelope),
              (status = 409, description = "the account has no passkey", body = ErrorEnvelope)))]
async fn passkey_second_factor_options(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<ChallengeBody>,
) -> ApiResult<Json<Data<PasskeyCeremony>>> {
    let method = axum::http::Method::POST;
    let token = crate::user_auth::mfa_token(&state, &method, &headers, body.mfa_token)?;
    let now = clock::now();
    let ceremony = passkeys::begin_second_factor(&state, &client, &token, now).await?;
    Ok(ceremony_json(ceremony))
}

fn ceremony_json(ceremony: Ceremony) -> Json<Data<PasskeyCeremony>> {
    Json(Data {
        data: PasskeyCeremony {
            ceremony: ceremony.token.expose_secret().to_owned(),
            options: ceremony.options,
            expires_at: rfc3339(ceremony.expires_at),
        },
    })
}

/// A passkey as the API shows it.
pub fn passkey_json(passkey: &PasskeyRecord) -> Passkey {
    Passkey {
        id: passkey.id.to_string(),
        name: passkey.name.clone(),
        created_at: rfc3339(passkey.created_at),
        last_used_at: passkey.last_used_at.map(rfc3339),
    }
}
