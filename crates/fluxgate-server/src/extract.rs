//! Request extractors that fail with the API envelope: JSON bodies that name the bad field,
//! and the client's IP and user agent.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// A JSON body: 400 for a wrong content type or malformed JSON, 413 when too large, 422 naming
/// the field when the shape is wrong.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut deserializer);
    if parsed.is_ok() {
        deserializer
            .end()
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    }
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => {
            let inner = error.inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(ApiError::BadRequest(format!("malformed JSON: {inner}")));
            }
            let message = inner.to_string();
            let path = error.path().to_string();
            let field = if path == "." || path.is_empty() {
                // "missing field `email` at line 1 column 2": the field is named in the message
                message
                    .split('`')
                    .nth(1)
                    .filter(|_| {
                        message.starts_with("missing field") || message.starts_with("unknown field")
                    })
                    .unwrap_or("body")
                    .to_owned()
            } else {
                path
            };
            let reason = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            Err(ApiError::field(&field, reason))
        }
    }
}

/// Where a request came from, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The peer's address.
    pub ip: Option<String>,
    /// The User-Agent header, truncated.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// As audit metadata.
    pub fn audit_meta(&self) -> fluxgate_store::AuditMeta {
        fluxgate_store::AuditMeta {
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, user_agent })
    }
}
