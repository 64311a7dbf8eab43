//! Request extractors that fail with the API envelope: JSON bodies that name the bad field,
//! identifiers in the path, and the client's IP and user agent.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::{header, request::Parts, StatusCode};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// Identifiers from the path (`org_…`, `key_…`, …): one that does not parse as its kind answers
/// 404, exactly like one that names nothing.
#[derive(Debug)]
pub struct IdPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for IdPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(ids)| Self(ids))
            .map_err(|_| ApiError::NotFound)
    }
}

/// A JSON body: 400 for a wrong content type or malformed JSON, 413 when too large, 422 naming
/// the field when the shape is wrong.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// An optional JSON body (`POST …/rotate`, `/auth/refresh`): an empty (or blank) body is `None`
/// whatever its type; any other body is held to [`ApiJson`]'s rules.
#[derive(Debug)]
pub struct MaybeJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = require_json_content_type(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        declared_json?;
        parse_json(&bytes).map(|body| Self(Some(body)))
    }
}

/// 400 unless the body is declared as JSON (`application/json` or `application/…+json`).
fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim().as_bytes();
            let (kind, suffix) = (b"application/", b"+json");
            mime.eq_ignore_ascii_case(b"application/json")
                || (mime.len() >= kind.len() + suffix.len()
                    && mime[..kind.len()].eq_ignore_ascii_case(kind)
                    && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "expected a JSON body with Content-Type: application/json".into(),
        ))
    }
}

/// The whole body, within the body limit: 413 in the envelope past it.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| unread_body(rejection.status() == StatusCode::PAYLOAD_TOO_LARGE))
}

/// Why a body could not be read: 413 past the limit, else 400.
fn unread_body(too_large: bool) -> ApiError {
    if too_large {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest("could not read the request body".into())
    }
}

/// A JSON body by [`ApiJson`]'s rules, read within `limit` bytes — for a handler given the whole
/// request (the verify fast lane, where no `DefaultBodyLimit` layer sets the limit).
pub async fn json_within<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    require_json_content_type(req.headers())?;
    let collected = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|error| unread_body(error.downcast_ref::<LengthLimitError>().is_some()))?;
    parse_json(&collected.to_bytes())
}

/// Parses JSON, naming the field at fault. Text that may not be stored — NUL and other control
/// characters but tab, line feed and carriage return — is refused here, for every body, with a
/// 422 naming its field: both databases then see the same input.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    refuse_unstorable_json(bytes)?;
    // the common case first; the slower, path-tracking parse only runs to explain a failure
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
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
            Err(field_error(&error.path().to_string(), &inner.to_string()))
        }
    }
}

/// The reason given for text that may not be stored.
const UNSTORABLE: &str = "must not contain NUL or other control characters";

/// 422 naming the first JSON string (a value, or a key — then its object is named) holding a
/// character that may not be stored. Such a character can only arrive escaped (`\u0000`, `\b`,
/// `\f`: JSON forbids raw ones), so a body without those escapes is not walked at all.
fn refuse_unstorable_json(bytes: &[u8]) -> Result<(), ApiError> {
    // most bodies hold no backslash at all: one fast scan settles them
    let escaped = bytes.contains(&b'\\')
        && bytes
            .windows(2)
            .any(|w| matches!(w, [b'\\', b'u' | b'b' | b'f']));
    if !escaped {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(()); // malformed: the parse explains it
    };
    match unstorable_at(&value, String::new()) {
        Some(path) if path.is_empty() => Err(ApiError::field("body", UNSTORABLE)),
        Some(path) => Err(ApiError::field(&path, UNSTORABLE)),
        None => Ok(()),
    }
}

/// The path (`events[0].name`) of the first text below `value` that may not be stored.
fn unstorable_at(value: &serde_json::Value, path: String) -> Option<String> {
    use fluxgate_core::validation::is_storable;
    use serde_json::Value;
    match value {
        Value::String(text) => (!text.chars().all(is_storable)).then_some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| unstorable_at(item, format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if !key.chars().all(is_storable) {
                return Some(path.clone());
            }
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            unstorable_at(item, inner)
        }),
        _ => None,
    }
}

/// 422 naming the first query or form field whose name or value may not be stored.
pub fn refuse_unstorable_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    use fluxgate_core::validation::is_storable;
    for (name, value) in pairs {
        if !name.chars().all(is_storable) {
            return Err(ApiError::field("query", UNSTORABLE));
        }
        if !value.chars().all(is_storable) {
            return Err(ApiError::field(name, UNSTORABLE));
        }
    }
    Ok(())
}

/// A 422 naming the field a deserializer stopped at (or named in its message).
fn field_error(path: &str, message: &str) -> ApiError {
    let field = if path == "." || path.is_empty() {
        // "missing field `email` at line 1 column 2": the field is named in the message
        message
            .split('`')
            .nth(1)
            .filter(|_| {
                message.starts_with("missing field") || message.starts_with("unknown field")
            })
            .unwrap_or("body")
    } else {
        path
    };
    let reason = message.split(" at line ").next().unwrap_or(message);
    ApiError::field(field, reason)
}

/// For `#[serde(default, deserialize_with = "crate::extract::present")]` on an
/// `Option<Option<T>>` field: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`), for PATCH bodies where `null` clears a value.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(serde::Deserialize::deserialize(deserializer)?))
}

/// Query parameters: 422 naming the parameter when one is malformed or unknown.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        if query.contains('%') {
            let decoded: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            refuse_unstorable_pairs(decoded.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))?;
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| field_error(&error.path().to_string(), &error.inner().to_string()))
    }
}

/// Default and largest page sizes of list endpoints.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

/// One page of a list: how many, and after which item (the previous page's `next_cursor`).
#[derive(Debug, Clone)]
pub struct Paging {
    /// Items wanted.
    pub limit: u32,
    /// Items after this id.
    pub cursor: Option<String>,
}

impl Paging {
    /// Validates `?limit=` (1–200, default 50) and `?cursor=`.
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let cursor = cursor.filter(|c| !c.is_empty());
        if cursor.as_ref().is_some_and(|c| c.len() > 64) {
            return Err(ApiError::field("cursor", "is not a cursor this API issued"));
        }
        Ok(Self { limit, cursor })
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The list body: the page's items (each shown by `view`) and the cursor of the next
    /// page, if there is one.
    pub fn body<T, U>(
        &self,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> String,
        view: impl Fn(&T) -> U,
    ) -> fluxgate_proto::Page<U> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_cursor = if more { rows.last().map(&id) } else { None };
        fluxgate_proto::Page {
            data: rows.iter().map(view).collect(),
            next_cursor,
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
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = caller_ip(parts, state).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        Ok(Self { ip, user_agent })
    }
}

/// The address a request came from: its peer, or what trusted proxies say ([`client_ip`]);
/// None without a socket (in-process calls).
pub fn caller_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| {
            client_ip(addr.ip(), &parts.headers, &state.config.trusted_proxies)
        })
}

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which case
/// `X-Forwarded-For` is read from the right, skipping trusted hops, and the first untrusted
/// address is the client. A header from an untrusted peer is never believed; a malformed entry
/// stops the walk at the last address known good.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(value));
        h
    }

    #[test]
    fn a_body_is_json_when_its_content_type_says_so_in_any_case() {
        let typed = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            require_json_content_type(&h).is_ok()
        };
        assert!(typed("application/json"));
        assert!(typed("Application/JSON; charset=utf-8"));
        assert!(typed(" application/problem+json "));
        assert!(typed("APPLICATION/VND.API+JSON"));
        assert!(!typed("text/plain"));
        assert!(!typed("application/jsonx"));
        assert!(!typed("text/x+json"));
        assert!(!typed("application/x-www-form-urlencoded"));
        assert!(require_json_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let stranger: IpAddr = "203.0.113.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_default()];
        let h = forwarded("198.51.100.7, 10.0.0.4");
        // a stranger's header is ignored
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // behind trusted hops, the first untrusted address from the right is the client
        assert_eq!(client_ip(proxy, &h, &trusted).to_string(), "198.51.100.7");
        // a client cannot pick its address by prepending entries
        let spoofed = forwarded("1.2.3.4, 198.51.100.7");
        assert_eq!(
            client_ip(proxy, &spoofed, &trusted).to_string(),
            "198.51.100.7"
        );
        // garbage stops the walk; no header leaves the peer
        assert_eq!(client_ip(proxy, &forwarded("nonsense"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        // with nothing trusted, nothing is believed
        assert_eq!(client_ip(proxy, &h, &[]), proxy);
    }
}
