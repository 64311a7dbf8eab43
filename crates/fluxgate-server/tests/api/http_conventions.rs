//! Wire conventions every route shares: request ids, the error envelope for unknown routes and
//! methods, health and readiness, metrics, the OpenAPI document, and 503 while the database is away.

use fluxgate_testkit::{body, expect_error, Backend, TestApp};
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

both_backends!(
    every_response_carries_a_request_id,
    unknown_routes_and_methods_answer_the_envelope,
    health_readiness_and_metrics,
    openapi_document_covers_every_route,
    verify_keeps_every_convention_on_its_direct_path,
);

/// `POST /api/v1/keys/verify` skips the router (it is served straight by its handler): it must
/// still honour and echo the request id, answer its refusals in the envelope (a body past the
/// limit with `Connection: close`, a body not declared as JSON, a missing verifier), count in
/// the metrics under its route, and leave other methods and near-miss paths to the router.
async fn verify_keeps_every_convention_on_its_direct_path(backend: Backend) {
    use fluxgate_testkit::{issue_key, operator_with_verifier};
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let verify = || {
        app.client
            .post(app.url("/api/v1/keys/verify"))
            .header("x-api-key", &root)
    };

    let valid = verify()
        .header("x-request-id", "trace-verify-1")
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("send");
    assert_eq!(valid.status(), 200);
    assert_eq!(valid.headers()["x-request-id"], "trace-verify-1");
    assert_eq!(body(valid).await["data"]["code"], "VALID");

    let huge = verify()
        .header("content-type", "application/json")
        .body(format!(r#"{{"key":"{}"}}"#, "x".repeat(200_000)))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.headers()["connection"], "close");
    assert!(huge.headers().contains_key("x-request-id"));
    expect_error(huge, 413, "PAYLOAD_TOO_LARGE").await;

    let untyped = verify()
        .body(format!(r#"{{"key":"{key}"}}"#))
        .send()
        .await
        .expect("send");
    expect_error(untyped, 400, "BAD_REQUEST").await;

    let anonymous = app
        .client
        .post(app.url("/api/v1/keys/verify"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("send");
    expect_error(anonymous, 401, "UNAUTHORIZED").await;

    let other_method = app
        .client
        .get(app.url("/api/v1/keys/verify"))
        .header("x-api-key", &root)
        .send()
        .await
        .expect("send");
    expect_error(other_method, 405, "METHOD_NOT_ALLOWED").await;
    let near_miss = app
        .client
        .post(app.url("/api/v1/keys/verify/"))
        .header("x-api-key", &root)
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("send");
    assert_eq!(near_miss.status(), 404);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let verified = metrics
        .lines()
        .find(|l| {
            l.starts_with("fluxgate_http_requests_total")
                && l.contains("route=\"/api/v1/keys/verify\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no verify count in\n{metrics}"));
    assert!(verified.ends_with(" 1"), "{verified}");
    app.stop().await;
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fresh = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("send");
    let id = fresh
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(id.starts_with("req_") && id.len() == 30, "{id}");
    let honoured = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(
        honoured
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-abc-123")
    );
    let other = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_ne!(
        other
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(id.as_str())
    );
    app.stop().await;
}

async fn unknown_routes_and_methods_answer_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    expect_error(
        app.client
            .get(app.url("/api/v1/nothing-here"))
            .send()
            .await
            .expect("send"),
        404,
        "NOT_FOUND",
    )
    .await;
    expect_error(
        app.client
            .get(app.url("/nothing-here"))
            .send()
            .await
            .expect("send"),
        404,
        "NOT_FOUND",
    )
    .await;
    // a browser gets a page, in the portal's frame, still with a 404
    let page = app
        .client
        .get(app.url("/nothing-here"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("send");
    assert_eq!(page.status(), 404);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("Not found"));
    // and `/` is the portal
    let front = app.client.get(app.url("/")).send().await.expect("send");
    assert_eq!(front.status(), 200);
    assert_eq!(front.url().path(), "/login");
    let wrong = app
        .call(Method::GET, "/api/v1/auth/login", None, None)
        .await;
    expect_error(wrong, 405, "METHOD_NOT_ALLOWED").await;
    let wrong = app
        .call(Method::PUT, "/healthz", None, Some(json!({})))
        .await;
    expect_error(wrong, 405, "METHOD_NOT_ALLOWED").await;
    let unauthenticated = app.call(Method::GET, "/api/v1/auth/me", None, None).await;
    let error = expect_error(unauthenticated, 401, "UNAUTHORIZED").await;
    assert_eq!(error["message"], "missing, invalid or expired credentials");
    app.stop().await;
}

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = body(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(health["data"]["status"], "ok");
    let ready = body(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(ready["data"]["status"], "ready");
    let expected = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(ready["data"]["database"], expected);
    app.post(
        "/api/v1/auth/login",
        json!({ "email": "x@example.com", "password": "whatever123" }),
    )
    .await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"fluxgate_http_requests_total{method="POST",route="/api/v1/auth/login",status="401"} 1"#),
        "{metrics}"
    );
    // the latency histogram of the same requests: one observation, in the +Inf bucket too
    let login = r#"method="POST",route="/api/v1/auth/login",status="401""#;
    for line in [
        format!("fluxgate_http_request_duration_seconds_count{{{login}}} 1"),
        format!("fluxgate_http_request_duration_seconds_bucket{{le=\"+Inf\",{login}}} 1"),
        "# TYPE fluxgate_http_request_duration_seconds histogram".to_owned(),
        "# TYPE fluxgate_http_requests counter".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    app.stop().await;
}

async fn openapi_document_covers_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = body(
        app.client
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/api/v1/auth/signup", "post"),
        ("/api/v1/auth/verify-email", "post"),
        ("/api/v1/auth/resend-verification", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/password/forgot", "post"),
        ("/api/v1/auth/password/reset", "post"),
        ("/api/v1/auth/me", "get"),
        ("/api/v1/auth/sessions", "get"),
        ("/api/v1/auth/sessions/{session_id}", "delete"),
        ("/api/v1/auth/switch-org", "post"),
        ("/api/v1/openapi.json", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // and every documented route answers something other than the 404 fallback
    for (path, method) in expected {
        let path = path.replace("{session_id}", "ses_01HZZZZZZZZZZZZZZZZZZZZZZZ");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response = app
            .client
            .request(m, app.url(&path))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let code = body_code(response).await;
        assert!(
            !(status == 404 && code.as_deref() == Some("NOT_FOUND") && !path.contains("sessions/")),
            "{method} {path} is documented but not routed"
        );
    }
    app.stop().await;
}

/// The document passes a real OpenAPI validator (`openapi-spec-validator`, which `scripts/test`
/// installs from PyPI into a virtualenv and names in `FLUXGATE_TEST_OPENAPI_VALIDATOR`), and every
/// operation declares the schema of its success answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_passes_a_validator_and_declares_every_response_schema() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = body(
        app.client
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let validator = std::env::var("FLUXGATE_TEST_OPENAPI_VALIDATOR")
        .unwrap_or_else(|_| "openapi-spec-validator".into());
    let checked = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{validator} cannot run ({e}): run the suite with scripts/test, which installs it"
            )
        });
    assert!(
        checked.status.success(),
        "the OpenAPI document is invalid:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // every operation's success answer has a schema (a 204, or a 303 sending the browser on,
    // has no body to describe)
    let mut undeclared = Vec::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let responses = operation["responses"].as_object().expect("responses");
            let described = responses.iter().any(|(status, response)| {
                status == "303"
                    || status.starts_with('2')
                        && (status == "204"
                            || response["content"].as_object().is_some_and(|c| {
                                c.values().all(|media| media["schema"].is_object())
                            }))
            });
            if !described {
                undeclared.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        undeclared.is_empty(),
        "operations without a success schema: {undeclared:?}"
    );
    app.stop().await;
}

async fn body_code(response: reqwest::Response) -> Option<String> {
    let text = response.text().await.ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["error"]["code"].as_str().map(str::to_owned)
}

/// PostgreSQL only: the database refusing connections answers 503 UNAVAILABLE, never a crash or
/// a hang, and service resumes by itself when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_recovers() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.signup_verified("uma@example.com", None).await;
    let admin_url = std::env::var("FLUXGATE_TEST_POSTGRES_URL").expect("scripts/test sets it");
    let database = app
        .database_url
        .rsplit('/')
        .next()
        .expect("db name")
        .to_string();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .expect("block");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .expect("terminate");

    let started = std::time::Instant::now();
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("send");
    expect_error(ready, 503, "UNAVAILABLE").await;
    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "uma@example.com", "password": fluxgate_testkit::PASSWORD }),
        )
        .await;
    expect_error(login, 503, "UNAVAILABLE").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503s must come promptly, not after a hang"
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("send")
            .status(),
        200,
        "the process lives on"
    );

    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("unblock");
    let recovered = fluxgate_testkit::eventually(Duration::from_secs(10), || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(recovered, "readiness did not recover");
    app.login("uma@example.com", fluxgate_testkit::PASSWORD)
        .await;
    app.stop().await;
}
