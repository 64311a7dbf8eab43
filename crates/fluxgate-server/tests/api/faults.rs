//! Faults injected around the real server: the network to PostgreSQL cut (by a relay in front of
//! it, the database itself untouched), PostgreSQL itself restarted, and Redis killed and
//! restarted, under load or for longer than any fixed look-back, and what each node must still
//! get right when they come back.

use fluxgate_testkit::postgres::PostgresServer;
use fluxgate_testkit::redis::RedisServer;
use fluxgate_testkit::relay::Relay;
use fluxgate_testkit::{
    body, eventually, host_port_of, issue_key, operator_with_verifier, postgres_admin_url,
    with_key, Backend, TestApp, PASSWORD,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Points a test config's database at `relay` (which forwards to the real PostgreSQL).
fn through(relay: &Relay, config: &mut toml::Table) {
    let direct = config["database_url"].as_str().unwrap().to_owned();
    let relayed = direct.replace(&host_port_of(&direct), &relay.addr.to_string());
    config.insert("database_url".into(), relayed.into());
}

/// Node A reaches PostgreSQL through a relay; node B directly. A session revoked on B while A
/// cannot reach the database for six seconds (longer than a poll's overlap) is refused on A
/// within a couple of seconds of the database coming back — its poll reads from its last good one.
#[tokio::test]
async fn a_revocation_made_while_a_node_was_cut_off_reaches_it_on_recovery() {
    let relay = Relay::start(&host_port_of(&postgres_admin_url())).await;
    let app = TestApp::spawn_with(Backend::Postgres, |t| through(&relay, t)).await;
    let node_b = app.second_node().await;
    let base_b = format!("http://{}", node_b.addr);

    app.signup_verified("kim@example.com", None).await;
    let victim = app.login("kim@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.login("kim@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = body(app.get_auth("/api/v1/auth/me", &victim).await).await;
    let victim_session = me["data"]["session_id"].as_str().unwrap().to_owned();

    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ended = app
        .client
        .request(
            Method::DELETE,
            format!("{base_b}/api/v1/auth/sessions/{victim_session}"),
        )
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204, "node B ends the session");
    tokio::time::sleep(Duration::from_secs(6)).await;
    relay.restore();
    assert!(
        eventually(Duration::from_secs(4), || async {
            app.get_auth("/api/v1/auth/me", &victim).await.status() == 401
        })
        .await,
        "node A still accepts a session revoked while it was cut off"
    );
    node_b.stop().await.unwrap();
    app.stop().await;
}

/// Eight clients verifying one warm key as fast as they can, until [`VerifyLoad::finish`].
struct VerifyLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl VerifyLoad {
    fn start(app: &Arc<TestApp>, root: &str, key: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let workers = (0..8)
            .map(|_| {
                let (app, root, key, stop, answered) = (
                    app.clone(),
                    root.to_owned(),
                    key.to_owned(),
                    stop.clone(),
                    answered.clone(),
                );
                tokio::spawn(async move {
                    let mut refused = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let response = with_key(
                            &app,
                            Method::POST,
                            "/keys/verify",
                            &root,
                            Some(json!({ "key": key, "endpoint": "/load" })),
                        )
                        .await;
                        if response.status() == 200 {
                            answered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.push(format!(
                                "{} {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            ));
                        }
                    }
                    refused
                })
            })
            .collect();
        Self {
            stop,
            answered,
            workers,
        }
    }

    /// Stops the clients; the number of verifies answered 200, and every other answer.
    async fn finish(self) -> (i64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut refused = Vec::new();
        for worker in self.workers {
            refused.extend(worker.await.unwrap());
        }
        (self.answered.load(Ordering::Relaxed) as i64, refused)
    }
}

/// Waits (up to 10 s) until the key's usage counts `expected` calls; false with what it saw.
async fn usage_reaches(
    app: &Arc<TestApp>,
    owner: &str,
    org: &str,
    key_id: &str,
    expected: i64,
) -> Result<(), i64> {
    let query = format!("/api/v1/usage?org_id={org}&key_id={key_id}&granularity=minute");
    let written = Arc::new(AtomicI64::new(-1));
    let complete = eventually(Duration::from_secs(10), || {
        let (app, query, owner, written) = (
            app.clone(),
            query.clone(),
            owner.to_owned(),
            written.clone(),
        );
        async move {
            let usage = body(app.get_auth(&query, &owner).await).await;
            let count = usage["data"]["total"]["count"].as_i64().unwrap_or(-1);
            written.store(count, Ordering::Relaxed);
            count == expected
        }
    })
    .await;
    if complete {
        Ok(())
    } else {
        Err(written.load(Ordering::Relaxed))
    }
}

/// An org with one key, an operator verifier key, and that key verified once (so it is warm):
/// `(owner token, org id, key id, key, verifier key)`.
async fn warm_key(app: &TestApp) -> (String, String, String, String, String) {
    let (_, root) = operator_with_verifier(app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (key_id, key) = issue_key(app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let warm = with_key(
        app,
        Method::POST,
        "/keys/verify",
        &root,
        Some(json!({ "key": key })),
    )
    .await;
    assert_eq!(warm.status(), 200);
    (owner, org, key_id, key, root)
}

/// A rate limit for verifier keys that a load test cannot reach.
fn unlimited_verifier(config: &mut toml::Table) {
    fluxgate_testkit::set_config(config, "rate_limits.api_key", "100000000/min");
}

/// Warm verifies under load while PostgreSQL is unreachable for two seconds and then Redis is
/// killed and restarted: every verify is answered 200 (warm keys need neither; Redis fails open
/// by default), and once both are back every answered call is in the usage — none lost.
#[tokio::test]
async fn a_verify_load_rides_out_postgres_and_redis_going_away() {
    let relay = Relay::start(&host_port_of(&postgres_admin_url())).await;
    let mut redis = RedisServer::start().await;
    let redis_url = redis.url();
    let app = TestApp::spawn_with(Backend::Postgres, |t| {
        through(&relay, t);
        t.insert("redis_url".into(), redis_url.into());
        unlimited_verifier(t);
    })
    .await;
    let app = Arc::new(app);
    let (owner, org, key_id, key, root) = warm_key(&app).await;

    let load = VerifyLoad::start(&app, &root, &key);
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.restore();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (answered, refused) = load.finish().await;
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    assert!(answered > 100, "the load ran: {answered}");
    // and the warm-up verify
    if let Err(written) = usage_reaches(&app, &owner, &org, &key_id, answered + 1).await {
        panic!("{answered} verifies answered, {written} in the usage");
    }
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

/// PostgreSQL itself shut down (every connection ended) for four seconds and started again,
/// under a verify load and a management load: every verify is answered 200; every management
/// call is answered 200 or the documented `503 UNAVAILABLE` envelope — never a 500 — and
/// management serves again by itself once the database is back; no answered verify is missing
/// from the usage.
#[tokio::test]
async fn a_postgres_restart_under_load_gives_only_documented_503s_and_loses_no_usage() {
    let mut postgres = PostgresServer::start();
    let url = postgres.url();
    let app = TestApp::spawn_with(Backend::Postgres, |t| {
        t.insert("database_url".into(), url.into());
        unlimited_verifier(t);
    })
    .await;
    let app = Arc::new(app);
    let (owner, org, key_id, key, root) = warm_key(&app).await;

    let load = VerifyLoad::start(&app, &root, &key);
    let managing = Arc::new(AtomicBool::new(true));
    let management = {
        let (app, owner, org, managing) =
            (app.clone(), owner.clone(), org.clone(), managing.clone());
        tokio::spawn(async move {
            let mut answers: Vec<(u16, Value)> = Vec::new();
            while managing.load(Ordering::Relaxed) {
                let response = app
                    .get_auth(&format!("/api/v1/orgs/{org}/keys"), &owner)
                    .await;
                let status = response.status().as_u16();
                answers.push((status, body(response).await));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres.restart();
    let back = eventually(Duration::from_secs(10), || async {
        app.get_auth(&format!("/api/v1/orgs/{org}/keys"), &owner)
            .await
            .status()
            == 200
    })
    .await;
    assert!(back, "management did not come back after PostgreSQL did");
    managing.store(false, Ordering::Relaxed);
    let answers = management.await.unwrap();
    let (answered, refused) = load.finish().await;

    assert!(
        refused.is_empty(),
        "{} verifies refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    let unavailable = answers.iter().filter(|(status, _)| *status == 503).count();
    assert!(
        unavailable > 0,
        "the outage was seen: {} calls",
        answers.len()
    );
    for (status, answer) in &answers {
        match status {
            200 => {}
            503 => assert_eq!(answer["error"]["code"], "UNAVAILABLE", "{answer}"),
            other => panic!("management answered {other} during the restart: {answer}"),
        }
    }
    if let Err(written) = usage_reaches(&app, &owner, &org, &key_id, answered + 1).await {
        panic!("{answered} verifies answered, {written} in the usage");
    }
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}
