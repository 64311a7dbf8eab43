//! A real OpenID provider on a free loopback port for one test: the `oidc-provider` package
//! from the npm registry (installed by `scripts/test` into `FLUXGATE_TEST_OIDC_DIR`), run by
//! Node with `oidc/provider.mjs`. The test registers the accounts it signs in as, and may ask
//! the provider's token endpoint to tamper with its next ID token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The client Fluxgate is registered as.
pub const CLIENT_ID: &str = "fluxgate";
/// Its secret.
pub const CLIENT_SECRET: &str = "fluxgate-test-client-secret";

pub struct OidcProvider {
    /// `http://127.0.0.1:{port}`
    pub issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider whose one client returns to `redirect_uri`.
    pub async fn start(redirect_uri: &str) -> Self {
        let dir = std::env::var("FLUXGATE_TEST_OIDC_DIR")
            .expect("FLUXGATE_TEST_OIDC_DIR: where scripts/test installed oidc-provider from npm");
        let port = crate::free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        // evaluated as a module from the install directory, so its imports resolve there
        let child = Command::new("node")
            .current_dir(&dir)
            .args([
                "--input-type=module",
                "--eval",
                include_str!("../oidc/provider.mjs"),
            ])
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_ISSUER", &issuer)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URI", redirect_uri)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node on PATH (scripts/test installs it)");
        let provider = Self {
            issuer,
            child,
            http: reqwest::Client::new(),
        };
        let discovery = format!("{}/.well-known/openid-configuration", provider.issuer);
        for _ in 0..200 {
            if let Ok(response) = provider.http.get(&discovery).send().await {
                if response.status().is_success() {
                    return provider;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the OpenID provider did not start on port {port}");
    }

    /// Registers an account; the next sign-in at the provider is as it.
    pub async fn account(&self, sub: &str, email: &str, email_verified: bool) {
        let body = json!({ "sub": sub, "email": email, "email_verified": email_verified, "name": "Ada Lovelace" });
        self.post("/test/account", body).await;
    }

    /// Has the token endpoint re-sign its next ID token with `claims` changed.
    pub async fn tamper_claims(&self, claims: Value) {
        self.post("/test/tamper", json!({ "claims": claims })).await;
    }

    /// Has the token endpoint sign its next ID token with a key it does not publish.
    pub async fn tamper_signature(&self) {
        self.post("/test/tamper", json!({ "stranger": true })).await;
    }

    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
