//! The test kit every crate's tests share: boots the real server on a random loopback port
//! against a fresh SQLite file or a fresh PostgreSQL database (copied from a migrated template,
//! dropped when the test stops), with a local SMTP sink receiving the real mail, a Redis it can
//! stop and start, and request helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test kit fails loudly by design

pub mod browser;
pub mod oidc;
pub mod postgres;
pub mod redis;
pub mod relay;
pub mod smtp;

use fluxgate_server::config::Config;
use fluxgate_server::server::RunningServer;
use fluxgate_server::state::AppState;
use reqwest::{Client, Method, Response};
use serde_json::{json, Value};
use sqlx::Connection;
use std::time::Duration;
use toml::Table;

/// Sets one setting of a config table by its dotted path (`auth.require_mfa`), making the
/// tables on the way.
pub fn set_config(table: &mut Table, path: &str, value: impl Into<toml::Value>) {
    let (sections, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut node = table;
    for section in sections.split('.').filter(|s| !s.is_empty()) {
        node = node
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Table::new()))
            .as_table_mut()
            .expect("a table on the way");
    }
    node.insert(key.to_owned(), value.into());
}

/// Config tweak: a `free` plan (100/min) and a `pro` plan (5000/min, entitlement `sso`), for
/// tests that move an org between plans.
pub fn free_and_pro_plans(table: &mut Table) {
    let plans: Table = r#"
        [[plans]]
        name = "free"
        rate_limit = "100/min"
        [[plans]]
        name = "pro"
        rate_limit = "5000/min"
        entitlements = ["sso"]
    "#
    .parse()
    .expect("plans");
    table.extend(plans);
}

/// The public URL tests configure; cookie requests must come from this origin.
pub const PUBLIC_URL: &str = "http://fluxgate.test";
/// A password that meets the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A running Fluxgate for one test.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub mail: smtp::MailSink,
    pub config: Config,
    pub database_url: String,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

/// The PostgreSQL server the suite runs against (`FLUXGATE_TEST_POSTGRES_URL`, set by
/// `scripts/test`), as a URL to its `postgres` database.
pub fn postgres_admin_url() -> String {
    std::env::var("FLUXGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("FLUXGATE_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts PostgreSQL")
    })
}

/// `host:port` of a PostgreSQL URL (what a [`relay::Relay`] forwards to).
pub fn host_port_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or(after_scheme);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

fn database_url_named(name: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// A migrated database every test database is copied from: created once per migration set
/// (its name carries a hash of the migrations), so each test skips migrating.
async fn migrated_template() -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("fgtemplate_{}", fluxgate_store::migrations_fingerprint());
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("connect to test PostgreSQL");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("look for the template");
            if !exists {
                let building = format!("{name}_{}", std::process::id());
                sqlx::query(&format!("CREATE DATABASE {building}"))
                    .execute(&mut conn)
                    .await
                    .expect("create the template");
                let store = fluxgate_store::connect(&fluxgate_store::ConnectOptions {
                    url: database_url_named(&building),
                    max_connections: 1,
                    acquire_timeout: Duration::from_secs(30),
                })
                .await
                .expect("open the template");
                store.migrate().await.expect("migrate the template");
                store.close().await;
                // the closed pool's backends may take a moment to exit; another process may
                // have finished a template first, and then either serves
                for _ in 0..100 {
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    )
                    .bind(&building)
                    .execute(&mut conn)
                    .await;
                    let renamed =
                        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                            .execute(&mut conn)
                            .await;
                    if renamed.is_ok() {
                        break;
                    }
                    let taken: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                    )
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("look for the template");
                    if taken {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS {building} WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let _ = conn.close().await;
            name
        })
        .await
}

/// A fresh database URL for `backend`: a new SQLite file in `dir`, or a new PostgreSQL database
/// copied from the migrated template.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/fluxgate.db", dir.display()),
        Backend::Postgres => {
            let template = migrated_template().await;
            let name = format!("fgtest_{}", ulid::Ulid::new().to_string().to_lowercase());
            let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("connect to test PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            let _ = conn.close().await;
            database_url_named(&name)
        }
    }
}

/// Drops a PostgreSQL test database (connections are ended first); SQLite files go with
/// their temporary directory.
pub async fn drop_database(database_url: &str) {
    if !database_url.starts_with("postgres") {
        return;
    }
    let Some(name) = database_url.rsplit('/').next() else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Boots with the test defaults, after `tweak` edits the config table.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Table)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mail = smtp::MailSink::start().await;
        let database_url = fresh_database(backend, dir.path()).await;
        let mut table: Table = format!(
            r#"
            listen = "127.0.0.1:0"
            public_url = "{PUBLIC_URL}"
            data_dir = "{dir}"
            database_url = "{database_url}"
            smtp_url = "smtp://127.0.0.1:{port}"
            log_level = "warn"
            database_max_connections = 8
            [auth]
            cookie_secure = false
            [rate_limits]
            # tests drive many calls from one address and user; the limits have their own tests
            ip = "1000000/min"
            user = "1000000/min"
            "#,
            dir = dir.path().display(),
            port = mail.port,
        )
        .parse()
        .expect("test config");
        tweak(&mut table);
        let config = Config::from_table(&table).expect("valid test config");
        let server = fluxgate_server::server::start(config.clone())
            .await
            .expect("server starts");
        let base = format!("http://{}", server.addr);
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self {
            base,
            client,
            mail,
            config,
            database_url,
            server: Some(server),
            _dir: dir,
        }
    }

    /// A second node of the same instance: same config and data directory, on its own port,
    /// connected straight to the database this app's was created as (not through any relay).
    pub async fn second_node(&self) -> fluxgate_server::server::RunningServer {
        let mut config = self.config.clone();
        config.database_url = self.database_url.clone();
        config.listen = "127.0.0.1:0".parse().expect("loopback");
        fluxgate_server::server::start(config)
            .await
            .expect("second node starts")
    }

    pub fn state(&self) -> &AppState {
        &self.server.as_ref().expect("running").state
    }

    /// Runs one SQL statement on the app's database behind its back (to age a row, say).
    pub async fn sql(&self, statement: &str) {
        if self.database_url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.database_url)
                .await
                .expect("SQLite");
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect("statement");
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.database_url)
                .await
                .expect("PostgreSQL");
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect("statement");
            pool.close().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends JSON (or nothing) with an optional bearer token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.call(Method::POST, path, None, Some(body)).await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Signs up, takes the link from the mail the SMTP sink received, verifies. Returns the user id.
    pub async fn signup_verified(&self, email: &str, org: Option<&str>) -> Value {
        let mut body = json!({ "email": email, "password": PASSWORD });
        if let Some(org) = org {
            body["organization_name"] = json!(org);
        }
        let response = self.post("/api/v1/auth/signup", body).await;
        assert_eq!(response.status(), 201, "signup");
        let created: Value = response.json().await.expect("json");
        let mail = self.mail.wait_for(email, "Verify").await;
        let token = smtp::token_in(&mail.body);
        let verified = self
            .post("/api/v1/auth/verify-email", json!({ "token": token }))
            .await;
        assert_eq!(verified.status(), 200, "verify");
        created["data"].clone()
    }

    /// Logs in and returns `data` (access_token, refresh_token, …).
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self
            .post(
                "/api/v1/auth/login",
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status(), 200, "login of {email}");
        body(response).await["data"].clone()
    }

    /// A verified user without an org; returns their access token.
    pub async fn user(&self, email: &str) -> String {
        self.signup_verified(email, None).await;
        self.login(email, PASSWORD).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// A verified user owning a new org; returns (access token, org id).
    pub async fn owner(&self, email: &str, org: &str) -> (String, String) {
        let created = self.signup_verified(email, Some(org)).await;
        let token = self.login(email, PASSWORD).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned();
        let org_id = created["organization"]["id"]
            .as_str()
            .expect("org id")
            .to_owned();
        (token, org_id)
    }

    /// Invites `email` with `role` (as `inviter`) and returns the token from the mail.
    pub async fn invite(&self, inviter: &str, org_id: &str, email: &str, role: &str) -> String {
        let address = email.to_lowercase(); // mail goes to the normalised address
        let before = self
            .mail
            .all()
            .iter()
            .filter(|m| m.to.contains(&address) && m.subject.contains("invited"))
            .count();
        let response = self
            .call(
                Method::POST,
                &format!("/api/v1/orgs/{org_id}/invitations"),
                Some(inviter),
                Some(json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "invite {email}: {}",
            response.text().await.unwrap_or_default()
        );
        let mail = self
            .mail
            .wait_for_nth(&address, "invited", before + 1)
            .await;
        smtp::token_in(&mail.body)
    }

    /// A new verified user who joined `org_id` with `role` through an invitation; their token.
    pub async fn member(&self, inviter: &str, org_id: &str, email: &str, role: &str) -> String {
        let token = self.user(email).await;
        let invitation = self.invite(inviter, org_id, email, role).await;
        let accepted = self
            .call(
                Method::POST,
                &format!("/api/v1/invitations/{invitation}/accept"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(accepted.status(), 200, "accept for {email}");
        token
    }

    /// Stops gracefully and hands back the data directory (so its database can be reopened).
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self._dir, dir)
    }

    /// Stops gracefully and drops the test's PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
        drop_database(&self.database_url).await;
    }
}

/// `/api/v1{path}` with a bearer token (an access token, or an API key as a bearer).
pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    app.call(method, &format!("/api/v1{path}"), Some(token), body)
        .await
}

/// The verify code (`VALID`, `REVOKED`, …) a key gets, asked by the verifier key `root`.
pub async fn verify_code(app: &TestApp, root: &str, key: &str) -> String {
    let response = with_key(
        app,
        Method::POST,
        "/keys/verify",
        root,
        Some(json!({ "key": key })),
    )
    .await;
    assert_eq!(response.status(), 200, "verify answers");
    body(response).await["data"]["code"]
        .as_str()
        .expect("a code")
        .to_owned()
}

/// `/api/v1{path}` authenticated by an API key in `X-API-Key`.
pub async fn with_key(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/v1{path}")))
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request sent")
}

/// Issues a key as `token` in `org` from `body`; (key id, secret).
pub async fn issue_key(app: &TestApp, token: &str, org: &str, body: Value) -> (String, String) {
    let response = send(
        app,
        Method::POST,
        &format!("/orgs/{org}/keys"),
        token,
        Some(body),
    )
    .await;
    assert_eq!(response.status(), 201, "issuing a key");
    let data = response.json::<Value>().await.expect("JSON body")["data"].clone();
    (
        data["id"].as_str().expect("key id").to_owned(),
        data["key"].as_str().expect("secret").to_owned(),
    )
}

/// Bootstraps the operator and issues it a verifier key (scope `keys:verify`); (operator's
/// access token, verifier key).
pub async fn operator_with_verifier(app: &TestApp) -> (String, String) {
    fluxgate_server::admin::bootstrap(&app.config, "ops@example.com", PASSWORD)
        .await
        .expect("bootstrap");
    let ops = app.login("ops@example.com", PASSWORD).await["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let me = body(send(app, Method::GET, "/auth/me", &ops, None).await).await;
    let ops_org = me["data"]["active_org"]["id"]
        .as_str()
        .expect("operator org")
        .to_owned();
    let (_, root) = issue_key(
        app,
        &ops,
        &ops_org,
        json!({ "name": "verifier", "scopes": ["keys:verify"] }),
    )
    .await;
    (ops, root)
}

/// Verifies `key` at the node whose base URL is `base` (this app's or a second node's) with
/// the operator's `verifier`: the answer's `data` (the status must be 200).
pub async fn verify_at(client: &Client, base: &str, verifier: &str, key: &str) -> Value {
    let response = client
        .post(format!("{base}/api/v1/keys/verify"))
        .header("x-api-key", verifier)
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("verify answered");
    assert_eq!(response.status(), 200, "verify answers 200");
    body(response).await["data"].clone()
}

/// The JSON body of a response.
pub async fn body(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

/// Asserts the spec's error envelope and returns the error object.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(
        response.headers().contains_key("x-request-id"),
        "x-request-id on errors too"
    );
    let value = body(response).await;
    assert_eq!(value["error"]["code"], code, "{value}");
    assert!(value["error"]["message"].is_string(), "{value}");
    value["error"].clone()
}

/// Polls `check` for up to `within`, returning as soon as it holds.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
