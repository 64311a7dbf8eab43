//! Second factors over real HTTP, on SQLite and PostgreSQL: TOTP enrolment, the login challenge,
//! recovery codes, turning the factor off — and the attacks: code reuse, brute force, a
//! challenge replayed or used from another client.

use fluxgate_core::mfa::TotpFactor;
use fluxgate_testkit::{body, expect_error, Backend, TestApp, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    totp_enrolment_makes_login_ask_for_a_code_and_tokens_carry_amr,
    a_code_signs_in_once_and_wrong_codes_lock_the_account,
    a_challenge_signs_in_once_and_only_from_the_client_that_logged_in,
    a_challenge_dies_after_five_codes_or_five_minutes,
    recovery_codes_sign_in_once_and_can_be_replaced,
    turning_the_factor_off_needs_the_password_and_a_code,
    an_org_can_require_its_members_to_use_a_second_factor,
    the_instance_can_require_every_user_to_use_a_second_factor,
);

const EMAIL: &str = "ada@example.com";

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

fn now() -> i64 {
    fluxgate_server::clock::now()
}

/// An authenticated call under `/api/v1`.
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

/// A verified user who enrolled and confirmed TOTP: their access token, the factor as their
/// authenticator app holds it, and their recovery codes.
async fn enrolled(app: &TestApp) -> (String, TotpFactor, Vec<String>) {
    let token = app.user(EMAIL).await;
    let (factor, codes) = enrol(app, &token).await;
    (token, factor, codes)
}

/// Enrols and confirms TOTP for the user of `token` (who is [`EMAIL`]).
pub(crate) async fn enrol(app: &TestApp, token: &str) -> (TotpFactor, Vec<String>) {
    let enrolment = call(
        app,
        Method::POST,
        "/auth/mfa/totp",
        token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(enrolment.status(), 200);
    let enrolment = body(enrolment).await["data"].clone();
    let app_factor =
        TotpFactor::from_base32(enrolment["secret"].as_str().unwrap(), "Fluxgate", EMAIL).unwrap();
    let confirmed = call(
        app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        token,
        json!({ "code": app_factor.code_at(now()) }),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let codes = body(confirmed).await["data"]["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (app_factor, codes)
}

/// Logs in with the password: the challenge's token.
async fn challenge(app: &TestApp) -> String {
    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": EMAIL, "password": PASSWORD }),
        )
        .await;
    assert_eq!(login.status(), 200);
    assert!(
        login.headers().get("set-cookie").is_none(),
        "no session before the second factor"
    );
    let data = body(login).await["data"].clone();
    assert_eq!(data["mfa_required"], true);
    assert!(data.get("access_token").is_none());
    assert_eq!(data["methods"], json!(["totp", "recovery_code"]));
    data["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, mfa_token: &str, second: Value) -> reqwest::Response {
    let mut request = json!({ "mfa_token": mfa_token });
    for (k, v) in second.as_object().unwrap() {
        request[k] = v.clone();
    }
    app.post("/api/v1/auth/mfa/verify", request).await
}

/// A code the factor has not been asked for yet: the step after `now` (within the skew).
fn next_code(factor: &TotpFactor) -> String {
    factor.code_at(now() + 30)
}

async fn totp_enrolment_makes_login_ask_for_a_code_and_tokens_carry_amr(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.user(EMAIL).await;
    let me = body(app.get_auth("/api/v1/auth/me", &token).await).await["data"].clone();
    assert_eq!(
        me["second_factors"],
        json!({ "totp": false, "passkeys": [], "recovery_codes_left": 0 })
    );
    assert_eq!(me["session_amr"], json!(["pwd"]));
    assert_eq!(claims_of(&token)["amr"], json!(["pwd"]));

    // the password is needed to start, and nothing changes before a code confirms it
    let wrong = call(
        &app,
        Method::POST,
        "/auth/mfa/totp",
        &token,
        json!({ "password": "not-the-password-1" }),
    )
    .await;
    expect_error(wrong, 401, "INVALID_CREDENTIALS").await;
    let unconfirmed = call(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        &token,
        json!({ "code": "123456" }),
    )
    .await;
    expect_error(unconfirmed, 409, "CONFLICT").await;
    let started = call(
        &app,
        Method::POST,
        "/auth/mfa/totp",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(started.status(), 200);
    let enrolment = body(started).await["data"].clone();
    let secret = enrolment["secret"].as_str().unwrap();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Fluxgate:ada%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    let svg = enrolment["qr_svg"].as_str().unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("</svg>"),
        "an SVG document"
    );
    let tokens = app.login(EMAIL, PASSWORD).await;
    assert!(
        tokens["access_token"].is_string(),
        "a pending factor is not asked for"
    );

    let app_factor = TotpFactor::from_base32(secret, "Fluxgate", EMAIL).unwrap();
    let bad = call(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        &token,
        json!({ "code": "000000" }),
    )
    .await;
    let error = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["code"].is_string(), "{error}");
    let confirmed = call(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        &token,
        json!({ "code": app_factor.code_at(now()) }),
    )
    .await;
    assert_eq!(confirmed.status(), 200);
    let codes = body(confirmed).await["data"]["recovery_codes"].clone();
    assert_eq!(codes.as_array().unwrap().len(), 10);
    let mail = app
        .mail
        .wait_for(EMAIL, "Two-step sign-in was turned on")
        .await;
    assert!(
        !mail.body.contains(secret),
        "the mail never carries the secret"
    );
    let again = call(
        &app,
        Method::POST,
        "/auth/mfa/totp",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    expect_error(again, 409, "CONFLICT").await;

    // login now answers a challenge, completed by the app's code
    let mfa_token = challenge(&app).await;
    let signed_in = verify(&app, &mfa_token, json!({ "code": next_code(&app_factor) })).await;
    assert_eq!(signed_in.status(), 200);
    assert!(
        signed_in.headers().get("set-cookie").is_some(),
        "cookies once signed in"
    );
    let tokens = body(signed_in).await["data"].clone();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["amr"], json!(["pwd", "otp", "mfa"]));
    let me = body(app.get_auth("/api/v1/auth/me", access).await).await["data"].clone();
    assert_eq!(me["session_amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(
        me["second_factors"],
        json!({ "totp": true, "passkeys": [], "recovery_codes_left": 10 })
    );
    // the amr survives a refresh
    let refreshed = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": tokens["refresh_token"] }),
        )
        .await;
    let refreshed = body(refreshed).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&refreshed)["amr"], json!(["pwd", "otp", "mfa"]));
    // and the session that enrolled sees its account's factors change
    let me = body(app.get_auth("/api/v1/auth/me", &token).await).await["data"].clone();
    assert_eq!(me["second_factors"]["totp"], true);
}

async fn a_code_signs_in_once_and_wrong_codes_lock_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, app_factor, _) = enrolled(&app).await;
    let code = next_code(&app_factor);
    let first = challenge(&app).await;
    assert_eq!(
        verify(&app, &first, json!({ "code": code })).await.status(),
        200
    );
    // the same code again, in a new challenge: refused (and so is an older step's)
    let second = challenge(&app).await;
    let reused = verify(&app, &second, json!({ "code": code })).await;
    expect_error(reused, 401, "INVALID_MFA_CODE").await;
    let older = verify(&app, &second, json!({ "code": app_factor.code_at(now()) })).await;
    expect_error(older, 401, "INVALID_MFA_CODE").await;

    // brute force: wrong codes count against the account's lockout (5 by default), across
    // challenges; once locked even the right code waits
    let mut locked = false;
    for attempt in 0..6 {
        let mfa_token = challenge(&app).await;
        let guess = verify(
            &app,
            &mfa_token,
            json!({ "code": format!("{:06}", attempt) }),
        )
        .await;
        if guess.status() == 429 {
            locked = true;
            break;
        }
        expect_error(guess, 401, "INVALID_MFA_CODE").await;
    }
    assert!(locked, "wrong codes lock the account");
    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": EMAIL, "password": PASSWORD }),
        )
        .await;
    expect_error(login, 429, "RATE_LIMITED").await;
}

async fn a_challenge_signs_in_once_and_only_from_the_client_that_logged_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, app_factor, codes) = enrolled(&app).await;
    let mfa_token = challenge(&app).await;

    // stolen: the same challenge from another client is refused, whatever the code
    let thief = reqwest::Client::builder()
        .user_agent("thief/1.0")
        .build()
        .unwrap();
    let stolen = thief
        .post(app.url("/api/v1/auth/mfa/verify"))
        .json(&json!({ "mfa_token": mfa_token, "code": next_code(&app_factor) }))
        .send()
        .await
        .unwrap();
    expect_error(stolen, 401, "MFA_CHALLENGE_INVALID").await;
    // unknown and malformed challenges too
    let unknown = verify(&app, "not-a-challenge", json!({ "code": "123456" })).await;
    expect_error(unknown, 401, "MFA_CHALLENGE_INVALID").await;
    let neither = verify(&app, &mfa_token, json!({})).await;
    expect_error(neither, 422, "VALIDATION_FAILED").await;
    let both = verify(
        &app,
        &mfa_token,
        json!({ "code": "123456", "recovery_code": codes[0] }),
    )
    .await;
    expect_error(both, 422, "VALIDATION_FAILED").await;

    // its owner completes it, once
    let signed_in = verify(&app, &mfa_token, json!({ "code": next_code(&app_factor) })).await;
    assert_eq!(signed_in.status(), 200);
    let replayed = verify(&app, &mfa_token, json!({ "recovery_code": codes[0] })).await;
    expect_error(replayed, 401, "MFA_CHALLENGE_INVALID").await;
}

async fn recovery_codes_sign_in_once_and_can_be_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, app_factor, codes) = enrolled(&app).await;
    // typed loosely: upper case, spaces for the dash
    let typed = codes[0].to_uppercase().replace('-', " ");
    let signed_in = verify(
        &app,
        &challenge(&app).await,
        json!({ "recovery_code": typed }),
    )
    .await;
    assert_eq!(signed_in.status(), 200);
    let access = body(signed_in).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&access)["amr"], json!(["pwd", "rc", "mfa"]));
    let mail = app.mail.wait_for(EMAIL, "A recovery code was used").await;
    assert!(
        mail.body.contains("9 unused codes are left"),
        "{}",
        mail.body
    );
    let again = verify(
        &app,
        &challenge(&app).await,
        json!({ "recovery_code": codes[0] }),
    )
    .await;
    expect_error(again, 401, "INVALID_MFA_CODE").await;
    let me = body(app.get_auth("/api/v1/auth/me", &access).await).await["data"].clone();
    assert_eq!(me["second_factors"]["recovery_codes_left"], 9);

    // replacing them needs a current code; the old ones stop working
    let wrong = call(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        &token,
        json!({ "code": "000000" }),
    )
    .await;
    expect_error(wrong, 401, "INVALID_MFA_CODE").await;
    let replaced = call(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        &token,
        json!({ "code": next_code(&app_factor) }),
    )
    .await;
    assert_eq!(replaced.status(), 200);
    let fresh = body(replaced).await["data"]["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    app.mail.wait_for(EMAIL, "New recovery codes").await;
    let old = verify(
        &app,
        &challenge(&app).await,
        json!({ "recovery_code": codes[1] }),
    )
    .await;
    expect_error(old, 401, "INVALID_MFA_CODE").await;
    let new = verify(
        &app,
        &challenge(&app).await,
        json!({ "recovery_code": fresh }),
    )
    .await;
    assert_eq!(new.status(), 200);
}

async fn turning_the_factor_off_needs_the_password_and_a_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, app_factor, codes) = enrolled(&app).await;
    let off = |body: Value| call(&app, Method::DELETE, "/auth/mfa/totp", &token, body);
    let no_password =
        off(json!({ "password": "not-the-password-1", "code": next_code(&app_factor) })).await;
    expect_error(no_password, 401, "INVALID_CREDENTIALS").await;
    let no_code = off(json!({ "password": PASSWORD, "code": "000000" })).await;
    expect_error(no_code, 401, "INVALID_MFA_CODE").await;
    let done = off(json!({ "password": PASSWORD, "recovery_code": codes[3] })).await;
    assert_eq!(done.status(), 204);
    app.mail
        .wait_for(EMAIL, "Two-step sign-in was turned off")
        .await;
    let gone = off(json!({ "password": PASSWORD, "code": next_code(&app_factor) })).await;
    expect_error(gone, 404, "NOT_FOUND").await;
    // login gives tokens straight away again, and the recovery codes are gone
    let tokens = app.login(EMAIL, PASSWORD).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["amr"], json!(["pwd"]));
    let me = body(app.get_auth("/api/v1/auth/me", access).await).await["data"].clone();
    assert_eq!(
        me["second_factors"],
        json!({ "totp": false, "passkeys": [], "recovery_codes_left": 0 })
    );
}

/// Signs in with the password and the app's next code: the access token.
async fn sign_in_with_code(app: &TestApp, factor: &TotpFactor) -> String {
    let signed_in = verify(
        app,
        &challenge(app).await,
        json!({ "code": next_code(factor) }),
    )
    .await;
    assert_eq!(signed_in.status(), 200);
    body(signed_in).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn an_org_can_require_its_members_to_use_a_second_factor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner(EMAIL, "Acme").await;
    let session = app.login(EMAIL, PASSWORD).await;
    let owner = session["access_token"].as_str().unwrap().to_owned();
    let (_, key) = fluxgate_testkit::issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "ci", "scopes": ["keys:read"] }),
    )
    .await;
    let required = call(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &owner,
        json!({ "require_mfa": true }),
    )
    .await;
    assert_eq!(required.status(), 200);
    assert_eq!(body(required).await["data"]["require_mfa"], true);

    // a session without a second factor is refused in the org, with the setting named
    let refused = app.get_auth(&format!("/api/v1/orgs/{org}"), &owner).await;
    let error = expect_error(refused, 403, "MFA_REQUIRED").await;
    assert!(
        error["message"].as_str().unwrap().contains("require_mfa"),
        "{error}"
    );
    let keys = app
        .get_auth(&format!("/api/v1/orgs/{org}/keys"), &owner)
        .await;
    expect_error(keys, 403, "MFA_REQUIRED").await;
    // its API keys are unaffected, and the account endpoints stay open to set a factor up
    let with_key = app
        .get_auth(&format!("/api/v1/orgs/{org}/keys"), &key)
        .await;
    assert_eq!(with_key.status(), 200);
    assert_eq!(app.get_auth("/api/v1/auth/me", &owner).await.status(), 200);
    let (factor, _) = enrol(&app, &owner).await;
    // the token in hand still says how it signed in; the session that confirmed the factor
    // has used it, so its next refresh carries `mfa`
    let still = app.get_auth(&format!("/api/v1/orgs/{org}"), &owner).await;
    expect_error(still, 403, "MFA_REQUIRED").await;
    let refreshed = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": session["refresh_token"] }),
        )
        .await;
    let refreshed = body(refreshed).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&refreshed)["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(
        app.get_auth(&format!("/api/v1/orgs/{org}"), &refreshed)
            .await
            .status(),
        200
    );
    let strong = sign_in_with_code(&app, &factor).await;
    assert_eq!(
        app.get_auth(&format!("/api/v1/orgs/{org}"), &strong)
            .await
            .status(),
        200
    );
    // the members list shows who has a second factor
    let members = app
        .get_auth(&format!("/api/v1/orgs/{org}/members"), &strong)
        .await;
    let members = body(members).await;
    assert_eq!(members["data"][0]["second_factor"], true, "{members}");
    let relaxed = call(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &strong,
        json!({ "require_mfa": false }),
    )
    .await;
    assert_eq!(body(relaxed).await["data"]["require_mfa"], false);
    assert_eq!(
        app.get_auth(&format!("/api/v1/orgs/{org}"), &owner)
            .await
            .status(),
        200
    );
}

async fn the_instance_can_require_every_user_to_use_a_second_factor(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.require_mfa", true);
    })
    .await;
    let (owner, org) = app.owner(EMAIL, "Acme").await;
    let refused = app.get_auth(&format!("/api/v1/orgs/{org}"), &owner).await;
    let error = expect_error(refused, 403, "MFA_REQUIRED").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("auth.require_mfa"),
        "{error}"
    );
    let (factor, _) = enrol(&app, &owner).await;
    let strong = sign_in_with_code(&app, &factor).await;
    assert_eq!(
        app.get_auth(&format!("/api/v1/orgs/{org}"), &strong)
            .await
            .status(),
        200
    );
}

async fn a_challenge_dies_after_five_codes_or_five_minutes(backend: Backend) {
    // a lockout far away, to see the challenge's own limit
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.lockout_threshold", 100);
    })
    .await;
    let (_, app_factor, _) = enrolled(&app).await;
    let mfa_token = challenge(&app).await;
    for guess in 0..5 {
        let wrong = verify(&app, &mfa_token, json!({ "code": format!("{guess:06}") })).await;
        expect_error(wrong, 401, "INVALID_MFA_CODE").await;
    }
    let sixth = verify(&app, &mfa_token, json!({ "code": next_code(&app_factor) })).await;
    expect_error(sixth, 401, "MFA_CHALLENGE_INVALID").await;

    // five minutes on, a challenge no longer completes, even with the right code
    let late = challenge(&app).await;
    app.sql("UPDATE mfa_challenges SET expires_at = created_at - 1 WHERE spent_at IS NULL")
        .await;
    let expired = verify(&app, &late, json!({ "code": next_code(&app_factor) })).await;
    expect_error(expired, 401, "MFA_CHALLENGE_INVALID").await;
    // and a fresh one does
    let fresh = challenge(&app).await;
    let signed_in = verify(&app, &fresh, json!({ "code": next_code(&app_factor) })).await;
    assert_eq!(signed_in.status(), 200);
}
