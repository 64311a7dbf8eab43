//! Prometheus metrics: request counts and latency histograms by route and status.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

/// Route templates seen so far, leaked once each: labels then cost no allocation per request.
/// Templates come from the router (a fixed set), never from request paths.
static ROUTES: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
    std::sync::LazyLock::new(Default::default);

fn intern(route: &str) -> &'static str {
    if let Some(known) = ROUTES.read().ok().and_then(|set| set.get(route).copied()) {
        return known;
    }
    let Ok(mut set) = ROUTES.write() else {
        return "unmatched";
    };
    if let Some(known) = set.get(route) {
        return known;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The route label of a request: its matched template, or `unmatched`.
pub fn route_of(request: &Request) -> &'static str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| intern(p.as_str()))
        .unwrap_or("unmatched")
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The process's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    /// The series of a verify answered 200 — most requests of a busy instance — resolved once,
    /// so counting one takes no lookup in the families.
    verified: (Counter, Histogram),
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let verified_labels = RequestLabels {
            method: "POST",
            route: crate::routes::VERIFY_PATH,
            status: 200,
        };
        let verified = (
            requests.get_or_create(&verified_labels).clone(),
            latency.get_or_create(&verified_labels).clone(),
        );
        Self {
            registry,
            requests,
            latency,
            verified,
        }
    }

    /// Adds a counter maintained elsewhere (exposed as `fluxgate_{name}_total`).
    pub fn register_counter(&mut self, name: &str, help: &str, counter: Counter) {
        self.registry.register(name, help, counter);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one request and its latency under its route template (not its raw path).
    pub fn observe(&self, method: &Method, route: &'static str, status: u16, elapsed: Duration) {
        if status == 200 && route == crate::routes::VERIFY_PATH && method == Method::POST {
            self.verified.0.inc();
            self.verified.1.observe(elapsed.as_secs_f64());
            return;
        }
        let labels = RequestLabels {
            method: method_label(method),
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_counted_through_the_resolved_series_show_under_their_labels() {
        let metrics = Metrics::new();
        let verify = crate::routes::VERIFY_PATH;
        metrics.observe(&Method::POST, verify, 200, Duration::from_micros(300));
        metrics.observe(&Method::POST, verify, 200, Duration::from_micros(300));
        metrics.observe(&Method::POST, verify, 422, Duration::from_micros(300));
        metrics.observe(
            &Method::GET,
            "/api/v1/auth/me",
            200,
            Duration::from_micros(300),
        );
        let text = metrics.render();
        for line in [
            r#"fluxgate_http_requests_total{method="POST",route="/api/v1/keys/verify",status="200"} 2"#,
            r#"fluxgate_http_requests_total{method="POST",route="/api/v1/keys/verify",status="422"} 1"#,
            r#"fluxgate_http_requests_total{method="GET",route="/api/v1/auth/me",status="200"} 1"#,
            r#"fluxgate_http_request_duration_seconds_count{method="POST",route="/api/v1/keys/verify",status="200"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
