//! Webhooks over real HTTP, on SQLite and PostgreSQL, delivered to a real receiver on loopback:
//! events signed (HMAC-SHA256 over `{t}.{body}`, checked here with the endpoint's secret), in
//! order, visible in the delivery log and redelivered on demand; a receiver that is down gets
//! everything, in order, once it is back; private addresses and other orgs are refused.

use fluxgate_testkit::{
    body, eventually, expect_error, issue_key, operator_with_verifier, send, set_config, with_key,
    Backend, TestApp,
};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

both_backends!(
    events_reach_a_signed_endpoint_in_order_and_the_log_shows_them,
    a_receiver_that_was_down_gets_everything_in_order_once_it_returns,
    private_endpoints_and_other_orgs_are_refused,
    a_node_stopped_mid_delivery_loses_nothing,
    expiries_quota_thresholds_and_spent_credits_are_announced_once,
    the_portal_adds_an_endpoint_shows_its_log_and_redelivers,
    an_operators_endpoint_receives_every_orgs_events,
);

/// What the receiver got: (event id, event type, signature header, body).
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A receiver on loopback answering `status` (changeable); its URL and what it got.
async fn receiver(status: Arc<AtomicU16>) -> (String, Received) {
    let received: Received = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (kept, status) = (kept.clone(), status.clone());
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                kept.lock().unwrap().push((
                    header("fluxgate-event-id"),
                    header("fluxgate-event-type"),
                    header("fluxgate-signature"),
                    body,
                ));
                axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst))
                    .unwrap_or(axum::http::StatusCode::OK)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hooks"), received)
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        set_config(config, "webhooks.allow_private", true);
        set_config(config, "webhooks.first_retry", "1s");
    })
    .await
}

/// Whether `header` (`t=…,v1=…`) signs `body` with `secret`.
fn signed_by(secret: &str, header: &str, body: &str) -> bool {
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn register(app: &TestApp, token: &str, org: &str, url: &str, events: Value) -> Value {
    let created = send(
        app,
        Method::POST,
        &format!("/orgs/{org}/webhooks"),
        token,
        Some(json!({ "url": url, "events": events, "description": "billing" })),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    body(created).await["data"].clone()
}

async fn events_reach_a_signed_endpoint_in_order_and_the_log_shows_them(backend: Backend) {
    let app = spawn(backend).await;
    let (url, received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let (token, org) = app.owner("hooks@example.com", "Hooked").await;
    let endpoint = register(
        &app,
        &token,
        &org,
        &url,
        json!(["key.created", "key.revoked"]),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let webhook = endpoint["id"].as_str().unwrap().to_owned();

    let (key_id, _) = issue_key(&app, &token, &org, json!({ "name": "k", "scopes": [] })).await;
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{key_id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let got_two = eventually(Duration::from_secs(10), || async {
        received.lock().unwrap().len() >= 2
    })
    .await;
    assert!(got_two, "two deliveries");
    let got = received.lock().unwrap().clone();
    let types: Vec<&str> = got.iter().map(|(_, t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["key.created", "key.revoked"], "in order");
    for (event_id, event_type, signature, raw) in &got {
        assert!(signed_by(&secret, signature, raw), "signed: {signature}");
        assert!(!signed_by("whsec_wrong", signature, raw));
        let event: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(event["id"], event_id.as_str());
        assert_eq!(event["type"], event_type.as_str());
        assert_eq!(event["org_id"], org.as_str());
        assert_eq!(event["object"], json!({ "type": "key", "id": key_id }));
    }

    // listed without its secret; the log shows both delivered
    let listed = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/webhooks"),
            &token,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(listed["data"][0]["id"], webhook.as_str());
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let log_path = format!("/orgs/{org}/webhooks/{webhook}/deliveries");
    let log = body(send(&app, Method::GET, &log_path, &token, None).await).await;
    let deliveries = log["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries
        .iter()
        .all(|d| d["status"] == "delivered" && d["attempts"] == 1));
    assert_eq!(deliveries[0]["event_type"], "key.revoked", "newest first");

    // redelivered on demand: the same event again
    let first = deliveries[1]["id"].as_str().unwrap();
    let again = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/webhooks/{webhook}/deliveries/{first}/redeliver"),
        &token,
        None,
    )
    .await;
    assert_eq!(again.status(), 202);
    let got_three = eventually(Duration::from_secs(10), || async {
        received.lock().unwrap().len() >= 3
    })
    .await;
    assert!(got_three);
    let got = received.lock().unwrap().clone();
    assert_eq!(got[2].0, got[0].0, "the first event again");

    // an event the endpoint did not subscribe to is not sent
    issue_key(&app, &token, &org, json!({ "name": "k2", "scopes": [] })).await;
    let got_four = eventually(Duration::from_secs(10), || async {
        received.lock().unwrap().len() >= 4
    })
    .await;
    assert!(got_four, "k2's creation");
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/webhooks/{webhook}"),
        &token,
        Some(json!({ "events": ["key.revoked"] })),
    )
    .await;
    issue_key(&app, &token, &org, json!({ "name": "k3", "scopes": [] })).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let types: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(types.len(), 4, "not k3's creation: {types:?}");
}

async fn a_receiver_that_was_down_gets_everything_in_order_once_it_returns(backend: Backend) {
    let app = spawn(backend).await;
    let status = Arc::new(AtomicU16::new(500));
    let (url, received) = receiver(status.clone()).await;
    let (token, org) = app.owner("down@example.com", "Patient").await;
    let endpoint = register(&app, &token, &org, &url, json!(["*"])).await;
    let webhook = endpoint["id"].as_str().unwrap().to_owned();
    let mut keys = Vec::new();
    for i in 0..3 {
        let (key_id, _) = issue_key(
            &app,
            &token,
            &org,
            json!({ "name": format!("k{i}"), "scopes": [] }),
        )
        .await;
        keys.push(key_id);
    }
    // while it is down only the first event is tried (again and again): the rest wait their turn
    let retried = eventually(Duration::from_secs(10), || async {
        received.lock().unwrap().len() >= 2
    })
    .await;
    assert!(retried, "retried with back-off");
    let tried: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert!(tried.iter().all(|id| *id == tried[0]), "{tried:?}");

    status.store(200, Ordering::SeqCst);
    let all = eventually(Duration::from_secs(20), || async {
        let got = received.lock().unwrap();
        let mut distinct: Vec<&String> = Vec::new();
        for (id, ..) in got.iter() {
            if !distinct.contains(&id) {
                distinct.push(id);
            }
        }
        distinct.len() == 3
    })
    .await;
    assert!(all, "every event once it is back");
    let got = received.lock().unwrap().clone();
    let mut order: Vec<String> = Vec::new();
    for (_, _, _, raw) in &got {
        let event: Value = serde_json::from_str(raw).unwrap();
        let key = event["object"]["id"].as_str().unwrap().to_owned();
        if !order.contains(&key) {
            order.push(key);
        }
    }
    assert_eq!(order, keys, "in the order they happened");
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/webhooks/{webhook}/deliveries"),
            &token,
            None,
        )
        .await,
    )
    .await;
    let oldest = log["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(oldest["status"], "delivered");
    assert!(oldest["attempts"].as_i64().unwrap() >= 2, "{oldest}");
}

async fn private_endpoints_and_other_orgs_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, org) = app.owner("ssrf@example.com", "Careful").await;
    let path = format!("/orgs/{org}/webhooks");
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://10.0.0.8/hooks",
        "ftp://example.com/hooks",
    ] {
        let refused = send(
            &app,
            Method::POST,
            &path,
            &token,
            Some(json!({ "url": url, "events": ["*"] })),
        )
        .await;
        let refused = expect_error(refused, 422, "VALIDATION_FAILED").await;
        assert!(refused["fields"].get("url").is_some(), "{url}: {refused}");
    }
    let bad_event = send(
        &app,
        Method::POST,
        &path,
        &token,
        Some(json!({ "url": "https://hooks.example.com/x", "events": ["key.exploded"] })),
    )
    .await;
    let refused = expect_error(bad_event, 422, "VALIDATION_FAILED").await;
    assert!(refused["fields"].get("events[0]").is_some());

    let endpoint = register(
        &app,
        &token,
        &org,
        "https://hooks.example.com/x",
        json!(["*"]),
    )
    .await;
    let webhook = endpoint["id"].as_str().unwrap();
    let (stranger, _) = app.owner("other@example.com", "Other").await;
    let theirs = send(
        &app,
        Method::GET,
        &format!("/orgs/{org}/webhooks/{webhook}"),
        &stranger,
        None,
    )
    .await;
    expect_error(theirs, 404, "NOT_FOUND").await;
    let deleted = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/webhooks/{webhook}"),
        &token,
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let gone = send(
        &app,
        Method::GET,
        &format!("/orgs/{org}/webhooks/{webhook}"),
        &token,
        None,
    )
    .await;
    expect_error(gone, 404, "NOT_FOUND").await;
}

/// A node that stops (or dies) while an endpoint has not answered yet leaves its claim behind;
/// once the claim's lease runs out another node delivers the event: nothing is lost.
async fn a_node_stopped_mid_delivery_loses_nothing(backend: Backend) {
    // the app's own node only queues; delivering nodes are started (and stopped) below
    let app = TestApp::spawn_with(backend, |config| {
        set_config(config, "webhooks.allow_private", true);
        set_config(config, "webhooks.deliver", false);
        set_config(config, "webhooks.timeout", "2s");
    })
    .await;
    // the first request hangs (the node is stopped meanwhile); the next ones are accepted
    let received: Received = Arc::default();
    let kept = received.clone();
    let hooks = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let id = headers
                    .get("fluxgate-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let first = {
                    let mut got = kept.lock().unwrap();
                    got.push((id, String::new(), String::new(), body));
                    got.len() == 1
                };
                if first {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hooks).await });

    let (token, org) = app.owner("killed@example.com", "Resilient").await;
    let endpoint = register(&app, &token, &org, &url, json!(["key.created"])).await;
    let webhook = endpoint["id"].as_str().unwrap().to_owned();
    issue_key(&app, &token, &org, json!({ "name": "k", "scopes": [] })).await;

    let delivering = || {
        let mut config = app.config.clone();
        config.database_url = app.database_url.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.webhooks.deliver = true;
        fluxgate_server::server::start(config)
    };
    let doomed = delivering().await.unwrap();
    let claimed = eventually(Duration::from_secs(10), || async {
        !received.lock().unwrap().is_empty()
    })
    .await;
    assert!(claimed, "the first node posted");
    doomed.stop().await.unwrap(); // mid-delivery: the endpoint has not answered

    let heir = delivering().await.unwrap();
    let delivered = eventually(Duration::from_secs(20), || async {
        received.lock().unwrap().len() >= 2
    })
    .await;
    assert!(
        delivered,
        "another node delivers it after the claim's lease"
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got[0].0, got[1].0, "the same event");
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/webhooks/{webhook}/deliveries"),
            &token,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(log["data"][0]["status"], "delivered");
    heir.stop().await.unwrap();
}

/// The events no change announces: keys about to expire (7 days, 1 day) and expired, this
/// month's quota threshold crossed, credits spent — each once, however often a node looks.
async fn expiries_quota_thresholds_and_spent_credits_are_announced_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        set_config(config, "webhooks.allow_private", true);
        set_config(config, "webhooks.scan_every", "1s");
        let plans: toml::Table = r#"
[[plans]]
name = "small"
rate_limit = "1000/min"
entitlements = []
quotas = { requests = 10 }
"#
        .parse()
        .unwrap();
        for (k, v) in plans {
            config.insert(k, v);
        }
    })
    .await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (url, received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let (token, org) = app.owner("sched@example.com", "Scheduled").await;
    register(
        &app,
        &token,
        &org,
        &url,
        json!([
            "key.expiring",
            "key.expired",
            "quota.threshold",
            "credits.exhausted"
        ]),
    )
    .await;
    let now = fluxgate_server::clock::now();
    let at = |secs: i64| fluxgate_server::clock::rfc3339(now + secs);
    let (week, _) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "week", "scopes": [], "expires_in_days": 3 }),
    )
    .await;
    let (day, _) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "day", "scopes": [], "expires_at": at(3600) }),
    )
    .await;
    let (soon, _) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "soon", "scopes": [], "expires_at": at(3) }),
    )
    .await;
    let (metered, metered_key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "metered", "scopes": [], "credits": { "remaining": 2 } }),
    )
    .await;
    // 8 of the plan's 10 requests (credits run out on the second), 80 %
    let (_, plain) = issue_key(&app, &token, &org, json!({ "name": "plain", "scopes": [] })).await;
    for key in [
        &metered_key,
        &metered_key,
        &plain,
        &plain,
        &plain,
        &plain,
        &plain,
        &plain,
    ] {
        let answer = with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &verifier,
            Some(json!({ "key": key })),
        )
        .await;
        assert_eq!(answer.status(), 200);
    }

    let events = || {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, kind, _, raw)| (kind.clone(), serde_json::from_str::<Value>(raw).unwrap()))
            .collect::<Vec<(String, Value)>>()
    };
    let object = |event: &Value| event["object"]["id"].as_str().unwrap_or("").to_owned();
    let all_there = eventually(Duration::from_secs(20), || async {
        let got = events();
        let has = |kind: &str, id: &str| got.iter().any(|(k, e)| k == kind && object(e) == id);
        has("key.expiring", &week)
            && has("key.expiring", &day)
            && has("key.expired", &soon)
            && has("credits.exhausted", &metered)
            && got.iter().any(|(k, _)| k == "quota.threshold")
    })
    .await;
    assert!(
        all_there,
        "{:?}",
        events()
            .iter()
            .map(|(k, e)| (k.clone(), object(e)))
            .collect::<Vec<_>>()
    );
    // a few more scans announce nothing twice
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = events();
    let count = |kind: &str, id: &str| {
        got.iter()
            .filter(|(k, e)| k == kind && object(e) == id)
            .count()
    };
    assert_eq!(count("key.expiring", &week), 1);
    assert_eq!(count("credits.exhausted", &metered), 1);
    let thresholds: Vec<&Value> = got
        .iter()
        .filter(|(k, _)| k == "quota.threshold")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(thresholds.len(), 1, "80 % once (100 % not reached)");
    assert_eq!(thresholds[0]["data"]["threshold"], 80);
    assert_eq!(thresholds[0]["data"]["meter"], "requests");
    let week_event = got
        .iter()
        .find(|(k, e)| k == "key.expiring" && object(e) == week)
        .unwrap();
    assert_eq!(week_event.1["data"]["within"], "7d");
    let day_event = got
        .iter()
        .find(|(k, e)| k == "key.expiring" && object(e) == day)
        .unwrap();
    assert_eq!(day_event.1["data"]["within"], "1d");
}

/// The portal's webhook pages, without JavaScript: an endpoint added (its secret shown once, on
/// a page that is not stored), a wrong URL answered next to its field, the delivery log, a
/// redelivery, turning it off, deleting it.
async fn the_portal_adds_an_endpoint_shows_its_log_and_redelivers(backend: Backend) {
    use crate::portal::Browser;
    let app = spawn(backend).await;
    let (url, received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let (token, org) = app.owner("portal@example.com", "Portal Co").await;
    let browser = Browser::new(&app);
    browser.log_in("portal@example.com").await;
    let listing = browser.get(&format!("/orgs/{org}/webhooks")).await;
    assert!(listing.text("main").contains("No endpoints yet"));

    let refused = browser
        .submit(
            &listing,
            &format!("/orgs/{org}/webhooks"),
            &[("url", "ftp://example.com/x"), ("events", "key.created")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#url-error").is_empty());
    assert_eq!(refused.attr_of("#url", "value"), "ftp://example.com/x");

    let added = browser
        .submit(
            &listing,
            &format!("/orgs/{org}/webhooks"),
            &[("url", url.as_str()), ("events", "key.created")],
        )
        .await;
    assert_eq!(added.status, 200);
    assert_eq!(added.headers["cache-control"], "no-store");
    let secret = added.text("#webhook-secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        browser
            .get(&format!("/orgs/{org}/webhooks"))
            .await
            .select_count("#webhook-secret"),
        0,
        "once"
    );

    issue_key(&app, &token, &org, json!({ "name": "k", "scopes": [] })).await;
    let delivered = eventually(Duration::from_secs(10), || async {
        !received.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered);
    let (_, _, signature, raw) = received.lock().unwrap()[0].clone();
    assert!(
        signed_by(&secret, &signature, &raw),
        "signed with the secret the page showed"
    );

    let listing = browser.get(&format!("/orgs/{org}/webhooks")).await;
    let link = listing.attr_of("tbody a", "href");
    let detail = browser.get(&link).await;
    assert!(detail.text("tr.delivery-delivered").contains("key.created"));
    let redeliver = detail.attr_of("tr.delivery-delivered form", "action");
    let back = browser.submit(&detail, &redeliver, &[]).await;
    assert_eq!(back.url, link);
    let again = eventually(Duration::from_secs(10), || async {
        received.lock().unwrap().len() >= 2
    })
    .await;
    assert!(again, "redelivered");

    let off = browser
        .submit(&back, &format!("{link}/enabled"), &[("enabled", "off")])
        .await;
    assert!(off.text("main").contains("Off"));
    let gone = browser.submit(&off, &format!("{link}/delete"), &[]).await;
    assert!(gone.text("main").contains("No endpoints yet"));
}

/// An operator's endpoint (`all_orgs`) gets every org's events; a customer cannot make one.
async fn an_operators_endpoint_receives_every_orgs_events(backend: Backend) {
    let app = spawn(backend).await;
    let (ops, _) = operator_with_verifier(&app).await;
    let me = body(send(&app, Method::GET, "/auth/me", &ops, None).await).await;
    let ops_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let (url, received) = receiver(Arc::new(AtomicU16::new(200))).await;
    let created = send(
        &app,
        Method::POST,
        &format!("/orgs/{ops_org}/webhooks"),
        &ops,
        Some(json!({ "url": url, "events": ["key.created"], "all_orgs": true })),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(body(created).await["data"]["all_orgs"], true);

    let (token, org) = app.owner("customer@example.com", "Customer").await;
    let (key_id, _) = issue_key(&app, &token, &org, json!({ "name": "k", "scopes": [] })).await;
    let got = eventually(Duration::from_secs(10), || async {
        !received.lock().unwrap().is_empty()
    })
    .await;
    assert!(got, "the operator hears of a customer's key");
    let event: Value = serde_json::from_str(&received.lock().unwrap()[0].3).unwrap();
    assert_eq!(event["org_id"], org.as_str());
    assert_eq!(event["object"]["id"], key_id.as_str());

    let refused = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/webhooks"),
        &token,
        Some(json!({ "url": "https://hooks.example.com/x", "events": ["*"], "all_orgs": true })),
    )
    .await;
    let refused = expect_error(refused, 403, "FORBIDDEN").await;
    assert_eq!(refused["required_permission"], "admin:orgs");
}
