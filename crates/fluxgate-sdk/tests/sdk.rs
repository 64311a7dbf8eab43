//! The SDK against a real Fluxgate (the server's router on a random port, SQLite): verify with
//! context, entitlements, issue / list / rotate / revoke, usage tracking, and a server that is
//! down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use fluxgate_sdk::{Error, Flux, TrackEvent};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PASSWORD: &str = "operator passphrase";

/// A running server, the operator's SDK key (verify, issue, track), and a customer org.
async fn setup(dir: &std::path::Path) -> (fluxgate_server::server::RunningServer, Flux, String) {
    let config: toml::Table = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{0}\"\ndatabase_url = \"sqlite://{0}/f.db\"\nlog_level = \"warn\"\n\
         [auth]\nrequire_email_verification = false\ncookie_secure = false\n",
        dir.display()
    )
    .parse()
    .unwrap();
    let config = fluxgate_server::config::Config::from_table(&config).unwrap();
    let server = fluxgate_server::server::start(config.clone())
        .await
        .unwrap();
    fluxgate_server::admin::bootstrap(&config, "ops@example.com", PASSWORD)
        .await
        .unwrap();
    let base = format!("http://{}/api/v1", server.addr);
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": "ops@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops = login["data"]["access_token"].as_str().unwrap().to_owned();
    let me: Value = http
        .get(format!("{base}/auth/me"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let sdk_key: Value = http
        .post(format!("{base}/orgs/{ops_org}/keys"))
        .bearer_auth(&ops)
        .json(&json!({ "name": "backend", "scopes": ["keys:verify", "keys:read", "keys:write", "admin:orgs", "usage:write"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org: Value = http
        .post(format!("{base}/orgs"))
        .bearer_auth(&ops)
        .json(&json!({ "name": "Customer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let flux = Flux::builder(sdk_key["data"]["key"].as_str().unwrap())
        .base_url(format!("http://{}", server.addr))
        .build();
    (server, flux, org["data"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_verify_rotate_revoke_and_track() {
    let dir = tempfile::tempdir().unwrap();
    let (server, flux, org) = setup(dir.path()).await;

    let issued = flux
        .keys()
        .create()
        .for_org(&org)
        .named("customer backend")
        .with_scopes(["usage:read"])
        .expires_in_days(90)
        .metadata(json!({ "tier": "gold" }))
        .issue()
        .await
        .unwrap();
    assert!(issued.key.starts_with("fg_live_"));
    assert_eq!(issued.info.scopes, ["usage:read"]);

    let ctx = flux.keys().verify(&issued.key).await.unwrap();
    assert_eq!(ctx.key_id, issued.info.id);
    assert_eq!(ctx.org_id(), org);
    assert_eq!(ctx.plan, "free");
    assert_eq!(ctx.metadata, json!({ "tier": "gold" }));
    assert!(ctx.ratelimit.remaining < ctx.ratelimit.limit);
    assert!(!flux.entitlements().check_for_key(&ctx, "bulk_export"));
    match flux.keys().verify_with(&issued.key, &["keys:write"]).await {
        Err(Error::InvalidKey { code, .. }) => assert_eq!(code, "INSUFFICIENT_SCOPE"),
        other => panic!("{other:?}"),
    }
    match flux.keys().verify("fg_live_not-a-key").await {
        Err(Error::InvalidKey { code, .. }) => assert_eq!(code, "MALFORMED"),
        other => panic!("{other:?}"),
    }

    let listed = flux.keys().list(&org).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, "active");
    let rotated = flux.keys().rotate(&org, &issued.info.id, 0).await.unwrap();
    assert_ne!(rotated.key, issued.key);
    assert!(
        matches!(flux.keys().verify(&issued.key).await, Err(Error::InvalidKey { code, .. }) if code == "EXPIRED")
    );
    flux.keys().verify(&rotated.key).await.unwrap();
    flux.keys().revoke(&org, &issued.info.id).await.unwrap();
    assert!(
        matches!(flux.keys().verify(&rotated.key).await, Err(Error::InvalidKey { code, .. }) if code == "REVOKED")
    );
    // refusals from the API keep their envelope
    match flux.keys().revoke(&org, &issued.info.id).await {
        Err(Error::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "NOT_FOUND"))
        }
        other => panic!("{other:?}"),
    }

    let first = flux
        .usage()
        .track(TrackEvent::new("tokens", &org, 1.5).idempotency_key("job-1"))
        .await
        .unwrap();
    assert_eq!(first.status, "recorded");
    let again = flux
        .usage()
        .track(TrackEvent::new("tokens", &org, 1.5).idempotency_key("job-1"))
        .await
        .unwrap();
    assert_eq!(again.status, "duplicate");
    let batch = flux
        .usage()
        .track_batch(vec![
            TrackEvent::new("tokens", &org, 2.0),
            TrackEvent::new("tokens", &org, -1.0),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].status, "recorded");
    assert_eq!(batch[1].status, "error");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_error_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flux = Flux::builder("fg_live_whatever")
        .base_url(format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(500))
        .retries(1)
        .build();
    let started = Instant::now();
    match flux.keys().verify("fg_live_x").await {
        Err(Error::Unreachable(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
