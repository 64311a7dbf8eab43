//! A real headless Chromium, driven over WebDriver through the system's `chromedriver` (Debian's
//! `chromium` and `chromium-driver`; nothing is downloaded), for the portal's browser tests. Each
//! [`Browser`] has its own driver, profile and process group; [`Browser::quit`] (or dropping
//! it) ends the session and kills every process the driver started.

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tool(env: &str, default: &str) -> String {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (scripts/test does), \
         or point {env} at them"
    );
    path
}

/// Whether a command failed because the element left the page (replaced by a swap).
fn is_stale(error: &fantoccini::error::CmdError) -> bool {
    matches!(
        error,
        fantoccini::error::CmdError::Standard(e)
            if e.error == fantoccini::error::ErrorStatus::StaleElementReference
    )
}

/// Where the journeys leave their screenshots: `target/browser-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A headless Chromium on a page of the server at `base`.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a fresh Chromium profile.
    pub async fn start(base: &str) -> Self {
        let driver_path = tool("FLUXGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = tool("FLUXGATE_TEST_CHROMIUM", "/usr/bin/chromium");
        let port = crate::free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // as root Chromium needs --no-sandbox; the rest keeps it off the (closed) network
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let mut browser = Self {
            client: None,
            driver,
            profile,
            base: base.to_owned(),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Gives the browser Chromium's virtual authenticator (WebDriver's WebAuthn extension): a
    /// device that holds discoverable credentials and verifies its user, as a laptop's
    /// platform authenticator does, so passkey ceremonies run for real without a person.
    pub async fn add_virtual_authenticator(&self) {
        self.client()
            .issue_cmd(AddVirtualAuthenticator)
            .await
            .expect("a virtual authenticator");
    }

    /// Opens a path of the server.
    pub async fn open(&self, path: &str) {
        self.client()
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigation");
    }

    /// The current page's path (and query).
    pub async fn path(&self) -> String {
        let url = self.client().current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Types into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks the link or button matching `css` and waits for the page it leads to.
    pub async fn follow(&self, css: &str) {
        self.script("window.__fluxgatePageBefore = true; return true;")
            .await;
        self.click(css).await;
        let started = Instant::now();
        loop {
            let arrived = self
                .client()
                .execute(
                    "return window.__fluxgatePageBefore === undefined \
                     && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if arrived {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{css} did not lead to another page"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Picks an option of the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .expect("select");
    }

    /// The visible text of the first element matching `css`, waiting for it to appear. An
    /// element replaced between finding and reading it (an htmx swap) is found again.
    pub async fn text(&self, css: &str) -> String {
        for _ in 0..20 {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(25)).await,
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
        panic!("{css} kept being replaced")
    }

    /// An attribute of the first element matching `css` (found again if it was replaced).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        for _ in 0..20 {
            match self.find(css).await.attr(name).await {
                Ok(value) => return value,
                Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(25)).await,
                Err(e) => panic!("attribute {name} of {css}: {e}"),
            }
        }
        panic!("{css} kept being replaced")
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or(0)
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} on {}: {e}", self.base))
    }

    /// The names of the cookies the browser holds for the site.
    pub async fn cookie_names(&self) -> Vec<String> {
        self.client()
            .get_all_cookies()
            .await
            .expect("cookies")
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.expect("script")
    }

    /// Saves a screenshot of the page as `target/browser-screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// The serious and critical accessibility violations axe-core finds on the page (axe from
    /// the npm registry, which scripts/test installs; `FLUXGATE_TEST_AXE` names the file).
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let axe_path = tool(
            "FLUXGATE_TEST_AXE",
            &format!(
                "{}/.cache/fluxgate-test/axe/node_modules/axe-core/axe.min.js",
                std::env::var("HOME").unwrap_or_default()
            ),
        );
        let axe = std::fs::read_to_string(axe_path).expect("axe-core");
        self.client()
            .execute(&format!("{axe}\nreturn true;"), vec![])
            .await
            .expect("axe injected");
        let found = self
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ': ' + v.help + ' at ' +
                          v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .expect("axe ran");
        serde_json::from_value(found).expect("a list of violations")
    }

    /// Ends the session and reaps the driver and every browser process.
    pub async fn quit(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        self.reap();
    }

    fn reap(&mut self) {
        // the driver's process group holds Chromium and its helpers; the profile path names
        // any that left the group
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.path().display().to_string()])
            .status();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.client.is_some() {
            self.reap();
        }
    }
}

/// WebDriver's "Add Virtual Authenticator" command, which fantoccini has no method for.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/webauthn/authenticator"))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let authenticator = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        });
        (http::Method::POST, Some(authenticator.to_string()))
    }
}
