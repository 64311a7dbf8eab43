//! A Fluxgate instance under measurement: its config file and data directory, its database
//! (SQLite there, or a fresh PostgreSQL database dropped afterwards), and `fluxgate serve`
//! processes started from the real binary — this process only seeds the store and sends
//! requests.

use anyhow::Context;
use fluxgate_store::Store;
use serde_json::{json, Value};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator's password in every bench instance.
pub const PASSWORD: &str = "operator passphrase";
/// The operator's email in every bench instance.
pub const OPERATOR: &str = "ops@bench.test";

/// A plan without quotas and with a limit no run reaches, so every verify of a real key on it
/// answers `VALID` — a run that measured refusals would not be a verify figure.
pub const BENCH_PLAN: &str = "bench";

/// One Fluxgate instance: config, data directory and database, shared by its nodes.
pub struct Instance {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// A PostgreSQL database made for this instance, dropped with it: (server URL, name).
    postgres: Option<(String, String)>,
    config: toml::Table,
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}

impl Instance {
    /// Writes the config (the bench plan, loopback defaults, `extra` TOML on top) and, when
    /// `postgres` names a server, creates a fresh database on it.
    pub async fn create(
        binary: &Path,
        postgres: Option<&str>,
        redis_url: Option<&str>,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config: toml::Table = format!(
            r#"
            data_dir = "{dir}"
            log_level = "warn"
            [auth]
            cookie_secure = false
            require_email_verification = false
            [rate_limits]
            ip = "1000000000/min"
            user = "1000000000/min"
            api_key = "1000000000/min"
            [[plans]]
            name = "{BENCH_PLAN}"
            rate_limit = "1000000000/s"
            entitlements = []
            quotas = {{}}
            "#,
            dir = dir.path().display()
        )
        .parse()?;
        let postgres = match postgres {
            Some(server) => {
                let name = format!("fgbench_{}", ulid::Ulid::new().to_string().to_lowercase());
                let mut admin = sqlx::PgConnection::connect(server).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                config.insert("database_url".into(), with_database(server, &name).into());
                Some((server.to_owned(), name))
            }
            None => None,
        };
        if let Some(redis) = redis_url {
            config.insert("redis_url".into(), redis.into());
        }
        config.extend(extra.parse::<toml::Table>()?);
        std::fs::write(dir.path().join("fluxgate.toml"), toml::to_string(&config)?)?;
        let instance = Self {
            binary: binary.to_owned(),
            dir,
            postgres,
            config,
        };
        let migrated = instance
            .command()
            .arg("migrate")
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(migrated.success(), "fluxgate migrate failed");
        let bootstrapped = instance
            .command()
            .args([
                "admin",
                "bootstrap",
                "--email",
                OPERATOR,
                "--password",
                PASSWORD,
            ])
            .status()?;
        anyhow::ensure!(bootstrapped.success(), "fluxgate admin bootstrap failed");
        Ok(instance)
    }

    /// `fluxgate --config <this instance's>` (listening on a port chosen by [`Self::serve`]).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(self.dir.path().join("fluxgate.toml"));
        command
    }

    /// The instance's database URL.
    pub fn database_url(&self) -> anyhow::Result<String> {
        let config = fluxgate_server::config::Config::from_table(&self.config)
            .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        Ok(config.database_url)
    }

    /// The instance's store, opened from this process (for seeding).
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let config = fluxgate_server::config::Config::from_table(&self.config)
            .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        fluxgate_server::server::open_store(&config).await
    }

    /// Starts a `fluxgate serve` node on a free port and waits until it is ready.
    pub async fn serve(&self) -> anyhow::Result<Node> {
        self.serve_under(&[]).await
    }

    /// [`Self::serve`], the process started through `wrapper` (a program and its arguments,
    /// e.g. valgrind's) when it is not empty.
    pub async fn serve_under(&self, wrapper: &[String]) -> anyhow::Result<Node> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut wrapped = Command::new(program);
                let plain = self.command();
                wrapped
                    .args(args)
                    .arg(plain.get_program())
                    .args(plain.get_args());
                wrapped
            }
            None => self.command(),
        };
        let child = command
            .arg("serve")
            .env("FLUXGATE_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            // valgrind's own report would drown the bench's
            .stderr(if wrapper.is_empty() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()?;
        let mut node = Node {
            child,
            port,
            ready_after: Duration::ZERO,
        };
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("{}/readyz", node.origin()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "serve never got ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.ready_after = started.elapsed();
        Ok(node)
    }

    /// Drops the PostgreSQL database made for this instance (SQLite goes with the directory).
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Some((server, name)) = &self.postgres {
            let mut admin = sqlx::PgConnection::connect(server).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
        }
        Ok(())
    }
}

/// A running `fluxgate serve` process, killed when dropped.
pub struct Node {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// From spawning the process to its first ready `/readyz`.
    pub ready_after: Duration,
}

impl Node {
    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its resident memory, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        rss_mib(self.child.id())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // the kernel reports in clock ticks of 1/100 s on Linux (USER_HZ)
    Ok(Duration::from_millis(ticks * 10))
}

/// The operator, signed in through `origin`'s API: an access token and the operator org's id.
pub async fn operator(client: &reqwest::Client, origin: &str) -> anyhow::Result<(String, String)> {
    let login: Value = client
        .post(format!("{origin}/api/v1/auth/login"))
        .json(&json!({ "email": OPERATOR, "password": PASSWORD }))
        .send()
        .await?
        .json()
        .await?;
    let token = login["data"]["access_token"]
        .as_str()
        .context("operator login")?
        .to_owned();
    let orgs: Value = client
        .get(format!("{origin}/api/v1/orgs"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let org = orgs["data"][0]["id"]
        .as_str()
        .context("operator org")?
        .to_owned();
    Ok((token, org))
}

/// The operator signed in through `origin`'s API and a key it issued with `keys:verify`: the
/// operator's access token and the verifier key.
pub async fn verifier(client: &reqwest::Client, origin: &str) -> anyhow::Result<(String, String)> {
    let (token, org) = operator(client, origin).await?;
    let key = issue_key(
        client,
        origin,
        &token,
        &org,
        json!({ "name": "verifier", "scopes": ["keys:verify"] }),
    )
    .await?;
    Ok((token, key))
}

/// Issues a key in `org` through the API; its secret.
pub async fn issue_key(
    client: &reqwest::Client,
    origin: &str,
    token: &str,
    org: &str,
    body: Value,
) -> anyhow::Result<String> {
    let issued: Value = client
        .post(format!("{origin}/api/v1/orgs/{org}/keys"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    Ok(issued["data"]["key"]
        .as_str()
        .with_context(|| format!("issue key: {issued}"))?
        .to_owned())
}
