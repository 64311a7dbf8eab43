//! Prometheus metrics: request counts and latency histograms by route and status, counted per
//! core ([`stripes`](crate::stripes)) so that serving a request writes no cache line another
//! core shares.

use crate::stripes::Striped;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (and `+Inf` after them).
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A request counter, one share per core, summed when rendered.
#[derive(Clone, Debug, Default)]
pub struct StripedCounter(Arc<Striped<AtomicU64>>);

impl StripedCounter {
    /// Counts one.
    pub fn inc(&self) {
        self.0.mine().fetch_add(1, Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|n| n.load(Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One core's share of a latency histogram.
#[derive(Default, Debug)]
struct LatencyShare {
    count: AtomicU64,
    nanos: AtomicU64,
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

/// A latency histogram (buckets from 0.5 ms to 2.5 s, then `+Inf`), one share per core, summed
/// when rendered.
#[derive(Clone, Debug, Default)]
pub struct StripedHistogram(Arc<Striped<LatencyShare>>);

impl StripedHistogram {
    /// Counts one request that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        let share = self.0.mine();
        share.count.fetch_add(1, Relaxed);
        share.nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        share.buckets[bucket].fetch_add(1, Relaxed);
    }

    /// Sum (seconds), count and per-bucket counts, over every share.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .map(|bound| (bound, 0))
            .collect();
        let (mut count, mut nanos) = (0u64, 0u64);
        for share in self.0.iter() {
            count = count.wrapping_add(share.count.load(Relaxed));
            nanos = nanos.wrapping_add(share.nanos.load(Relaxed));
            for ((_, total), n) in buckets.iter_mut().zip(&share.buckets) {
                *total = total.wrapping_add(n.load(Relaxed));
            }
        }
        (nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for StripedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StripedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

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
    requests: Family<RequestLabels, StripedCounter>,
    latency: Family<RequestLabels, StripedHistogram>,
    /// The series of a verify answered 200 — most requests of a busy instance — resolved once,
    /// so counting one takes no lookup in the families.
    verified: (StripedCounter, StripedHistogram),
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate");
        let requests = Family::<RequestLabels, StripedCounter>::default();
        let latency = Family::<RequestLabels, StripedHistogram>::default();
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
            self.verified.1.observe(elapsed);
            return;
        }
        let labels = RequestLabels {
            method: method_label(method),
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(elapsed);
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

    #[test]
    fn what_every_thread_counted_renders_as_one_series_with_cumulative_buckets() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let verify = crate::routes::VERIFY_PATH;
        let threads: Vec<_> = [Duration::from_micros(300), Duration::from_millis(2)]
            .into_iter()
            .map(|took| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        metrics.observe(&Method::POST, verify, 200, took);
                        metrics.observe(&Method::GET, "/api/v1/auth/me", 200, took);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render();
        let labels = r#"method="POST",route="/api/v1/keys/verify",status="200""#;
        for line in [
            format!("fluxgate_http_requests_total{{{labels}}} 2000"),
            format!("fluxgate_http_request_duration_seconds_count{{{labels}}} 2000"),
            format!("fluxgate_http_request_duration_seconds_sum{{{labels}}} 2.3"),
            format!(r#"fluxgate_http_request_duration_seconds_bucket{{le="0.0005",{labels}}} 1000"#),
            format!(r#"fluxgate_http_request_duration_seconds_bucket{{le="0.001",{labels}}} 1000"#),
            format!(r#"fluxgate_http_request_duration_seconds_bucket{{le="0.0025",{labels}}} 2000"#),
            format!(r#"fluxgate_http_request_duration_seconds_bucket{{le="+Inf",{labels}}} 2000"#),
            r#"fluxgate_http_requests_total{method="GET",route="/api/v1/auth/me",status="200"} 2000"#
                .to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }
}
