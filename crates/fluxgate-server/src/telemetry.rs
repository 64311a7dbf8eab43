//! Logging: structured JSON lines (or pretty text) with the request id on every line written
//! while a request is served.
//!
//! The request's method, route template and id live in a task-local ([`REQUEST`]) rather than
//! in a `tracing` span: a span is built and its fields formatted for every request whether
//! anything is logged or not (about a tenth of a verify's CPU time), while the task-local costs
//! nothing until a line is written — then [`WithRequest`] adds the same `span` object a span
//! gave it.

use crate::config::{Config, LogFormat};
use axum::http::{HeaderValue, Method};
use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// What the log lines written while serving a request say of it.
#[derive(Debug, Clone)]
pub struct RequestScope {
    /// Its id, echoed as its `X-Request-Id`.
    pub id: RequestId,
    /// Its method.
    pub method: Method,
    /// Its route template (never the concrete path, which can carry tokens).
    pub route: &'static str,
}

/// A request's id: the caller's `X-Request-Id` as sent, or one made here — `req_` and a ULID,
/// kept inline, so making and copying it allocates nothing (it runs for every request).
#[derive(Debug, Clone)]
pub enum RequestId {
    /// `req_` and a ULID.
    Made([u8; MADE_ID_LEN]),
    /// The caller's (1–128 visible ASCII characters, checked by the request context).
    Given(HeaderValue),
}

/// The length of a made id: `req_` and 26 characters.
const MADE_ID_LEN: usize = 4 + ulid::ULID_LEN;

thread_local! {
    /// ULIDs made on one thread count up within a millisecond from a random start, so most
    /// draw no random bytes.
    static IDS: std::cell::RefCell<ulid::Generator> =
        const { std::cell::RefCell::new(ulid::Generator::new()) };
}

impl RequestId {
    /// A fresh `req_<ulid>`.
    pub fn made() -> Self {
        let counted = IDS.with(|ids| {
            ids.try_borrow_mut()
                .ok()
                .and_then(|mut ids| ids.generate().ok())
        });
        // the count ran out within one millisecond (or the generator is busy): a random one
        let ulid = match counted {
            Some(ulid) => ulid,
            None => ulid::Ulid::new(),
        };
        let mut id = [0u8; MADE_ID_LEN];
        id[..4].copy_from_slice(b"req_");
        let mut encoded = [0u8; ulid::ULID_LEN];
        ulid.array_to_str(&mut encoded);
        id[4..].copy_from_slice(&encoded);
        Self::Made(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Made(id) => std::str::from_utf8(id).unwrap_or_default(),
            Self::Given(value) => value.to_str().unwrap_or_default(),
        }
    }

    /// The id as the `X-Request-Id` header value.
    pub fn header_value(&self) -> HeaderValue {
        match self {
            Self::Made(id) => {
                HeaderValue::from_bytes(id).unwrap_or(HeaderValue::from_static("req_"))
            }
            Self::Given(value) => value.clone(),
        }
    }
}

tokio::task_local! {
    /// The request being served, for log lines and error bodies: see [`request_id`].
    pub static REQUEST: RequestScope;
}

/// The id of the request being served, or empty outside one.
pub fn request_id() -> String {
    REQUEST
        .try_with(|request| request.id.as_str().to_owned())
        .unwrap_or_default()
}

/// Installs the global subscriber; later calls (tests) keep the first.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .map_event_format(|json| WithRequest { inner: json })
            .try_init(),
        LogFormat::Pretty => builder
            .map_event_format(|full| WithRequest { inner: full })
            .try_init(),
    };
}

/// An event format that adds the request being served to each line `inner` writes: as a
/// `"span"` object first in a JSON line, or a `request{…}:` prefix on a text one.
pub struct WithRequest<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N> + JsonOrText,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(request) = REQUEST.try_with(RequestScope::clone) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let id = request.id.as_str();
        if !F::JSON {
            write!(
                writer,
                "request{{method={} route={} request_id={id}}}: ",
                request.method, request.route
            )?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let span = serde_json::json!({
            "name": "request",
            "method": request.method.as_str(),
            "route": request.route,
            "request_id": id,
        });
        match line.strip_prefix('{') {
            Some(rest) => {
                let separator = if rest.starts_with('}') { "" } else { "," };
                write!(writer, "{{\"span\":{span}{separator}")?;
                writer.write_str(rest)
            }
            None => writer.write_str(&line),
        }
    }
}

/// Whether an event format writes JSON lines.
pub trait JsonOrText {
    /// True for JSON lines.
    const JSON: bool;
}

impl<T> JsonOrText
    for tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json, T>
{
    const JSON: bool = true;
}

impl<T> JsonOrText
    for tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, T>
{
    const JSON: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn in_request(log: impl FnOnce()) {
        let scope = RequestScope {
            id: RequestId::Given(HeaderValue::from_static("req_test")),
            method: Method::POST,
            route: "/api/v1/keys/verify",
        };
        REQUEST.sync_scope(scope, log);
    }

    #[test]
    fn made_ids_are_distinct_ulids_echoed_as_their_header() {
        let ids: Vec<String> = (0..1000)
            .map(|_| RequestId::made().as_str().to_owned())
            .collect();
        for id in &ids {
            let ulid = id.strip_prefix("req_").expect("req_ prefix");
            assert!(ulid::Ulid::from_string(ulid).is_ok(), "{id}");
        }
        // made on one thread: each larger than the last, so none repeats
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        let made = RequestId::made();
        assert_eq!(made.header_value().to_str().ok(), Some(made.as_str()));
        let given = RequestId::Given(HeaderValue::from_static("trace-42"));
        assert_eq!(given.as_str(), "trace-42");
        assert_eq!(given.header_value(), "trace-42");
    }

    #[test]
    fn json_lines_written_in_a_request_name_it_and_others_do_not() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .map_event_format(|json| WithRequest { inner: json })
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            in_request(|| tracing::warn!(attempt = 2, "database unavailable"));
            tracing::warn!("outside any request");
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
        assert_eq!(inside["span"]["request_id"], "req_test");
        assert_eq!(inside["span"]["method"], "POST");
        assert_eq!(inside["span"]["route"], "/api/v1/keys/verify");
        assert_eq!(inside["message"], "database unavailable");
        assert_eq!(inside["attempt"], 2);
        assert_eq!(inside["level"], "WARN");
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).expect("a JSON line");
        assert!(outside.get("span").is_none(), "{outside}");
        assert_eq!(outside["message"], "outside any request");
    }

    #[test]
    fn text_lines_written_in_a_request_start_with_it() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .map_event_format(|full| WithRequest { inner: full })
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            in_request(|| tracing::warn!("database unavailable"));
        });
        let lines = captured.lines();
        assert!(
            lines[0].starts_with(
                "request{method=POST route=/api/v1/keys/verify request_id=req_test}: "
            ),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("database unavailable"), "{lines:?}");
    }
}
