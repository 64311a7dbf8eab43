//! The async client: issue, verify with context, entitlements, list, rotate, revoke, usage
//! tracking, and a server that is down.

use crate::world;
use fluxgate_sdk::{Error, Flux, TrackEvent};
use fluxgate_testkit::{self, Backend};
use serde_json::json;
use std::time::{Duration, Instant};

fluxgate_testkit::both_backends!(issue_verify_rotate_revoke_and_track);

async fn issue_verify_rotate_revoke_and_track(backend: Backend) {
    let world = world(backend).await;
    let (flux, org) = (&world.flux, world.org.clone());

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
    world.app.stop().await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_error_within_the_timeout() {
    let port = fluxgate_testkit::free_port();
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
