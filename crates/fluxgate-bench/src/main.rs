//! `fluxgate-bench`: starts Fluxgate on loopback (SQLite in a temp dir, or the PostgreSQL named
//! by `--database-url`) and measures scenarios over real HTTP with concurrent keep-alive clients,
//! printing requests/second and latency percentiles as a Markdown table.

use anyhow::Context;
use clap::Parser;
use fluxgate_core::secret::ExposeSecret;
use fluxgate_server::config::Config;
use reqwest::header::HeaderValue;
use reqwest::Client;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The same allocator as the `fluxgate` binary, so the server measured here is the one shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Measure Fluxgate over real HTTP on loopback")]
struct Args {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connections (in-flight requests).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent connections for login (argon2-bound; more only queues).
    #[arg(long, default_value_t = 8)]
    login_connections: usize,
    /// Database to bench against (default: SQLite in a temp dir).
    #[arg(long)]
    database_url: Option<String>,
    /// Only these scenarios (comma-separated): floor, stack, verify, sdk, me, refresh, login,
    /// argon2, limiter.
    #[arg(long)]
    only: Option<String>,
    /// Redis for the limiter scenario's round-trip latency (skipped without it).
    #[arg(long)]
    redis_url: Option<String>,
}

/// Latency samples and a count of one scenario.
struct Outcome {
    name: String,
    connections: usize,
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Outcome {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    fn row(&self) -> String {
        let ok = self.latencies.len();
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.connections,
            ok as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.percentile(0.999).as_secs_f64() * 1000.0,
            self.errors,
        )
    }
}

/// Runs `request` from `connections` concurrent loops for `duration`, after a short warm-up.
async fn drive<F, Fut>(name: &str, connections: usize, duration: Duration, request: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + duration;
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n = worker;
            loop {
                let started = Instant::now();
                if started >= stop_at {
                    break;
                }
                let ok = request(n).await;
                n += connections;
                if started >= warm_until {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort();
    Outcome {
        name: name.into(),
        connections,
        latencies,
        errors,
        elapsed: duration,
    }
}

async fn post(client: &Client, url: &str, body: &Value) -> Option<Value> {
    let response = client.post(url).json(body).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// A bare axum handler returning a constant — the floor any route is compared with — behind
/// `layer` when given; its URL.
async fn start_floor(layer: Option<fluxgate_sdk::KeyAuthLayer>) -> anyhow::Result<reqwest::Url> {
    let mut app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::Json(json!({ "data": { "ok": true } })) }),
    );
    if let Some(layer) = layer {
        app = app.layer(layer);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(reqwest::Url::parse(&format!("http://{addr}/"))?)
}

/// One `GET url` (with `X-API-Key: key` when given); whether it succeeded.
async fn get_ok(client: Client, url: reqwest::Url, key: Option<HeaderValue>) -> bool {
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// The second floor: a bare axum POST handler doing what verify minimally must — parse
/// `{"key": …}`, SHA-256 it, look it up in a hash map of the `keys`, answer JSON — with none of
/// Fluxgate's middleware, authentication of the caller, rate limiting or usage.
async fn start_lookup_floor(keys: &[String]) -> anyhow::Result<reqwest::Url> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    let map: Arc<HashMap<[u8; 32], usize>> = Arc::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| (Sha256::digest(k.as_bytes()).into(), i))
            .collect(),
    );
    #[derive(serde::Deserialize)]
    struct Body {
        key: String,
    }
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |axum::Json(body): axum::Json<Body>| {
            let map = map.clone();
            async move {
                let digest: [u8; 32] = Sha256::digest(body.key.as_bytes()).into();
                let found = map.get(&digest).copied();
                axum::Json(json!({ "data": { "valid": found.is_some(), "code": if found.is_some() { "VALID" } else { "NOT_FOUND" }, "index": found } }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(reqwest::Url::parse(&format!("http://{addr}/"))?)
}

fn argon2_cost(samples: u32) -> anyhow::Result<Duration> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let argon2 = argon2::Argon2::default();
    let started = Instant::now();
    for _ in 0..samples {
        let salt = SaltString::generate(&mut OsRng);
        argon2
            .hash_password(b"benchmark passphrase", &salt)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(started.elapsed() / samples)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wanted = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    let duration = Duration::from_secs(args.duration);
    let dir = tempfile::tempdir()?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/fluxgate.db", dir.path().display()));
    let table: toml::Table = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\nlog_level = \"error\"\n\
         [auth]\nrequire_email_verification = false\ncookie_secure = false\nlockout_threshold = 1000\n\
         [rate_limits]\nip = \"1000000000/min\"\nuser = \"1000000000/min\"\n\
         [[plans]]\nname = \"bench\"\nrate_limit = \"1000000000/s\"\nentitlements = [\"bulk_export\"]\nquotas = {{}}\n",
        dir.path().display(),
        database_url
    )
    .parse()?;
    let config = Config::from_table(&table).map_err(|e| anyhow::anyhow!("{e}"))?;
    let server = fluxgate_server::server::start(config)
        .await
        .context("starting fluxgate")?;
    let base = format!("http://{}/api/v1", server.addr);
    let client = Client::builder().pool_max_idle_per_host(1024).build()?;
    let password = "benchmark passphrase";
    let email = "bench@example.com";
    post(
        &client,
        &format!("{base}/auth/signup"),
        &json!({ "email": email, "password": password, "organization_name": "Bench" }),
    )
    .await
    .context("signup")?;

    println!("| scenario | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    if wanted("floor") {
        let url = start_floor(None).await?;
        let c = client.clone();
        let outcome = drive(
            "bare axum handler (floor)",
            args.connections,
            duration,
            move |_| get_ok(c.clone(), url.clone(), None),
        )
        .await;
        println!("{}", outcome.row());
    }
    if wanted("stack") {
        // GET /healthz through Fluxgate's whole middleware stack: the cost of the stack itself
        let url = reqwest::Url::parse(&format!("http://{}/healthz", server.addr))?;
        let c = client.clone();
        let outcome = drive(
            "GET /healthz (full middleware stack)",
            args.connections,
            duration,
            move |_| get_ok(c.clone(), url.clone(), None),
        )
        .await;
        println!("{}", outcome.row());
    }
    if wanted("verify") || wanted("sdk") {
        let world = key_world(&server, &client, &base).await?;
        if wanted("verify") {
            verify_bench(&server, &client, &base, &world, args.connections, duration).await?;
        }
        if wanted("sdk") {
            let fluxgate = format!("http://{}", server.addr);
            sdk_bench(&client, &fluxgate, &world, args.connections, duration).await?;
        }
    }
    if wanted("me") {
        let tokens = post(
            &client,
            &format!("{base}/auth/login"),
            &json!({ "email": email, "password": password }),
        )
        .await
        .context("login")?;
        let access = tokens["data"]["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (c, url) = (client.clone(), format!("{base}/auth/me"));
        let outcome = drive(
            "GET /auth/me (JWT verify + 3 reads)",
            args.connections,
            duration,
            move |_| {
                let (c, url, access) = (c.clone(), url.clone(), access.clone());
                async move {
                    c.get(&url)
                        .bearer_auth(access)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            },
        )
        .await;
        println!("{}", outcome.row());
    }
    if wanted("refresh") {
        // one session per connection, each refreshing its own chain
        let mut chains = Vec::new();
        for _ in 0..args.connections {
            let tokens = post(
                &client,
                &format!("{base}/auth/login"),
                &json!({ "email": email, "password": password }),
            )
            .await
            .context("login")?;
            chains.push(Arc::new(tokio::sync::Mutex::new(
                tokens["data"]["refresh_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )));
        }
        let chains = Arc::new(chains);
        let (c, url) = (client.clone(), format!("{base}/auth/refresh"));
        let connections = args.connections;
        let outcome = drive(
            "POST /auth/refresh (rotation)",
            args.connections,
            duration,
            move |n| {
                let (c, url, chains) = (c.clone(), url.clone(), chains.clone());
                async move {
                    let chain = chains[n % connections].clone();
                    let mut token = chain.lock().await;
                    match post(&c, &url, &json!({ "refresh_token": *token })).await {
                        Some(v) => {
                            *token = v["data"]["refresh_token"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                            true
                        }
                        None => false,
                    }
                }
            },
        )
        .await;
        println!("{}", outcome.row());
    }
    if wanted("login") {
        let (c, url) = (client.clone(), format!("{base}/auth/login"));
        let outcome = drive(
            "POST /auth/login (argon2id)",
            args.login_connections,
            duration,
            move |_| {
                let (c, url) = (c.clone(), url.clone());
                async move {
                    post(&c, &url, &json!({ "email": email, "password": password }))
                        .await
                        .is_some()
                }
            },
        )
        .await;
        println!("{}", outcome.row());
    }
    if wanted("argon2") {
        let cost = tokio::task::spawn_blocking(|| argon2_cost(20)).await??;
        println!(
            "\nargon2id (m=19456 KiB, t=2, p=1): {:.1} ms per hash on one core",
            cost.as_secs_f64() * 1000.0
        );
    }
    if wanted("limiter") {
        limiter_bench(duration, args.redis_url.as_deref()).await?;
    }
    println!("\nbackend: {}", server.state.store.backend());
    server.stop().await?;
    Ok(())
}

/// Decisions per second of the in-memory limiter over 100k distinct keys from 1 and 2 threads,
/// and the latency of one decision through Redis (sequential, then 64 concurrent).
async fn limiter_bench(duration: Duration, redis_url: Option<&str>) -> anyhow::Result<()> {
    use fluxgate_core::ratelimit::Quota;
    use fluxgate_server::limiter::{Limiter, MemoryLimiter};
    const KEYS: usize = 100_000;
    let keys: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect(),
    );
    let quota = Quota {
        limit: 1000,
        window: 60_000_000_000,
    };
    println!("\n| limiter | threads | decisions/s |\n|---|---|---|");
    for threads in [1usize, 2] {
        let limiter = Arc::new(MemoryLimiter::new(1_000_000));
        let stop_at = Instant::now() + duration;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (limiter, keys) = (limiter.clone(), keys.clone());
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    let mut i = t * 7919;
                    while Instant::now() < stop_at {
                        for _ in 0..1000 {
                            limiter.decide(&keys[i % KEYS], quota, 1, true);
                            i += 1;
                        }
                        n += 1000;
                    }
                    n
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        println!(
            "| memory, {KEYS} keys | {threads} | {:.0} |",
            total as f64 / duration.as_secs_f64()
        );
    }
    let Some(url) = redis_url else {
        println!("\n(Redis latency skipped: pass --redis-url)");
        return Ok(());
    };
    let redis = fluxgate_server::limiter::RedisLimiter::connect(
        url,
        Duration::from_secs(1),
        tokio_util::sync::CancellationToken::new(),
    )?;
    let limiter = Arc::new(
        Limiter::in_memory(1000)
            .with_redis(redis, fluxgate_server::config::RedisFailure::FailClosed),
    );
    for _ in 0..100 {
        if limiter.redis_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(limiter.redis_connected(), "could not reach Redis at {url}");
    for connections in [1usize, 64] {
        let (limiter, keys) = (limiter.clone(), keys.clone());
        let outcome = drive(
            &format!("Redis GCRA decision ({connections} concurrent)"),
            connections,
            duration,
            move |n| {
                let (limiter, keys) = (limiter.clone(), keys.clone());
                async move { limiter.check(&keys[n % KEYS], quota, 1).await.is_ok() }
            },
        )
        .await;
        println!("{}", outcome.row());
    }
    Ok(())
}

/// `POST /keys/verify` with 10,000 keys in the database: warm keys, then a flood of unknown
/// (well-formed) keys.
/// Keys in the verify and SDK scenarios.
const KEYS: usize = 10_000;

/// What the verify and SDK scenarios share: the operator's token, a verifier key, and a customer
/// org on the bench plan with 10,000 keys.
struct KeyWorld {
    ops: String,
    root: String,
    org: String,
    secrets: Vec<String>,
}

/// Bootstraps the operator, issues a verifier key and stores 10,000 customer keys.
async fn key_world(
    server: &fluxgate_server::server::RunningServer,
    client: &Client,
    base: &str,
) -> anyhow::Result<KeyWorld> {
    let state = &server.state;
    fluxgate_server::admin::bootstrap(&state.config, "ops@bench.test", "operator passphrase")
        .await?;
    let ops = post(
        client,
        &format!("{base}/auth/login"),
        &json!({ "email": "ops@bench.test", "password": "operator passphrase" }),
    )
    .await
    .context("operator login")?["data"]["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ops_org = state
        .store
        .operator_org_id()
        .await?
        .context("operator org")?;
    let root = client
        .post(format!("{base}/orgs/{ops_org}/keys"))
        .bearer_auth(&ops)
        .json(&json!({ "name": "verifier", "scopes": ["keys:verify"] }))
        .send()
        .await?
        .json::<Value>()
        .await?["data"]["key"]
        .as_str()
        .context("verifier key")?
        .to_owned();
    let org = client
        .post(format!("{base}/orgs"))
        .bearer_auth(&ops)
        .json(&json!({ "name": "Customer" }))
        .send()
        .await?
        .json::<Value>()
        .await?["data"]["id"]
        .as_str()
        .context("customer org")?
        .parse::<fluxgate_core::ids::OrgId>()?;
    // 10,000 keys straight into the database (as the API would store them)
    let now = fluxgate_server::clock::now();
    let secrets = fluxgate_bench::seed::insert_keys(state.store.as_ref(), &org, KEYS, now).await?;
    state
        .keys
        .sync_known(state.store.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // put the org on the bench plan (no quota, a huge rate) so every warm verify is VALID
    fluxgate_bench::seed::set_plan(state.store.as_ref(), &org, "bench", now).await?;
    Ok(KeyWorld {
        ops,
        root,
        org: org.into(),
        secrets,
    })
}

/// `POST /keys/verify` over raw HTTP: the lookup floor, warm keys with and without attribution,
/// unknown keys; and `POST /sdk/track`.
async fn verify_bench(
    server: &fluxgate_server::server::RunningServer,
    client: &Client,
    base: &str,
    world: &KeyWorld,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let state = &server.state;
    let KeyWorld {
        ops,
        root,
        org,
        secrets,
    } = world;
    // requests prepared up front (parsed URL, header, bodies) so the client spends its share of
    // the two cores on HTTP, as a product backend's client would
    let url = reqwest::Url::parse(&format!("{base}/keys/verify"))?;
    let root = HeaderValue::from_str(root)?;
    let bodies = |keys: &[String]| -> Arc<Vec<bytes::Bytes>> {
        Arc::new(
            keys.iter()
                .map(|k| bytes::Bytes::from(format!("{{\"key\":\"{k}\"}}")))
                .collect(),
        )
    };
    let verify_once = |c: Client,
                       url: reqwest::Url,
                       root: HeaderValue,
                       body: bytes::Bytes,
                       expect: &'static [u8]| async move {
        match c
            .post(url)
            .header("x-api-key", root)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r
                .bytes()
                .await
                .map(|b| b.windows(expect.len()).any(|w| w == expect))
                .unwrap_or(false),
            _ => false,
        }
    };
    let known = bodies(secrets);
    let lookup_floor = start_lookup_floor(secrets).await?;
    let (c, u, r, k) = (client.clone(), lookup_floor, root.clone(), known.clone());
    let outcome = drive(
        "bare POST: JSON + SHA-256 + map lookup (floor)",
        connections,
        duration,
        move |n| {
            verify_once(
                c.clone(),
                u.clone(),
                r.clone(),
                k[n % KEYS].clone(),
                b"\"VALID\"",
            )
        },
    )
    .await;
    println!("{}", outcome.row());
    // warm every key once
    for chunk in known.chunks(256) {
        let calls: Vec<_> = chunk
            .iter()
            .map(|b| {
                verify_once(
                    client.clone(),
                    url.clone(),
                    root.clone(),
                    b.clone(),
                    b"\"VALID\"",
                )
            })
            .collect();
        for call in calls {
            call.await;
        }
    }
    let (c, u, r, k) = (client.clone(), url.clone(), root.clone(), known.clone());
    let outcome = drive(
        "POST /keys/verify, warm (10k keys)",
        connections,
        duration,
        move |n| {
            verify_once(
                c.clone(),
                u.clone(),
                r.clone(),
                k[n % KEYS].clone(),
                b"\"VALID\"",
            )
        },
    )
    .await;
    println!("{}", outcome.row());
    state.usage.set_attribution(false);
    let (c, u, r, k) = (client.clone(), url.clone(), root.clone(), known.clone());
    let outcome = drive(
        "POST /keys/verify, warm, attribution off",
        connections,
        duration,
        move |n| {
            verify_once(
                c.clone(),
                u.clone(),
                r.clone(),
                k[n % KEYS].clone(),
                b"\"VALID\"",
            )
        },
    )
    .await;
    println!("{}", outcome.row());
    state.usage.set_attribution(true);
    track_bench(client, base, ops, org, connections, duration).await?;
    let invented: Vec<String> = (0..KEYS)
        .map(|_| {
            fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live)
                .expose_secret()
                .to_owned()
        })
        .collect();
    let unknown = bodies(&invented);
    let (c, u, r) = (client.clone(), url.clone(), root.clone());
    let outcome = drive(
        "POST /keys/verify, unknown keys",
        connections,
        duration,
        move |n| {
            verify_once(
                c.clone(),
                u.clone(),
                r.clone(),
                unknown[n % KEYS].clone(),
                b"\"NOT_FOUND\"",
            )
        },
    )
    .await;
    println!("{}", outcome.row());
    Ok(())
}

/// `POST /sdk/track` ingestion: single events, and batches of 100, with a `usage:write` key.
async fn track_bench(
    client: &Client,
    base: &str,
    ops: &str,
    org: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let writer = client
        .post(format!("{base}/orgs/{org}/keys"))
        .bearer_auth(ops)
        .json(&json!({ "name": "meter", "scopes": ["usage:write"] }))
        .send()
        .await?
        .json::<Value>()
        .await?["data"]["key"]
        .as_str()
        .context("usage key")?
        .to_owned();
    let url = reqwest::Url::parse(&format!("{base}/sdk/track"))?;
    let writer = HeaderValue::from_str(&writer)?;
    for batch in [1usize, 100] {
        let body = if batch == 1 {
            json!({ "meter": "tokens", "org_id": org, "quantity": 1.5 })
        } else {
            json!({ "events": (0..batch).map(|_| json!({ "meter": "tokens", "org_id": org, "quantity": 1.5 })).collect::<Vec<_>>() })
        };
        let body = bytes::Bytes::from(body.to_string());
        let (c, u, w) = (client.clone(), url.clone(), writer.clone());
        let outcome = drive(
            &format!("POST /sdk/track, {batch} event(s) per request"),
            connections,
            duration,
            move |_| {
                let (c, u, w, b) = (c.clone(), u.clone(), w.clone(), body.clone());
                async move {
                    c.post(u)
                        .header("x-api-key", w)
                        .header("content-type", "application/json")
                        .body(b)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            },
        )
        .await;
        println!(
            "{}  ≈ {:.0} events/s",
            outcome.row(),
            outcome.latencies.len() as f64 * batch as f64 / duration.as_secs_f64()
        );
    }
    Ok(())
}

/// The SDK: `keys().verify()` through one client (one connection pool), and the tower layer's
/// cost per request in front of a bare handler — with its one-second cache over 100 customers'
/// keys, and with the cache off (every request verified).
async fn sdk_bench(
    client: &Client,
    fluxgate: &str,
    world: &KeyWorld,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    use fluxgate_sdk::{Flux, KeyAuthLayer};
    let flux = Flux::builder(&world.root).base_url(fluxgate).build();
    let (f, k) = (flux.clone(), Arc::new(world.secrets.clone()));
    let outcome = drive(
        "SDK keys().verify(), one client (10k keys)",
        connections,
        duration,
        move |n| {
            let (f, k) = (f.clone(), k.clone());
            async move { f.keys().verify(&k[n % KEYS]).await.is_ok() }
        },
    )
    .await;
    println!("{}", outcome.row());

    let customers: Arc<Vec<HeaderValue>> = Arc::new(
        world.secrets[..100]
            .iter()
            .filter_map(|k| HeaderValue::from_str(k).ok())
            .collect(),
    );
    let scenarios = [
        ("bare axum handler (floor)", None),
        (
            "same handler behind KeyAuthLayer, 1 s cache, 100 keys",
            Some(KeyAuthLayer::new(flux.clone())),
        ),
        (
            "same handler behind KeyAuthLayer, no cache, 100 keys",
            Some(KeyAuthLayer::new(flux.clone()).cache_for(Duration::ZERO)),
        ),
    ];
    for (name, layer) in scenarios {
        let url = start_floor(layer).await?;
        let (c, k) = (client.clone(), customers.clone());
        let outcome = drive(name, connections, duration, move |n| {
            get_ok(c.clone(), url.clone(), Some(k[n % k.len()].clone()))
        })
        .await;
        println!("{}", outcome.row());
    }
    Ok(())
}
