//! Faults injected around the real server: the network to PostgreSQL cut (by a relay in front of
//! it, the database itself untouched) for longer than any fixed look-back, and what each node
//! must still get right when it comes back.

use fluxgate_testkit::relay::Relay;
use fluxgate_testkit::{
    body, eventually, host_port_of, postgres_admin_url, Backend, TestApp, PASSWORD,
};
use reqwest::Method;
use std::time::Duration;

/// Node A reaches PostgreSQL through a relay; node B directly. A session revoked on B while A
/// cannot reach the database for six seconds (longer than a poll's overlap) is refused on A
/// within a couple of seconds of the database coming back — its poll reads from its last good one.
#[tokio::test]
async fn a_revocation_made_while_a_node_was_cut_off_reaches_it_on_recovery() {
    let relay = Relay::start(&host_port_of(&postgres_admin_url())).await;
    let via_relay = relay.addr.to_string();
    let app = TestApp::spawn_with(Backend::Postgres, |t| {
        let direct = t["database_url"].as_str().unwrap().to_owned();
        let relayed = direct.replace(&host_port_of(&direct), &via_relay);
        t.insert("database_url".into(), relayed.into());
    })
    .await;
    let mut config_b = app.config.clone();
    config_b.database_url = app.database_url.clone();
    config_b.listen = "127.0.0.1:0".parse().unwrap();
    let node_b = fluxgate_server::server::start(config_b).await.unwrap();
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
