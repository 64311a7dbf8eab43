//! The HTTP surface: every route, its OpenAPI description, and the middleware stack.

pub mod audit_log;
pub mod auth;
pub mod flags;
pub mod identities;
pub mod invitations;
pub mod keys;
pub mod leaked;
pub mod mfa;
pub mod orgs;
pub mod passkeys;
pub mod plans;
pub mod roles;
pub mod system;
pub mod track;
pub mod usage;
pub mod verify;
pub mod webhooks;
pub mod widget;

use crate::error::ApiError;
use crate::metrics;
use crate::request_limits::LimitSlot;
use crate::state::AppState;
use crate::telemetry::{RequestId, RequestScope, REQUEST};
use crate::usage_recorder::Attribution;
use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::convert::Infallible;
use std::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// The document's fixed parts; paths are added from the routes themselves.
#[derive(OpenApi)]
#[openapi(
    info(title = "Fluxgate", description = "Self-hosted authentication and API-key platform"),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts, sessions and tokens"),
         (name = "orgs", description = "Organizations, members, roles, invitations and the audit log"),
         (name = "keys", description = "API keys and their verification"),
         (name = "usage", description = "Usage attributed to API keys"),
         (name = "admin", description = "Instance-wide operations for the operator org"),
         (name = "system", description = "Health, metrics, keys and this document"))
)]
struct ApiDoc;

/// Declares the `bearer` scheme; each route's `security` lists the permission it requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "widget",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The application as the listener serves it: [`router`], except that `POST
/// /api/v1/keys/verify` — the call a product backend makes for each of its own requests — goes
/// straight to [`verify::answer`], inside the same request context and with the same panic
/// guard, but without the router's per-request layers (matching, prefix stripping, boxed
/// middleware, extractors), which cost a large share of a warm verify (docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct Service {
    router: Router,
    state: AppState,
}

/// Builds the [`Service`].
pub fn app(state: AppState) -> Service {
    Service {
        router: router(state.clone()),
        state,
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Service
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        tower::util::Oneshot<Router, Request>,
        futures_util::future::BoxFuture<'static, Result<Response, Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use futures_util::FutureExt;
        let request = request.map(axum::body::Body::new);
        if request.method() == axum::http::Method::POST && request.uri().path() == VERIFY_PATH {
            let state = self.state.clone();
            futures_util::future::Either::Right(Box::pin(async move {
                Ok(in_request_context(&state, request, VERIFY_PATH, |request| {
                    std::panic::AssertUnwindSafe(verify::answer(&state, request))
                        .catch_unwind()
                        .map(|answered| Ok(answered.unwrap_or_else(panicked)))
                })
                .await)
            }))
        } else {
            futures_util::future::Either::Left(self.router.clone().oneshot(request))
        }
    }
}

/// The path of the verify fast lane (see [`Service`]).
pub const VERIFY_PATH: &str = "/api/v1/keys/verify";

/// Every route, the OpenAPI document, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            auth::router()
                .merge(mfa::router())
                .merge(passkeys::router())
                .merge(identities::router())
                .merge(orgs::router())
                .merge(roles::router())
                .merge(invitations::router())
                .merge(audit_log::router())
                .merge(keys::router())
                .merge(verify::router())
                .merge(leaked::router())
                .merge(webhooks::router())
                .merge(plans::router())
                .merge(flags::router())
                .merge(usage::router())
                .merge(track::router())
                .merge(widget::router(&state))
                .merge(system::api_router()),
        )
        .merge(system::root_router())
        .merge(widget::page_router())
        .split_for_parts();
    system::publish_openapi(openapi);
    router
        .merge(crate::portal::router(&state))
        .fallback(crate::portal::not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    request_context,
                ))
                .layer(CatchPanicLayer::custom(panicked)),
        )
        .with_state(state)
}

/// What a panicking handler answers: a 500 in the envelope (the error logs it).
fn panicked(_: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// The header carrying a request's id (a constant: a name given as text is parsed each time).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the caller's `X-Request-Id` when it is sane (1–128 visible ASCII
/// characters), else a fresh `req_<ulid>`.
fn request_id(request: &Request) -> RequestId {
    let given = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| (1..=128).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic));
    match given {
        Some(given) => RequestId::Given(given.clone()),
        None => RequestId::made(),
    }
}

/// One middleware for what every request needs around it, in one place (each extra layer costs
/// on the hot path): see [`in_request_context`].
async fn request_context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = metrics::route_of(&request);
    in_request_context(&state, request, route, |request| async move {
        Ok::<_, Infallible>(next.run(request).await)
    })
    .await
}

/// Runs `handle` on `request` (whose route template is `route`) inside what every request
/// needs around it: its id — honoured or made, echoed as `X-Request-Id` —, the task-local that
/// error bodies and every log line written while serving it take it from (with the method and
/// route template — never the concrete path, which can carry tokens such as
/// `/invitations/{token}/accept`: [`telemetry`](crate::telemetry)), a slot for its rate-limit
/// decision written out as `X-RateLimit-*`, the API key call attributed, `Connection: close`
/// on refusals that may leave a body unread, and its count and latency in the metrics.
async fn in_request_context<F, Fut>(
    state: &AppState,
    mut request: Request,
    route: &'static str,
    handle: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Infallible>>,
{
    let started = Instant::now();
    let method = request.method().clone();
    let id = request_id(&request);
    let slot = LimitSlot::default();
    request.extensions_mut().insert(slot.clone());
    // a body follows unless the request ends with its headers (no or a zero Content-Length):
    // hyper knows, without a header lookup
    let sends_body = request.version() <= Version::HTTP_11 && !request.body().is_end_stream();
    let scope = RequestScope {
        id: id.clone(),
        method: method.clone(),
        route,
    };
    let answered = REQUEST.scope(scope, handle(request)).await;
    let mut response = match answered {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID, id.header_value());
    slot.write_headers(&mut response);
    if sends_body && response.status().as_u16() >= 400 {
        // a refusal may leave the body unread, and then the server closes the connection:
        // say so, or the client's next request on it fails
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    if let Some((org_id, key_id)) = slot.key() {
        let endpoint = format!("{method} {route}");
        let call = Attribution {
            org_id: &org_id,
            key_id: &key_id,
            endpoint: &endpoint,
            outcome: &status.to_string(),
        };
        state.usage.count_calls(call, 1, crate::clock::now());
    }
    let elapsed = started.elapsed();
    state.metrics.observe(&method, route, status, elapsed);
    tracing::debug!(
        method = %method,
        route,
        request_id = id.as_str(),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request finished"
    );
    response
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
