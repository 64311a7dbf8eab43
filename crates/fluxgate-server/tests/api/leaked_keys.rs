//! Leaked keys over real HTTP, on SQLite and PostgreSQL: a secret scanner's report, signed with
//! ECDSA P-256 as GitHub's partner program signs them, revokes or flags each of our keys as its
//! org chose and labels every token — and reports that are not signed by a configured scanner
//! key, tampered with, or malformed change nothing.

use base64::Engine;
use fluxgate_core::secret::sha256_hex;
use fluxgate_testkit::{
    body, expect_error, issue_key, operator_with_verifier, send, set_config, verify_code, Backend,
    TestApp,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    a_signed_report_revokes_or_flags_each_key_as_its_org_chose,
    reports_not_signed_by_a_configured_scanner_change_nothing,
);

fn signing_key() -> SigningKey {
    SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
}

/// An instance that believes `scanner`'s reports, as key id `scanner-1`.
async fn spawn(backend: Backend, scanner: &SigningKey) -> TestApp {
    let pem = scanner
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    TestApp::spawn_with(backend, move |config| {
        set_config(config, "leaked_keys.public_keys.scanner-1", pem);
    })
    .await
}

/// Posts `report` signed by `key` (as `key_id`); the raw body may be given instead.
async fn post_report(
    app: &TestApp,
    key_id: &str,
    key: &SigningKey,
    signed_body: &[u8],
    sent_body: &[u8],
) -> reqwest::Response {
    let signature: Signature = key.sign(signed_body);
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    app.client
        .post(app.url("/api/v1/keys/leaked"))
        .header("content-type", "application/json")
        .header("github-public-key-identifier", key_id)
        .header("github-public-key-signature", encoded)
        .body(sent_body.to_vec())
        .send()
        .await
        .unwrap()
}

/// The org's `key.leaked` audit entries.
async fn leak_entries(app: &TestApp, token: &str, org: &str) -> Vec<Value> {
    let path = format!("/orgs/{org}/audit-log?action=key.leaked");
    let log = body(send(app, Method::GET, &path, token, None).await).await;
    log["data"].as_array().cloned().unwrap_or_default()
}

async fn a_signed_report_revokes_or_flags_each_key_as_its_org_chose(backend: Backend) {
    let scanner = signing_key();
    let app = spawn(backend, &scanner).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token_a, org_a) = app.owner("a@example.com", "Revokers").await;
    let (token_b, org_b) = app.owner("b@example.com", "Flaggers").await;
    let flag = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org_b}"),
        &token_b,
        Some(json!({ "leaked_key_action": "flag" })),
    )
    .await;
    assert_eq!(body(flag).await["data"]["leaked_key_action"], "flag");
    let (_, key_a) = issue_key(&app, &token_a, &org_a, json!({ "name": "a", "scopes": [] })).await;
    let (key_b_id, key_b) =
        issue_key(&app, &token_b, &org_b, json!({ "name": "b", "scopes": [] })).await;
    let unknown = "fg_live_".to_owned() + &"A".repeat(40);

    let report = json!([
        { "token": key_a, "type": "fluxgate_api_key", "url": "https://github.com/x/y/blob/main/.env", "source": "content" },
        { "token": key_b, "type": "fluxgate_api_key", "url": "https://gist.github.com/z", "source": "gist" },
        { "token": unknown, "type": "fluxgate_api_key" },
        { "token": "not a key at all", "type": "fluxgate_api_key" },
    ]);
    let raw = serde_json::to_vec(&report).unwrap();
    let answer = post_report(&app, "scanner-1", &scanner, &raw, &raw).await;
    assert_eq!(answer.status(), 200);
    let labels: Value = answer.json().await.unwrap();
    let labels: Vec<(String, String)> = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["token_hash"].as_str().unwrap().to_owned(),
                l["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            (sha256_hex(&key_a), "true_positive".to_owned()),
            (sha256_hex(&key_b), "true_positive".to_owned()),
            (sha256_hex(&unknown), "false_positive".to_owned()),
            (sha256_hex("not a key at all"), "false_positive".to_owned()),
        ]
    );

    // revoked at once in the org that revokes; flagged in the one that flags
    assert_eq!(verify_code(&app, &verifier, &key_a).await, "REVOKED");
    assert_eq!(verify_code(&app, &verifier, &key_b).await, "LEAKED");
    let shown = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org_b}/keys/{key_b_id}"),
            &token_b,
            None,
        )
        .await,
    )
    .await;
    assert!(shown["data"]["leaked_at"].is_string());
    assert_eq!(shown["data"]["status"], "active", "flagged, not revoked");
    let audit = leak_entries(&app, &token_b, &org_b).await;
    assert_eq!(audit.len(), 1);
    let entries = &audit;
    assert_eq!(entries[0]["data"]["action"], "flagged");
    assert_eq!(entries[0]["data"]["url"], "https://gist.github.com/z");
    assert!(
        !entries[0].to_string().contains(&key_b),
        "no secret in the audit log"
    );

    // reported again: still ours, nothing done twice
    let again = post_report(&app, "scanner-1", &scanner, &raw, &raw).await;
    assert_eq!(again.status(), 200);
    let audit = leak_entries(&app, &token_b, &org_b).await;
    assert_eq!(audit.len(), 1);

    // the org setting is checked
    let bad = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org_a}"),
        &token_a,
        Some(json!({ "leaked_key_action": "ignore" })),
    )
    .await;
    let refused = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert!(refused["fields"].get("leaked_key_action").is_some());
}

async fn reports_not_signed_by_a_configured_scanner_change_nothing(backend: Backend) {
    let scanner = signing_key();
    let stranger = signing_key();
    let app = spawn(backend, &scanner).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("c@example.com", "Careful Co").await;
    let (_, key) = issue_key(&app, &token, &org, json!({ "name": "c", "scopes": [] })).await;
    let raw = serde_json::to_vec(&json!([{ "token": key, "type": "fluxgate_api_key" }])).unwrap();
    let other =
        serde_json::to_vec(&json!([{ "token": "fg_live_x", "type": "fluxgate_api_key" }])).unwrap();

    // signed by a key we do not know, under a known id; a body other than the signed one; an
    // unknown key id; no signature at all
    for response in [
        post_report(&app, "scanner-1", &stranger, &raw, &raw).await,
        post_report(&app, "scanner-1", &scanner, &other, &raw).await,
        post_report(&app, "scanner-2", &scanner, &raw, &raw).await,
        app.client
            .post(app.url("/api/v1/keys/leaked"))
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
            .await
            .unwrap(),
    ] {
        expect_error(response, 401, "UNAUTHORIZED").await;
    }
    assert_eq!(
        verify_code(&app, &verifier, &key).await,
        "VALID",
        "nothing was revoked"
    );

    // well signed but not a report, or too long
    let not_a_list = br#"{"token": "x"}"#;
    let refused = post_report(&app, "scanner-1", &scanner, not_a_list, not_a_list).await;
    expect_error(refused, 422, "VALIDATION_FAILED").await;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "token": format!("t{i}") }))
        .collect();
    let many = serde_json::to_vec(&many).unwrap();
    let refused = post_report(&app, "scanner-1", &scanner, &many, &many).await;
    expect_error(refused, 422, "VALIDATION_FAILED").await;

    // an instance without scanner keys believes no report
    let plain = TestApp::spawn(backend).await;
    let response = post_report(&plain, "scanner-1", &scanner, &raw, &raw).await;
    expect_error(response, 401, "UNAUTHORIZED").await;
}
