//! Time as the API speaks it: Unix seconds now, and RFC 3339 in and out of request bodies.

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// A duration in whole seconds, as the Unix-seconds arithmetic wants it (saturating).
pub fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// `duration` after the Unix time `now` (saturating): when something issued now expires.
pub fn after(now: i64, duration: std::time::Duration) -> i64 {
    now.saturating_add(seconds(duration))
}

/// Unix seconds as RFC 3339, for API bodies.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What an unparsable time field is told.
pub const RFC3339_HINT: &str = "must be an RFC 3339 time, e.g. 2027-01-31T12:00:00Z";

/// An RFC 3339 time from API input, as Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// A time from a request that must lie after `now`; the error names `field`.
pub fn future_time(
    errors: &mut fluxgate_core::validation::FieldErrors,
    field: &str,
    text: &str,
    now: i64,
) -> Option<i64> {
    match parse_rfc3339(text) {
        Some(t) if t > now => Some(t),
        Some(_) => {
            errors.add(field, "must be in the future");
            None
        }
        None => {
            errors.add(field, RFC3339_HINT);
            None
        }
    }
}
