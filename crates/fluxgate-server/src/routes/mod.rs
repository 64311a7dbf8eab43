//! The HTTP surface: every route, its OpenAPI description, and the middleware stack.

pub mod audit_log;
pub mod auth;
pub mod invitations;
pub mod orgs;
pub mod roles;
pub mod system;

use crate::error::{ApiError, REQUEST_ID};
use crate::metrics;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// The document's fixed parts; paths are added from the routes themselves.
#[derive(OpenApi)]
#[openapi(
    info(title = "Fluxgate", description = "Self-hosted authentication and API-key platform"),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Accounts, sessions and tokens"),
         (name = "orgs", description = "Organizations, members, roles, invitations and the audit log"),
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
    }
}

/// The complete application: routes, OpenAPI document, fallbacks and middleware.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            auth::router()
                .merge(orgs::router())
                .merge(roles::router())
                .merge(invitations::router())
                .merge(audit_log::router())
                .merge(system::api_router()),
        )
        .merge(system::root_router())
        .split_for_parts();
    system::publish_openapi(openapi);
    let metrics = state.metrics.clone();
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUlid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // the route template, never the concrete path: paths can carry tokens
                    // (`/invitations/{token}/accept`)
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    tracing::info_span!("request", method = %request.method(), route = %route, request_id = %id)
                }))
                .layer(middleware::from_fn(request_id_scope))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                }))
                .layer(middleware::from_fn_with_state(metrics, metrics::track))
                .layer(middleware::from_fn(crate::limits::headers)),
        )
        .with_state(state)
}

/// Request ids: the caller's (if sane), else a fresh `req_<ulid>`.
#[derive(Clone, Copy)]
struct MakeRequestUlid;

impl MakeRequestId for MakeRequestUlid {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&format!("req_{}", ulid::Ulid::new()))
            .ok()
            .map(RequestId::new)
    }
}

/// Makes the request id available to error bodies and logs for the rest of the request.
async fn request_id_scope(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .unwrap_or("")
        .to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
