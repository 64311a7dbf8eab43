//! The API's one error type, written to the wire once as the spec's JSON envelope.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::StoreError;
use serde_json::{json, Map, Value};

/// The id of the request being served, or empty outside one.
pub use crate::telemetry::request_id;

/// Every way a request can fail, each with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong content type.
    #[error("{0}")]
    BadRequest(String),
    /// Input that parsed but is not acceptable, per field.
    #[error("validation failed: {0}")]
    Validation(FieldErrors),
    /// Missing, invalid or expired credentials (one message, never which part).
    #[error("authentication required")]
    Unauthorized,
    /// Login with a wrong email or password.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// A wrong, expired or already used second-factor code.
    #[error("invalid second-factor code")]
    InvalidMfaCode,
    /// A sign-in challenge that is unknown, spent, expired, out of attempts or from another client.
    #[error("invalid sign-in challenge")]
    MfaChallengeInvalid,
    /// A user acting without a second factor where a setting requires one (the message names it).
    #[error("{0}")]
    SecondFactorRequired(String),
    /// Login before the email was verified.
    #[error("email address not verified")]
    EmailNotVerified,
    /// Authenticated but lacking a permission.
    #[error("missing permission {0}")]
    Forbidden(String),
    /// Authenticated, but this caller may not do this (for a reason other than a permission).
    #[error("{0}")]
    Refused(String),
    /// A cookie-authenticated state change from a foreign origin.
    #[error("cross-site request refused")]
    CrossSite,
    /// An API key with an IP allowlist, presented from an address outside it.
    #[error("API key used from an address outside its allowlist")]
    ForbiddenIp,
    /// An API key lacking a scope.
    #[error("missing scope {0}")]
    InsufficientScope(String),
    /// Unknown resource, or one of another org.
    #[error("not found")]
    NotFound,
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A uniqueness rule.
    #[error("{0}")]
    Conflict(String),
    /// Body over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Too many requests; retry after this many seconds.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// The database (or Redis) cannot be reached.
    #[error("service unavailable")]
    Unavailable,
    /// A bug; logged with its chain, answered with the request id only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A single-field validation error.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::single(field, reason))
    }

    /// The status and the message a client is told (never a secret or a database's words).
    pub fn status_and_message(&self) -> (StatusCode, String) {
        let (status, _, message, _) = self.parts();
        (status, message)
    }

    /// Logs what an operator must see: internal errors with their chain, unavailability.
    pub fn log(&self) {
        match self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error")
            }
            Self::Unavailable => tracing::warn!("answering 503: backing service unavailable"),
            _ => {}
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Map<String, Value>) {
        let mut details = Map::new();
        let (status, code, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", m.clone()),
            Self::Validation(fields) => {
                let map: Map<String, Value> =
                    fields.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect();
                details.insert("fields".into(), Value::Object(map));
                (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", "the request has invalid fields".into())
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "missing, invalid or expired credentials".into(),
            ),
            Self::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "invalid email or password".into(),
            ),
            Self::InvalidMfaCode => (
                StatusCode::UNAUTHORIZED,
                "INVALID_MFA_CODE",
                "the code is wrong, expired or already used".into(),
            ),
            Self::MfaChallengeInvalid => (
                StatusCode::UNAUTHORIZED,
                "MFA_CHALLENGE_INVALID",
                "the sign-in challenge is unknown, expired, used up or from another client: log in again".into(),
            ),
            Self::SecondFactorRequired(message) => {
                (StatusCode::FORBIDDEN, "MFA_REQUIRED", message.clone())
            }
            Self::EmailNotVerified => (
                StatusCode::FORBIDDEN,
                "EMAIL_NOT_VERIFIED",
                "verify your email address before logging in".into(),
            ),
            Self::Forbidden(permission) => {
                details.insert("required_permission".into(), Value::from(permission.as_str()));
                (StatusCode::FORBIDDEN, "FORBIDDEN", format!("this action requires the `{permission}` permission"))
            }
            Self::Refused(message) => (StatusCode::FORBIDDEN, "FORBIDDEN", message.clone()),
            Self::ForbiddenIp => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN_IP",
                "this API key may not be used from this address (its IP allowlist)".into(),
            ),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "cross-site request refused: send it from the configured origin or with an X-Requested-With header".into(),
            ),
            Self::InsufficientScope(scope) => {
                details.insert("required_scope".into(), Value::from(scope.as_str()));
                (StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE", format!("this API key lacks the `{scope}` scope"))
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource".into()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this route does not accept that method".into(),
            ),
            Self::Conflict(m) => (StatusCode::CONFLICT, "CONFLICT", m.clone()),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "the request body is too large".into(),
            ),
            Self::RateLimited { retry_after } => {
                details.insert("retry_after".into(), Value::from(*retry_after));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    format!("too many requests; retry after {retry_after} seconds"),
                )
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "a backing service is unavailable; retry shortly".into(),
            ),
            Self::Internal(_) => {
                let id = request_id();
                details.insert("request_id".into(), Value::from(id));
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error".into())
            }
        };
        (status, code, message, details)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, details) = self.parts();
        self.log();
        let mut error = Map::new();
        error.insert("code".into(), Value::from(code));
        error.insert("message".into(), Value::from(message));
        error.extend(details);
        let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
        if let Self::RateLimited { retry_after } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable
            }
            // the constraint's text names tables and columns: logged, never answered
            StoreError::Conflict(constraint) => {
                tracing::debug!(%constraint, "unique constraint refused a write");
                Self::Conflict("this conflicts with something that already exists".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::Validation(errors)
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_conflict_never_carries_the_database_message() {
        let error = ApiError::from(StoreError::Conflict(
            "UNIQUE constraint failed: users.email".into(),
        ));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"CONFLICT\""), "{text}");
        assert!(
            !text.contains("UNIQUE") && !text.contains("users"),
            "{text}"
        );
    }
}
