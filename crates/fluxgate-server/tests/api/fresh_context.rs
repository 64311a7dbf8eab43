//! Verify never answers with stale context: every change that alters what verify says reaches
//! it at once (one per kind of change), a cache fill cannot put back what a revocation removed,
//! and a change whose announcement is lost is seen within the cache's maximum age — on SQLite
//! and PostgreSQL, and across two nodes with Redis stopped.

use fluxgate_server::keycache::FillPause;
use fluxgate_testkit::redis::RedisServer;
use fluxgate_testkit::{
    body, eventually, issue_key, operator_with_verifier, send, Backend, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

both_backends!(
    org_name_and_external_id_changes_reach_warm_keys,
    plan_changes_reach_warm_keys,
    org_deletion_reaches_warm_keys,
    disabling_and_enabling_an_org_reach_warm_keys,
    key_patches_reach_warm_keys,
    rotation_and_revocation_reach_warm_keys,
    expiry_is_judged_on_every_call,
    a_fill_racing_a_revocation_is_not_cached,
    a_lost_announcement_costs_at_most_the_cache_max_age,
    the_resync_drops_secrets_that_are_no_longer_live,
    a_key_created_unannounced_is_learned_without_a_full_reread,
);

const PRODUCT: &str = r#"
[scopes]
catalog = ["read", "write"]

[[plans]]
name = "free"
rate_limit = "100/min"
entitlements = []

[[plans]]
name = "pro"
rate_limit = "5000/min"
entitlements = ["sso"]
"#;

async fn spawn(backend: Backend, max_age: &str) -> TestApp {
    spawn_with_full_resync(backend, max_age, "10m").await
}

/// [`spawn`] with every live secret reread every `full`.
async fn spawn_with_full_resync(backend: Backend, max_age: &str, full: &str) -> TestApp {
    let (max_age, full) = (max_age.to_owned(), full.to_owned());
    TestApp::spawn_with(backend, move |t| {
        let product: toml::Table = PRODUCT.parse().unwrap();
        for (k, v) in product {
            t.insert(k, v);
        }
        t.insert(
            "keys".into(),
            toml::Value::Table(toml::toml! { cache_max_age = max_age full_resync_every = full }),
        );
    })
    .await
}

/// A customer org with a warm key (verified once), the operator's token and the verifier key.
struct Warm {
    app: TestApp,
    ops: String,
    root: String,
    owner: String,
    org: String,
    key_id: String,
    key: String,
}

async fn warm(backend: Backend, max_age: &str) -> Warm {
    let app = spawn(backend, max_age).await;
    let (ops, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (key_id, key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "svc", "scopes": ["read"] }),
    )
    .await;
    let first = verify(&app, &root, &key).await;
    assert_eq!(first["code"], "VALID", "{first}");
    Warm {
        app,
        ops,
        root,
        owner,
        org,
        key_id,
        key,
    }
}

async fn verify(app: &TestApp, root: &str, key: &str) -> Value {
    let response = fluxgate_testkit::with_key(
        app,
        Method::POST,
        "/keys/verify",
        root,
        Some(json!({ "key": key })),
    )
    .await;
    assert_eq!(response.status(), 200);
    body(response).await["data"].clone()
}

async fn ok(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) {
    let response = send(app, method, path, token, body).await;
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

/// Runs SQL on the app's database behind its back, as if another node's announcement was lost.
async fn behind_the_back(app: &TestApp, sql: &str) {
    if app.database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

async fn org_name_and_external_id_changes_reach_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    ok(
        &w.app,
        Method::PATCH,
        &format!("/orgs/{}", w.org),
        &w.ops,
        Some(json!({ "name": "Acme Rockets", "external_id": "cus_7" })),
    )
    .await;
    let after = verify(&w.app, &w.root, &w.key).await;
    assert_eq!(
        after["org"],
        json!({ "id": w.org, "name": "Acme Rockets", "external_id": "cus_7" })
    );
    w.app.stop().await;
}

async fn plan_changes_reach_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    ok(
        &w.app,
        Method::PUT,
        &format!("/admin/orgs/{}/plan", w.org),
        &w.ops,
        Some(json!({ "plan": "pro" })),
    )
    .await;
    let after = verify(&w.app, &w.root, &w.key).await;
    assert_eq!(
        (after["plan"].clone(), after["entitlements"].clone()),
        (json!("pro"), json!(["sso"]))
    );
    assert_eq!(after["ratelimit"]["limit"], 5000);
    w.app.stop().await;
}

async fn org_deletion_reaches_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    ok(
        &w.app,
        Method::DELETE,
        &format!("/orgs/{}", w.org),
        &w.owner,
        None,
    )
    .await;
    assert_eq!(
        verify(&w.app, &w.root, &w.key).await["code"],
        "ORG_DISABLED"
    );
    w.app.stop().await;
}

async fn disabling_and_enabling_an_org_reach_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    let disabled = send(
        &w.app,
        Method::POST,
        &format!("/admin/orgs/{}/disable", w.org),
        &w.ops,
        None,
    )
    .await;
    assert_eq!(disabled.status(), 200);
    assert!(body(disabled).await["data"]["disabled_at"].is_string());
    assert_eq!(
        verify(&w.app, &w.root, &w.key).await["code"],
        "ORG_DISABLED"
    );
    // the key cannot call the API either, while the org's people can still read it
    let as_key = fluxgate_testkit::with_key(
        &w.app,
        Method::GET,
        &format!("/orgs/{}/keys", w.org),
        &w.key,
        None,
    )
    .await;
    assert_eq!(as_key.status(), 401);
    ok(
        &w.app,
        Method::GET,
        &format!("/orgs/{}", w.org),
        &w.owner,
        None,
    )
    .await;
    // the org's owner cannot enable it, nor can the operator org be disabled
    let refused = send(
        &w.app,
        Method::POST,
        &format!("/admin/orgs/{}/enable", w.org),
        &w.owner,
        None,
    )
    .await;
    assert_eq!(refused.status(), 403);
    let me = body(send(&w.app, Method::GET, "/auth/me", &w.ops, None).await).await;
    let operator_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let refused = send(
        &w.app,
        Method::POST,
        &format!("/admin/orgs/{operator_org}/disable"),
        &w.ops,
        None,
    )
    .await;
    assert_eq!(refused.status(), 404);
    ok(
        &w.app,
        Method::POST,
        &format!("/admin/orgs/{}/enable", w.org),
        &w.ops,
        None,
    )
    .await;
    assert_eq!(verify(&w.app, &w.root, &w.key).await["code"], "VALID");
    w.app.stop().await;
}

async fn key_patches_reach_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    ok(
        &w.app,
        Method::PATCH,
        &format!("/orgs/{}/keys/{}", w.org, w.key_id),
        &w.owner,
        Some(json!({ "scopes": ["write"], "metadata": { "tier": "gold" },
                     "rate_limit": { "limit": 7, "window_seconds": 60 } })),
    )
    .await;
    let after = verify(&w.app, &w.root, &w.key).await;
    assert_eq!(after["scopes"], json!(["write"]));
    assert_eq!(after["metadata"], json!({ "tier": "gold" }));
    assert_eq!(after["ratelimit"]["limit"], 7);
    w.app.stop().await;
}

async fn rotation_and_revocation_reach_warm_keys(backend: Backend) {
    let w = warm(backend, "60s").await;
    let rotated = body(
        send(
            &w.app,
            Method::POST,
            &format!("/orgs/{}/keys/{}/rotate", w.org, w.key_id),
            &w.owner,
            Some(json!({ "grace_period_seconds": 0 })),
        )
        .await,
    )
    .await;
    let new_secret = rotated["data"]["key"].as_str().unwrap().to_owned();
    assert_eq!(verify(&w.app, &w.root, &w.key).await["code"], "EXPIRED");
    assert_eq!(verify(&w.app, &w.root, &new_secret).await["code"], "VALID");
    ok(
        &w.app,
        Method::DELETE,
        &format!("/orgs/{}/keys/{}", w.org, w.key_id),
        &w.owner,
        None,
    )
    .await;
    assert_eq!(
        verify(&w.app, &w.root, &new_secret).await["code"],
        "REVOKED"
    );
    w.app.stop().await;
}

async fn expiry_is_judged_on_every_call(backend: Backend) {
    let w = warm(backend, "60s").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    ok(
        &w.app,
        Method::PATCH,
        &format!("/orgs/{}/keys/{}", w.org, w.key_id),
        &w.owner,
        Some(json!({ "expires_at": soon })),
    )
    .await;
    assert_eq!(verify(&w.app, &w.root, &w.key).await["code"], "VALID");
    assert!(
        eventually(Duration::from_secs(4), || async {
            verify(&w.app, &w.root, &w.key).await["code"] == "EXPIRED"
        })
        .await
    );
    w.app.stop().await;
}

/// A fill reads the key, then (held by the test's pause) waits while the key is revoked and the
/// revocation invalidates the cache; when the fill goes on it must not cache the old row.
async fn a_fill_racing_a_revocation_is_not_cached(backend: Backend) {
    let w = warm(backend, "60s").await;
    // make the next verify fill: a change to the key's org unloads it
    ok(
        &w.app,
        Method::PATCH,
        &format!("/orgs/{}", w.org),
        &w.ops,
        Some(json!({ "name": "Acme 2" })),
    )
    .await;
    let pause = Arc::new(FillPause::default());
    let cache = w.app.state().keys.clone();
    cache.pause_fills(Some(pause.clone()));
    let reached = pause.reached.notified();
    let racing = {
        let (base, root, key) = (w.app.base.clone(), w.root.clone(), w.key.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/keys/verify"))
                .header("x-api-key", root)
                .json(&json!({ "key": key }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("the fill reached the pause");
    cache.pause_fills(None);
    // the fill holds the pre-revocation row; revoke now
    ok(
        &w.app,
        Method::DELETE,
        &format!("/orgs/{}/keys/{}", w.org, w.key_id),
        &w.owner,
        None,
    )
    .await;
    pause.resume.add_permits(1);
    let raced = racing.await.unwrap();
    assert_eq!(
        raced["data"]["code"], "REVOKED",
        "the fill saw the revocation land and read again: {raced}"
    );
    assert_eq!(verify(&w.app, &w.root, &w.key).await["code"], "REVOKED");
    w.app.stop().await;
}

/// A revocation written where no announcement reaches this node (straight into the database)
/// is honoured within the cache's maximum age (1 s here).
async fn a_lost_announcement_costs_at_most_the_cache_max_age(backend: Backend) {
    let w = warm(backend, "1s").await;
    behind_the_back(
        &w.app,
        &format!(
            "UPDATE orgs SET name = 'Renamed quietly' WHERE id = '{}'",
            w.org
        ),
    )
    .await;
    behind_the_back(
        &w.app,
        &format!(
            "UPDATE api_keys SET revoked_at = 1700000000 WHERE id = '{}'",
            w.key_id
        ),
    )
    .await;
    let changed = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&w.app, &w.root, &w.key).await["code"] == "REVOKED"
        })
        .await
    );
    let took = changed.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        verify(&w.app, &w.root, &w.key).await["org"]["name"],
        "Renamed quietly"
    );
    w.app.stop().await;
}

async fn the_resync_drops_secrets_that_are_no_longer_live(backend: Backend) {
    let app = spawn_with_full_resync(backend, "1s", "2s").await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (id, _) = issue_key(
            &app,
            &owner,
            &org,
            json!({ "name": format!("k{i}"), "scopes": [] }),
        )
        .await;
        ids.push(id);
    }
    let cache = app.state().keys.clone();
    let before = cache.len();
    assert_eq!(before, 3);
    behind_the_back(
        &app,
        &format!(
            "UPDATE api_keys SET revoked_at = 1700000000 WHERE id IN ('{}', '{}')",
            ids[0], ids[1]
        ),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(3), || async { cache.len() == 1 }).await,
        "still {} secrets known",
        cache.len()
    );
    app.stop().await;
}

/// Two nodes on one PostgreSQL and one Redis: Redis stops, a key is revoked through node A (the
/// announcement is lost), and node B refuses the key within its cache's maximum age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_a_revocation_reaches_the_other_node_within_the_max_age() {
    let mut redis = RedisServer::start().await;
    let secret = "c".repeat(64);
    let redis_url = redis.url();
    let tweak = |shared: Option<String>| {
        let (secret, redis_url) = (secret.clone(), redis_url.clone());
        move |t: &mut toml::Table| {
            t.insert("secret_key".into(), secret.into());
            t.insert("redis_url".into(), redis_url.into());
            t.insert(
                "keys".into(),
                toml::Value::Table(toml::toml! { cache_max_age = "2s" }),
            );
            if let Some(url) = shared {
                t.insert("database_url".into(), url.into());
            }
        }
    };
    let a = TestApp::spawn_with(Backend::Postgres, tweak(None)).await;
    let b = TestApp::spawn_with(Backend::Postgres, tweak(Some(a.database_url.clone()))).await;
    let (_, root) = operator_with_verifier(&a).await;
    let (owner, org) = a.owner("ada@example.com", "Acme").await;
    let (id, key) = issue_key(&a, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&b, &root, &key).await["code"] == "VALID"
        })
        .await
    );
    redis.stop();
    ok(
        &a,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{id}"),
        &owner,
        None,
    )
    .await;
    let revoked = Instant::now();
    assert_eq!(verify(&a, &root, &key).await["code"], "REVOKED");
    assert!(
        eventually(Duration::from_secs(4), || async {
            verify(&b, &root, &key).await["code"] == "REVOKED"
        })
        .await,
        "node B still answers VALID"
    );
    let took = revoked.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    b.stop().await;
    a.stop().await;
}

/// A key written where no announcement reaches this node (straight through the store) is
/// learned by the partial reread of recently created secrets within the cache's maximum age —
/// the full reread is an hour away here.
async fn a_key_created_unannounced_is_learned_without_a_full_reread(backend: Backend) {
    use fluxgate_core::apikey::{self, Environment};
    use fluxgate_core::ids::OrgId;
    use fluxgate_core::secret::ExposeSecret;
    use fluxgate_store::{ApiKeyRecord, AuditRecord};

    let app = spawn_with_full_resync(backend, "1s", "1h").await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, _) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "announced", "scopes": [] }),
    )
    .await;
    let cache = app.state().keys.clone();
    assert!(eventually(Duration::from_secs(3), || async { cache.is_synced() }).await);
    let before = cache.len();

    let secret = apikey::generate("fg", Environment::Live);
    let parsed = apikey::parse(secret.expose_secret()).unwrap();
    let now = fluxgate_server::clock::now();
    let org_id: OrgId = org.parse().unwrap();
    let record = ApiKeyRecord::unscoped(
        org_id.clone(),
        "unannounced".into(),
        parsed.start().to_owned(),
        now,
    );
    let audit = AuditRecord::by_system(
        Some(org_id),
        "key.created",
        Some(("key", record.id.to_string())),
        now,
    );
    app.state()
        .store
        .create_key(&record, &parsed.hash(), &audit)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            cache.len() == before + 1
        })
        .await,
        "the unannounced key was not learned: {} known",
        cache.len()
    );
    app.stop().await;
}
