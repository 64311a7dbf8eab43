//! The portal's pages over real HTTP, as a browser without JavaScript uses them (cookies kept,
//! redirects followed, forms posted with the CSRF token the page carried), on SQLite and
//! PostgreSQL; the HTML is read with a real parser. Refusals are tested as pages and as posts.

use fluxgate_testkit::{
    body, operator_with_verifier, smtp, verify_code, Backend, TestApp, PASSWORD, PUBLIC_URL,
};
use reqwest::{Client, StatusCode};
use scraper::{Html, Selector};
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    a_new_user_signs_up_and_manages_a_key_without_javascript,
    validation_errors_stand_next_to_their_fields,
    forms_need_this_browsers_csrf_token_and_origin,
    pages_send_a_strict_policy_and_assets_are_cached,
    permissions_are_enforced_by_the_services_not_by_hidden_links,
    repeated_wrong_passwords_show_the_wait,
    an_owner_invites_a_teammate_who_joins_through_the_link,
    ending_a_session_in_one_browser_logs_the_other_out,
    the_operator_changes_plans_and_disables_orgs,
    the_audit_log_is_filtered_and_paged,
    custom_roles_show_the_rule_against_escalation,
    usage_is_charted_filtered_and_downloadable,
    sensitive_changes_ask_for_the_password_again_after_a_while,
    two_step_sign_in_is_set_up_used_and_turned_off_in_the_portal,
    an_org_that_requires_two_step_sign_in_sends_members_to_set_it_up,
    signup_and_login_take_the_identifiers_the_instance_uses,
    a_keys_credits_are_given_spent_topped_up_and_refilled_in_the_portal,
    a_keys_named_limits_are_written_a_line_each_in_the_portal,
    the_operator_overrides_entitlements_and_flags_in_the_portal,
);

/// A browser without JavaScript: keeps cookies, follows redirects, posts forms from its page.
pub(crate) struct Browser {
    client: Client,
    base: String,
    /// The `Origin` its posts carry: the instance's public URL.
    origin: String,
}

/// A page as the browser got it.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) url: String,
    pub(crate) headers: reqwest::header::HeaderMap,
    html: Html,
}

impl Page {
    fn select(&self, css: &str) -> Vec<scraper::ElementRef<'_>> {
        let selector = Selector::parse(css).unwrap();
        self.html.select(&selector).collect()
    }

    /// How many elements `css` selects.
    pub(crate) fn select_count(&self, css: &str) -> usize {
        self.select(css).len()
    }

    pub(crate) fn text(&self, css: &str) -> String {
        self.select(css)
            .iter()
            .map(|e| e.text().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// An attribute of the first element `css` selects (which must be there).
    pub(crate) fn attr_of(&self, css: &str, name: &str) -> String {
        self.attr(css, name)
            .unwrap_or_else(|| panic!("{css} has no {name}"))
    }

    fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.select(css)
            .first()
            .and_then(|e| e.value().attr(name))
            .map(str::to_owned)
    }

    fn csrf(&self) -> String {
        self.attr("input[name=csrf]", "value")
            .expect("the page has a form with a CSRF token")
    }

    pub(crate) fn title(&self) -> String {
        self.text("h1").trim().to_owned()
    }
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self {
            client: Client::builder().cookie_store(true).build().unwrap(),
            base: app.base.clone(),
            origin: app.config.public_url.clone(),
        }
    }

    async fn page(&self, response: reqwest::Response) -> Page {
        let status = response.status();
        let url = response.url().path().to_owned();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Page {
            status,
            url,
            headers,
            html: Html::parse_document(&text),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        self.page(response).await
    }

    /// Posts `fields` to `action` as the page's form would (its CSRF token added).
    pub(crate) async fn submit(&self, from: &Page, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = from.csrf();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend_from_slice(fields);
        let response = self
            .client
            .post(format!("{}{action}", self.base))
            .header("origin", &self.origin)
            .form(&form)
            .send()
            .await
            .unwrap();
        self.page(response).await
    }

    async fn text_of(&self, path: &str, css: &str) -> String {
        self.get(path).await.text(css)
    }

    pub(crate) async fn log_in(&self, email: &str) -> Page {
        let login = self.get("/login").await;
        self.submit(
            &login,
            "/login",
            &[("email", email), ("password", PASSWORD), ("next", "/")],
        )
        .await
    }
}

async fn a_new_user_signs_up_and_manages_a_key_without_javascript(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let browser = Browser::new(&app);

    // the front door leads to the login page, which leads to sign-up
    let login = browser.get("/").await;
    assert_eq!(login.url, "/login");
    assert_eq!(login.title(), "Log in");
    let signup = browser.get("/signup").await;
    let sent = browser
        .submit(
            &signup,
            "/signup",
            &[
                ("email", "dev@example.com"),
                ("password", PASSWORD),
                ("organization_name", "Acme"),
            ],
        )
        .await;
    assert_eq!(sent.status, 200);
    assert_eq!(sent.title(), "Check your email");

    // the mailed link lands on a portal page that verifies
    let mail = app.mail.wait_for("dev@example.com", "Verify").await;
    let token = smtp::token_in(&mail.body);
    assert!(mail
        .body
        .contains(&format!("{PUBLIC_URL}/verify-email?token=")));
    let confirmed = browser.get(&format!("/verify-email?token={token}")).await;
    assert_eq!(confirmed.title(), "Email confirmed");
    let again = browser.get(&format!("/verify-email?token={token}")).await;
    assert_eq!(again.status, 422, "a link works once");

    // a wrong password is answered on the form; the right one opens the org
    let login = browser.get("/login").await;
    let refused = browser
        .submit(
            &login,
            "/login",
            &[
                ("email", "dev@example.com"),
                ("password", "not the password"),
            ],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert!(refused
        .text("[role=alert]")
        .contains("Invalid email or password"));
    assert_eq!(
        refused.attr("#email", "value").as_deref(),
        Some("dev@example.com")
    );
    let overview = browser.log_in("dev@example.com").await;
    assert_eq!(overview.status, 200);
    assert!(overview.url.starts_with("/orgs/org_"), "{}", overview.url);
    assert_eq!(overview.title(), "Acme");
    assert!(overview.text("#plan-heading + p").contains("free"));
    let org = overview.url.trim_start_matches("/orgs/").to_owned();

    // no keys yet; create one with a scope the owner holds
    let keys = browser.get(&format!("/orgs/{org}/keys")).await;
    assert!(keys.text("main").contains("No keys"));
    let form = browser.get(&format!("/orgs/{org}/keys/new")).await;
    let offered: Vec<String> = form
        .select("input[name=scopes]")
        .iter()
        .filter_map(|e| e.value().attr("value").map(str::to_owned))
        .collect();
    assert!(offered.contains(&"keys:read".to_owned()), "{offered:?}");
    let created = browser
        .submit(
            &form,
            &format!("/orgs/{org}/keys"),
            &[
                ("name", "billing service"),
                ("scopes", "keys:read"),
                ("environment", "live"),
                ("expires_in_days", "30"),
                ("rate_limit", "500"),
                ("rate_window_seconds", "60"),
                ("rate_exact", "on"),
            ],
        )
        .await;
    assert_eq!(created.status, 200);
    assert_eq!(
        created.headers.get("cache-control").unwrap(),
        "no-store",
        "the secret page is never stored"
    );
    let secret = created.text("#secret").trim().to_owned();
    assert!(secret.starts_with("fg_live_"), "{secret}");
    assert_eq!(
        created.url,
        format!("/orgs/{org}/keys"),
        "the secret is not in a URL"
    );
    assert_eq!(verify_code(&app, &root, &secret).await, "VALID");

    // the list finds it by name and by start, and not by something else
    let listed = browser
        .get(&format!("/orgs/{org}/keys?search=BILLING"))
        .await;
    assert!(listed.text("tbody").contains("billing service"));
    let start = &secret[..secret.len().min(12)];
    let by_start = browser
        .get(&format!("/orgs/{org}/keys?search={start}"))
        .await;
    assert!(by_start.text("tbody").contains("billing service"));
    let none = browser
        .get(&format!("/orgs/{org}/keys?search=nothing%25"))
        .await;
    assert!(none.text("main").contains("No keys match"));
    let revoked_only = browser
        .get(&format!("/orgs/{org}/keys?status=revoked"))
        .await;
    assert!(revoked_only.select("tbody tr").is_empty());

    // the detail page; rotate with an hour's grace: both secrets work, and the page shows
    // whether the old one is still being called
    let link = listed.attr("tbody a", "href").unwrap();
    let detail = browser.get(&link).await;
    assert_eq!(detail.title(), "billing service active");
    assert!(detail.text("table").contains("keys:read"));
    assert!(
        detail
            .text("table")
            .contains("500 calls per 60 s, exact across nodes"),
        "{}",
        detail.text("table")
    );
    assert!(
        detail.select("#secrets-heading").is_empty(),
        "one secret: no table"
    );
    let rotated = browser
        .submit(
            &detail,
            &format!("{link}/rotate"),
            &[("grace_period_seconds", "3600")],
        )
        .await;
    let new_secret = rotated.text("#secret").trim().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(verify_code(&app, &root, &new_secret).await, "VALID");
    let old_row = browser.get(&link).await.text("tr.secret-retiring");
    assert!(old_row.contains(&secret[..12]), "{old_row}");
    assert!(
        old_row.contains("not called since the rotation"),
        "{old_row}"
    );
    assert_eq!(verify_code(&app, &root, &secret).await, "VALID");
    assert!(
        fluxgate_testkit::eventually(Duration::from_secs(5), || async {
            !browser
                .get(&link)
                .await
                .text("tr.secret-retiring")
                .contains("not called")
        })
        .await,
        "the old secret's call shows on the page"
    );

    // revoke, after the confirmation page
    let confirm = browser.get(&format!("{link}/revoke")).await;
    assert!(confirm.title().starts_with("Revoke billing service"));
    let after = browser
        .submit(&confirm, &format!("{link}/revoke"), &[])
        .await;
    assert_eq!(after.url, link);
    assert_eq!(after.title(), "billing service revoked");
    assert_eq!(verify_code(&app, &root, &new_secret).await, "REVOKED");
    assert_eq!(verify_code(&app, &root, &secret).await, "REVOKED");

    // logging out ends the session: the pages ask to log in again
    let out = browser.submit(&after, "/logout", &[]).await;
    assert_eq!(out.url, "/login");
    let closed = browser.get(&format!("/orgs/{org}")).await;
    assert_eq!(closed.url, "/login");
    app.stop().await;
}

async fn validation_errors_stand_next_to_their_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::new(&app);
    let signup = browser.get("/signup").await;
    let refused = browser
        .submit(
            &signup,
            "/signup",
            &[("email", "not an email"), ("password", "short")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.attr("#email", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(
        refused.attr("#email", "aria-describedby").as_deref(),
        Some("email-error")
    );
    assert!(!refused.text("#email-error").is_empty());
    assert!(refused.text("#password-error").contains("at least 8"));
    // the first field in error takes the focus; the others do not
    assert!(refused.attr("#email", "autofocus").is_some());
    assert!(refused.attr("#password", "autofocus").is_none());
    // what was typed stays, except the password
    assert_eq!(
        refused.attr("#email", "value").as_deref(),
        Some("not an email")
    );
    assert_eq!(refused.attr("#password", "value").as_deref(), Some(""));

    // a key form with a name too long and a scope the user does not hold
    let (_, _) = app.owner("owner@example.com", "Acme").await;
    browser.log_in("owner@example.com").await;
    let overview = browser.get("/").await;
    let org = overview.url.trim_start_matches("/orgs/").to_owned();
    let form = browser.get(&format!("/orgs/{org}/keys/new")).await;
    let long = "x".repeat(300);
    let refused = browser
        .submit(
            &form,
            &format!("/orgs/{org}/keys"),
            &[("name", &long), ("expires_in_days", "soon")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#expires_in_days-error").is_empty());
    let refused = browser
        .submit(
            &form,
            &format!("/orgs/{org}/keys"),
            &[("name", &long), ("scopes", "no such:scope")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#name-error").is_empty());
    assert!(!refused.text("#scopes-error").is_empty());

    // the profile: a bad name stands next to its field (the password form stays clean), a good
    // one is saved and shown
    let account = browser.get("/account").await;
    let refused = browser
        .submit(&account, "/account/profile", &[("name", &long)])
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.text("#name-error").contains("at most 200"));
    assert_eq!(
        refused.attr("#name", "value").as_deref(),
        Some(long.as_str())
    );
    assert!(refused.select("#current_password-error").is_empty());
    let saved = browser
        .submit(&refused, "/account/profile", &[("name", "Ada Owner")])
        .await;
    assert_eq!(saved.status, 200);
    assert!(saved.text("[role=status]").contains("saved"));
    assert_eq!(
        browser
            .get("/account")
            .await
            .attr("#name", "value")
            .as_deref(),
        Some("Ada Owner")
    );
    app.stop().await;
}

async fn forms_need_this_browsers_csrf_token_and_origin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    let login = browser.get("/login").await;
    let post = |fields: Vec<(&'static str, String)>, origin: &'static str| {
        browser
            .client
            .post(format!("{}/login", browser.base))
            .header("origin", origin)
            .form(&fields)
            .send()
    };
    let creds = || {
        vec![
            ("email", "owner@example.com".to_owned()),
            ("password", PASSWORD.to_owned()),
        ]
    };
    // no token, a wrong token, a token from another browser: refused, nobody logged in
    let missing = post(creds(), PUBLIC_URL).await.unwrap();
    assert_eq!(missing.status(), 403);
    let mut wrong = creds();
    wrong.push(("csrf", "A".repeat(43)));
    assert_eq!(post(wrong, PUBLIC_URL).await.unwrap().status(), 403);
    let other = Browser::new(&app).get("/login").await.csrf();
    let mut foreign_token = creds();
    foreign_token.push(("csrf", other));
    assert_eq!(post(foreign_token, PUBLIC_URL).await.unwrap().status(), 403);
    // the right token from another origin: refused too
    let mut cross_site = creds();
    cross_site.push(("csrf", login.csrf()));
    assert_eq!(
        post(cross_site, "https://evil.example")
            .await
            .unwrap()
            .status(),
        403
    );
    let still_out = browser.get("/").await;
    assert_eq!(still_out.url, "/login");
    // and with both it works — the configured public URL, or the host the browser opened
    let mut opened_as = creds();
    opened_as.push(("csrf", login.csrf()));
    let response = browser
        .client
        .post(format!("{}/login", browser.base))
        .header("origin", browser.base.clone())
        .form(&opened_as)
        .send()
        .await
        .unwrap();
    assert!(
        response.url().path().starts_with("/orgs/"),
        "{}",
        response.url()
    );
    let inside = browser.log_in("owner@example.com").await;
    assert!(inside.url.starts_with("/orgs/"));
    app.stop().await;
}

async fn pages_send_a_strict_policy_and_assets_are_cached(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::new(&app);
    let login = browser.get("/login").await;
    let csp = login
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for needed in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(needed), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(
        login.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(login.headers.get("referrer-policy").unwrap(), "same-origin");
    let cookie = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("fg_csrf="))
        .expect("a CSRF cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // no inline script or style anywhere: everything comes from the embedded assets
    assert!(login.select("script:not([src])").is_empty());
    assert!(login.select("style, [style]").is_empty());
    assert!(
        login.select("a.skip[href='#main']").len() == 1,
        "a skip link"
    );
    for (css, kind) in [
        ("link[rel=stylesheet]", "text/css"),
        ("script[src*=htmx]", "text/javascript"),
    ] {
        let href = login
            .attr(css, "href")
            .or_else(|| login.attr(css, "src"))
            .unwrap();
        let asset = browser
            .client
            .get(format!("{}{href}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200);
        assert!(asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"));
    }
    let missing = browser
        .client
        .get(format!("{}/assets/x/nope.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // an unknown API route still answers the JSON envelope
    let api = app
        .client
        .get(app.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    assert_eq!(body(api).await["error"]["code"], "NOT_FOUND");
    app.stop().await;
}

async fn permissions_are_enforced_by_the_services_not_by_hidden_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    app.member(&owner, &org, "viewer@example.com", "viewer")
        .await;
    app.owner("stranger@example.com", "Other").await;

    let viewer = Browser::new(&app);
    viewer.log_in("viewer@example.com").await;
    let keys = viewer.get(&format!("/orgs/{org}/keys")).await;
    assert_eq!(keys.status, 200, "a viewer reads keys");
    assert!(
        keys.select(&format!("a[href='/orgs/{org}/keys/new']"))
            .is_empty(),
        "no create link"
    );
    let form = viewer.get(&format!("/orgs/{org}/keys/new")).await;
    assert_eq!(form.status, 403);
    assert!(form.text("main").contains("keys:write"));
    // posting the form anyway is refused by the service
    let posted = viewer
        .submit(&keys, &format!("/orgs/{org}/keys"), &[("name", "sneaky")])
        .await;
    assert_eq!(posted.status, 403);
    let listed: Value = body(
        app.get_auth(&format!("/api/v1/orgs/{org}/keys"), &owner)
            .await,
    )
    .await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );

    // another org's pages answer 404, as the API does
    let stranger = Browser::new(&app);
    stranger.log_in("stranger@example.com").await;
    for path in [format!("/orgs/{org}"), format!("/orgs/{org}/keys")] {
        assert_eq!(stranger.get(&path).await.status, 404, "{path}");
    }
    assert_eq!(stranger.get("/orgs/not-an-id").await.status, 404);
    app.stop().await;
}

async fn repeated_wrong_passwords_show_the_wait(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    let login = browser.get("/login").await;
    let mut last = None;
    for _ in 0..12 {
        let page = browser
            .submit(
                &login,
                "/login",
                &[
                    ("email", "owner@example.com"),
                    ("password", "wrong password!"),
                ],
            )
            .await;
        if page.status == 429 {
            last = Some(page);
            break;
        }
        assert_eq!(page.status, 401);
    }
    let locked = last.expect("the address is locked after repeated failures");
    assert!(
        locked.text("[role=alert]").contains("Try again in"),
        "{}",
        locked.text("main")
    );
    app.stop().await;
}

async fn an_owner_invites_a_teammate_who_joins_through_the_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let owner = Browser::new(&app);
    owner.log_in("owner@example.com").await;
    let members = owner.get(&format!("/orgs/{org}/members")).await;
    assert!(members.text("tbody").contains("owner@example.com"));

    // a bad address is answered next to its field; a good one is invited
    let refused = owner
        .submit(
            &members,
            &format!("/orgs/{org}/invitations"),
            &[("email", "nope"), ("role", "developer")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#email-error").is_empty());
    let invited = owner
        .submit(
            &members,
            &format!("/orgs/{org}/invitations"),
            &[("email", "Teammate@Example.com"), ("role", "developer")],
        )
        .await;
    assert_eq!(invited.status, 200);
    assert!(invited
        .text("[role=status]")
        .contains("teammate@example.com"));
    assert!(invited
        .text("#open-heading + div")
        .contains("teammate@example.com"));

    // resend: a second mail, and only its link works
    let resent = owner
        .submit(
            &invited,
            &invited.attr("form[action$='/resend']", "action").unwrap(),
            &[],
        )
        .await;
    assert!(resent.text("[role=status]").contains("new link"));
    let mail = app
        .mail
        .wait_for_nth("teammate@example.com", "invited", 2)
        .await;
    let token = smtp::token_in(&mail.body);
    assert!(mail
        .body
        .contains(&format!("{PUBLIC_URL}/invitations/accept?token={token}")));

    // the teammate opens the link before having an account
    let teammate = Browser::new(&app);
    let offer = teammate
        .get(&format!("/invitations/accept?token={token}"))
        .await;
    assert_eq!(offer.status, 200);
    assert_eq!(offer.title(), "Join Acme");
    assert!(offer.text("main").contains("as developer"));
    let login_link = offer.attr("main a[href^='/login?next=']", "href").unwrap();
    let signup = teammate.get("/signup").await;
    teammate
        .submit(
            &signup,
            "/signup",
            &[("email", "teammate@example.com"), ("password", PASSWORD)],
        )
        .await;
    let verify_mail = app.mail.wait_for("teammate@example.com", "Verify").await;
    teammate
        .get(&format!(
            "/verify-email?token={}",
            smtp::token_in(&verify_mail.body)
        ))
        .await;
    // logging in from the invitation comes back to it
    let login = teammate.get(&login_link).await;
    let back = teammate
        .submit(
            &login,
            "/login",
            &[
                ("email", "teammate@example.com"),
                ("password", PASSWORD),
                ("next", &login.attr("input[name=next]", "value").unwrap()),
            ],
        )
        .await;
    assert_eq!(back.url, "/invitations/accept");
    assert!(back
        .text("main")
        .contains("logged in as teammate@example.com"));
    let joined = teammate
        .submit(&back, "/invitations/accept", &[("token", &token)])
        .await;
    assert_eq!(joined.url, format!("/orgs/{org}"));
    assert_eq!(joined.title(), "Acme");

    // a developer sees the members but cannot manage them, and the service refuses the post
    let their_view = teammate.get(&format!("/orgs/{org}/members")).await;
    assert!(their_view.select("#invite-heading").is_empty());
    let refused = teammate
        .submit(
            &their_view,
            &format!("/orgs/{org}/invitations"),
            &[("email", "x@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(refused.status, 403);

    // the owner makes them a viewer, then removes them
    let members = owner.get(&format!("/orgs/{org}/members")).await;
    let row_action = members.attr("form[action$='/role']", "action").unwrap();
    let changed = owner
        .submit(&members, &row_action, &[("role", "viewer")])
        .await;
    assert_eq!(changed.url, format!("/orgs/{org}/members"));
    let select = "select[id^='role-'] option[selected]";
    assert!(changed.text(select).contains("viewer"));
    let remove_action = changed
        .attr("form[action$='/remove'][data-confirm^='Remove']", "action")
        .unwrap();
    let removed = owner.submit(&changed, &remove_action, &[]).await;
    assert!(!removed.text("tbody").contains("teammate@example.com"));
    assert_eq!(teammate.get(&format!("/orgs/{org}")).await.status, 404);

    // the last owner cannot leave
    let leave_action = removed
        .attr("form[data-confirm^='Leave']", "action")
        .unwrap();
    let kept = owner.submit(&removed, &leave_action, &[]).await;
    assert_eq!(kept.status, 409);
    assert!(kept.text("[role=alert]").contains("last owner"));
    app.stop().await;
}

async fn ending_a_session_in_one_browser_logs_the_other_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let laptop = Browser::new(&app);
    let phone = Browser::new(&app);
    laptop.log_in("owner@example.com").await;
    phone.log_in("owner@example.com").await;
    assert_eq!(phone.get(&format!("/orgs/{org}")).await.title(), "Acme");

    let account = laptop.get("/account").await;
    assert_eq!(account.title(), "Your account");
    // the API's own login in `owner` counts too: three sessions, one of them this browser
    assert_eq!(account.select("tbody tr").len(), 3);
    assert_eq!(account.text("tbody strong"), "(this browser)");
    let ended = laptop
        .submit(&account, "/account/sessions/end-others", &[])
        .await;
    assert!(ended
        .text("[role=status]")
        .contains("2 other sessions ended"));
    assert_eq!(ended.select("tbody tr").len(), 1);

    // the phone is out at its next page (its refresh token died with the session)
    let out = phone.get(&format!("/orgs/{org}")).await;
    assert_eq!(out.url, "/login");
    // and the laptop is still in
    assert_eq!(laptop.get(&format!("/orgs/{org}")).await.title(), "Acme");

    // changing the password checks the current one, next to its field
    let account = laptop.get("/account").await;
    let wrong = laptop
        .submit(
            &account,
            "/account/password",
            &[
                ("current_password", "nope nope nope"),
                ("new_password", "another good passphrase"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    assert!(!wrong.text("#current_password-error").is_empty());
    let changed = laptop
        .submit(
            &account,
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another good passphrase"),
            ],
        )
        .await;
    assert!(
        changed
            .text("[role=status]")
            .contains("password was changed"),
        "{}",
        changed.text("main")
    );
    app.stop().await;
}

async fn the_operator_changes_plans_and_disables_orgs(backend: Backend) {
    let app = TestApp::spawn_with(backend, fluxgate_testkit::free_and_pro_plans).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let (_, key) =
        fluxgate_testkit::issue_key(&app, &owner, &org, json!({ "name": "svc", "scopes": [] }))
            .await;
    let customer = Browser::new(&app);
    customer.log_in("owner@example.com").await;
    assert!(customer
        .text_of(&format!("/orgs/{org}"), "#plan-heading + p")
        .await
        .contains("free"));
    assert_eq!(
        customer.get("/admin/orgs").await.status,
        403,
        "customers have no console"
    );

    let operator = Browser::new(&app);
    operator.log_in("ops@example.com").await;
    let console = operator.get("/admin/orgs").await;
    assert_eq!(console.title(), "Organizations");
    assert!(console.text("tbody").contains("Acme"));
    assert!(console.select("figure.chart svg[role=img]").len() == 1);
    let found = operator.get("/admin/orgs?search=acm").await;
    assert_eq!(found.select("main > .table-wrap tbody tr").len(), 1);
    let none = operator.get("/admin/orgs?search=zzz").await;
    assert!(none.select("main > .table-wrap tbody tr").is_empty());

    let detail = operator.get(&format!("/admin/orgs/{org}")).await;
    let changed = operator
        .submit(
            &detail,
            &format!("/admin/orgs/{org}/plan"),
            &[("plan", "pro")],
        )
        .await;
    assert!(changed.text("[role=status]").contains("pro plan"));
    let unknown = operator
        .submit(
            &detail,
            &format!("/admin/orgs/{org}/plan"),
            &[("plan", "gold")],
        )
        .await;
    assert_eq!(unknown.status, 422);
    assert!(!unknown.text("#plan-error").is_empty());
    // the customer's overview shows it at once
    let overview = customer.get(&format!("/orgs/{org}")).await;
    assert!(
        overview.text("#plan-heading + p").contains("pro"),
        "{}",
        overview.text("main")
    );
    assert!(overview.text("main").contains("sso"));

    // disabling stops the org's keys; enabling brings them back
    let disabled = operator
        .submit(&changed, &format!("/admin/orgs/{org}/disable"), &[])
        .await;
    assert!(disabled.text("main").contains("disabled since"));
    assert_eq!(verify_code(&app, &root, &key).await, "ORG_DISABLED");
    let overview = customer.get(&format!("/orgs/{org}")).await;
    assert!(overview
        .text("[role=alert]")
        .contains("disabled by the operator"));
    operator
        .submit(&disabled, &format!("/admin/orgs/{org}/enable"), &[])
        .await;
    assert_eq!(verify_code(&app, &root, &key).await, "VALID");
    app.stop().await;
}

async fn the_audit_log_is_filtered_and_paged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    for i in 0..55 {
        fluxgate_testkit::issue_key(
            &app,
            &owner,
            &org,
            json!({ "name": format!("k{i}"), "scopes": [] }),
        )
        .await;
    }
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    let log = browser.get(&format!("/orgs/{org}/audit")).await;
    assert_eq!(log.status, 200);
    assert_eq!(
        log.select("main > .table-wrap tbody tr").len(),
        50,
        "a page of 50"
    );
    assert!(log.text("tbody").contains("key.created"));
    let older = log.attr("nav.pager a", "href").unwrap();
    let second = browser.get(&older).await;
    assert!(!second.select("main > .table-wrap tbody tr").is_empty());

    let only_logins = browser
        .get(&format!("/orgs/{org}/audit?action=org.created"))
        .await;
    let rows = only_logins.select("main > .table-wrap tbody tr");
    assert_eq!(rows.len(), 1, "{}", only_logins.text("main"));
    assert_eq!(
        only_logins.attr("#action", "value").as_deref(),
        Some("org.created")
    );

    let bad = browser
        .get(&format!("/orgs/{org}/audit?from=yesterday"))
        .await;
    assert_eq!(bad.status, 422);
    assert!(!bad.text("#from-error").is_empty());
    assert_eq!(bad.attr("#from", "value").as_deref(), Some("yesterday"));

    app.owner("stranger@example.com", "Other").await;
    let stranger = Browser::new(&app);
    stranger.log_in("stranger@example.com").await;
    assert_eq!(
        stranger.get(&format!("/orgs/{org}/audit")).await.status,
        404
    );
    app.stop().await;
}

async fn custom_roles_show_the_rule_against_escalation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    app.member(&owner, &org, "admin@example.com", "admin").await;
    let browser = Browser::new(&app);
    browser.log_in("admin@example.com").await;
    let roles = browser.get(&format!("/orgs/{org}/roles")).await;
    assert_eq!(roles.status, 200);
    assert!(roles.text("tbody").contains("developer"));
    // an admin does not hold org:delete: it is shown, and cannot be chosen
    assert!(roles
        .attr("input[value='org:delete']", "disabled")
        .is_some());
    assert!(roles.attr("input[value='keys:read']", "disabled").is_none());

    let refused = browser
        .submit(
            &roles,
            &format!("/orgs/{org}/roles"),
            &[("name", "owner"), ("permissions", "keys:read")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#name-error").is_empty());
    // posting a permission the page disabled is refused by the service
    let escalation = browser
        .submit(
            &roles,
            &format!("/orgs/{org}/roles"),
            &[("name", "deleter"), ("permissions", "org:delete")],
        )
        .await;
    assert_eq!(escalation.status, 403, "{}", escalation.text("main"));

    let created = browser
        .submit(
            &roles,
            &format!("/orgs/{org}/roles"),
            &[
                ("name", "billing"),
                ("description", "reads keys"),
                ("permissions", "keys:read"),
            ],
        )
        .await;
    assert_eq!(created.url, format!("/orgs/{org}/roles"));
    assert!(created.text("tbody").contains("billing"));
    // editing it: the form comes filled in, and escalation is refused there too
    let edit = created.attr("main a[href*='/roles/rol_']", "href").unwrap();
    let form = browser.get(&edit).await;
    assert_eq!(form.attr("#name", "value").as_deref(), Some("billing"));
    assert!(form.attr("input[value='keys:read']", "checked").is_some());
    let escalated = browser
        .submit(
            &form,
            &edit,
            &[("name", "billing"), ("permissions", "org:delete")],
        )
        .await;
    assert_eq!(escalated.status, 403);
    let saved = browser
        .submit(
            &form,
            &edit,
            &[
                ("name", "billing-team"),
                ("permissions", "keys:read"),
                ("permissions", "keys:write"),
            ],
        )
        .await;
    assert_eq!(saved.url, format!("/orgs/{org}/roles"));
    assert!(saved.text("tbody").contains("billing-team"));
    assert!(saved.text("tbody").contains("keys:write"));
    let created = saved;

    // held by an invitation: it cannot be deleted
    app.invite(&owner, &org, "new@example.com", "billing-team")
        .await;
    let delete = created.attr("form[action$='/delete']", "action").unwrap();
    let kept = browser.submit(&created, &delete, &[]).await;
    assert_eq!(kept.status, 409);
    app.stop().await;
}

async fn usage_is_charted_filtered_and_downloadable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let (key_id, key) = fluxgate_testkit::issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "svc", "scopes": ["keys:read"] }),
    )
    .await;
    for _ in 0..3 {
        let call = fluxgate_testkit::with_key(
            &app,
            reqwest::Method::GET,
            &format!("/orgs/{org}/keys"),
            &key,
            None,
        )
        .await;
        assert_eq!(call.status(), 200);
    }
    app.state().usage.flush().await.unwrap();
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    let usage = browser.get(&format!("/orgs/{org}/usage")).await;
    assert_eq!(usage.status, 200);
    assert!(
        usage.text("figcaption").ends_with("total 3"),
        "{}",
        usage.text("figcaption")
    );
    let by_key = browser
        .get(&format!(
            "/orgs/{org}/usage?granularity=day&key_id={key_id}"
        ))
        .await;
    assert!(by_key.text("figcaption").starts_with("Calls per day"));
    assert!(by_key.text("figcaption").ends_with("total 3"));
    let other = browser
        .get(&format!("/orgs/{org}/usage?endpoint=/nowhere"))
        .await;
    assert!(other.text("figcaption").ends_with("total 0"));
    let bad = browser.get(&format!("/orgs/{org}/usage?key_id=nope")).await;
    assert_eq!(bad.status, 422);
    assert!(!bad.text("#key_id-error").is_empty());

    // the key's page breaks its calls down by endpoint and outcome
    let key_page = browser.get(&format!("/orgs/{org}/keys/{key_id}")).await;
    let rows: Vec<String> = key_page
        .select("[aria-label='Calls by endpoint and outcome'] tbody tr")
        .iter()
        .map(|row| row.text().collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(
        rows,
        vec!["GET /api/v1/orgs/{org_id}/keys|200|3".to_owned()]
    );

    let csv_link = by_key.attr("a[download]", "href").unwrap();
    let csv = browser
        .client
        .get(format!("{}{csv_link}", app.base))
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("start,calls"));
    let total: u64 = lines
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 3);
    app.stop().await;
}

async fn sensitive_changes_ask_for_the_password_again_after_a_while(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.reauthenticate_after", "1s");
    })
    .await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    // fresh from the login: no question
    let form = browser.get(&format!("/orgs/{org}/keys/new")).await;
    assert_eq!(form.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // later: the form and the post both ask first, and nothing is created
    let asked = browser.get(&format!("/orgs/{org}/keys/new")).await;
    assert_eq!(asked.status, 403);
    assert_eq!(asked.title(), "Confirm your password");
    let posted = browser
        .submit(&form, &format!("/orgs/{org}/keys"), &[("name", "late")])
        .await;
    assert_eq!(posted.title(), "Confirm your password");
    let members = browser.get(&format!("/orgs/{org}/members")).await;
    let invite = browser
        .submit(
            &members,
            &format!("/orgs/{org}/invitations"),
            &[("email", "x@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(invite.title(), "Confirm your password");

    let wrong = browser
        .submit(
            &asked,
            "/account/confirm",
            &[
                ("password", "not it at all"),
                ("next", &format!("/orgs/{org}/keys/new")),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.text("#password-error").is_empty());
    let back = browser
        .submit(
            &asked,
            "/account/confirm",
            &[
                ("password", PASSWORD),
                ("next", &format!("/orgs/{org}/keys/new")),
            ],
        )
        .await;
    assert_eq!(back.url, format!("/orgs/{org}/keys/new"));
    assert_eq!(back.status, 200);
    let created = browser
        .submit(&back, &format!("/orgs/{org}/keys"), &[("name", "now")])
        .await;
    assert!(created.text("#secret").starts_with("fg_"));
    app.stop().await;
}

async fn two_step_sign_in_is_set_up_used_and_turned_off_in_the_portal(backend: Backend) {
    use fluxgate_core::mfa::TotpFactor;
    let now = fluxgate_server::clock::now;
    let app = TestApp::spawn(backend).await;
    app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    let account = browser.get("/account").await;
    assert!(
        account.text("#mfa-heading + *").contains("Off"),
        "{}",
        account.text("main")
    );

    // a wrong password is shown next to its field; the right one shows the QR code and secret
    let wrong = browser
        .submit(
            &account,
            "/account/mfa/setup",
            &[("password", "wrong password!")],
        )
        .await;
    assert_eq!(wrong.status, 422);
    assert!(
        wrong.text("#password-error").contains("not your password"),
        "{}",
        wrong.text("main")
    );
    let setup = browser
        .submit(&account, "/account/mfa/setup", &[("password", PASSWORD)])
        .await;
    assert_eq!(setup.status, 200, "{}", setup.text("main"));
    let qr = setup.attr("img.qr", "src").expect("a QR code");
    assert!(qr.starts_with("data:image/svg+xml;base64,"), "{qr}");
    let secret = setup.text("#totp-secret");
    let factor = TotpFactor::from_base32(secret.trim(), "Fluxgate", "owner@example.com").unwrap();
    // a reload shows the same pending secret; a wrong code stands next to the field
    assert_eq!(
        browser.get("/account/mfa/setup").await.text("#totp-secret"),
        secret
    );
    let bad = browser
        .submit(&setup, "/account/mfa/confirm", &[("code", "000000")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.select("#code[aria-invalid=true]").len() == 1,
        "{}",
        bad.text("main")
    );
    let codes = browser
        .submit(
            &setup,
            "/account/mfa/confirm",
            &[("code", &factor.code_at(now()))],
        )
        .await;
    assert_eq!(codes.title(), "Two-step sign-in is on");
    let recovery: Vec<String> = codes
        .text("#recovery-codes")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(recovery.len(), 10);

    // a new browser logs in: the password leads to the second step
    let other = Browser::new(&app);
    let step = other.log_in("owner@example.com").await;
    assert_eq!(step.title(), "Two-step sign-in");
    assert!(
        other.get("/account").await.url.starts_with("/login"),
        "no session yet"
    );
    let wrong = other
        .submit(
            &step,
            "/login/second-factor",
            &[
                ("code", "000000"),
                ("method", "totp"),
                (
                    "mfa_token",
                    &step.attr("input[name=mfa_token]", "value").unwrap(),
                ),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.text("#code-error").contains("wrong"),
        "{}",
        wrong.text("main")
    );
    // or a recovery code instead
    let token = wrong.attr("input[name=mfa_token]", "value").unwrap();
    let recovery_form = other
        .submit(
            &wrong,
            "/login/second-factor/recovery",
            &[("mfa_token", &token), ("next", "/account")],
        )
        .await;
    assert!(recovery_form
        .text("label[for=code]")
        .contains("Recovery code"));
    let signed_in = other
        .submit(
            &recovery_form,
            "/login/second-factor",
            &[
                ("code", &recovery[0]),
                ("method", "recovery_code"),
                ("mfa_token", &token),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(signed_in.url, "/account", "{}", signed_in.text("main"));
    assert!(
        signed_in.text("#mfa-heading + *").contains("9 of 10"),
        "{}",
        signed_in.text("main")
    );
    // the spent challenge sends a replay back to the login page
    let replay = other
        .submit(
            &recovery_form,
            "/login/second-factor",
            &[
                ("code", &recovery[1]),
                ("method", "recovery_code"),
                ("mfa_token", &token),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(replay.title(), "Log in");

    // turned off with the password and a code
    let account = other.get("/account").await;
    let off = other
        .submit(
            &account,
            "/account/mfa/off",
            &[
                ("code", &factor.code_at(now() + 30)),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert!(
        off.text("[role=status]")
            .contains("Two-step sign-in is off"),
        "{}",
        off.text("main")
    );
    let again = Browser::new(&app).log_in("owner@example.com").await;
    assert_ne!(again.title(), "Two-step sign-in");
    app.stop().await;
}

async fn an_org_that_requires_two_step_sign_in_sends_members_to_set_it_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, org) = app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    let overview = browser.log_in("owner@example.com").await;
    assert_eq!(overview.url, format!("/orgs/{org}"));
    assert!(overview.text("#security-heading + *").contains("Optional"));
    let refused = browser
        .submit(
            &overview,
            &format!("/orgs/{org}/require-mfa"),
            &[("require_mfa", "on")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text("main"));
    assert!(
        refused.text("main").contains("require_mfa"),
        "{}",
        refused.text("main")
    );
    assert_eq!(
        refused.attr("a.button", "href").as_deref(),
        Some("/account")
    );
    // the account page, where a factor is set up, stays open; confirming the factor counts for
    // this browser's session, which is let in at once
    use fluxgate_core::mfa::TotpFactor;
    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    let setup = browser
        .submit(&account, "/account/mfa/setup", &[("password", PASSWORD)])
        .await;
    let secret = setup.text("#totp-secret");
    let factor = TotpFactor::from_base32(secret.trim(), "Fluxgate", "owner@example.com").unwrap();
    let code = factor.code_at(fluxgate_server::clock::now());
    let on = browser
        .submit(&setup, "/account/mfa/confirm", &[("code", &code)])
        .await;
    assert_eq!(on.title(), "Two-step sign-in is on");
    let overview = browser.get(&format!("/orgs/{org}")).await;
    assert_eq!(overview.status, 200, "{}", overview.text("main"));
    assert!(overview.text("#security-heading + *").contains("Required"));
    app.stop().await;
}

async fn signup_and_login_take_the_identifiers_the_instance_uses(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.username", "required");
    })
    .await;
    let browser = Browser::new(&app);
    let form = browser.get("/signup").await;
    assert!(form.text("label[for=username]").contains("Username"));
    let refused = browser
        .submit(
            &form,
            "/signup",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("username", "_x"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.select("#username[aria-invalid=true]").len() == 1,
        "{}",
        refused.text("main")
    );
    assert_eq!(
        refused.attr("#username", "value").as_deref(),
        Some("_x"),
        "what was typed stays"
    );
    let done = browser
        .submit(
            &form,
            "/signup",
            &[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("username", "Ada"),
            ],
        )
        .await;
    assert_eq!(done.title(), "Check your email");
    let mail = app.mail.wait_for("ada@example.com", "Verify").await;
    browser
        .get(&format!(
            "/verify-email?token={}",
            smtp::token_in(&mail.body)
        ))
        .await;
    let login = browser.get("/login").await;
    assert_eq!(login.text("label[for=email]").trim(), "Email or username");
    assert_eq!(login.attr("#email", "type").as_deref(), Some("text"));
    let home = browser
        .submit(
            &login,
            "/login",
            &[
                ("email", "ADA"),
                ("password", PASSWORD),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(home.url, "/account", "{}", home.text("main"));
    app.stop().await;
}

/// A key's usage credits through the portal: given at creation with a daily refill, shown as
/// verifies spend them, topped up, re-planned and dropped — with wrong input answered next to
/// its field.
async fn a_keys_credits_are_given_spent_topped_up_and_refilled_in_the_portal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    app.owner("owner@example.com", "Acme").await;
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    let org = browser
        .get("/")
        .await
        .url
        .trim_start_matches("/orgs/")
        .to_owned();
    let form = browser.get(&format!("/orgs/{org}/keys/new")).await;

    // a refill without credits to start with is refused next to the credits field
    let refused = browser
        .submit(
            &form,
            &format!("/orgs/{org}/keys"),
            &[
                ("name", "metered"),
                ("credits.refill.interval", "daily"),
                ("credits.refill.amount", "5"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused
        .text("[id='credits.remaining-error']")
        .contains("start with"));
    assert_eq!(
        refused
            .attr("[id='credits.refill.amount']", "value")
            .as_deref(),
        Some("5"),
        "what was typed stays"
    );

    let created = browser
        .submit(
            &form,
            &format!("/orgs/{org}/keys"),
            &[
                ("name", "metered"),
                ("credits.remaining", "2"),
                ("credits.refill.interval", "daily"),
                ("credits.refill.amount", "5"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text("main"));
    let secret = created.text("#secret").trim().to_owned();
    for expected in ["VALID", "VALID", "USAGE_EXCEEDED"] {
        assert_eq!(verify_code(&app, &root, &secret).await, expected);
    }
    let listed = browser
        .get(&format!("/orgs/{org}/keys?search=metered"))
        .await;
    let link = listed.attr("tbody a", "href").unwrap();
    let detail = browser.get(&link).await;
    assert_eq!(detail.text(".credits-remaining"), "0");
    let about = detail.text("#credits-heading + p");
    assert!(about.contains("refilled to 5 daily"), "{about}");
    assert_eq!(
        detail
            .attr("[id='credits.refill.interval'] option[selected]", "value")
            .as_deref(),
        Some("daily"),
        "the refill form shows the key's refill"
    );

    // topped up: the next verify passes
    let topped = browser
        .submit(&detail, &format!("{link}/credits"), &[("credits.add", "3")])
        .await;
    assert_eq!(topped.url, link);
    assert_eq!(topped.text(".credits-remaining"), "3");
    assert_eq!(verify_code(&app, &root, &secret).await, "VALID");

    // wrong input comes back next to its field, with what was typed
    let refused = browser
        .submit(
            &topped,
            &format!("{link}/credits"),
            &[("credits.add", "lots")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused
        .text("[id='credits.add-error']")
        .contains("whole number"));
    let refused = browser
        .submit(
            &topped,
            &format!("{link}/credits"),
            &[
                ("credits.refill.interval", "monthly"),
                ("credits.refill.amount", "100"),
                ("credits.refill.day_of_month", "40"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused
        .text("[id='credits.refill.day_of_month-error']")
        .contains("between 1 and 31"));
    assert_eq!(
        refused
            .attr("[id='credits.refill.day_of_month']", "value")
            .as_deref(),
        Some("40")
    );

    // re-planned monthly, then set, then dropped
    let monthly = browser
        .submit(
            &topped,
            &format!("{link}/credits"),
            &[
                ("credits.refill.interval", "monthly"),
                ("credits.refill.amount", "100"),
                ("credits.refill.day_of_month", "15"),
            ],
        )
        .await;
    assert!(monthly
        .text("#credits-heading + p")
        .contains("refilled to 100 monthly on day 15"));
    let set = browser
        .submit(
            &monthly,
            &format!("{link}/credits"),
            &[("credits.remaining", "1")],
        )
        .await;
    assert_eq!(set.text(".credits-remaining"), "1");
    let dropped = browser
        .submit(&set, &format!("{link}/credits"), &[("stop", "on")])
        .await;
    assert!(dropped
        .text("#credits-heading + p")
        .contains("not limited by credits"));
    for _ in 0..3 {
        assert_eq!(verify_code(&app, &root, &secret).await, "VALID");
    }
    app.stop().await;
}

/// A key's named limits and IP allowlist through the portal: written a line each, listed on its
/// page, applied by verify; a line that is not a limit or an address, or a name that is not
/// allowed, is answered next to the field with what was typed.
async fn a_keys_named_limits_are_written_a_line_each_in_the_portal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("owner@example.com", "Acme").await;
    let (key_id, secret) =
        fluxgate_testkit::issue_key(&app, &token, &org, json!({ "name": "llm", "scopes": [] }))
            .await;
    let browser = Browser::new(&app);
    browser.log_in("owner@example.com").await;
    let link = format!("/orgs/{org}/keys/{key_id}");
    let detail = browser.get(&link).await;
    assert!(detail
        .text("#limits-heading + p")
        .contains("no named limits"));

    let refused = browser
        .submit(
            &detail,
            &format!("{link}/ratelimits"),
            &[("ratelimits", "tokens 5000")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.text("#ratelimits-error").contains("Line 1"));
    assert_eq!(
        refused.text("#ratelimits"),
        "tokens 5000",
        "what was typed stays"
    );
    let refused = browser
        .submit(
            &detail,
            &format!("{link}/ratelimits"),
            &[("ratelimits", "Tokens = 5/min")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#ratelimits-error").is_empty());

    let saved = browser
        .submit(
            &detail,
            &format!("{link}/ratelimits"),
            &[("ratelimits", "tokens = 5000/hour\nexports = 2/day\n")],
        )
        .await;
    assert_eq!(saved.url, link);
    let listed = saved.text(".named-limits");
    assert!(listed.contains("tokens: 5000 per 3600 s"), "{listed}");
    assert!(listed.contains("exports: 2 per 86400 s"), "{listed}");
    assert_eq!(
        saved.text("#ratelimits"),
        "tokens = 5000/hour\nexports = 2/day\n"
    );
    let client = Client::new();
    let answer: Value = client
        .post(app.url("/api/v1/keys/verify"))
        .header("x-api-key", &root)
        .json(&json!({ "key": secret, "ratelimits": [{ "name": "tokens", "cost": 1200 }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["data"]["ratelimits"][0]["remaining"], 3800);

    // the IP allowlist, an entry a line, the same way
    let refused = browser
        .submit(
            &saved,
            &format!("{link}/ip-allowlist"),
            &[("ip_allowlist", "203.0.113.0/24\nnot-an-address\n")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(!refused.text("#ip_allowlist-error").is_empty());
    assert_eq!(
        refused.text("#ip_allowlist"),
        "203.0.113.0/24\nnot-an-address\n"
    );
    let fenced = browser
        .submit(
            &saved,
            &format!("{link}/ip-allowlist"),
            &[("ip_allowlist", "203.0.113.9/24\n2001:db8::/32")],
        )
        .await;
    assert_eq!(fenced.url, link);
    let listed = fenced.text(".ip-allowlist");
    assert!(
        listed.contains("203.0.113.0/24") && listed.contains("2001:db8::/32"),
        "{listed}"
    );
    let from = |ip: &'static str| {
        let (client, root, secret, app) = (&client, &root, &secret, &app);
        async move {
            let answer: Value = client
                .post(app.url("/api/v1/keys/verify"))
                .header("x-api-key", root)
                .json(&json!({ "key": secret, "ip": ip }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["data"]["code"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(from("203.0.113.50").await, "VALID");
    assert_eq!(from("127.0.0.1").await, "FORBIDDEN_IP");

    // what a scanner's report of a leaked key does is the org's choice, on its overview
    let overview = browser.get(&format!("/orgs/{org}")).await;
    assert!(overview
        .text("#leaked-heading + p")
        .contains("revoked at once"));
    let flagging = browser
        .submit(
            &overview,
            &format!("/orgs/{org}/leaked-keys"),
            &[("leaked_key_action", "flag")],
        )
        .await;
    assert!(flagging.text("#leaked-heading + p").contains("flagged"));
    let org_json = body(
        fluxgate_testkit::send(
            &app,
            reqwest::Method::GET,
            &format!("/orgs/{org}"),
            &token,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(org_json["data"]["leaked_key_action"], "flag");
    app.stop().await;
}

async fn the_operator_overrides_entitlements_and_flags_in_the_portal(backend: Backend) {
    let app = TestApp::spawn_with(backend, fluxgate_testkit::free_and_pro_plans).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let (_, key) =
        fluxgate_testkit::issue_key(&app, &owner, &org, json!({ "name": "svc", "scopes": [] }))
            .await;
    let entitlements = || {
        let (app, root, key) = (&app, root.clone(), key.clone());
        async move {
            let verdict = fluxgate_testkit::with_key(
                app,
                reqwest::Method::POST,
                "/keys/verify",
                &root,
                Some(json!({ "key": key })),
            )
            .await;
            fluxgate_testkit::body(verdict).await["data"].clone()
        }
    };
    let customer = Browser::new(&app);
    customer.log_in("owner@example.com").await;
    assert_eq!(customer.get("/admin/flags").await.status, 403);

    let operator = Browser::new(&app);
    operator.log_in("ops@example.com").await;
    let detail = operator.get(&format!("/admin/orgs/{org}")).await;
    assert!(detail
        .text("#entitlements-heading + p")
        .contains("deny override"));
    let action = format!("/admin/orgs/{org}/entitlements");
    // errors stand next to their fields, and what was typed stays
    let wrong = operator
        .submit(
            &detail,
            &action,
            &[
                ("entitlement", "Bulk Export"),
                ("effect", "grant"),
                ("ends_on", "2001-01-01"),
                ("note", "x"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    assert!(!wrong.text("#entitlement-error").is_empty());
    assert!(!wrong.text("#ends_on-error").is_empty());
    assert_eq!(wrong.attr_of("#note", "value"), "x");
    let granted = operator
        .submit(
            &detail,
            &action,
            &[
                ("entitlement", "bulk_export"),
                ("effect", "grant"),
                ("ends_on", "2099-12-31"),
                ("note", "early access"),
            ],
        )
        .await;
    assert!(
        granted.text("[role=status]").contains("granted"),
        "{}",
        granted.text("main")
    );
    assert!(granted.text("#overrides").contains("early access"));
    assert!(granted.text("#entitlements").contains("override"));
    assert_eq!(entitlements().await["entitlements"], json!(["bulk_export"]));
    let removed = operator
        .submit(&granted, &format!("{action}/bulk_export/remove"), &[])
        .await;
    assert_eq!(removed.select_count("#overrides"), 0);
    assert_eq!(entitlements().await["entitlements"], json!([]));

    // a flag for every free org, then the kill switch
    let flags = operator.get("/admin/flags").await;
    assert_eq!(flags.title(), "Feature flags");
    let wrong = operator
        .submit(
            &flags,
            "/admin/flags",
            &[
                ("name", "beta"),
                ("rollout_percent", "150"),
                ("orgs", "acme"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    assert!(!wrong.text("#rollout_percent-error").is_empty());
    let wrong = operator
        .submit(
            &flags,
            "/admin/flags",
            &[
                ("name", "beta"),
                ("rollout_percent", "10"),
                ("orgs", "acme"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert!(
        !wrong.text("#orgs-error").is_empty(),
        "{}",
        wrong.text("main")
    );
    let defined = operator
        .submit(
            &flags,
            "/admin/flags",
            &[
                ("name", "beta"),
                ("rollout_percent", "100"),
                ("plans", "free"),
                ("variant", "v2"),
                ("default_variant", "v1"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert!(
        defined.text("[role=status]").contains("created"),
        "{}",
        defined.text("main")
    );
    assert!(defined.text("#flag-beta").contains("on as targeted"));
    let verdict = entitlements().await;
    assert_eq!(
        (verdict["entitlements"].clone(), verdict["flags"].clone()),
        (json!(["beta"]), json!({ "beta": "v2" }))
    );
    let killed = operator
        .submit(
            &defined,
            "/admin/flags/beta/enabled",
            &[("enabled", "false")],
        )
        .await;
    assert!(killed.text("#flag-beta").contains("killed"));
    let verdict = entitlements().await;
    assert_eq!(
        (verdict["entitlements"].clone(), verdict["flags"].clone()),
        (json!([]), json!({ "beta": "v1" }))
    );
    let gone = operator
        .submit(&killed, "/admin/flags/beta/delete", &[])
        .await;
    assert_eq!(gone.select_count("#flag-beta"), 0);
    app.stop().await;
}
