//! Property-based fuzzing of the real server over HTTP, on SQLite and PostgreSQL: to every
//! endpoint that takes a body, a valid body with one field replaced by arbitrary JSON (hostile
//! strings, huge and fractional numbers, deep nesting, wrong types), removed or joined by another
//! — so the hostile value gets past the other fields' checks — and now and then a body of pure
//! noise; and arbitrary `Authorization` and `Cookie` headers. Whatever arrives, the answer is
//! never a 5xx and every refusal is the JSON envelope. `FLUXGATE_FUZZ_CASES` (default 12 per endpoint) sets the budget for longer runs.

use fluxgate_testkit::{body, issue_key, operator_with_verifier, Backend, TestApp};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    arbitrary_bodies_never_break_an_endpoint,
    arbitrary_credentials_are_refused_in_the_envelope,
);

fn cases() -> usize {
    std::env::var("FLUXGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Field names the endpoints read, so generated objects reach past "unknown field".
const FIELDS: &[&str] = &[
    "email",
    "password",
    "name",
    "organization_name",
    "token",
    "refresh_token",
    "new_password",
    "current_password",
    "org_id",
    "external_id",
    "scopes",
    "environment",
    "expires_at",
    "expires_in_days",
    "rate_limit",
    "limit",
    "window_seconds",
    "metadata",
    "grace_period_seconds",
    "role",
    "permissions",
    "description",
    "key",
    "endpoint",
    "cost",
    "cached_calls",
    "meter",
    "quantity",
    "timestamp",
    "idempotency_key",
    "events",
    "plan",
    "customer_external_id",
    "ttl_seconds",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => ".{0,40}",
        3 => "[a-z/]{0,4}\\x00[a-z]{0,4}",
        4 => "[a-z]{0,6}[\\x00-\\x1f\\u{7f}-\\u{9f}\\u{200b}-\\u{200f}\\u{202a}-\\u{202e}\\u{feff}][a-z@. ]{0,12}",
        1 => Just("x".repeat(5_000)),
        1 => Just("fg_live_".to_owned()),
        1 => Just("a@example.com".to_owned()),
        1 => Just("*".to_owned()),
        1 => Just("admin:*".to_owned()),
    ]
}

/// What replaces a field: mostly a hostile string or number, sometimes any JSON.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::String),
        2 => number(),
        2 => json_value(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1.7e308)),
        Just(json!(-0.0)),
        Just(json!(0)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(FIELDS).prop_map(str::to_owned), text()],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A token shaped like a JWT: base64url JSON header (claimed algorithm, key id and extras drawn
/// from what attackers try), base64url claims, and a signature of random bytes.
fn forged_jwt() -> impl Strategy<Value = String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let alg = prop_oneof![
        Just(json!("EdDSA")),
        Just(json!("none")),
        Just(json!("HS256")),
        Just(json!("RS256")),
        Just(json!("ES256")),
        hostile(),
    ];
    let header = (alg, hostile(), hostile(), json_value()).prop_map(|(alg, kid, typ, extra)| {
        json!({ "alg": alg, "kid": kid, "typ": typ, "crit": extra.clone(), "jwk": extra })
    });
    let claims = prop_oneof![
        json_value(),
        (hostile(), number(), hostile()).prop_map(|(sub, exp, sid)| {
            json!({ "sub": sub, "exp": exp, "iat": 0, "sid": sid, "iss": "fluxgate" })
        }),
    ];
    let signature = prop::collection::vec(any::<u8>(), 0..80);
    (header, claims, signature).prop_map(|(header, claims, signature)| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(signature)
        )
    })
}

/// How to spoil a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    /// One of its fields (by index) takes this value.
    Replace(prop::sample::Index, Value),
    /// One of its fields, and the first field inside it when it is an object or array, takes it.
    ReplaceInside(prop::sample::Index, Value),
    /// One of its fields goes.
    Remove(prop::sample::Index),
    /// A field of this name joins.
    Add(&'static str, Value),
    /// Not the body at all.
    Noise(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        5 => (any::<prop::sample::Index>(), hostile()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => (any::<prop::sample::Index>(), hostile()).prop_map(|(i, v)| Mutation::ReplaceInside(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (prop::sample::select(FIELDS), json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        1 => json_value().prop_map(Mutation::Noise),
    ]
}

fn mutate(template: &Value, mutation: &Mutation) -> Value {
    let mut body = template.clone();
    let Some(fields) = body.as_object_mut() else {
        return body;
    };
    let names: Vec<String> = fields.keys().cloned().collect();
    let pick =
        |i: &prop::sample::Index| (!names.is_empty()).then(|| names[i.index(names.len())].clone());
    match mutation {
        Mutation::Replace(i, value) => {
            if let Some(name) = pick(i) {
                fields.insert(name, value.clone());
            }
        }
        Mutation::ReplaceInside(i, value) => {
            if let Some(name) = pick(i) {
                match fields.get_mut(&name) {
                    Some(Value::Object(inner)) => {
                        if let Some(first) = inner.keys().next().cloned() {
                            inner.insert(first, value.clone());
                        }
                    }
                    Some(Value::Array(items)) if !items.is_empty() => items[0] = value.clone(),
                    Some(other) => *other = value.clone(),
                    None => {}
                }
            }
        }
        Mutation::Remove(i) => {
            if let Some(name) = pick(i) {
                fields.remove(&name);
            }
        }
        Mutation::Add(name, value) => {
            fields.insert((*name).to_owned(), value.clone());
        }
        Mutation::Noise(value) => return value.clone(),
    }
    body
}

fn generate<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::new(ProptestConfig::default());
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("value").current())
        .collect()
}

/// An answer that is not a 5xx; a refusal is the envelope with a code.
async fn assert_well_formed(response: reqwest::Response, what: &str) {
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = response.text().await.unwrap_or_default();
    assert!(!status.is_server_error(), "{what}: {status} {text}");
    if status.is_client_error() {
        assert!(is_json, "{what}: {status} is not JSON: {text}");
        let envelope: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            envelope["error"]["code"].is_string(),
            "{what}: {status} {text}"
        );
    }
}

async fn arbitrary_bodies_never_break_an_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ops, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (key_id, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let me = body(app.get_auth("/api/v1/auth/me", &owner).await).await;
    let user = me["data"]["user"]["id"].as_str().unwrap().to_owned();
    let role = body(
        app.call(
            Method::POST,
            &format!("/api/v1/orgs/{org}/roles"),
            Some(&owner),
            Some(json!({ "name": "fuzzed", "permissions": ["keys:read"] })),
        )
        .await,
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    enum Auth<'a> {
        None,
        Bearer(&'a str),
        Key(&'a str),
    }
    let endpoints: Vec<(Method, String, Auth, Value)> = vec![
        (
            Method::POST,
            "/auth/signup".into(),
            Auth::None,
            json!({ "email": "new@example.com", "password": "a long passphrase", "name": "New", "organization_name": "New Co" }),
        ),
        (
            Method::POST,
            "/auth/login".into(),
            Auth::None,
            json!({ "email": "ada@example.com", "password": "wrong passphrase" }),
        ),
        (
            Method::POST,
            "/auth/refresh".into(),
            Auth::None,
            json!({ "refresh_token": "rt_x" }),
        ),
        (
            Method::POST,
            "/auth/verify-email".into(),
            Auth::None,
            json!({ "token": "t" }),
        ),
        (
            Method::POST,
            "/auth/resend-verification".into(),
            Auth::None,
            json!({ "email": "a@example.com" }),
        ),
        (
            Method::POST,
            "/auth/password/forgot".into(),
            Auth::None,
            json!({ "email": "a@example.com" }),
        ),
        (
            Method::POST,
            "/auth/password/reset".into(),
            Auth::None,
            json!({ "token": "t", "new_password": "a long passphrase" }),
        ),
        (
            Method::POST,
            "/auth/password/change".into(),
            Auth::Bearer(&ops),
            json!({ "current_password": "wrong passphrase", "new_password": "a long passphrase" }),
        ),
        (
            Method::PATCH,
            "/auth/me".into(),
            Auth::Bearer(&ops),
            json!({ "name": "Ops" }),
        ),
        (
            Method::POST,
            "/auth/switch-org".into(),
            Auth::Bearer(&ops),
            json!({ "org_id": org }),
        ),
        (
            Method::POST,
            "/orgs".into(),
            Auth::Bearer(&ops),
            json!({ "name": "Other", "external_id": "cus_1" }),
        ),
        (
            Method::PATCH,
            format!("/orgs/{org}"),
            Auth::Bearer(&ops),
            json!({ "name": "Acme", "external_id": "cus_2" }),
        ),
        (
            Method::POST,
            format!("/orgs/{org}/keys"),
            Auth::Bearer(&owner),
            json!({ "name": "k", "scopes": ["keys:read"], "environment": "test", "expires_in_days": 30,
                    "rate_limit": { "limit": 10, "window_seconds": 60 }, "metadata": { "team": "x" } }),
        ),
        (
            Method::PATCH,
            format!("/orgs/{org}/keys/{key_id}"),
            Auth::Bearer(&owner),
            json!({ "name": "k", "scopes": [], "metadata": { "a": 1 }, "expires_at": "2030-01-01T00:00:00Z" }),
        ),
        (
            Method::POST,
            format!("/orgs/{org}/keys/{key_id}/rotate"),
            Auth::Bearer(&owner),
            json!({ "grace_period_seconds": 60 }),
        ),
        (
            Method::POST,
            format!("/orgs/{org}/invitations"),
            Auth::Bearer(&owner),
            json!({ "email": "dev@example.com", "role": "developer" }),
        ),
        (
            Method::PATCH,
            format!("/orgs/{org}/members/{user}"),
            Auth::Bearer(&ops),
            json!({ "role": "owner" }),
        ),
        (
            Method::POST,
            format!("/orgs/{org}/roles"),
            Auth::Bearer(&owner),
            json!({ "name": "reader", "description": "reads", "permissions": ["keys:read"] }),
        ),
        (
            Method::PATCH,
            format!("/orgs/{org}/roles/{role}"),
            Auth::Bearer(&owner),
            json!({ "description": "reads", "permissions": ["keys:read"] }),
        ),
        (
            Method::POST,
            "/keys/verify".into(),
            Auth::Key(&root),
            json!({ "key": key, "scopes": [], "endpoint": "/v1/x", "cost": 2, "cached_calls": { "/v1/y": 1 } }),
        ),
        (
            Method::POST,
            "/sdk/track".into(),
            Auth::Bearer(&owner),
            json!({ "meter": "tokens", "org_id": org, "quantity": 2.5, "idempotency_key": "job-1" }),
        ),
        (
            Method::POST,
            "/widget/token".into(),
            Auth::Bearer(&owner),
            json!({ "org_id": org }),
        ),
        (
            Method::PUT,
            format!("/admin/orgs/{org}/plan"),
            Auth::Bearer(&ops),
            json!({ "plan": "free" }),
        ),
    ];
    let mutations = generate(mutation(), cases() * endpoints.len());
    for (i, mutation) in mutations.iter().enumerate() {
        let (method, path, auth, template) = &endpoints[i % endpoints.len()];
        let payload = mutate(template, mutation);
        let mut request = app
            .client
            .request(method.clone(), app.url(&format!("/api/v1{path}")))
            .json(&payload);
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Key(key) => request.header("x-api-key", *key),
        };
        let response = request.send().await.expect("sent");
        assert_well_formed(response, &format!("{method} {path} {payload}")).await;
    }
    app.stop().await;
}

async fn arbitrary_credentials_are_refused_in_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let header_text = prop_oneof![
        "[ -~]{0,200}",
        "Bearer [ -~]{0,300}",
        "Bearer [A-Za-z0-9_-]{10,60}\\.[A-Za-z0-9_-]{10,200}\\.[A-Za-z0-9_-]{0,90}",
        "(access_token|refresh_token|fg_portal|__Host-fg_portal|fg_csrf)=[ -~]{0,120}(; [a-z_]{1,12}=[ -~]{0,40}){0,3}",
        "fg_(live|test)_[A-Za-z0-9]{0,60}",
    ];
    for value in generate(header_text, cases() * 4) {
        for (method, path, header) in [
            (Method::GET, "/api/v1/auth/me", "authorization"),
            (Method::GET, "/api/v1/auth/me", "cookie"),
            (Method::POST, "/api/v1/keys/verify", "x-api-key"),
            (Method::POST, "/api/v1/auth/refresh", "cookie"),
        ] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .header(header, value.as_str())
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("sent");
            assert_well_formed(response, &format!("{method} {path} {header}: {value}")).await;
        }
    }
    for token in generate(forged_jwt(), cases() * 4) {
        for (header, value) in [
            ("authorization", format!("Bearer {token}")),
            ("cookie", format!("access_token={token}")),
        ] {
            let response = app
                .client
                .get(app.url("/api/v1/auth/me"))
                .header(header, value.as_str())
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 401, "{header}: {value}");
            assert_well_formed(response, &format!("{header}: {value}")).await;
        }
    }
    app.stop().await;
}
