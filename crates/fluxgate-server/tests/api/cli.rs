//! The real `fluxgate` binary: `config check`, `admin bootstrap`, `migrate`, and `serve` on an
//! embedded SQLite database with a graceful shutdown on SIGTERM that a slow client cannot hold up.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fluxgate(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    command.current_dir(dir);
    // keep the developer's own FLUXGATE_* settings out of these runs
    for (name, _) in std::env::vars() {
        if name.starts_with("FLUXGATE_") {
            command.env_remove(name);
        }
    }
    command.env("FLUXGATE_LOG_LEVEL", "warn");
    command
}

#[test]
fn config_check_names_every_bad_value_and_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let output = fluxgate(dir.path())
        .args(["config", "check"])
        .env("FLUXGATE_AUTH__ACCESS_TOKEN_TTL", "15x")
        .env("FLUXGATE_RATE_LIMITS__IP", "lots")
        .env("FLUXGATE_LISTEN", "nowhere")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "FLUXGATE_AUTH__ACCESS_TOKEN_TTL",
        "FLUXGATE_RATE_LIMITS__IP",
        "FLUXGATE_LISTEN",
    ] {
        assert!(stderr.contains(name), "{name} not named in:\n{stderr}");
    }

    std::fs::write(
        dir.path().join("fluxgate.toml"),
        "key_prefix = \"sk\"\n[auth]\ncookie_secure = false\n",
    )
    .expect("write");
    let output = fluxgate(dir.path())
        .args(["--config", "fluxgate.toml", "config", "check"])
        .env(
            "FLUXGATE_DATABASE_URL",
            "postgres://fluxgate:hunter2@db.internal/fluxgate",
        )
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("key_prefix = \"sk\""), "{stdout}");
    assert!(stdout.contains("cookie_secure = false"), "{stdout}");
    assert!(
        !stdout.contains("hunter2"),
        "config check printed a password"
    );
}

#[test]
fn serve_runs_on_sqlite_with_no_setup_and_stops_gracefully() {
    let dir = tempfile::tempdir().expect("dir");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("addr").port()
    };
    let bootstrap = fluxgate(dir.path())
        .args([
            "admin",
            "bootstrap",
            "--email",
            "ops@example.com",
            "--password",
            "operator passphrase",
        ])
        .output()
        .expect("run");
    assert!(
        bootstrap.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrap.stderr)
    );
    assert!(
        dir.path().join("data/fluxgate.db").exists(),
        "SQLite file under ./data"
    );
    let again = fluxgate(dir.path())
        .args([
            "admin",
            "bootstrap",
            "--email",
            "ops2@example.com",
            "--password",
            "operator passphrase",
        ])
        .output()
        .expect("run");
    assert!(!again.status.success(), "a second bootstrap must fail");
    assert!(fluxgate(dir.path())
        .arg("migrate")
        .output()
        .expect("run")
        .status
        .success());

    let mut server = fluxgate(dir.path())
        .arg("serve")
        .env("FLUXGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXGATE_AUTH__COOKIE_SECURE", "false")
        .env("FLUXGATE_SHUTDOWN_TIMEOUT", "2s")
        .env("FLUXGATE_HEADER_READ_TIMEOUT", "60s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/readyz")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
            assert!(Instant::now() < deadline, "serve did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let login: serde_json::Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({ "email": "ops@example.com", "password": "operator passphrase" }))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let token = login["data"]["access_token"].as_str().expect("operator logs in").to_string();
        let me: serde_json::Value =
            client.get(format!("{base}/api/v1/auth/me")).bearer_auth(&token).send().await.expect("me").json().await.expect("json");
        // a verifier key and a burst of verifies right before the SIGTERM below
        let org = me["data"]["active_org"]["id"].as_str().expect("operator org").to_string();
        let created: serde_json::Value = client
            .post(format!("{base}/api/v1/orgs/{org}/keys"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": "verifier", "scopes": ["keys:verify"] }))
            .send()
            .await
            .expect("create key")
            .json()
            .await
            .expect("json");
        let key = created["data"]["key"].as_str().expect("key").to_string();
        let burst = (0..40).map(|_| {
            client
                .post(format!("{base}/api/v1/keys/verify"))
                .header("x-api-key", &key)
                .json(&serde_json::json!({ "key": key, "endpoint": "/burst" }))
                .send()
        });
        for response in futures_util::future::join_all(burst).await {
            assert!(response.expect("verify").status().is_success());
        }
        me
    });
    assert!(
        dir.path().join("data/secret.key").exists(),
        "serve generated the instance secret"
    );
    let permissions = result["data"]["permissions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        permissions.iter().any(|p| p == "admin:orgs"),
        "the operator holds instance-wide permissions: {result}"
    );
    assert_eq!(result["data"]["active_org"]["name"], "Operator");

    // a client that starts a request and never finishes it does not hold the stop past
    // shutdown_timeout (2 s here), and the usage is written anyway
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("write");
    std::thread::sleep(Duration::from_millis(200));

    // SIGTERM: a graceful stop, exit code 0
    let stopping = Instant::now();
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop waited {:?} for a client that never finished",
        stopping.elapsed()
    );
    drop(slow);
    // nothing of the burst was lost: the stop wrote the last batch before exiting
    let counted: i64 = runtime.block_on(async {
        let url = format!("sqlite://{}/data/fluxgate.db", dir.path().display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open the database");
        let counted = sqlx::query_scalar(
            "SELECT COALESCE(SUM(count), 0) FROM usage_calls WHERE endpoint = '/burst'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        pool.close().await;
        counted
    });
    assert_eq!(
        counted, 40,
        "40 verifies right before SIGTERM, all attributed"
    );
}
