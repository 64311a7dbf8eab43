//! Faults injected around the real server: the network to PostgreSQL cut (by a relay in front of
//! it, the database itself untouched) and Redis killed and restarted, under load or for longer
//! than any fixed look-back, and what each node must still get right when they come back.

use fluxgate_testkit::relay::Relay;
use fluxgate_testkit::{
    body, eventually, host_port_of, postgres_admin_url, Backend, TestApp, PASSWORD,
};
use reqwest::Method;
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

/// Warm verifies under load while PostgreSQL is unreachable for two seconds and then Redis is
/// killed and restarted: every verify is answered 200 (warm keys need neither; Redis fails open
/// by default), and once both are back every answered call is in the usage — none lost.
#[tokio::test]
async fn a_verify_load_rides_out_postgres_and_redis_going_away() {
    use fluxgate_testkit::redis::RedisServer;
    use fluxgate_testkit::{issue_key, operator_with_verifier, with_key};
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let relay = Relay::start(&host_port_of(&postgres_admin_url())).await;
    let mut redis = RedisServer::start().await;
    let redis_url = redis.url();
    let app = TestApp::spawn_with(Backend::Postgres, |t| {
        through(&relay, t);
        t.insert("redis_url".into(), redis_url.into());
        let limits = t["rate_limits"].as_table_mut().unwrap();
        limits.insert("api_key".into(), "100000000/min".into());
    })
    .await;
    let app = Arc::new(app);
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (key_id, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let warm = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &root,
        Some(json!({ "key": key })),
    )
    .await;
    assert_eq!(warm.status(), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (app, root, key, stop, answered) = (
                app.clone(),
                root.clone(),
                key.clone(),
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.restore();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = Vec::new();
    for worker in workers {
        refused.extend(worker.await.unwrap());
    }
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    let answered = answered.load(Ordering::Relaxed) as i64;
    assert!(answered > 100, "the load ran: {answered}");
    let query = format!("/api/v1/usage?org_id={org}&key_id={key_id}&granularity=minute");
    let written = Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let complete = eventually(Duration::from_secs(10), || {
        let (app, query, owner, written) =
            (app.clone(), query.clone(), owner.clone(), written.clone());
        async move {
            let usage = body(app.get_auth(&query, &owner).await).await;
            let count = usage["data"]["total"]["count"].as_i64().unwrap_or(-1);
            written.store(count, Ordering::Relaxed);
            count == answered + 1 // and the warm-up verify
        }
    })
    .await;
    assert!(
        complete,
        "{answered} verifies answered, {} in the usage",
        written.load(Ordering::Relaxed)
    );
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}
