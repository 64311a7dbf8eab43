//! The blocking client from plain threads: every call, and a client dropped inside async code.

use crate::{client_for, world};
use fluxgate_sdk::{Error, TrackEvent};
use fluxgate_testkit::Backend;

#[test]
fn blocking_client_on_sqlite() {
    blocking_client_does_every_call(Backend::Sqlite);
}

#[test]
fn blocking_client_on_postgres() {
    blocking_client_does_every_call(Backend::Postgres);
}

fn blocking_client_does_every_call(backend: Backend) {
    let runtime = tokio::runtime::Runtime::new().unwrap(); // runs the server only
    let world = runtime.block_on(world(backend));
    let flux = client_for(&world.app, &world.sdk_key).build_blocking();

    let first = flux
        .keys()
        .create()
        .for_org(&world.org)
        .with_scopes(["usage:read"])
        .issue()
        .unwrap();
    let ctx = flux.keys().verify(&first.key).unwrap();
    assert_eq!(ctx.org.id, world.org);
    assert!(!flux.entitlements().check_for_key(&ctx, "bulk_export"));
    assert!(matches!(
        flux.keys().verify_with(&first.key, &["keys:write"]),
        Err(Error::InvalidKey { code, .. }) if code == "INSUFFICIENT_SCOPE"
    ));
    let issued = flux
        .keys()
        .create()
        .for_org(&world.org)
        .with_scopes(["usage:read"])
        .expires_in_days(30)
        .issue()
        .unwrap();
    assert_eq!(flux.keys().list(&world.org).unwrap().len(), 2);
    let rotated = flux.keys().rotate(&world.org, &issued.info.id, 0).unwrap();
    flux.keys().verify(&rotated.key).unwrap();
    flux.keys().revoke(&world.org, &issued.info.id).unwrap();
    assert!(matches!(
        flux.keys().verify(&rotated.key),
        Err(Error::InvalidKey { code, .. }) if code == "REVOKED"
    ));
    let tracked = flux
        .usage()
        .track(TrackEvent::new("tokens", &world.org, 3.0).idempotency_key("sync-1"))
        .unwrap();
    assert_eq!(tracked.status, "recorded");
    let batch = flux
        .usage()
        .track_batch(vec![
            TrackEvent::new("tokens", &world.org, 3.0).idempotency_key("sync-1")
        ])
        .unwrap();
    assert_eq!(batch[0].status, "duplicate");
    let claims = flux.tokens().verify_access_token(&world.ops).unwrap();
    assert!(claims.sub.as_str().starts_with("usr_"));

    // a blocking client may be dropped anywhere, even inside async code
    runtime.block_on(async move { drop(flux) });
    runtime.block_on(world.app.stop());
}
