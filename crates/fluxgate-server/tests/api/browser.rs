//! The portal in a real headless Chromium (Debian's, over WebDriver), against the real server
//! on loopback, on SQLite and PostgreSQL: the journeys a customer, an owner and an operator
//! take, each page checked by axe-core for serious or critical accessibility violations, each
//! journey leaving a screenshot of its last page in `target/browser-screenshots/`.

use fluxgate_testkit::browser::Browser;
use fluxgate_testkit::{
    operator_with_verifier, smtp, verify_code, with_key, Backend, TestApp, PASSWORD, PUBLIC_URL,
};
use reqwest::Method;
use serde_json::json;

both_backends!(
    a_customer_signs_up_and_runs_a_key_through_its_life,
    an_owner_invites_a_teammate_who_accepts_in_a_second_browser,
    ending_a_session_in_one_browser_logs_the_other_out,
    an_operator_changes_a_plan_and_the_customer_sees_it,
    a_user_turns_on_two_step_sign_in_and_signs_in_with_a_code,
    a_user_adds_a_passkey_and_signs_in_with_it_alone_and_as_the_second_step,
    a_person_signs_in_with_an_openid_provider,
);

/// Fails on any serious or critical accessibility violation of the current page.
async fn accessible(browser: &Browser, page: &str) {
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{page}: {violations:#?}");
}

/// The path and query of a mailed link (mail carries the configured public URL).
fn link_in(mail: &smtp::ReceivedMail) -> String {
    let start = mail.body.find(PUBLIC_URL).expect("a link") + PUBLIC_URL.len();
    mail.body[start..]
        .split_whitespace()
        .next()
        .expect("link text")
        .to_owned()
}

async fn log_in(browser: &Browser, email: &str) {
    browser.open("/login").await;
    browser.fill("#email", email).await;
    browser.fill("#password", PASSWORD).await;
    browser.follow("main button[type=submit]").await;
}

async fn a_customer_signs_up_and_runs_a_key_through_its_life(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let b = Browser::start(&app.base).await;

    b.open("/").await;
    assert_eq!(b.path().await, "/login");
    accessible(&b, "login").await;
    b.open("/signup").await;
    accessible(&b, "signup").await;
    b.fill("#email", "dev@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.fill("#organization_name", "Acme").await;
    b.follow("main button[type=submit]").await;
    assert_eq!(b.text("h1").await, "Check your email");
    accessible(&b, "check your email").await;

    // the link in the mail, from the SMTP sink
    let mail = app.mail.wait_for("dev@example.com", "Verify").await;
    b.open(&link_in(&mail)).await;
    assert_eq!(b.text("h1").await, "Email confirmed");
    log_in(&b, "dev@example.com").await;
    let overview = b.path().await;
    assert!(overview.starts_with("/orgs/org_"), "{overview}");
    let org = overview.trim_start_matches("/orgs/").to_owned();
    assert_eq!(b.text("h1").await, "Acme");
    accessible(&b, "overview").await;

    // create a key; its secret is shown once, with a copy button the script reveals
    b.open(&format!("/orgs/{org}/keys/new")).await;
    accessible(&b, "new key").await;
    b.fill("#name", "billing service").await;
    b.click("input[name=scopes][value='keys:read']").await;
    b.follow("main form button[type=submit]").await;
    let secret = b.text("#secret").await;
    assert!(secret.starts_with("fg_live_"), "{secret}");
    assert_eq!(b.attr("[data-copy-target]", "hidden").await, None);
    accessible(&b, "secret").await;
    assert_eq!(verify_code(&app, &root, &secret).await, "VALID");

    // the key calls the API; its usage appears on its chart
    for _ in 0..3 {
        let call = with_key(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys"),
            &secret,
            None,
        )
        .await;
        assert_eq!(call.status(), 200);
    }
    app.state().usage.flush().await.unwrap();
    b.follow("a[data-leave-ok]").await;
    let detail = b.path().await;
    assert!(
        detail.starts_with(&format!("/orgs/{org}/keys/key_")),
        "{detail}"
    );
    let caption = b.text("figure.chart figcaption").await;
    assert!(!caption.ends_with("total 0"), "{caption}");
    assert!(b.count("figure.chart rect.bar[height]").await >= 24);
    accessible(&b, "key detail").await;

    // the org's other pages pass the accessibility check too
    for (path, name) in [
        ("usage", "usage"),
        ("audit", "audit log"),
        ("roles", "roles"),
    ] {
        b.open(&format!("/orgs/{org}/{path}")).await;
        assert!(!b.text("h1").await.is_empty());
        accessible(&b, name).await;
    }

    // the keys page lists it
    b.open(&format!("/orgs/{org}/keys")).await;
    assert!(b.text("tbody").await.contains("billing service"));
    accessible(&b, "keys").await;
    // with JavaScript, typing filters the list in place (htmx), without a page load
    b.script("window.__stillThisPage = true; return true;")
        .await;
    b.fill("#search", "no such key").await;
    let mut filtered = false;
    for _ in 0..100 {
        if b.text("#key-results").await.contains("No keys match") {
            filtered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(filtered, "the list did not update");
    assert_eq!(
        b.script("return window.__stillThisPage === true;").await,
        json!(true)
    );
    assert!(
        b.path().await.contains("search=no%20such%20key"),
        "the URL follows the filter"
    );
    b.fill("#search", "billing").await;
    b.screenshot(&format!("keys-page-{backend:?}")).await;
    b.open(&format!("/orgs/{org}")).await;
    b.screenshot(&format!("overview-{backend:?}")).await;

    // rotate at once: a new secret, and the old one stops
    b.open(&detail).await;
    b.select("#grace_period_seconds", "0").await;
    b.follow("form[action$='/rotate'] button").await;
    let rotated = b.text("#secret").await;
    assert_ne!(rotated, secret);
    assert_eq!(verify_code(&app, &root, &secret).await, "EXPIRED");
    assert_eq!(verify_code(&app, &root, &rotated).await, "VALID");

    // the key page now lists both secrets, the old one as stopped
    b.open(&detail).await;
    assert_eq!(b.count("tr.secret-retired").await, 1);
    assert_eq!(b.count("tr.secret-current").await, 1);
    accessible(&b, "key with two secrets").await;

    // revoke, through the confirmation page
    b.follow("a[href$='/revoke']").await;
    accessible(&b, "revoke").await;
    b.follow("button.danger").await;
    assert_eq!(b.text("h1 .status").await, "revoked");
    assert_eq!(verify_code(&app, &root, &rotated).await, "REVOKED");
    b.screenshot(&format!("key-lifecycle-{backend:?}")).await;
    // the checker itself is not blind: an unlabelled field planted in the page is reported
    b.script("document.querySelector('main').insertAdjacentHTML('beforeend', '<input type=text>'); return true;")
        .await;
    let planted = b.accessibility_violations().await;
    assert!(
        planted.iter().any(|v| v.starts_with("label")),
        "{planted:?}"
    );
    b.quit().await;
    app.stop().await;
}

async fn an_owner_invites_a_teammate_who_accepts_in_a_second_browser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    app.signup_verified("dev@example.com", None).await;
    let owner = Browser::start(&app.base).await;
    log_in(&owner, "owner@example.com").await;
    owner.open(&format!("/orgs/{org}/members")).await;
    accessible(&owner, "members").await;
    owner.fill("#email", "dev@example.com").await;
    owner.select("#role", "developer").await;
    owner.follow("form[action$='/invitations'] button").await;
    assert!(owner
        .text("[role=status]")
        .await
        .contains("dev@example.com"));

    let teammate = Browser::start(&app.base).await;
    let mail = app.mail.wait_for("dev@example.com", "invited").await;
    teammate.open(&link_in(&mail)).await;
    assert_eq!(teammate.text("h1").await, "Join Acme");
    accessible(&teammate, "invitation").await;
    teammate.follow("main a[href^='/login?next=']").await;
    teammate.fill("#email", "dev@example.com").await;
    teammate.fill("#password", PASSWORD).await;
    teammate.follow("main button[type=submit]").await;
    assert!(teammate
        .text("main")
        .await
        .contains("logged in as dev@example.com"));
    teammate.follow("main form button[type=submit]").await;
    assert_eq!(teammate.path().await, format!("/orgs/{org}"));

    // a developer does not get member management, and the service refuses the post anyway
    teammate.open(&format!("/orgs/{org}/members")).await;
    assert_eq!(teammate.count("#invite-heading").await, 0);
    let status = teammate
        .script(&format!(
            "const csrf = document.querySelector('input[name=csrf]').value;
             const r = new XMLHttpRequest();
             r.open('POST', '/orgs/{org}/invitations', false);
             r.setRequestHeader('content-type', 'application/x-www-form-urlencoded');
             r.send('csrf=' + encodeURIComponent(csrf) + '&email=x%40example.com&role=viewer');
             return r.status;"
        ))
        .await;
    assert_eq!(status, json!(403));

    owner.open(&format!("/orgs/{org}/members")).await;
    assert!(owner.text("tbody").await.contains("dev@example.com"));
    owner.screenshot(&format!("members-{backend:?}")).await;
    teammate.screenshot(&format!("teammate-{backend:?}")).await;
    owner.quit().await;
    teammate.quit().await;
    app.stop().await;
}

async fn ending_a_session_in_one_browser_logs_the_other_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let laptop = Browser::start(&app.base).await;
    let phone = Browser::start(&app.base).await;
    log_in(&laptop, "owner@example.com").await;
    log_in(&phone, "owner@example.com").await;
    laptop.open("/account").await;
    accessible(&laptop, "account").await;
    laptop
        .follow("form[action='/account/sessions/end-others'] button")
        .await;
    assert!(laptop
        .text("[role=status]")
        .await
        .contains("other sessions ended"));
    phone.open(&format!("/orgs/{org}")).await;
    assert_eq!(phone.path().await.split('?').next(), Some("/login"));
    laptop.open(&format!("/orgs/{org}")).await;
    assert_eq!(laptop.text("h1").await, "Acme");
    phone.screenshot(&format!("logged-out-{backend:?}")).await;
    laptop.quit().await;
    phone.quit().await;
    app.stop().await;
}

async fn an_operator_changes_a_plan_and_the_customer_sees_it(backend: Backend) {
    // as `serve` runs by default: Secure, `__Host-` cookies (a browser keeps them on loopback)
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::free_and_pro_plans(t);
        fluxgate_testkit::set_config(t, "auth.cookie_secure", true);
    })
    .await;
    operator_with_verifier(&app).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let operator = Browser::start(&app.base).await;
    log_in(&operator, "ops@example.com").await;
    let mut cookies = operator.cookie_names().await;
    cookies.sort();
    assert_eq!(
        cookies,
        [
            "__Host-fg_csrf",
            "__Host-fg_portal",
            "__Host-fg_portal_refresh"
        ]
    );
    operator.open("/admin/orgs?search=acme").await;
    accessible(&operator, "operator console").await;
    operator.follow("main > .table-wrap tbody a").await;
    accessible(&operator, "operator org page").await;
    operator.select("#plan", "pro").await;
    operator.follow("form[action$='/plan'] button").await;
    assert!(operator.text("[role=status]").await.contains("pro plan"));
    // an override and a flag, through pages axe checks
    operator.fill("#entitlement", "bulk_export").await;
    operator.fill("#note", "early access").await;
    operator
        .follow("form[action$='/entitlements'] button")
        .await;
    assert!(operator.text("#overrides").await.contains("bulk_export"));
    accessible(&operator, "operator org page with an override").await;
    operator.open("/admin/flags").await;
    accessible(&operator, "feature flags").await;
    operator.fill("#name", "beta").await;
    operator.fill("#rollout_percent", "100").await;
    operator.follow("form[action='/admin/flags'] button").await;
    assert!(operator.text("#flags").await.contains("beta"));
    accessible(&operator, "feature flags with one").await;

    let customer = Browser::start(&app.base).await;
    log_in(&customer, "owner@example.com").await;
    customer.open(&format!("/orgs/{org}")).await;
    assert!(customer.text("#plan-heading + p").await.contains("pro"));
    customer
        .screenshot(&format!("plan-changed-{backend:?}"))
        .await;
    operator.quit().await;
    customer.quit().await;
    app.stop().await;
}

async fn a_user_turns_on_two_step_sign_in_and_signs_in_with_a_code(backend: Backend) {
    use fluxgate_core::mfa::TotpFactor;
    let now = fluxgate_server::clock::now;
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let b = Browser::start(&app.base).await;
    log_in(&b, "owner@example.com").await;
    b.open("/account").await;
    b.fill("form[action='/account/mfa/setup'] #password", PASSWORD)
        .await;
    b.follow("form[action='/account/mfa/setup'] button").await;
    assert_eq!(b.text("h1").await, "Set up two-step sign-in");
    accessible(&b, "two-step set-up").await;
    // the QR code renders as an image under the strict policy
    let drawn = b
        .script(
            "const i = document.querySelector('img.qr'); return i.complete && i.naturalWidth > 0;",
        )
        .await;
    assert_eq!(drawn, json!(true), "the QR code is drawn");
    let secret = b.text("#totp-secret").await;
    let factor = TotpFactor::from_base32(secret.trim(), "Fluxgate", "owner@example.com").unwrap();
    b.fill("#code", &factor.code_at(now())).await;
    b.follow("main button[type=submit]").await;
    assert_eq!(b.text("h1").await, "Two-step sign-in is on");
    accessible(&b, "recovery codes").await;
    b.follow("a[data-leave-ok]").await;
    b.quit().await;

    let other = Browser::start(&app.base).await;
    log_in(&other, "owner@example.com").await;
    assert_eq!(other.text("h1").await, "Two-step sign-in");
    accessible(&other, "second step").await;
    other.fill("#code", &factor.code_at(now() + 30)).await;
    other.follow("main button[type=submit]").await;
    other.open(&format!("/orgs/{org}")).await;
    assert_eq!(other.text("h1").await, "Acme");
    other.screenshot(&format!("two-step-{backend:?}")).await;
    other.quit().await;
    app.stop().await;
}

async fn a_user_adds_a_passkey_and_signs_in_with_it_alone_and_as_the_second_step(backend: Backend) {
    // WebAuthn wants a host name (and a secure context: http://localhost is one), so this
    // instance is served as localhost on a port chosen up front
    let port = fluxgate_testkit::free_port();
    let base = format!("http://localhost:{port}");
    let app = TestApp::spawn_with(backend, |config| {
        config.insert("listen".into(), format!("127.0.0.1:{port}").into());
        config.insert("public_url".into(), base.clone().into());
    })
    .await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let b = Browser::start(&base).await;
    b.add_virtual_authenticator().await;
    log_in(&b, "owner@example.com").await;

    b.open("/account").await;
    b.fill("#passkey_name", "This laptop").await;
    b.fill("#passkey_password", PASSWORD).await;
    b.follow("form[action='/account/passkeys/new'] button")
        .await;
    assert_eq!(b.text("h1").await, "Add a passkey");
    accessible(&b, "add a passkey").await;
    b.follow("form[data-passkey] button").await;
    assert_eq!(
        b.text("h1").await,
        "Passkey added: save your recovery codes"
    );
    b.follow("a[data-leave-ok]").await;
    b.open("/account").await;
    assert_eq!(b.text(".passkey-name").await, "This laptop");
    accessible(&b, "account with a passkey").await;
    b.script("document.querySelector('#passkeys-heading').scrollIntoView(); return true;")
        .await;
    b.screenshot(&format!("passkeys-account-{backend:?}")).await;

    // alone: nothing typed
    b.follow("form[action='/logout'] button").await;
    b.open("/login").await;
    b.follow("form[action='/login/passkey/start'] button").await;
    assert_eq!(b.text("h1").await, "Sign in with a passkey");
    accessible(&b, "passkey sign-in").await;
    b.follow("form[data-passkey] button").await;
    b.open(&format!("/orgs/{org}")).await;
    assert_eq!(b.text("h1").await, "Acme");

    // after the password, as the second step
    b.follow("form[action='/logout'] button").await;
    log_in(&b, "owner@example.com").await;
    assert_eq!(b.text("h1").await, "Two-step sign-in");
    accessible(&b, "second step with a passkey").await;
    b.follow("form[action='/login/second-factor/passkey'] button")
        .await;
    b.follow("form[data-passkey] button").await;
    b.open(&format!("/orgs/{org}")).await;
    assert_eq!(b.text("h1").await, "Acme");
    b.screenshot(&format!("passkey-{backend:?}")).await;
    b.quit().await;
    app.stop().await;
}

async fn a_person_signs_in_with_an_openid_provider(backend: Backend) {
    let (app, provider) = crate::oidc::spawn(backend).await;
    provider
        .account("person-1", "grace@example.com", true)
        .await;
    let b = Browser::start(&app.base).await;
    b.open("/login").await;
    accessible(&b, "login with a provider").await;
    b.follow("form[action='/login/oidc/test'] button").await;
    b.open("/account").await;
    assert_eq!(b.path().await, "/account", "signed in");
    assert_eq!(b.text(".identity-provider").await, "Test ID");
    accessible(&b, "account with a linked sign-in").await;
    b.screenshot(&format!("oidc-{backend:?}")).await;
    b.quit().await;
    app.stop().await;
}
