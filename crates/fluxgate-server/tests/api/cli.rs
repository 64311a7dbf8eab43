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

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    listener.local_addr().expect("addr").port()
}

/// `fluxgate serve` on `port` over the SQLite database under `dir`, output discarded.
fn spawn_serve(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> std::process::Child {
    let mut command = fluxgate(dir);
    command
        .arg("serve")
        .env("FLUXGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXGATE_AUTH__COOKIE_SECURE", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("serve")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs the bootstrapped operator in; `(who am I, a new keys:verify key)`.
async fn operator_verifier(client: &reqwest::Client, base: &str) -> (serde_json::Value, String) {
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "email": "ops@example.com", "password": "operator passphrase" }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["data"]["access_token"]
        .as_str()
        .expect("operator logs in")
        .to_owned();
    let me: serde_json::Value = client
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let org = me["data"]["active_org"]["id"]
        .as_str()
        .expect("operator org")
        .to_owned();
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
    (me, created["data"]["key"].as_str().expect("key").to_owned())
}

/// `n` concurrent verifies of `key` (by itself) attributed to the endpoint `/burst`, all answered.
async fn burst(client: &reqwest::Client, base: &str, key: &str, n: usize) {
    let calls = (0..n).map(|_| {
        client
            .post(format!("{base}/api/v1/keys/verify"))
            .header("x-api-key", key)
            .json(&serde_json::json!({ "key": key, "endpoint": "/burst" }))
            .send()
    });
    for response in futures_util::future::join_all(calls).await {
        assert!(response.expect("verify").status().is_success());
    }
}

/// The `/burst` calls written to the SQLite database under `dir`.
async fn burst_calls_written(dir: &std::path::Path) -> i64 {
    let url = format!("sqlite://{}/data/fluxgate.db", dir.display());
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
}

fn bootstrap(dir: &std::path::Path, email: &str) -> std::process::Output {
    fluxgate(dir)
        .args([
            "admin",
            "bootstrap",
            "--email",
            email,
            "--password",
            "operator passphrase",
        ])
        .output()
        .expect("run")
}

/// `kill -9` loses at most about a second of answered calls: two bursts seven seconds apart,
/// the process killed 1.5 s after the second, and every call of both is in the database.
#[test]
fn a_killed_server_loses_at_most_the_last_second_of_usage() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    assert!(bootstrap(dir.path(), "ops@example.com").status.success());
    let mut server = spawn_serve(dir.path(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        wait_ready(&client, &base).await;
        let (_, key) = operator_verifier(&client, &base).await;
        burst(&client, &base, &key, 300).await;
        tokio::time::sleep(Duration::from_secs(7)).await;
        burst(&client, &base, &key, 300).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    server.kill().expect("kill -9");
    server.wait().expect("reaped");
    let written = runtime.block_on(burst_calls_written(dir.path()));
    assert_eq!(
        written, 600,
        "calls answered more than a second before the kill were lost"
    );
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
    let port = free_port();
    let first = bootstrap(dir.path(), "ops@example.com");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        dir.path().join("data/fluxgate.db").exists(),
        "SQLite file under ./data"
    );
    let again = bootstrap(dir.path(), "ops2@example.com");
    assert!(!again.status.success(), "a second bootstrap must fail");
    assert!(fluxgate(dir.path())
        .arg("migrate")
        .output()
        .expect("run")
        .status
        .success());

    let mut server = spawn_serve(
        dir.path(),
        port,
        &[
            ("FLUXGATE_SHUTDOWN_TIMEOUT", "2s"),
            ("FLUXGATE_HEADER_READ_TIMEOUT", "60s"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let me = runtime.block_on(async {
        let client = reqwest::Client::new();
        wait_ready(&client, &base).await;
        // a verifier key and a burst of verifies right before the SIGTERM below
        let (me, key) = operator_verifier(&client, &base).await;
        burst(&client, &base, &key, 40).await;
        me
    });
    assert!(
        dir.path().join("data/secret.key").exists(),
        "serve generated the instance secret"
    );
    let permissions = me["data"]["permissions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        permissions.iter().any(|p| p == "admin:orgs"),
        "the operator holds instance-wide permissions: {me}"
    );
    assert_eq!(me["data"]["active_org"]["name"], "Operator");

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
    let counted = runtime.block_on(burst_calls_written(dir.path()));
    assert_eq!(
        counted, 40,
        "40 verifies right before SIGTERM, all attributed"
    );
}
