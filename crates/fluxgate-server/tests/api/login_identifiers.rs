//! Login identifiers besides the email address — a username and a document number (Brazil's
//! CPF here) — over real HTTP on SQLite and PostgreSQL: normalised and validated at signup and
//! login, unique, with the same answers and the same lockout as an email login.

use fluxgate_testkit::{body, expect_error, set_config, smtp, Backend, TestApp, PASSWORD};
use serde_json::{json, Value};

both_backends!(
    usernames_and_documents_log_in_like_email_addresses,
    the_lockout_counts_per_account_whichever_identifier_is_typed,
    identifiers_the_instance_does_not_use_are_refused,
);

const CPF: &str = "529.982.247-25";

async fn with_identifiers(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |t| {
        set_config(t, "auth.username", "optional");
        set_config(t, "auth.document.label", "CPF");
        set_config(t, "auth.document.pattern", "^[0-9]{11}$");
        set_config(t, "auth.document.checksum", "cpf");
        set_config(t, "auth.document.required", true);
    })
    .await
}

async fn signup(app: &TestApp, body: Value) -> reqwest::Response {
    let mut request = json!({ "password": PASSWORD });
    for (k, v) in body.as_object().expect("object") {
        request[k] = v.clone();
    }
    app.post("/api/v1/auth/signup", request).await
}

async fn verified(app: &TestApp, email: &str, extra: Value) -> Value {
    let mut fields = json!({ "email": email });
    for (k, v) in extra.as_object().expect("object") {
        fields[k] = v.clone();
    }
    let created = signup(app, fields).await;
    assert_eq!(created.status(), 201);
    let user = body(created).await["data"]["user"].clone();
    let mail = app.mail.wait_for(email, "Verify").await;
    let token = smtp::token_in(&mail.body);
    let done = app
        .post("/api/v1/auth/verify-email", json!({ "token": token }))
        .await;
    assert_eq!(done.status(), 200);
    user
}

async fn login(app: &TestApp, name: Value, password: &str) -> reqwest::Response {
    let mut request = name;
    request["password"] = json!(password);
    app.post("/api/v1/auth/login", request).await
}

async fn usernames_and_documents_log_in_like_email_addresses(backend: Backend) {
    let app = with_identifiers(backend).await;
    let user = verified(
        &app,
        "ada@example.com",
        json!({ "username": " Ada.L ", "document": CPF }),
    )
    .await;
    assert_eq!(user["username"], "ada.l");
    assert_eq!(user["document"], "52998224725");

    for name in [
        json!({ "username": "ADA.L" }),
        json!({ "document": "52998224725" }),
        json!({ "document": CPF }),
        json!({ "email": "Ada@Example.com" }),
    ] {
        let signed_in = login(&app, name.clone(), PASSWORD).await;
        assert_eq!(signed_in.status(), 200, "{name}");
        let access = body(signed_in).await["data"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let me = body(app.get_auth("/api/v1/auth/me", &access).await).await["data"].clone();
        assert_eq!(me["user"]["username"], "ada.l");
        assert_eq!(me["user"]["document"], "52998224725");
    }

    // validated at signup, each field named; unique
    let bad = signup(
        &app,
        json!({ "email": "bob@example.com", "document": "529.982.247-24", "username": "b" }),
    )
    .await;
    let error = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert!(
        error["fields"]["document"]
            .as_str()
            .unwrap()
            .contains("check digits"),
        "{error}"
    );
    assert!(error["fields"]["username"].is_string(), "{error}");
    let missing = signup(&app, json!({ "email": "bob@example.com" })).await;
    let error = expect_error(missing, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["fields"]["document"], "is required");
    let same_name = signup(
        &app,
        json!({ "email": "bob@example.com", "username": "ada.l", "document": "111.444.777-35" }),
    )
    .await;
    expect_error(same_name, 409, "CONFLICT").await;
    let same_number = signup(
        &app,
        json!({ "email": "bob@example.com", "document": "52998224725" }),
    )
    .await;
    expect_error(same_number, 409, "CONFLICT").await;

    // a login names exactly one; unknown and wrong get the same answer
    let two = login(
        &app,
        json!({ "username": "ada.l", "email": "ada@example.com" }),
        PASSWORD,
    )
    .await;
    expect_error(two, 422, "VALIDATION_FAILED").await;
    let wrong = body(login(&app, json!({ "username": "ada.l" }), "not-the-password-1").await).await;
    let unknown =
        body(login(&app, json!({ "username": "nobody" }), "not-the-password-1").await).await;
    let malformed =
        body(login(&app, json!({ "document": "123" }), "not-the-password-1").await).await;
    for answer in [&wrong, &unknown, &malformed] {
        assert_eq!(answer["error"]["code"], "INVALID_CREDENTIALS", "{answer}");
        assert_eq!(answer["error"]["message"], wrong["error"]["message"]);
    }
}

async fn the_lockout_counts_per_account_whichever_identifier_is_typed(backend: Backend) {
    let app = with_identifiers(backend).await;
    verified(
        &app,
        "ada@example.com",
        json!({ "username": "ada", "document": CPF }),
    )
    .await;
    let names = [
        json!({ "username": "ada" }),
        json!({ "document": CPF }),
        json!({ "email": "ada@example.com" }),
    ];
    let mut locked = false;
    for attempt in 0..6 {
        let name = names[attempt % 3].clone();
        let answer = login(&app, name, "not-the-password-1").await;
        if answer.status() == 429 {
            locked = true;
            break;
        }
        expect_error(answer, 401, "INVALID_CREDENTIALS").await;
    }
    assert!(
        locked,
        "five wrong passwords across identifiers lock the account"
    );
    for name in names {
        let answer = login(&app, name.clone(), PASSWORD).await;
        expect_error(answer, 429, "RATE_LIMITED").await;
    }
}

async fn identifiers_the_instance_does_not_use_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let refused = signup(
        &app,
        json!({ "email": "ada@example.com", "username": "ada", "document": CPF }),
    )
    .await;
    let error = expect_error(refused, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["fields"]["username"], "is not used on this instance");
    assert_eq!(error["fields"]["document"], "is not used on this instance");
    app.signup_verified("ada@example.com", None).await;
    let by_name = login(&app, json!({ "username": "ada" }), PASSWORD).await;
    expect_error(by_name, 401, "INVALID_CREDENTIALS").await;
    let by_number = login(&app, json!({ "document": CPF }), PASSWORD).await;
    expect_error(by_number, 401, "INVALID_CREDENTIALS").await;
    let me = app.login("ada@example.com", PASSWORD).await;
    let me = body(
        app.get_auth("/api/v1/auth/me", me["access_token"].as_str().unwrap())
            .await,
    )
    .await;
    assert!(me["data"]["user"].get("username").is_none(), "{me}");
}
