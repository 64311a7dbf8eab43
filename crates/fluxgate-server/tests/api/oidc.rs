//! Sign-in with OpenID Connect, on SQLite and PostgreSQL, against a real provider (the
//! `oidc-provider` package, started on loopback for each test) through the portal without
//! JavaScript: an account created, linked by a verified email, found again by its identity;
//! linking and unlinking from the account page and the JSON API — and the attacks: a callback
//! without this browser's `state`, an ID token from another issuer or audience, signed by a
//! key the provider does not publish, or with another nonce, and an unverified email trying to
//! take over an account.

use crate::portal::{Browser, Page};
use fluxgate_testkit::oidc::{OidcProvider, CLIENT_ID, CLIENT_SECRET};
use fluxgate_testkit::{body, expect_error, set_config, Backend, TestApp, PASSWORD};
use reqwest::Method;
use serde_json::json;

both_backends!(
    a_verified_identity_creates_an_account_and_signs_it_in_again,
    a_verified_email_links_an_existing_account_and_an_unverified_one_takes_nothing,
    identities_are_linked_listed_and_unlinked_but_never_the_last_way_in,
    the_callback_needs_this_browsers_state_and_a_token_that_verifies,
    a_second_factor_is_still_asked_after_the_provider,
    an_app_signs_in_through_the_api_and_gets_the_api_cookies,
    an_account_without_a_password_confirms_changes_with_a_recent_sign_in,
    a_plain_oauth2_provider_signs_in_through_its_userinfo_endpoint,
);

/// An instance with the provider `test` ("Test ID") as an OpenID provider, and the provider,
/// both on loopback.
pub(crate) async fn spawn(backend: Backend) -> (TestApp, OidcProvider) {
    spawn_speaking(backend, |config, issuer| {
        set_config(config, "auth.oidc.test.issuer", issuer);
    })
    .await
}

/// An instance with the provider `test` ("Test ID") configured by `protocol` (given the
/// provider's issuer URL), and the provider, both on loopback.
async fn spawn_speaking(
    backend: Backend,
    protocol: impl FnOnce(&mut toml::Table, &str),
) -> (TestApp, OidcProvider) {
    let port = fluxgate_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = OidcProvider::start(&format!("{base}/auth/oidc/test/callback")).await;
    let issuer = provider.issuer.clone();
    let app = TestApp::spawn_with(backend, move |config| {
        set_config(config, "listen", format!("127.0.0.1:{port}"));
        set_config(config, "public_url", base.clone());
        set_config(config, "auth.oidc.test.name", "Test ID");
        set_config(config, "auth.oidc.test.client_id", CLIENT_ID);
        set_config(config, "auth.oidc.test.client_secret", CLIENT_SECRET);
        protocol(config, &issuer);
    })
    .await;
    (app, provider)
}

/// Presses "Sign in with Test ID" on the login page: the provider signs the browser in as its
/// last registered account and sends it back; the page it ends on.
async fn sign_in_with_provider(browser: &Browser) -> Page {
    let login = browser.get("/login").await;
    assert!(login.text("main").contains("Sign in with Test ID"));
    browser
        .submit(&login, "/login/oidc/test", &[("next", "/account")])
        .await
}

async fn api(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::Response {
    app.call(method, &format!("/api/v1{path}"), Some(token), None)
        .await
}

/// The audit actions of the whole instance.
async fn audit_actions(app: &TestApp) -> Vec<(String, String)> {
    let filter = fluxgate_store::AuditFilter {
        limit: 500,
        ..Default::default()
    };
    let entries = app.state().store.audit_entries(&filter).await.unwrap();
    entries.into_iter().map(|e| (e.action, e.data)).collect()
}

async fn a_verified_identity_creates_an_account_and_signs_it_in_again(backend: Backend) {
    let (app, provider) = spawn(backend).await;
    let providers = body(
        app.call(Method::GET, "/api/v1/auth/oidc/providers", None, None)
            .await,
    )
    .await;
    assert_eq!(
        providers["data"],
        json!([{ "id": "test", "name": "Test ID", "sign_in_path": "/login/oidc/test" }])
    );

    provider
        .account("person-1", "grace@example.com", true)
        .await;
    let browser = Browser::new(&app);
    let landed = sign_in_with_provider(&browser).await;
    assert_eq!(
        landed.url, "/account",
        "signed in and sent where the login said"
    );
    assert!(landed.text("main").contains("grace@example.com"));
    assert!(landed.text(".identity-provider").contains("Test ID"));

    // the account has no password: the password login refuses it like any wrong password
    let refused = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "grace@example.com", "password": PASSWORD }),
        )
        .await;
    expect_error(refused, 401, "INVALID_CREDENTIALS").await;

    // a second sign-in finds the same account by its identity
    let again = Browser::new(&app);
    let landed = sign_in_with_provider(&again).await;
    assert_eq!(landed.url, "/account");
    let actions = audit_actions(&app).await;
    let signups = actions
        .iter()
        .filter(|(a, _)| a == "user.signed_up")
        .count();
    assert_eq!(signups, 1, "one account");
    let logins: Vec<&String> = actions
        .iter()
        .filter(|(a, _)| a == "user.login")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(logins.len(), 2);
    assert!(logins.iter().all(|d| d.contains("fed")), "{logins:?}");
}

async fn a_verified_email_links_an_existing_account_and_an_unverified_one_takes_nothing(
    backend: Backend,
) {
    let (app, provider) = spawn(backend).await;
    let token = app.user("ada@example.com").await;

    // the provider says the address is the person's but has not verified it: nothing happens
    provider.account("mallory", "ada@example.com", false).await;
    let attacker = Browser::new(&app);
    let refused = sign_in_with_provider(&attacker).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .text("[role=alert]")
            .contains("did not confirm an email address"),
        "{}",
        refused.text("main")
    );
    let identities = body(api(&app, Method::GET, "/auth/identities", &token).await).await;
    assert_eq!(identities["data"], json!([]), "no identity was linked");
    assert!(
        attacker.get("/account").await.url.starts_with("/login"),
        "not signed in"
    );

    // verified by the provider, for an account that verified it too: linked and signed in
    provider
        .account("ada-at-test", "ada@example.com", true)
        .await;
    let ada = Browser::new(&app);
    let landed = sign_in_with_provider(&ada).await;
    assert_eq!(landed.url, "/account");
    assert!(landed.text("main").contains("ada@example.com"));
    let identities = body(api(&app, Method::GET, "/auth/identities", &token).await).await;
    assert_eq!(identities["data"][0]["provider"], "test");
    assert_eq!(identities["data"][0]["email"], "ada@example.com");
    let me = body(api(&app, Method::GET, "/auth/me", &token).await).await;
    assert_eq!(
        me["data"]["identities"][0]["provider"], "test",
        "listed in /auth/me too"
    );
    let mail = app
        .mail
        .wait_for("ada@example.com", "Test ID sign-in was linked")
        .await;
    assert!(mail.body.contains("Test ID"));

    // an account that never verified its address is not joined to a provider's person
    let signup = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "squatted@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(signup.status(), 201);
    provider
        .account("real-owner", "squatted@example.com", true)
        .await;
    let owner = Browser::new(&app);
    let refused = sign_in_with_provider(&owner).await;
    assert!(
        refused
            .text("[role=alert]")
            .contains("has not confirmed it"),
        "{}",
        refused.text("main")
    );
}

async fn identities_are_linked_listed_and_unlinked_but_never_the_last_way_in(backend: Backend) {
    let (app, provider) = spawn(backend).await;
    app.user("ada@example.com").await;

    // linked from the account page, whatever email the provider gives
    provider
        .account("ada-elsewhere", "ada@elsewhere.example", false)
        .await;
    let browser = Browser::new(&app);
    browser.log_in("ada@example.com").await;
    let account = browser.get("/account").await;
    let linked = browser
        .submit(&account, "/account/identities/test/link", &[])
        .await;
    assert_eq!(linked.url, "/account");
    assert!(linked.text(".identity-provider").contains("Test ID"));
    app.mail
        .wait_for("ada@example.com", "Test ID sign-in was linked")
        .await;
    // and it signs in from now on
    let other = Browser::new(&app);
    assert_eq!(sign_in_with_provider(&other).await.url, "/account");

    // the identity is another account's: refused
    app.user("bob@example.com").await;
    let bob = Browser::new(&app);
    bob.log_in("bob@example.com").await;
    let bobs = bob.get("/account").await;
    let refused = bob
        .submit(&bobs, "/account/identities/test/link", &[])
        .await;
    assert!(
        refused
            .text("[role=alert]")
            .contains("linked to another account"),
        "{}",
        refused.text("main")
    );

    // unlinked through the API (the account has a password, so it keeps a way in)
    let token = app.login("ada@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = body(api(&app, Method::GET, "/auth/identities", &token).await).await;
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let bobs_token = app.login("bob@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let not_theirs = api(
        &app,
        Method::DELETE,
        &format!("/auth/identities/{id}"),
        &bobs_token,
    )
    .await;
    expect_error(not_theirs, 404, "NOT_FOUND").await;
    let unlinked = api(
        &app,
        Method::DELETE,
        &format!("/auth/identities/{id}"),
        &token,
    )
    .await;
    assert_eq!(unlinked.status(), 204);

    // an account made by the provider has no password: its only identity stays linked
    provider.account("carol", "carol@example.com", true).await;
    let carol = Browser::new(&app);
    let page = sign_in_with_provider(&carol).await;
    assert_eq!(page.url, "/account");
    let refused = carol
        .submit(
            &page,
            &format!("/account/identities/{}/unlink", carol_identity(&app).await),
            &[],
        )
        .await;
    assert!(
        refused
            .text("[role=alert]")
            .contains("only way into the account"),
        "{}",
        refused.text("main")
    );
}

/// The id of carol@example.com's identity.
async fn carol_identity(app: &TestApp) -> String {
    let user = app
        .state()
        .store
        .user_by_login(fluxgate_store::LoginKind::Email, "carol@example.com")
        .await
        .unwrap()
        .unwrap();
    let identities = app.state().store.identities(&user.id).await.unwrap();
    identities[0].id.to_string()
}

async fn the_callback_needs_this_browsers_state_and_a_token_that_verifies(backend: Backend) {
    let (app, provider) = spawn(backend).await;
    provider
        .account("person-1", "grace@example.com", true)
        .await;

    // a callback this browser did not start (a login CSRF: the attacker's code and state)
    let browser = Browser::new(&app);
    let forged = browser
        .get("/auth/oidc/test/callback?code=stolen&state=attackers-state")
        .await;
    assert_eq!(forged.status, 401);
    assert!(forged
        .text("[role=alert]")
        .contains("not started in this browser"));
    // nor is a state replayed from another browser's flow accepted without its cookie
    let victim = Browser::new(&app);
    let callback = callback_of_a_flow(&app).await;
    let replayed = victim.get(&callback).await;
    assert_eq!(replayed.status, 401);
    assert!(replayed
        .text("[role=alert]")
        .contains("not started in this browser"));

    // ID tokens that do not verify: another issuer, another audience, a stranger's key, a
    // nonce of another flow, an expired one
    for tamper in [
        json!({ "claims": { "iss": "http://127.0.0.1:1" } }),
        json!({ "claims": { "aud": "another-client" } }),
        json!({ "stranger": true }),
        json!({ "claims": { "nonce": "another-flows-nonce" } }),
        json!({ "claims": { "exp": 1_000_000 } }),
    ] {
        match tamper.get("stranger") {
            Some(_) => provider.tamper_signature().await,
            None => provider.tamper_claims(tamper["claims"].clone()).await,
        }
        let browser = Browser::new(&app);
        let refused = sign_in_with_provider(&browser).await;
        assert_eq!(refused.status, 401, "{tamper}");
        assert!(
            refused.text("[role=alert]").contains("did not check out"),
            "{tamper}: {}",
            refused.text("main")
        );
        assert!(
            browser.get("/account").await.url.starts_with("/login"),
            "{tamper}"
        );
    }
    let refusals: Vec<String> = audit_actions(&app)
        .await
        .into_iter()
        .filter(|(a, _)| a == "user.oidc_refused")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(refusals.len(), 7, "{refusals:?}");

    // and an untampered one still signs in
    let browser = Browser::new(&app);
    assert_eq!(sign_in_with_provider(&browser).await.url, "/account");
}

/// The callback URL (path and query: a live code and `state`) of a flow an attacker started
/// and completed at the provider in their own browser, without following it home.
async fn callback_of_a_flow(app: &TestApp) -> String {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.url().path().ends_with("/callback") {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(policy)
        .build()
        .unwrap();
    let login = client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = scraper::Html::parse_document(&login)
        .select(&scraper::Selector::parse("input[name=csrf]").unwrap())
        .next()
        .and_then(|e| e.value().attr("value").map(str::to_owned))
        .unwrap();
    let stopped = client
        .post(app.url("/login/oidc/test"))
        .header("origin", &app.config.public_url)
        .form(&[("csrf", csrf.as_str()), ("next", "/")])
        .send()
        .await
        .unwrap();
    let location = stopped.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&location).unwrap();
    assert!(
        url.query().unwrap_or_default().contains("code="),
        "{location}"
    );
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

async fn a_second_factor_is_still_asked_after_the_provider(backend: Backend) {
    let (app, provider) = spawn(backend).await;
    let token = app.user("ada@example.com").await;
    let (factor, _) = crate::mfa::enrol(&app, &token).await;
    let now = fluxgate_server::clock::now();

    provider
        .account("ada-at-test", "ada@example.com", true)
        .await;
    let browser = Browser::new(&app);
    let second_step = sign_in_with_provider(&browser).await;
    assert_eq!(second_step.title(), "Two-step sign-in");
    assert!(
        browser.get("/account").await.url.starts_with("/login"),
        "not signed in yet"
    );
    let next_code = factor.code_at(now + 30);
    let signed_in = browser
        .submit(
            &second_step,
            "/login/second-factor",
            &[
                (
                    "mfa_token",
                    &second_step.attr_of("input[name=mfa_token]", "value"),
                ),
                ("next", "/account"),
                ("method", "totp"),
                ("totp", "1"),
                ("code", &next_code),
            ],
        )
        .await;
    assert_eq!(signed_in.url, "/account");
    let logins: Vec<String> = audit_actions(&app)
        .await
        .into_iter()
        .filter(|(a, _)| a == "user.login")
        .map(|(_, d)| d)
        .collect();
    assert!(
        logins.iter().any(|d| d.contains(r#"["fed","otp","mfa"]"#)),
        "the provider, then the code: {logins:?}"
    );
}

/// A browser for an app on the instance's origin: keeps cookies, follows every redirect.
fn app_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Opens the API's start of a sign-in with `test`, returning to `/app`: the URL it ends on.
async fn api_sign_in(app: &TestApp, browser: &reqwest::Client) -> reqwest::Url {
    let start = app.url("/api/v1/auth/oidc/test/start?next=/app");
    browser.get(start).send().await.unwrap().url().clone()
}

async fn an_app_signs_in_through_the_api_and_gets_the_api_cookies(backend: Backend) {
    let (app, provider) = spawn(backend).await;

    // signed in: the API's cookies authenticate the app's calls
    provider
        .account("person-1", "grace@example.com", true)
        .await;
    let browser = app_browser();
    let landed = api_sign_in(&app, &browser).await;
    assert_eq!(landed.path(), "/app");
    assert_eq!(landed.query(), None);
    let me = browser
        .get(app.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me = body(me).await;
    assert_eq!(me["data"]["user"]["email"], "grace@example.com");
    assert_eq!(me["data"]["session_amr"], json!(["fed"]));

    // refused: the app learns why from a code, never a secret
    provider
        .account("someone", "someone@example.com", false)
        .await;
    let landed = api_sign_in(&app, &app_browser()).await;
    assert_eq!(landed.query(), Some("oidc_error=unverified_email"));

    // with a second factor: the challenge waits in a cookie for /auth/mfa/verify
    let token = app.user("ada@example.com").await;
    let (factor, _) = crate::mfa::enrol(&app, &token).await;
    let now = fluxgate_server::clock::now();
    provider
        .account("ada-at-test", "ada@example.com", true)
        .await;
    let browser = app_browser();
    let landed = api_sign_in(&app, &browser).await;
    assert_eq!(landed.query(), Some("mfa_required=totp%2Crecovery_code"));
    assert!(
        !landed.as_str().contains("mfa_token"),
        "no secret in the URL"
    );
    let answer = json!({ "code": factor.code_at(now + 30) });
    // the cookie-borne challenge is a cookie-authenticated change: another origin is refused
    let cross_site = browser
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header("origin", "https://evil.example")
        .json(&answer)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let verified = browser
        .post(app.url("/api/v1/auth/mfa/verify"))
        .header("origin", &app.config.public_url)
        .json(&answer)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let me = body(
        browser
            .get(app.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["data"]["session_amr"], json!(["fed", "otp", "mfa"]));
}

async fn an_account_without_a_password_confirms_changes_with_a_recent_sign_in(backend: Backend) {
    let (app, provider) = spawn(backend).await;
    provider
        .account("person-1", "grace@example.com", true)
        .await;
    let browser = app_browser();
    api_sign_in(&app, &browser).await;
    let start_totp = || {
        browser
            .post(app.url("/api/v1/auth/mfa/totp"))
            .header("origin", &app.config.public_url)
            .json(&json!({ "password": "" }))
            .send()
    };
    // signed in a moment ago: that confirms it is the owner
    let enrolment = start_totp().await.unwrap();
    assert_eq!(enrolment.status(), 200);
    assert!(body(enrolment).await["data"]["secret"].is_string());

    // an hour later the session no longer does: sign in again
    app.sql("UPDATE sessions SET authenticated_at = authenticated_at - 3600, created_at = created_at - 3600")
        .await;
    let stale = start_totp().await.unwrap();
    let error = expect_error(stale, 403, "FORBIDDEN").await;
    assert!(
        error["message"].as_str().unwrap().contains("sign in again"),
        "{error}"
    );

    // the portal says so too, and offers the provider instead of a password field
    let portal = Browser::new(&app);
    sign_in_with_provider(&portal).await;
    let account = portal.get("/account").await;
    assert!(account
        .text("main")
        .contains("Your account has no password"));
    assert!(
        account.select_count("#passkey_password") == 0,
        "no password to ask for"
    );
}

/// The same provider spoken to as plain OAuth 2.0 (as GitHub-like providers are): its
/// authorisation, token and userinfo endpoints configured by hand, no discovery and no ID
/// token — the person is read with the access token. PKCE and `state` still hold the flow.
async fn a_plain_oauth2_provider_signs_in_through_its_userinfo_endpoint(backend: Backend) {
    let (app, provider) = spawn_speaking(backend, |config, issuer| {
        set_config(
            config,
            "auth.oidc.test.authorization_url",
            format!("{issuer}/auth"),
        );
        set_config(
            config,
            "auth.oidc.test.token_url",
            format!("{issuer}/token"),
        );
        set_config(
            config,
            "auth.oidc.test.userinfo_url",
            format!("{issuer}/me"),
        );
        set_config(
            config,
            "auth.oidc.test.scopes",
            toml::Value::Array(vec!["openid".into(), "email".into(), "profile".into()]),
        );
    })
    .await;
    let token = app.user("ada@example.com").await;

    // an unverified email takes nothing over
    provider.account("mallory", "ada@example.com", false).await;
    let refused = sign_in_with_provider(&Browser::new(&app)).await;
    assert_eq!(refused.status, 401);
    assert!(refused
        .text("[role=alert]")
        .contains("did not confirm an email address"));

    // a verified one links the account of that email, and signs it in again later
    provider
        .account("ada-at-idp", "ada@example.com", true)
        .await;
    let landed = sign_in_with_provider(&Browser::new(&app)).await;
    assert_eq!(landed.url, "/account", "{}", landed.text("main"));
    assert!(landed.text("main").contains("ada@example.com"));
    let identities = body(api(&app, Method::GET, "/auth/identities", &token).await).await;
    assert_eq!(identities["data"][0]["provider"], "test");
    assert_eq!(
        sign_in_with_provider(&Browser::new(&app)).await.url,
        "/account"
    );

    // a flow completed in another browser is not accepted without its `state` cookie
    let replayed = Browser::new(&app)
        .get(&callback_of_a_flow(&app).await)
        .await;
    assert_eq!(replayed.status, 401);
    assert!(replayed
        .text("[role=alert]")
        .contains("not started in this browser"));

    let actions = audit_actions(&app).await;
    let refusals: Vec<&String> = actions
        .iter()
        .filter(|(a, _)| a == "user.oidc_refused")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[0].contains("unverified email") || refusals[1].contains("unverified email"));
}
