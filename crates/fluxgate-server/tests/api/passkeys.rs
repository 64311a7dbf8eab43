//! Passkeys over real HTTP, on SQLite and PostgreSQL, with webauthn-authenticator-rs's software
//! authenticator as the user's device: registering, naming and removing passkeys, signing in
//! with one alone and as a login's second factor — and the attacks: a ceremony replayed, taken
//! to another client or answered for another; a passkey claiming another account.

use fluxgate_testkit::{body, expect_error, Backend, TestApp, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{PublicKeyCredential, Url};

both_backends!(
    passkeys_are_registered_named_listed_and_removed,
    a_passkey_signs_in_alone_and_counts_as_a_second_factor,
    a_passkey_sign_in_refuses_replays_other_clients_and_borrowed_accounts,
    a_password_login_is_completed_with_a_passkey,
    passkeys_are_off_when_the_public_url_is_an_ip_address,
);

const EMAIL: &str = "ada@example.com";

/// The user's device: a software passkey that verifies its user.
type Device = WebauthnAuthenticator<SoftPasskey>;

fn device() -> Device {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

/// The instance's public URL in these tests: HTTPS, as the software device (like a browser)
/// runs WebAuthn only in a secure context.
const SECURE_URL: &str = "https://fluxgate.test";

fn origin() -> Url {
    Url::parse(SECURE_URL).unwrap()
}

/// An instance served at [`SECURE_URL`].
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.insert("public_url".into(), SECURE_URL.into());
    })
    .await
}

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    app.call(method, &format!("/api/v1{path}"), Some(token), Some(body))
        .await
}

/// A passkey registered from a device: the API's answer (`passkey`, `recovery_codes`) and the
/// credential's id, as the browser saw it.
struct Registered {
    data: Value,
    credential_id: String,
}

/// Registers `device` as a passkey named `name` for the user of `token`.
async fn register(app: &TestApp, token: &str, device: &mut Device, name: &str) -> Registered {
    let started = registration_options(app, token).await;
    let options = serde_json::from_value(started["options"].clone()).unwrap();
    let credential = device.do_registration(origin(), options).unwrap();
    let added = call(
        app,
        Method::POST,
        "/auth/passkeys",
        token,
        json!({ "ceremony": started["ceremony"], "name": name, "credential": credential }),
    )
    .await;
    assert_eq!(added.status(), 201);
    Registered {
        data: body(added).await["data"].clone(),
        credential_id: credential.id,
    }
}

/// Starts a registration: `data` (ceremony, options).
async fn registration_options(app: &TestApp, token: &str) -> Value {
    let started = call(
        app,
        Method::POST,
        "/auth/passkeys/registration-options",
        token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(started.status(), 200);
    body(started).await["data"].clone()
}

/// Starts a passkey sign-in: (ceremony, request options).
async fn sign_in_options(app: &TestApp) -> (String, Value) {
    let started = app
        .post("/api/v1/auth/passkeys/sign-in-options", json!({}))
        .await;
    assert_eq!(started.status(), 200);
    let data = body(started).await["data"].clone();
    (
        data["ceremony"].as_str().unwrap().to_owned(),
        data["options"].clone(),
    )
}

/// The device's answer to request options with its credential `credential_id`. For a
/// discoverable request (no credentials named) a browser lets the user pick one of the device's
/// credentials for this site and returns the account's user handle with it; the software device
/// needs both handed to it, so the test plays that part of the browser.
fn answer(
    device: &mut Device,
    options: &Value,
    credential_id: &str,
    user_id: &str,
) -> PublicKeyCredential {
    let mut options = options.clone();
    options["publicKey"]["allowCredentials"] =
        json!([{ "type": "public-key", "id": credential_id }]);
    let mut answer = device
        .do_authentication(origin(), serde_json::from_value(options).unwrap())
        .unwrap();
    answer.response.user_handle = Some(user_handle(user_id).into());
    answer
}

/// The WebAuthn user handle of an account: its id's ULID as 16 bytes.
fn user_handle(user_id: &str) -> Vec<u8> {
    let ulid = ulid::Ulid::from_string(user_id.trim_start_matches("usr_")).unwrap();
    ulid.to_bytes().to_vec()
}

fn user_id_of(token: &str) -> String {
    claims_of(token)["sub"].as_str().unwrap().to_owned()
}

async fn me(app: &TestApp, token: &str) -> Value {
    body(app.get_auth("/api/v1/auth/me", token).await).await["data"].clone()
}

/// The audit actions of `user_id`'s own doing.
async fn audit_actions(app: &TestApp, user_id: &str) -> Vec<String> {
    let filter = fluxgate_store::AuditFilter {
        actor_id: Some(user_id.to_owned()),
        limit: 100,
        ..Default::default()
    };
    let entries = app.state().store.audit_entries(&filter).await.unwrap();
    entries.into_iter().map(|e| e.action).collect()
}

async fn sign_in(
    app: &TestApp,
    ceremony: &str,
    credential: &PublicKeyCredential,
) -> reqwest::Response {
    app.post(
        "/api/v1/auth/passkeys/sign-in",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await
}

async fn passkeys_are_registered_named_listed_and_removed(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.user(EMAIL).await;
    let other = app.user("mallory@example.com").await;

    // the password is needed to start
    let wrong = call(
        &app,
        Method::POST,
        "/auth/passkeys/registration-options",
        &token,
        json!({ "password": "not-the-password-1" }),
    )
    .await;
    expect_error(wrong, 401, "INVALID_CREDENTIALS").await;

    // the options ask for a discoverable, user-verified credential for this site
    let started = registration_options(&app, &token).await;
    let public_key = &started["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], "fluxgate.test");
    assert_eq!(public_key["user"]["name"], EMAIL);
    assert_eq!(
        public_key["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"],
        "required"
    );

    // a bad name is refused before the ceremony is taken; another user cannot finish it, and
    // their try spends it
    let mut laptop = device();
    let options = serde_json::from_value(started["options"].clone()).unwrap();
    let credential = laptop.do_registration(origin(), options).unwrap();
    let finish = |token: String, name: &str| {
        let request =
            json!({ "ceremony": started["ceremony"], "name": name, "credential": credential });
        let app = &app;
        async move { call(app, Method::POST, "/auth/passkeys", &token, request).await }
    };
    let unnamed = finish(token.clone(), "  ").await;
    let error = expect_error(unnamed, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["name"].is_string(), "{error}");
    let stolen = finish(other.clone(), "Mallory's").await;
    let error = expect_error(stolen, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["ceremony"].is_string(), "{error}");
    let spent = finish(token.clone(), "Laptop").await;
    expect_error(spent, 422, "VALIDATION_FAILED").await;

    let laptop_key = register(&app, &token, &mut laptop, "Laptop").await;
    let added = &laptop_key.data;
    assert_eq!(added["passkey"]["name"], "Laptop");
    let laptop_id = added["passkey"]["id"].as_str().unwrap().to_owned();
    assert!(laptop_id.starts_with("psk_"));
    assert_eq!(
        added["recovery_codes"].as_array().unwrap().len(),
        10,
        "the first second factor comes with recovery codes"
    );
    let mail = app.mail.wait_for(EMAIL, "A passkey was added").await;
    assert!(mail.body.contains("“Laptop”"), "{}", mail.body);
    assert_eq!(
        me(&app, &token).await["session_amr"],
        json!(["pwd", "hwk", "mfa"]),
        "the registering session has used the passkey (its next refresh says so)"
    );

    let mut phone = device();
    let second = register(&app, &token, &mut phone, "Phone").await.data;
    assert_eq!(
        second["recovery_codes"],
        json!([]),
        "only the first brings codes"
    );
    let phone_id = second["passkey"]["id"].as_str().unwrap().to_owned();

    let listed = body(app.get_auth("/api/v1/auth/passkeys", &token).await).await["data"].clone();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Laptop", "Phone"]);
    let factors = me(&app, &token).await["second_factors"].clone();
    assert_eq!(factors["totp"], false);
    assert_eq!(factors["passkeys"].as_array().unwrap().len(), 2);
    assert_eq!(factors["recovery_codes_left"], 10);

    // renamed by its owner only
    let path = format!("/auth/passkeys/{phone_id}");
    let renamed = call(
        &app,
        Method::PATCH,
        &path,
        &token,
        json!({ "name": "Work phone" }),
    )
    .await;
    assert_eq!(body(renamed).await["data"]["name"], "Work phone");
    let not_theirs = call(
        &app,
        Method::PATCH,
        &path,
        &other,
        json!({ "name": "Mine" }),
    )
    .await;
    expect_error(not_theirs, 404, "NOT_FOUND").await;
    let too_long = call(
        &app,
        Method::PATCH,
        &path,
        &token,
        json!({ "name": "x".repeat(65) }),
    )
    .await;
    expect_error(too_long, 422, "VALIDATION_FAILED").await;

    // removed with the password, by its owner only; the last one takes the recovery codes along
    let password = json!({ "password": PASSWORD });
    let not_theirs = call(&app, Method::DELETE, &path, &other, password.clone()).await;
    expect_error(not_theirs, 404, "NOT_FOUND").await;
    let wrong = json!({ "password": "not-the-password-1" });
    let wrong = call(&app, Method::DELETE, &path, &token, wrong).await;
    expect_error(wrong, 401, "INVALID_CREDENTIALS").await;
    let removed = call(&app, Method::DELETE, &path, &token, password.clone()).await;
    assert_eq!(removed.status(), 204);
    app.mail.wait_for(EMAIL, "A passkey was removed").await;
    assert_eq!(
        me(&app, &token).await["second_factors"]["recovery_codes_left"],
        10
    );
    let last = format!("/auth/passkeys/{laptop_id}");
    let removed = call(&app, Method::DELETE, &last, &token, password).await;
    assert_eq!(removed.status(), 204);
    assert_eq!(
        me(&app, &token).await["second_factors"],
        json!({ "totp": false, "passkeys": [], "recovery_codes_left": 0 })
    );
    let tokens = app.login(EMAIL, PASSWORD).await;
    assert!(
        tokens["access_token"].is_string(),
        "no second factor is asked for any more"
    );

    // a removed passkey signs nobody in
    let (ceremony, options) = sign_in_options(&app).await;
    let stale = answer(
        &mut laptop,
        &options,
        &laptop_key.credential_id,
        &user_id_of(&token),
    );
    expect_error(
        sign_in(&app, &ceremony, &stale).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;

    let audit = audit_actions(&app, &user_id_of(&token)).await;
    for action in [
        "user.passkey_added",
        "user.passkey_renamed",
        "user.passkey_removed",
    ] {
        assert!(audit.iter().any(|a| a == action), "{action} in {audit:?}");
    }
}

async fn a_passkey_signs_in_alone_and_counts_as_a_second_factor(backend: Backend) {
    let app = spawn(backend).await;
    let (_, org_id) = app.owner(EMAIL, "Acme").await;
    let token = app.login(EMAIL, PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut laptop = device();
    let laptop_key = register(&app, &token, &mut laptop, "Laptop").await;
    let codes = laptop_key.data["recovery_codes"].clone();

    // the org requires a second factor: a passkey sign-in satisfies it
    let require = json!({ "require_mfa": true });
    let required = call(
        &app,
        Method::PATCH,
        &format!("/orgs/{org_id}"),
        &token,
        require,
    )
    .await;
    assert_eq!(required.status(), 200);

    let (ceremony, options) = sign_in_options(&app).await;
    assert_eq!(
        options["publicKey"]["allowCredentials"],
        json!([]),
        "names no account"
    );
    assert!(
        options.get("mediation").is_none(),
        "asked for by a button, not autofill"
    );
    let credential = answer(
        &mut laptop,
        &options,
        &laptop_key.credential_id,
        &user_id_of(&token),
    );
    let signed_in = sign_in(&app, &ceremony, &credential).await;
    assert_eq!(signed_in.status(), 200);
    assert!(
        signed_in.headers().get("set-cookie").is_some(),
        "cookies too"
    );
    let access = body(signed_in).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&access)["amr"], json!(["hwk", "mfa"]));
    let org = app
        .get_auth(&format!("/api/v1/orgs/{org_id}"), &access)
        .await;
    assert_eq!(
        org.status(),
        200,
        "the org that requires a second factor lets it in"
    );
    let password_only = app.login(EMAIL, PASSWORD).await;
    assert_eq!(password_only["mfa_required"], true);
    assert_eq!(
        password_only["methods"],
        json!(["passkey", "recovery_code"])
    );

    // a passkey-only account renews its recovery codes from a passkey session, not a password one
    let renewed = call(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        &access,
        json!({}),
    )
    .await;
    assert_eq!(renewed.status(), 200);
    assert_ne!(body(renewed).await["data"]["recovery_codes"], codes);
    let refused = call(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        &token,
        json!({}),
    )
    .await;
    let error = expect_error(refused, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["code"].is_string(), "{error}");

    let listed = body(app.get_auth("/api/v1/auth/passkeys", &access).await).await["data"].clone();
    assert!(
        listed[0]["last_used_at"].is_string(),
        "the sign-in is recorded"
    );
}

async fn a_passkey_sign_in_refuses_replays_other_clients_and_borrowed_accounts(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.user(EMAIL).await;
    let victim = app.user("victim@example.com").await;
    let mut laptop = device();
    let laptop_key = register(&app, &token, &mut laptop, "Laptop").await;
    let user_id = user_id_of(&token);

    // an answer signs in once: the ceremony is taken
    let (ceremony, options) = sign_in_options(&app).await;
    let credential = answer(&mut laptop, &options, &laptop_key.credential_id, &user_id);
    assert_eq!(sign_in(&app, &ceremony, &credential).await.status(), 200);
    let replayed = sign_in(&app, &ceremony, &credential).await;
    let error = expect_error(replayed, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["ceremony"].is_string(), "{error}");

    // an answer to one ceremony does not finish another (the challenge is signed)
    let (fresh, _) = sign_in_options(&app).await;
    expect_error(
        sign_in(&app, &fresh, &credential).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;

    // a ceremony started by one client is refused from another, and spent by the try
    let (ceremony, options) = sign_in_options(&app).await;
    let credential = answer(&mut laptop, &options, &laptop_key.credential_id, &user_id);
    let thief = reqwest::Client::builder()
        .user_agent("thief/1.0")
        .build()
        .unwrap();
    let stolen = thief
        .post(app.url("/api/v1/auth/passkeys/sign-in"))
        .json(&json!({ "ceremony": ceremony, "credential": credential }))
        .send()
        .await
        .unwrap();
    expect_error(stolen, 422, "VALIDATION_FAILED").await;
    expect_error(
        sign_in(&app, &ceremony, &credential).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;

    // a passkey whose user handle names another account signs nobody in
    let (ceremony, options) = sign_in_options(&app).await;
    let borrowed = answer(
        &mut laptop,
        &options,
        &laptop_key.credential_id,
        &user_id_of(&victim),
    );
    expect_error(
        sign_in(&app, &ceremony, &borrowed).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;
    // nor does a device nobody registered
    let (ceremony, options) = sign_in_options(&app).await;
    let mut stranger = device();
    let unregistered = stranger
        .do_registration(
            origin(),
            serde_json::from_value(registration_options(&app, &victim).await["options"].clone())
                .unwrap(),
        )
        .unwrap();
    let unknown = answer(
        &mut stranger,
        &options,
        &unregistered.id,
        &user_id_of(&victim),
    );
    expect_error(
        sign_in(&app, &ceremony, &unknown).await,
        401,
        "INVALID_CREDENTIALS",
    )
    .await;

    let failures = audit_failures(&app).await;
    assert!(
        failures >= 2,
        "refused passkey sign-ins are audited ({failures})"
    );
}

/// How many refused passkey sign-ins the audit log holds.
async fn audit_failures(app: &TestApp) -> usize {
    let filter = fluxgate_store::AuditFilter {
        action: Some("user.passkey_failed".into()),
        limit: 100,
        ..Default::default()
    };
    app.state()
        .store
        .audit_entries(&filter)
        .await
        .unwrap()
        .len()
}

async fn a_password_login_is_completed_with_a_passkey(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.user(EMAIL).await;
    let mut laptop = device();
    let laptop_key = register(&app, &token, &mut laptop, "Laptop").await;

    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": EMAIL, "password": PASSWORD }),
        )
        .await;
    let challenge = body(login).await["data"].clone();
    assert_eq!(challenge["methods"], json!(["passkey", "recovery_code"]));
    let mfa_token = challenge["mfa_token"].as_str().unwrap().to_owned();

    // the options name the account's passkeys; only the client that logged in gets them
    let thief = reqwest::Client::builder()
        .user_agent("thief/1.0")
        .build()
        .unwrap();
    let stolen = thief
        .post(app.url("/api/v1/auth/mfa/passkey"))
        .json(&json!({ "mfa_token": mfa_token }))
        .send()
        .await
        .unwrap();
    expect_error(stolen, 401, "MFA_CHALLENGE_INVALID").await;
    let started = app
        .post(
            "/api/v1/auth/mfa/passkey",
            json!({ "mfa_token": mfa_token }),
        )
        .await;
    assert_eq!(started.status(), 200);
    let options = body(started).await["data"]["options"].clone();
    let allowed = options["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["id"], laptop_key.credential_id.as_str());

    let credential = answer(
        &mut laptop,
        &options,
        &laptop_key.credential_id,
        &user_id_of(&token),
    );
    let verify = |credential: &PublicKeyCredential| {
        app.post(
            "/api/v1/auth/mfa/verify",
            json!({ "mfa_token": mfa_token, "passkey": credential }),
        )
    };
    let both = app
        .post(
            "/api/v1/auth/mfa/verify",
            json!({ "mfa_token": mfa_token, "passkey": credential, "code": "123456" }),
        )
        .await;
    expect_error(both, 422, "VALIDATION_FAILED").await;
    let signed_in = verify(&credential).await;
    assert_eq!(signed_in.status(), 200);
    let access = body(signed_in).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&access)["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(
        me(&app, &access).await["session_amr"],
        json!(["pwd", "hwk", "mfa"])
    );

    // the challenge signed in once: the same answer again is refused
    expect_error(verify(&credential).await, 401, "MFA_CHALLENGE_INVALID").await;

    // an answer without its ceremony is a wrong second factor, counted like a wrong code
    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": EMAIL, "password": PASSWORD }),
        )
        .await;
    let second = body(login).await["data"]["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let unasked = app
        .post(
            "/api/v1/auth/mfa/verify",
            json!({ "mfa_token": second, "passkey": credential }),
        )
        .await;
    expect_error(unasked, 401, "INVALID_MFA_CODE").await;
}

async fn passkeys_are_off_when_the_public_url_is_an_ip_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.insert("public_url".into(), "http://127.0.0.1:8080".into());
    })
    .await;
    let token = app.user(EMAIL).await;
    let refused = call(
        &app,
        Method::POST,
        "/auth/passkeys/registration-options",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    let error = expect_error(refused, 409, "CONFLICT").await;
    assert!(
        error["message"].as_str().unwrap().contains("public_url"),
        "{error}"
    );
    let sign_in = app
        .post("/api/v1/auth/passkeys/sign-in-options", json!({}))
        .await;
    expect_error(sign_in, 409, "CONFLICT").await;
}
