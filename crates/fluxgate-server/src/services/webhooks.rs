//! Webhooks: an org registers endpoints for events; every event is queued durably with the
//! change that caused it (the store's outbox), turned into one delivery per subscribed
//! endpoint, and posted signed — HMAC-SHA256 over `{timestamp}.{body}` — by a worker on every
//! node, retried with exponential back-off for a day, each endpoint's events in order. A
//! delivery is claimed for a lease, so a node that dies mid-delivery leaves it to the next.
//! Endpoints on private addresses are refused unless the operator allows them (SSRF).

use crate::access::{OrgAccess, Required, WebhooksWrite};
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientInfo, Paging};
use crate::state::AppState;
use fluxgate_core::secret::{random_token, ExposeSecret};
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_proto::{Delivery, NewWebhook, Webhook, WebhookChanges};
use fluxgate_store::{
    AttemptOutcome, DeliveryId, DeliveryRecord, DueDelivery, KeyId, OrgId, WebhookEndpointRecord,
    WebhookId, EVENT_TYPES,
};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The most endpoints an org may register.
pub const MAX_ENDPOINTS: usize = 20;
/// How often each node looks for events and due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// The most deliveries a node attempts at once.
const CLAIM: i64 = 16;
/// How much longer than the timeout a claim lasts.
const LEASE_MARGIN_SECS: i64 = 5;
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;

/// An endpoint as the API shows it (the secret only when just made).
pub fn view(endpoint: &WebhookEndpointRecord, secret: Option<String>) -> Webhook {
    Webhook {
        id: endpoint.id.to_string(),
        org_id: endpoint.org_id.to_string(),
        url: endpoint.url.clone(),
        events: serde_json::from_str(&endpoint.events).unwrap_or_default(),
        description: endpoint.description.clone(),
        enabled: endpoint.enabled,
        all_orgs: endpoint.all_orgs,
        created_at: rfc3339(endpoint.created_at),
        secret,
    }
}

/// A delivery as its log shows it.
pub fn delivery_view(delivery: &DeliveryRecord) -> Delivery {
    Delivery {
        id: delivery.id.to_string(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        status: delivery.status.clone(),
        attempts: delivery.attempts,
        last_status: delivery.last_status,
        last_error: delivery.last_error.clone(),
        next_attempt_at: (delivery.status == "pending").then(|| rfc3339(delivery.next_attempt_at)),
        created_at: rfc3339(delivery.created_at),
        delivered_at: delivery.delivered_at.map(rfc3339),
    }
}

/// Whether `ip` is on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation or unique-local.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Checks an endpoint's URL: http(s) with a host, and — unless private addresses are allowed —
/// not an address literal off the public internet.
fn check_url(state: &AppState, errors: &mut FieldErrors, text: &str) -> Option<String> {
    let Ok(url) = openidconnect::url::Url::parse(text.trim()) else {
        errors.add("url", "must be an http(s) URL");
        return None;
    };
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        errors.add("url", "must be an http(s) URL with a host");
        return None;
    }
    if text.len() > 2048 {
        errors.add("url", "must be at most 2048 characters");
        return None;
    }
    let literal = match url.host() {
        Some(openidconnect::url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(openidconnect::url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    let private = literal.is_some_and(|ip| !is_public(ip))
        || url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost"));
    if private && !state.config.webhooks.allow_private {
        errors.add(
            "url",
            "points at a private address; endpoints must be on the public internet",
        );
        return None;
    }
    Some(url.to_string())
}

/// Checks the event types: known ones (or `*`), at least one.
fn check_events(errors: &mut FieldErrors, events: &[String]) -> String {
    if events.is_empty() {
        errors.add("events", "name at least one event type, or \"*\"");
    }
    for (i, event) in events.iter().enumerate() {
        if event != "*" && !EVENT_TYPES.contains(&event.as_str()) {
            errors.add(
                format!("events[{i}]"),
                format!("is not an event type ({})", EVENT_TYPES.join(", ")),
            );
        }
    }
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

/// Registers an endpoint; its signing secret is in the answer once.
pub async fn create(
    state: &AppState,
    access: &OrgAccess<WebhooksWrite>,
    client: &ClientInfo,
    input: NewWebhook,
    now: i64,
) -> ApiResult<Webhook> {
    let mut errors = FieldErrors::new();
    let url = check_url(state, &mut errors, &input.url);
    let events = check_events(&mut errors, &input.events);
    let description = match &input.description {
        Some(text) if !text.trim().is_empty() => {
            errors.check("description", single_line(text, 200))
        }
        _ => Some(String::new()),
    };
    errors.into_result()?;
    let (Some(url), Some(description)) = (url, description) else {
        return Err(ApiError::field("url", "invalid"));
    };
    // every org's events are the operator's to receive
    if input.all_orgs
        && !(access.org.is_operator && access.caller.operator_allows(state, "admin:orgs").await?)
    {
        return Err(access.caller.lacks("admin:orgs"));
    }
    if state.store.webhooks(&access.org.id).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict(format!(
            "an organization may have at most {MAX_ENDPOINTS} webhook endpoints"
        )));
    }
    let id = WebhookId::generate();
    let secret = format!("whsec_{}", random_token().expose_secret());
    let endpoint = WebhookEndpointRecord {
        secret_sealed: state.webhook_sealer.seal(id.as_str(), secret.as_bytes())?,
        id,
        org_id: access.org.id.clone(),
        url,
        events,
        description,
        enabled: true,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        all_orgs: input.all_orgs,
    };
    let audit = access
        .audit("webhook.created", client)
        .at(now)
        .target("webhook", &endpoint.id)
        .data(
            json!({ "url": endpoint.url, "events": view(&endpoint, None).events,
                      "all_orgs": endpoint.all_orgs }),
        )
        .build();
    state.store.create_webhook(&endpoint, &audit).await?;
    Ok(view(&endpoint, Some(secret)))
}

/// The org's endpoints.
pub async fn list<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
) -> ApiResult<Vec<WebhookEndpointRecord>> {
    Ok(state.store.webhooks(&access.org.id).await?)
}

/// One endpoint of the org, or 404.
pub async fn get<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    id: &WebhookId,
) -> ApiResult<WebhookEndpointRecord> {
    state
        .store
        .webhook(&access.org.id, id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Changes an endpoint's URL, events, note or whether it is enabled.
pub async fn update(
    state: &AppState,
    access: &OrgAccess<WebhooksWrite>,
    client: &ClientInfo,
    id: &WebhookId,
    changes: WebhookChanges,
    now: i64,
) -> ApiResult<WebhookEndpointRecord> {
    let mut endpoint = get(state, access, id).await?;
    let mut errors = FieldErrors::new();
    if let Some(url) = &changes.url {
        if let Some(url) = check_url(state, &mut errors, url) {
            endpoint.url = url;
        }
    }
    if let Some(events) = &changes.events {
        endpoint.events = check_events(&mut errors, events);
    }
    if let Some(text) = &changes.description {
        endpoint.description = match text.trim() {
            "" => String::new(),
            _ => errors
                .check("description", single_line(text, 200))
                .unwrap_or_default(),
        };
    }
    if let Some(enabled) = changes.enabled {
        endpoint.enabled = enabled;
    }
    errors.into_result()?;
    endpoint.updated_at = now;
    let audit = access
        .audit("webhook.updated", client)
        .at(now)
        .target("webhook", &endpoint.id)
        .data(
            json!({ "url": endpoint.url, "events": view(&endpoint, None).events,
                      "enabled": endpoint.enabled }),
        )
        .build();
    if !state.store.update_webhook(&endpoint, &audit).await? {
        return Err(ApiError::NotFound);
    }
    Ok(endpoint)
}

/// Deletes an endpoint; its pending deliveries are dropped.
pub async fn delete(
    state: &AppState,
    access: &OrgAccess<WebhooksWrite>,
    client: &ClientInfo,
    id: &WebhookId,
    now: i64,
) -> ApiResult<()> {
    let audit = access
        .audit("webhook.deleted", client)
        .at(now)
        .target("webhook", id)
        .build();
    match state
        .store
        .delete_webhook(&access.org.id, id, now, &audit)
        .await?
    {
        true => Ok(()),
        false => Err(ApiError::NotFound),
    }
}

/// A page of an endpoint's deliveries, newest first.
pub async fn deliveries<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    id: &WebhookId,
    page: &Paging,
) -> ApiResult<Vec<DeliveryRecord>> {
    let endpoint = get(state, access, id).await?;
    Ok(state
        .store
        .webhook_deliveries(&endpoint.id, page.cursor.as_deref(), page.fetch())
        .await?)
}

/// Queues one of an endpoint's deliveries again (after the endpoint's pending ones).
pub async fn redeliver(
    state: &AppState,
    access: &OrgAccess<WebhooksWrite>,
    id: &WebhookId,
    delivery: &DeliveryId,
    now: i64,
) -> ApiResult<DeliveryId> {
    let endpoint = get(state, access, id).await?;
    state
        .store
        .redeliver_webhook(&endpoint.id, delivery, now)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The `Fluxgate-Signature` header of `body` sent at `timestamp`: `t={timestamp},v1={hex of
/// HMAC-SHA256(secret, "{timestamp}.{body}")}` (None only if HMAC refused the key, which it
/// does for no length).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("t={timestamp},v1={hex}"))
}

/// Starts this node's delivery worker (unless `webhooks.deliver` is off); it stops with
/// `cancel` — at once, even mid-delivery: what it had claimed is retried by a node after the
/// claim's lease, as if this node had died.
pub fn spawn_worker(state: AppState, cancel: CancellationToken) {
    if !state.config.webhooks.deliver {
        return;
    }
    tokio::spawn(async move {
        let http = match openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(state.config.webhooks.timeout)
            .user_agent(concat!("fluxgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(%error, "webhooks: no HTTP client");
                return;
            }
        };
        let mut scanned: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = cancel.cancelled() => return,
            }
            if scanned.is_none_or(|at| at.elapsed() >= state.config.webhooks.scan_every) {
                scanned = Some(std::time::Instant::now());
                if let Err(error) = queue_scheduled(&state, crate::clock::now()).await {
                    tracing::warn!(%error, "webhooks: scheduled events not queued; trying again");
                }
            }
            let round = tokio::select! {
                round = deliver_due(&state, &http) => round,
                () = cancel.cancelled() => return,
            };
            if let Err(error) = round {
                tracing::warn!(%error, "webhooks: the store could not be read; trying again");
            }
        }
    });
}

/// An event's body: `{id, type, created, org_id, object, data}`.
fn event_payload(
    id: &str,
    kind: &str,
    now: i64,
    org_id: &OrgId,
    object: Option<(&str, &str)>,
    data: serde_json::Value,
) -> String {
    json!({
        "id": id,
        "type": kind,
        "created": now,
        "org_id": org_id,
        "object": object.map(|(kind, id)| json!({ "type": kind, "id": id })),
        "data": data,
    })
    .to_string()
}

/// Queues the events no change announces, each occasion once (its id names it): keys that
/// expire within 7 days (and then within a day), keys that expired in the last day, and this
/// month's quota thresholds (80 %, 100 %) crossed.
async fn queue_scheduled(state: &AppState, now: i64) -> ApiResult<()> {
    const DAY: i64 = 86_400;
    let windows = [
        (
            "key.expiring",
            "7d",
            now.saturating_add(DAY),
            now.saturating_add(7 * DAY),
        ),
        ("key.expiring", "1d", now, now.saturating_add(DAY)),
        ("key.expired", "0d", now.saturating_sub(DAY), now),
    ];
    for (kind, within, from, until) in windows {
        for (key_id, org_id, name, expires_at) in state
            .store
            .keys_expiring_for_webhooks(from, until, 1000)
            .await?
        {
            let id = format!("{kind}.{within}.{key_id}.{expires_at}");
            let data = json!({ "name": name, "expires_at": rfc3339(expires_at), "within": within });
            let payload = event_payload(
                &id,
                kind,
                now,
                &org_id,
                Some(("key", key_id.as_str())),
                data,
            );
            state
                .store
                .enqueue_webhook_event(&id, &org_id, kind, &payload, now)
                .await?;
        }
    }
    let month = crate::usage_recorder::month_of(now);
    for (org_id, plan) in state.store.orgs_with_webhooks().await? {
        let Some(plan) = state.config.plan(&plan) else {
            continue;
        };
        for (meter, &limit) in &plan.quotas {
            if limit == 0 {
                continue;
            }
            let used = u64::try_from(state.usage.load(&org_id, meter, now).await?).unwrap_or(0);
            for threshold in [80u64, 100] {
                if used.saturating_mul(100) < limit.saturating_mul(threshold) {
                    continue;
                }
                let id = format!("quota.threshold.{org_id}.{meter}.{month}.{threshold}");
                let data = json!({ "meter": meter, "limit": limit, "used": used,
                                   "threshold": threshold, "period": month });
                let payload = event_payload(&id, "quota.threshold", now, &org_id, None, data);
                state
                    .store
                    .enqueue_webhook_event(&id, &org_id, "quota.threshold", &payload, now)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Queues `credits.exhausted` for a key whose credits ran out (once per refill period), in the
/// background: verify does not wait for it.
pub fn credits_exhausted(state: &AppState, key_id: &KeyId, org_id: &OrgId, period: i64, now: i64) {
    let (state, key_id, org_id) = (state.clone(), key_id.clone(), org_id.clone());
    tokio::spawn(async move {
        let id = format!("credits.exhausted.{key_id}.{period}");
        let payload = event_payload(
            &id,
            "credits.exhausted",
            now,
            &org_id,
            Some(("key", key_id.as_str())),
            json!({ "remaining": 0 }),
        );
        if let Err(error) = state
            .store
            .enqueue_webhook_event(&id, &org_id, "credits.exhausted", &payload, now)
            .await
        {
            tracing::warn!(%error, "webhooks: credits.exhausted not queued");
        }
    });
}

/// One round: turn new events into deliveries, then attempt the due ones, concurrently.
async fn deliver_due(state: &AppState, http: &openidconnect::reqwest::Client) -> ApiResult<()> {
    let now = crate::clock::now();
    while state.store.dispatch_webhook_events(now, 100).await? == 100 {}
    // an attempt ends within the timeout: past it (and a margin), the claim is a dead node's
    let lease = i64::try_from(state.config.webhooks.timeout.as_secs())
        .unwrap_or(60)
        .saturating_add(LEASE_MARGIN_SECS);
    let due = state
        .store
        .claim_webhook_deliveries(now, lease, CLAIM)
        .await?;
    let attempts = due.iter().map(|delivery| attempt(state, http, delivery));
    let outcomes = futures_util::future::join_all(attempts).await;
    for (delivery, outcome) in due.iter().zip(outcomes) {
        state
            .store
            .finish_webhook_attempt(&delivery.id, &outcome)
            .await?;
    }
    Ok(())
}

/// Posts one delivery; how it ended, with the next attempt when it failed.
async fn attempt(
    state: &AppState,
    http: &openidconnect::reqwest::Client,
    delivery: &DueDelivery,
) -> AttemptOutcome {
    let config = &state.config.webhooks;
    let now = crate::clock::now();
    let failed = |status: Option<i64>, error: String| {
        let attempts = u32::try_from(delivery.attempts.clamp(0, 30)).unwrap_or(30);
        let first = i64::try_from(config.first_retry.as_secs())
            .unwrap_or(10)
            .max(1);
        let wait = first
            .saturating_mul(2i64.saturating_pow(attempts))
            .min(MAX_BACKOFF_SECS);
        let give_up_at = delivery
            .created_at
            .saturating_add(i64::try_from(config.give_up_after.as_secs()).unwrap_or(86_400));
        let retry_at = now.saturating_add(wait);
        AttemptOutcome::Failed {
            status,
            error,
            retry_at: (retry_at <= give_up_at).then_some(retry_at),
        }
    };
    let Ok(secret) = state
        .webhook_sealer
        .open(delivery.endpoint_id.as_str(), &delivery.secret_sealed)
    else {
        return failed(None, "the endpoint's secret cannot be read".into());
    };
    let target = match resolved(state, &delivery.url).await {
        Ok(target) => target,
        Err(error) => return failed(None, error),
    };
    let body = delivery.payload.clone().into_bytes();
    let Some(signed) = signature(&secret, now, &body) else {
        return failed(None, "the payload cannot be signed".into());
    };
    let request = http
        .post(target.to_string())
        .header("content-type", "application/json")
        .header("fluxgate-event-id", &delivery.event_id)
        .header("fluxgate-event-type", &delivery.event_type)
        .header("fluxgate-delivery-id", delivery.id.as_str())
        .header("fluxgate-signature", signed)
        .body(body);
    match request.send().await {
        Ok(response) if response.status().is_success() => AttemptOutcome::Delivered {
            status: i64::from(response.status().as_u16()),
            at: now,
        },
        Ok(response) => {
            let status = response.status().as_u16();
            failed(
                Some(i64::from(status)),
                format!("the endpoint answered {status}"),
            )
        }
        Err(error) if error.is_timeout() => {
            failed(None, "the endpoint did not answer in time".into())
        }
        Err(_) => failed(None, "the endpoint could not be reached".into()),
    }
}

/// The URL to post to, its host resolved once and pinned to that address (so a name cannot
/// resolve to a public address for the check and a private one for the request); refused when
/// it resolves off the public internet and private addresses are not allowed.
async fn resolved(state: &AppState, text: &str) -> Result<openidconnect::url::Url, String> {
    let mut url =
        openidconnect::url::Url::parse(text).map_err(|_| "the URL does not parse".to_owned())?;
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let address: SocketAddr = tokio::net::lookup_host((host_for_lookup.as_str(), port))
        .await
        .map_err(|_| "the endpoint's host does not resolve".to_owned())?
        .next()
        .ok_or("the endpoint's host does not resolve")?;
    if !state.config.webhooks.allow_private && !is_public(address.ip()) {
        return Err("refused: the endpoint resolves to a private address".into());
    }
    if url.set_ip_host(address.ip()).is_err() {
        return Err("the endpoint's address cannot be used".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_of_both_families_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            let ip: IpAddr = private.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:93.184.216.34",
        ] {
            let ip: IpAddr = public.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
            assert!(is_public(ip), "{public}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_body() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?"), here over
        // "{t}." + body, so the digest differs; its shape and its dependence on t are checked
        let header = signature(b"Jefe", 1, b"what do ya want for nothing?").unwrap_or_default();
        assert!(header.starts_with("t=1,v1="));
        assert_eq!(header.len(), "t=1,v1=".len() + 64);
        assert_ne!(
            Some(header),
            signature(b"Jefe", 2, b"what do ya want for nothing?")
        );
    }
}
