//! `fluxgate-soak`: the memory of a real `fluxgate serve` process (its resident set, from
//! `/proc`) while it verifies a million distinct unknown keys and half a million distinct real
//! ones, sampled every 100,000 verifies. The server is the binary given, run as its own process
//! on a SQLite database seeded directly; this process only sends requests.

use anyhow::Context;
use clap::Parser;
use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::secret::ExposeSecret;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Resident memory of fluxgate serve under a million distinct keys")]
struct Args {
    /// The `fluxgate` binary to run (build it with `cargo build --release`).
    fluxgate: std::path::PathBuf,
    /// Distinct real keys (seeded into the database) to verify once each.
    #[arg(long, default_value_t = 500_000)]
    real: usize,
    /// Distinct well-formed keys no one issued to verify once each.
    #[arg(long, default_value_t = 1_000_000)]
    unknown: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How many times each real key is verified (the second pass shows the plateau).
    #[arg(long, default_value_t = 2)]
    passes: usize,
    /// Verifies between memory samples.
    #[arg(long, default_value_t = 100_000)]
    sample_every: usize,
}

const PASSWORD: &str = "operator passphrase";

/// A plan without quotas, so every verify of a real key is `VALID`.
const CONFIG: &str =
    "[[plans]]\nname = \"soak\"\nrate_limit = \"1000000000/s\"\nentitlements = []\nquotas = {}\n";

fn fluxgate(binary: &std::path::Path, dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(dir.join("fluxgate.toml"))
        .env("FLUXGATE_DATA_DIR", dir)
        .env("FLUXGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXGATE_LOG_LEVEL", "warn")
        .env("FLUXGATE_AUTH__COOKIE_SECURE", "false")
        .env("FLUXGATE_RATE_LIMITS__IP", "1000000000/min")
        .env("FLUXGATE_RATE_LIMITS__USER", "1000000000/min")
        .env("FLUXGATE_RATE_LIMITS__API_KEY", "1000000000/min");
    command
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("fluxgate.toml"), CONFIG)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bootstrapped = fluxgate(&args.fluxgate, dir.path(), port)
        .args([
            "admin",
            "bootstrap",
            "--email",
            "ops@soak.test",
            "--password",
            PASSWORD,
        ])
        .status()?;
    anyhow::ensure!(bootstrapped.success(), "fluxgate admin bootstrap failed");

    // the real keys, straight into the database, in the operator org
    let seeding = Instant::now();
    let mut table: toml::Table = CONFIG.parse()?;
    table.insert("data_dir".into(), dir.path().display().to_string().into());
    let config = fluxgate_server::config::Config::from_table(&table)
        .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    let store = fluxgate_server::server::open_store(&config).await?;
    let org = store.operator_org_id().await?.context("operator org")?;
    let now = fluxgate_server::clock::now();
    let real = fluxgate_bench::seed::insert_keys(store.as_ref(), &org, args.real, now).await?;
    fluxgate_bench::seed::set_plan(store.as_ref(), &org, "soak", now).await?;
    store.close().await;
    eprintln!("seeded {} keys in {:.0?}", real.len(), seeding.elapsed());
    let unknown: Vec<String> = (0..args.unknown)
        .map(|_| {
            apikey::generate("fg", Environment::Live)
                .expose_secret()
                .to_owned()
        })
        .collect();

    let server = Server(
        fluxgate(&args.fluxgate, dir.path(), port)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "serve never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": "ops@soak.test", "password": PASSWORD }))
        .send()
        .await?
        .json()
        .await?;
    let token = login["data"]["access_token"].as_str().context("login")?;
    let verifier: Value = client
        .post(format!("{base}/orgs/{org}/keys"))
        .bearer_auth(token)
        .json(&json!({ "name": "verifier", "scopes": ["keys:verify"] }))
        .send()
        .await?
        .json()
        .await?;
    let root = Arc::new(
        verifier["data"]["key"]
            .as_str()
            .context("verifier key")?
            .to_owned(),
    );

    println!("| phase | verifies so far | answers | server RSS (MiB) | verifies/s |");
    println!("|---|---|---|---|---|");
    println!("| started | 0 | — | {:.1} | — |", rss_mib(pid)?);
    let mut done = 0usize;
    let mut phases = vec![("unknown".to_owned(), unknown, "NOT_FOUND")];
    for pass in 1..=args.passes {
        phases.push((format!("real, pass {pass}"), real.clone(), "VALID"));
    }
    for (phase, keys, expected) in phases {
        let keys = Arc::new(keys);
        for chunk_start in (0..keys.len()).step_by(args.sample_every) {
            let chunk_end = (chunk_start + args.sample_every).min(keys.len());
            let next = Arc::new(AtomicUsize::new(chunk_start));
            let wrong = Arc::new(AtomicUsize::new(0));
            let chunk_started = Instant::now();
            let workers: Vec<_> = (0..args.connections)
                .map(|_| {
                    let (client, base, root, keys, next, wrong) = (
                        client.clone(),
                        base.clone(),
                        root.clone(),
                        keys.clone(),
                        next.clone(),
                        wrong.clone(),
                    );
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= chunk_end {
                                return;
                            }
                            let answer = client
                                .post(format!("{base}/keys/verify"))
                                .header("x-api-key", root.as_str())
                                .json(&json!({ "key": keys[i] }))
                                .send()
                                .await;
                            let code = match answer {
                                Ok(response) => response
                                    .json::<Value>()
                                    .await
                                    .ok()
                                    .and_then(|v| v["data"]["code"].as_str().map(str::to_owned)),
                                Err(_) => None,
                            };
                            if code.as_deref() != Some(expected) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await?;
            }
            let count = chunk_end - chunk_start;
            done += count;
            let wrong = wrong.load(Ordering::Relaxed);
            let answers = if wrong == 0 {
                format!("all {expected}")
            } else {
                format!("{wrong} not {expected}")
            };
            println!(
                "| {phase} | {done} | {answers} | {:.1} | {:.0} |",
                rss_mib(pid)?,
                count as f64 / chunk_started.elapsed().as_secs_f64()
            );
        }
    }
    drop(server);
    Ok(())
}
