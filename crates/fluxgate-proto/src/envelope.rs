//! The envelopes every answer travels in: `{"data": …}`, a page with its cursor, and the error
//! body `{"error": {"code", "message", …}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A successful answer: `{"data": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Data<T> {
    /// The answer itself.
    pub data: T,
}

/// One page of a list, by id: pass `next_cursor` as `?cursor=` for the next (`null`: last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// The cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// A failed answer: `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The error: a stable `code`, a message for people, and the code's own details
/// (`fields` for `VALIDATION_FAILED`, `required_permission`, `required_scope`, `retry_after`,
/// `request_id` …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// E.g. `VALIDATION_FAILED`, `NOT_FOUND`, `RATE_LIMITED`.
    pub code: String,
    /// For people; never a secret or a database message.
    pub message: String,
    /// The details this code carries.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Map<String, Value>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` (alive) or `ready` (the database answers).
    pub status: String,
    /// The database backend (`sqlite` or `postgres`), when readiness was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}
