//! `fluxgate-bench`: verify measured by an external load generator (`wrk`) against the real
//! `fluxgate serve` binary, beside two floors measured in the same run by the same generator —
//! bare axum answering a constant, and the least a key verify can do — reported as ratios.

use anyhow::Context;
use clap::Parser;
use fluxgate_bench::callgrind;
use fluxgate_bench::node::{self, Instance, BENCH_PLAN};
use fluxgate_bench::wrk::{self, Load, Measured, Requests};
use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::secret::ExposeSecret;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Verify measured with wrk beside bare-axum floors, as ratios")]
struct Args {
    /// The `fluxgate` binary (build with `cargo build --release`).
    #[arg(long, default_value = "target/release/fluxgate")]
    fluxgate: PathBuf,
    /// Distinct warm keys the load cycles over (and as many unknown and malformed ones).
    #[arg(long, default_value_t = 2_000)]
    keys: usize,
    /// Keys in the database in all (at least `--keys`), seeded straight into the store.
    #[arg(long)]
    stored: Option<usize>,
    /// A PostgreSQL server to make a fresh database on (default: SQLite in a temp dir).
    #[arg(long)]
    postgres: Option<String>,
    /// Redis for the shared limiter and announcements (the multi-node configuration).
    #[arg(long)]
    redis: Option<String>,
    /// Seconds each row runs.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How many times the rows are measured, in turn (the table shows each round).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Instead of the verify table: for each of these key counts (comma-separated) a fresh
    /// instance with that many keys stored, measured for time to ready, memory, the first
    /// verify of cold keys and warm throughput.
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
    /// Instead of the verify table: `GET /auth/me` (a bearer access token) and `POST
    /// /auth/login` beside the `GET` floor.
    #[arg(long)]
    auth: bool,
    /// Instead of the verify table: warm verify on SQLite + memory (one node) beside
    /// PostgreSQL + Redis (`--postgres`, `--redis`) on one node and on two nodes of one
    /// instance loaded at once, with the Redis round trips each verify cost.
    #[arg(long)]
    cluster: bool,
    /// Instead of the verify table: warm verify by `--fluxgate` and by this other build of it,
    /// each on its own SQLite instance, measured in interleaved order round by round beside the
    /// `POST` floor (an A/B on a noisy machine).
    #[arg(long)]
    against: Option<PathBuf>,
    /// Instead of the verify table: instructions per warm verify (and per minimal `POST` of the
    /// floor), counted by valgrind's callgrind in each server run under it — for `--fluxgate`
    /// and, with `--against`, the other build too. Exact where throughput is noisy; the kernel's
    /// share is not in it.
    #[arg(long)]
    instructions: bool,
    /// Instead of the verify table: the same A/B with one build, B's instance having 50 feature
    /// flags defined (5 of them on for the keys' org) — what flags cost a warm verify.
    #[arg(long)]
    flags_ab: bool,
}

impl Args {
    fn load(&self) -> Load {
        Load {
            threads: self.threads,
            connections: self.connections,
            duration: Duration::from_secs(self.seconds),
        }
    }

    /// A fresh instance on the database (and Redis) the flags name.
    async fn instance(&self) -> anyhow::Result<Instance> {
        Instance::create(
            &self.fluxgate,
            self.postgres.as_deref(),
            self.redis.as_deref(),
            "",
        )
        .await
    }

    fn database(&self) -> &'static str {
        if self.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// One row of the table.
struct Row {
    name: String,
    measured: Measured,
    /// Server CPU time (user + system) per request answered.
    cpu_per_request: Duration,
}

/// The floor server, killed when dropped; answers on `origin`.
struct Floor {
    child: Child,
    origin: String,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_floor(keys: &Path) -> anyhow::Result<Floor> {
    start_floor_under(keys, &[])
}

/// [`start_floor`] through `wrapper` (a program and its arguments) when it is not empty.
fn start_floor_under(keys: &Path, wrapper: &[String]) -> anyhow::Result<Floor> {
    let binary = std::env::current_exe()?
        .parent()
        .context("bench directory")?
        .join("fluxgate-floor");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&binary).stderr(Stdio::null());
            command
        }
        None => Command::new(&binary),
    };
    let mut child = command
        .arg("--keys")
        .arg(keys)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("floor stdout")?).read_line(&mut line)?;
    Ok(Floor {
        child,
        origin: format!("http://{}", line.trim()),
    })
}

/// Writes a verify body for each key (`{"key", "endpoint"}`) to `dir/name`, for wrk to cycle
/// over.
fn verify_bodies(dir: &Path, name: &str, keys: &[String]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    wrk::write_bodies(
        &path,
        keys.iter()
            .map(|key| json!({ "key": key, "endpoint": "/bench" }).to_string()),
    )?;
    Ok(path)
}

/// The headers of a verify call by `verifier`.
fn verify_headers(verifier: &str) -> [(&'static str, &str); 2] {
    [
        ("content-type", "application/json"),
        ("x-api-key", verifier),
    ]
}

/// Verifies a few keys one by one and checks the code each answers.
async fn check_sample(
    client: &reqwest::Client,
    origin: &str,
    verifier: &str,
    keys: &[String],
    expected: &str,
) -> anyhow::Result<()> {
    for key in keys.iter().step_by((keys.len() / 20).max(1)) {
        let answer: Value = client
            .post(format!("{origin}/api/v1/keys/verify"))
            .header("x-api-key", verifier)
            .json(&json!({ "key": key }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            answer["data"]["code"] == expected,
            "a sampled key answered {answer}, not {expected}: the run measured the wrong thing"
        );
    }
    Ok(())
}

/// Runs one row against the processes `pids` (one URL each, loaded at once) and notes their
/// CPU time per request; fails on any answer other than 2xx (a run that measured refusals is
/// not the figure it claims).
fn measure(
    name: &str,
    pids: &[u32],
    load: Load,
    urls: &[&str],
    headers: &[(&str, &str)],
    requests: Requests<'_>,
    scripts: &Path,
) -> anyhow::Result<Row> {
    let cpu = || -> anyhow::Result<Duration> { pids.iter().map(|pid| node::cpu_time(*pid)).sum() };
    let cpu_before = cpu()?;
    let measured = wrk::run_together(load, urls, headers, requests, scripts)?;
    let cpu = cpu()?.saturating_sub(cpu_before);
    anyhow::ensure!(
        measured.non_2xx == 0 && measured.socket_errors == 0,
        "{name}: {} non-2xx answers and {} socket errors",
        measured.non_2xx,
        measured.socket_errors
    );
    let answered = (measured.rps * load.duration.as_secs_f64()).max(1.0);
    Ok(Row {
        name: name.to_owned(),
        measured,
        cpu_per_request: cpu.div_f64(answered),
    })
}

/// Each row's medians over the rounds (each column on its own).
fn median_rows(rounds: &[Vec<Row>]) -> Vec<Row> {
    (0..rounds.first().map_or(0, Vec::len))
        .map(|i| {
            let column = |f: &dyn Fn(&Row) -> f64| median(rounds.iter().map(|r| f(&r[i])));
            Row {
                name: rounds[0][i].name.clone(),
                measured: Measured {
                    rps: column(&|r| r.measured.rps),
                    p50: Duration::from_secs_f64(column(&|r| r.measured.p50.as_secs_f64())),
                    p99: Duration::from_secs_f64(column(&|r| r.measured.p99.as_secs_f64())),
                    ..Measured::default()
                },
                cpu_per_request: Duration::from_secs_f64(column(&|r| {
                    r.cpu_per_request.as_secs_f64()
                })),
            }
        })
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One table: each row beside the floor row `floor` (named `floor_name` in the header).
fn print_table(rows: &[Row], floor: usize, floor_name: &str) {
    let floor = &rows[floor].measured;
    println!("| row | req/s | p50 | p99 | req/s vs {floor_name} | p99 vs {floor_name} | server CPU per request |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        let m = &row.measured;
        println!(
            "| {} | {:.0} | {} | {} | {:.1} % | {:.2}× | {:.1} µs |",
            row.name,
            m.rps,
            ms(m.p50),
            ms(m.p99),
            m.rps / floor.rps * 100.0,
            m.p99.as_secs_f64() / floor.p99.as_secs_f64().max(1e-9),
            row.cpu_per_request.as_secs_f64() * 1e6
        );
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.scale.is_empty() {
        return scale(&args).await;
    }
    if args.auth {
        return auth(&args).await;
    }
    if args.cluster {
        return cluster(&args).await;
    }
    if args.instructions {
        return instructions(&args).await;
    }
    if let Some(other) = &args.against {
        return against(&args, other, false).await;
    }
    if args.flags_ab {
        return against(&args, &args.fluxgate, true).await;
    }
    let load = args.load();
    let instance = args.instance().await?;
    let stored = args.stored.unwrap_or(args.keys).max(args.keys);
    let warm = seeded(&instance, args.keys, stored).await?;
    let metered = with_credits(&instance, args.keys, false).await?;
    let limited = with_credits(&instance, args.keys, true).await?;
    let unknown: Vec<String> = (0..args.keys)
        .map(|_| {
            apikey::generate("fg", Environment::Live)
                .expose_secret()
                .to_owned()
        })
        .collect();
    let malformed: Vec<String> = (0..args.keys).map(|i| format!("not-a-key-{i}")).collect();

    let scripts = tempfile::tempdir()?;
    let warm_bodies = verify_bodies(scripts.path(), "warm.txt", &warm)?;
    let unknown_bodies = verify_bodies(scripts.path(), "unknown.txt", &unknown)?;
    let malformed_bodies = verify_bodies(scripts.path(), "malformed.txt", &malformed)?;
    let metered_bodies = verify_bodies(scripts.path(), "metered.txt", &metered)?;
    let limited_bodies = limited_bodies(scripts.path(), "limited.txt", &limited)?;
    let key_list = scripts.path().join("keys.txt");
    std::fs::write(&key_list, warm.join("\n"))?;

    let node = instance.serve().await?;
    let origin = node.origin();
    let client = reqwest::Client::new();
    let (_, verifier) = node::verifier(&client, &origin).await?;
    let floor = start_floor(&key_list)?;
    let verify_url = format!("{origin}/api/v1/keys/verify");
    let headers = verify_headers(&verifier);
    let warm_up = load.warm_up();
    for bodies in [
        &warm_bodies,
        &unknown_bodies,
        &metered_bodies,
        &limited_bodies,
    ] {
        wrk::run(
            warm_up,
            &verify_url,
            &headers,
            Requests::PostEach(bodies),
            scripts.path(),
        )?;
    }

    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for _ in 0..args.rounds {
        let mut rows = Vec::new();
        let mut row = |name: &str, pid: u32, url: &str, requests: Requests<'_>| {
            measure(
                name,
                &[pid],
                load,
                &[url],
                &headers,
                requests,
                scripts.path(),
            )
            .map(|measured| rows.push(measured))
        };
        row(
            "floor: bare axum `GET` returning a constant",
            floor.child.id(),
            &format!("{}/constant", floor.origin),
            Requests::Get,
        )?;
        row(
            "floor: bare axum `POST` — parse `{\"key\"}`, SHA-256, `HashMap` lookup, JSON answer",
            floor.child.id(),
            &format!("{}/verify", floor.origin),
            Requests::PostEach(&warm_bodies),
        )?;
        row(
            "Fluxgate `POST /api/v1/keys/verify`, warm keys",
            node.pid(),
            &verify_url,
            Requests::PostEach(&warm_bodies),
        )?;
        // right after, the same warm keys with 50 feature flags defined, 5 of them on for the
        // keys' org (every node rereads them within half a second; each key derives its
        // answer once), then the flags go again
        flags(&instance, FLAGS, true).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        row(
            "Fluxgate verify, warm keys, 50 feature flags defined (5 on for the org)",
            node.pid(),
            &verify_url,
            Requests::PostEach(&warm_bodies),
        )?;
        flags(&instance, FLAGS, false).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        row(
            "Fluxgate verify, unknown keys",
            node.pid(),
            &verify_url,
            Requests::PostEach(&unknown_bodies),
        )?;
        row(
            "Fluxgate verify, malformed keys",
            node.pid(),
            &verify_url,
            Requests::PostEach(&malformed_bodies),
        )?;
        row(
            "Fluxgate verify, warm keys with usage credits (one `UPDATE` each)",
            node.pid(),
            &verify_url,
            Requests::PostEach(&metered_bodies),
        )?;
        row(
            "Fluxgate verify, warm keys with usage credits and two named limits spent",
            node.pid(),
            &verify_url,
            Requests::PostEach(&limited_bodies),
        )?;
        rounds.push(rows);
    }
    check_sample(&client, &origin, &verifier, &warm, "VALID").await?;
    check_sample(&client, &origin, &verifier, &unknown, "NOT_FOUND").await?;
    check_sample(&client, &origin, &verifier, &malformed, "MALFORMED").await?;
    check_sample(&client, &origin, &verifier, &metered, "VALID").await?;
    check_sample(&client, &origin, &verifier, &limited, "VALID").await?;

    let database = args.database();
    let limiter = if args.redis.is_some() {
        "Redis"
    } else {
        "memory"
    };
    println!(
        "{database} + {limiter} limiter, {} warm keys of {stored} stored; wrk -t{} -c{} -d{}s",
        args.keys, args.threads, args.connections, args.seconds
    );
    for (round, rows) in rounds.iter().enumerate() {
        println!("\nround {}\n", round + 1);
        print_table(rows, 1, "POST floor");
    }
    if rounds.len() > 1 {
        println!(
            "\nmedian of {} rounds (each column's median on its own)\n",
            rounds.len()
        );
        let medians = median_rows(&rounds);
        print_table(&medians, 1, "POST floor");
        println!("\nper-round ratio of warm verify to the POST floor: {}", {
            let ratios: Vec<String> = rounds
                .iter()
                .map(|r| format!("{:.1} %", r[2].measured.rps / r[1].measured.rps * 100.0))
                .collect();
            ratios.join(", ")
        });
    }
    drop(floor);
    drop(node);
    instance.remove().await?;
    Ok(())
}

/// Seeds `stored` keys into `instance` on the bench plan; the first `warm` of them.
async fn seeded(instance: &Instance, warm: usize, stored: usize) -> anyhow::Result<Vec<String>> {
    let store = instance.open_store().await?;
    let org = store.operator_org_id().await?.context("operator org")?;
    let now = fluxgate_server::clock::now();
    eprintln!("seeding {stored} keys");
    let extras = fluxgate_bench::seed::Extras::default();
    let mut keys =
        fluxgate_bench::seed::insert_keys(store.as_ref(), &org, stored.max(warm), &extras, now)
            .await?;
    fluxgate_bench::seed::set_plan(store.as_ref(), &org, BENCH_PLAN, now).await?;
    store.close().await;
    keys.truncate(warm);
    Ok(keys)
}

/// Seeds `count` more keys with more usage credits than a run can spend, and with two named
/// limits too when `named`; their secrets.
async fn with_credits(
    instance: &Instance,
    count: usize,
    named: bool,
) -> anyhow::Result<Vec<String>> {
    let store = instance.open_store().await?;
    let org = store.operator_org_id().await?.context("operator org")?;
    let now = fluxgate_server::clock::now();
    let extras = fluxgate_bench::seed::Extras {
        credits: Some(1 << 40),
        named_limits: named.then(|| {
            json!([{ "name": "tokens", "limit": 1_000_000_000, "window_seconds": 3600 },
                   { "name": "images", "limit": 1_000_000_000, "window_seconds": 3600 }])
            .to_string()
        }),
    };
    let keys = fluxgate_bench::seed::insert_keys(store.as_ref(), &org, count, &extras, now).await?;
    store.close().await;
    Ok(keys)
}

/// Feature flags the verify table defines for one row.
const FLAGS: usize = 50;
/// How many of them are on for the benchmark's org.
const FLAGS_ON: usize = 5;

/// Defines (`on`) or deletes the benchmark's `count` feature flags.
async fn flags(instance: &Instance, count: usize, on: bool) -> anyhow::Result<()> {
    let store = instance.open_store().await?;
    let org = store.operator_org_id().await?.context("operator org")?;
    let now = fluxgate_server::clock::now();
    if on {
        fluxgate_bench::seed::define_flags(store.as_ref(), &org, count, FLAGS_ON, now).await?;
    } else {
        fluxgate_bench::seed::delete_flags(store.as_ref(), count, now).await?;
    }
    store.close().await;
    Ok(())
}

/// Verify bodies that also spend the two named limits of [`with_credits`]' keys.
fn limited_bodies(dir: &Path, name: &str, keys: &[String]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    wrk::write_bodies(
        &path,
        keys.iter().map(|key| {
            json!({ "key": key, "endpoint": "/bench",
                    "ratelimits": [{ "name": "tokens", "cost": 100 }, { "name": "images" }] })
            .to_string()
        }),
    )?;
    Ok(path)
}

/// The Redis round trips the rate limiters of `nodes` have made together, from their metrics.
async fn redis_round_trips(client: &reqwest::Client, nodes: &[&node::Node]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for node in nodes {
        let text = client
            .get(format!("{}/metrics", node.origin()))
            .send()
            .await?
            .text()
            .await?;
        total += text
            .lines()
            .find_map(|line| line.strip_prefix("fluxgate_ratelimit_redis_round_trips_total "))
            .context("no round-trip counter in the metrics")?
            .trim()
            .parse::<f64>()
            .context("round-trip counter")?;
    }
    Ok(total)
}

/// `--against`: two builds of the binary, A (`--fluxgate`) and B, on instances of their own;
/// each round measures the floor, then A and B in an order that alternates from round to round.
/// `flagged` (`--flags-ab`): B is the same build with feature flags defined on its instance.
/// What the instruction counts are split by: SHA-256, which valgrind runs in software (the CPU
/// has SHA instructions, so outside valgrind it costs a fraction of this).
const SHA256: &str = "sha2::sha256::compress256";

/// Where hyper serves one connection — reading, answering and writing its requests — in every
/// server measured (whichever of these the build did not inline).
const CONNECTION: &str = "hyper_util::server::conn::auto::UpgradeableConnection<I,S,E> as core::future::future::Future>::poll|hyper::server::conn::http1::UpgradeableConnection<I,S> as core::future::future::Future>::poll|hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch";

/// One server counted by callgrind: requests answered, instructions in all (background work
/// such as the usage flush included: it is per second, not per request, and a server slowed
/// down by valgrind answers few requests a second), in the connection tasks (parsing, answering
/// and writing each request: per request), and in SHA-256.
struct Counted {
    name: String,
    requests: u64,
    total: u64,
    connections: u64,
    sha256: u64,
}

/// Drives the callgrind-wrapped server `pid` at `url` for a warm-up, then counts one run.
fn count_run(
    args: &Args,
    name: String,
    (pid, out): (u32, &Path),
    url: &str,
    headers: &[(&str, &str)],
    bodies: &Path,
    scripts: &Path,
) -> anyhow::Result<Counted> {
    // a few connections: under valgrind one server thread runs at a time
    let load = Load {
        connections: 8,
        ..args.load()
    };
    // warm until every key has been verified twice over (wrk cycles through the bodies)
    let keys = std::fs::read_to_string(bodies)?.lines().count() as u64;
    let mut warmed = 0;
    while warmed < 2 * keys {
        warmed += wrk::run(
            load.warm_up(),
            url,
            headers,
            Requests::PostEach(bodies),
            scripts,
        )?
        .requests;
    }
    callgrind::zero(pid)?;
    let measured = wrk::run(load, url, headers, Requests::PostEach(bodies), scripts)?;
    let dump = callgrind::dump(pid, out)?;
    anyhow::ensure!(
        measured.non_2xx == 0 && measured.requests > 0,
        "{name}: {} non-2xx answers of {}",
        measured.non_2xx,
        measured.requests
    );
    let (total, under) = callgrind::instructions(&dump, &[CONNECTION, SHA256])?;
    Ok(Counted {
        name,
        requests: measured.requests,
        total,
        connections: under.first().copied().unwrap_or(0),
        sha256: under.get(1).copied().unwrap_or(0),
    })
}

async fn instructions(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        callgrind::available(),
        "valgrind is not installed (scripts/bench-verify installs it)"
    );
    let scripts = tempfile::tempdir()?;
    let mut builds = vec![args.fluxgate.clone()];
    builds.extend(args.against.clone());
    let mut counted = Vec::new();
    let mut floor_keys = None;
    for (i, build) in builds.iter().enumerate() {
        let (instance, keys) = migrated_and_seeded(build, args.keys).await?;
        let bodies = verify_bodies(scripts.path(), &format!("warm{i}.txt"), &keys)?;
        // the verifier is made through the API at full speed, then the node runs counted
        let client = reqwest::Client::new();
        let verifier = {
            let node = instance.serve().await?;
            node::verifier(&client, &node.origin()).await?.1
        };
        let out = scripts.path().join(format!("callgrind{i}.out"));
        let node = instance.serve_under(&callgrind::wrapper(&out)).await?;
        let url = format!("{}/api/v1/keys/verify", node.origin());
        counted.push(count_run(
            args,
            format!("Fluxgate warm verify: {}", build.display()),
            (node.pid(), &out),
            &url,
            &verify_headers(&verifier),
            &bodies,
            scripts.path(),
        )?);
        check_sample(&client, &node.origin(), &verifier, &keys, "VALID").await?;
        floor_keys.get_or_insert((keys, bodies));
    }
    let (keys, bodies) = floor_keys.context("no build")?;
    let key_list = scripts.path().join("keys.txt");
    std::fs::write(&key_list, keys.join("\n"))?;
    let out = scripts.path().join("callgrind-floor.out");
    let floor = start_floor_under(&key_list, &callgrind::wrapper(&out))?;
    let floor_pid = floor.child.id();
    counted.insert(
        0,
        count_run(
            args,
            "floor: bare axum `POST` (parse, SHA-256, `HashMap`, JSON)".into(),
            (floor_pid, &out),
            &format!("{}/verify", floor.origin),
            &[("content-type", "application/json")],
            &bodies,
            scripts.path(),
        )?,
    );
    println!(
        "{} warm keys; wrk -t{} -c8 -d{}s per server, counted after a warm-up (valgrind --tool=callgrind)\n",
        args.keys, args.threads, args.seconds
    );
    println!("| server | requests counted | instructions per request | in the connection tasks | of which SHA-256 (software under valgrind) | connection tasks without SHA-256 | the same vs the floor |");
    println!("|---|---|---|---|---|---|---|");
    let per = |c: &Counted, n: u64| n / c.requests.max(1);
    let work = |c: &Counted| per(c, c.connections.saturating_sub(c.sha256));
    let floor_work = work(&counted[0]).max(1);
    for c in &counted {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2}× |",
            c.name,
            c.requests,
            per(c, c.total),
            per(c, c.connections),
            per(c, c.sha256),
            work(c),
            work(c) as f64 / floor_work as f64
        );
    }
    Ok(())
}

/// A fresh SQLite instance of `build`, migrated by that build, with `count` warm keys on the
/// bench plan put in by plain SQL — so two builds with different migrations compare; the keys.
async fn migrated_and_seeded(
    build: &Path,
    count: usize,
) -> anyhow::Result<(Instance, Vec<String>)> {
    let instance = Instance::create(build, None, None, "").await?;
    let migrated = instance.command().arg("migrate").output()?;
    anyhow::ensure!(
        migrated.status.success(),
        "{} migrate: {}",
        build.display(),
        String::from_utf8_lossy(&migrated.stderr)
    );
    let keys = fluxgate_bench::seed::seed_by_sql(
        &instance.database_url()?,
        count,
        BENCH_PLAN,
        fluxgate_server::clock::now(),
    )
    .await?;
    Ok((instance, keys))
}

async fn against(args: &Args, other: &Path, flagged: bool) -> anyhow::Result<()> {
    let load = args.load();
    let builds = [args.fluxgate.as_path(), other];
    let scripts = tempfile::tempdir()?;
    let (mut instances, mut nodes, mut verifiers) = (vec![], vec![], vec![]);
    let (mut warm, mut bodies) = (vec![], vec![]);
    let client = reqwest::Client::new();
    for (i, build) in builds.iter().enumerate() {
        let (instance, keys) = migrated_and_seeded(build, args.keys).await?;
        bodies.push(verify_bodies(
            scripts.path(),
            &format!("warm{i}.txt"),
            &keys,
        )?);
        if i == 0 {
            std::fs::write(scripts.path().join("keys.txt"), keys.join("\n"))?;
        }
        warm.push(keys);
        if flagged && i == 1 {
            flags(&instance, FLAGS, true).await?;
        }
        let node = instance.serve().await?;
        let (_, verifier) = node::verifier(&client, &node.origin()).await?;
        instances.push(instance);
        nodes.push(node);
        verifiers.push(verifier);
    }
    let floor = start_floor(&scripts.path().join("keys.txt"))?;
    let urls: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}/api/v1/keys/verify", node.origin()))
        .collect();
    for i in 0..2 {
        let headers = verify_headers(&verifiers[i]);
        wrk::run(
            load.warm_up(),
            &urls[i],
            &headers,
            Requests::PostEach(&bodies[i]),
            scripts.path(),
        )?;
    }
    let names = if flagged {
        [
            "A: warm verify, no flags",
            "B: warm verify, 50 flags defined (5 on for the org)",
        ]
    } else {
        ["A (--fluxgate) warm verify", "B (--against) warm verify"]
    };
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for round in 0..args.rounds.max(1) {
        let floor_headers = verify_headers(&verifiers[0]);
        let mut rows = vec![measure(
            "floor: bare axum `POST`",
            &[floor.child.id()],
            load,
            &[&format!("{}/verify", floor.origin)],
            &floor_headers,
            Requests::PostEach(&bodies[0]),
            scripts.path(),
        )?];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut measured: [Option<Row>; 2] = [None, None];
        for i in order {
            let headers = verify_headers(&verifiers[i]);
            measured[i] = Some(measure(
                names[i],
                &[nodes[i].pid()],
                load,
                &[&urls[i]],
                &headers,
                Requests::PostEach(&bodies[i]),
                scripts.path(),
            )?);
        }
        rows.extend(measured.into_iter().flatten());
        rounds.push(rows);
    }
    for i in 0..2 {
        check_sample(
            &client,
            &nodes[i].origin(),
            &verifiers[i],
            &warm[i],
            "VALID",
        )
        .await?;
    }
    println!(
        "A = {}, B = {}; {} warm keys each; wrk -t{} -c{} -d{}s; median of {} rounds (A first in odd rounds, B first in even)\n",
        builds[0].display(),
        builds[1].display(),
        args.keys,
        args.threads,
        args.connections,
        args.seconds,
        rounds.len()
    );
    print_table(&median_rows(&rounds), 0, "POST floor");
    for (i, name) in names.iter().enumerate() {
        let ratios: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.1} %", r[i + 1].measured.rps / r[0].measured.rps * 100.0))
            .collect();
        println!("\n{name}, per round vs the floor: {}", ratios.join(", "));
    }
    drop(floor);
    drop(nodes);
    for instance in instances {
        instance.remove().await?;
    }
    Ok(())
}

/// `--cluster`: the single-node configuration beside the multi-node one, one node and two.
async fn cluster(args: &Args) -> anyhow::Result<()> {
    let (Some(postgres), Some(redis)) = (&args.postgres, &args.redis) else {
        anyhow::bail!("--cluster needs --postgres and --redis");
    };
    let load = args.load();
    let single = Instance::create(&args.fluxgate, None, None, "").await?;
    let shared = Instance::create(&args.fluxgate, Some(postgres), Some(redis), "").await?;
    let single_keys = seeded(&single, args.keys, args.keys).await?;
    let shared_keys = seeded(&shared, args.keys, args.keys).await?;
    let scripts = tempfile::tempdir()?;
    let single_bodies = verify_bodies(scripts.path(), "single.txt", &single_keys)?;
    let shared_bodies = verify_bodies(scripts.path(), "shared.txt", &shared_keys)?;
    let key_list = scripts.path().join("keys.txt");
    std::fs::write(&key_list, single_keys.join("\n"))?;

    let one = single.serve().await?;
    let (a, b) = (shared.serve().await?, shared.serve().await?);
    let client = reqwest::Client::new();
    let (_, single_verifier) = node::verifier(&client, &one.origin()).await?;
    let (_, shared_verifier) = node::verifier(&client, &a.origin()).await?;
    let floor = start_floor(&key_list)?;
    let verify_url = |node: &node::Node| format!("{}/api/v1/keys/verify", node.origin());
    let (one_url, a_url, b_url) = (verify_url(&one), verify_url(&a), verify_url(&b));
    let floor_url = format!("{}/verify", floor.origin);
    let single_h = verify_headers(&single_verifier);
    let shared_h = verify_headers(&shared_verifier);
    let warm_up = load.warm_up();
    wrk::run(
        warm_up,
        &one_url,
        &single_h,
        Requests::PostEach(&single_bodies),
        scripts.path(),
    )?;
    wrk::run_together(
        warm_up,
        &[&a_url, &b_url],
        &shared_h,
        Requests::PostEach(&shared_bodies),
        scripts.path(),
    )?;

    let mut rounds: Vec<Vec<Row>> = Vec::new();
    let mut trips_per_verify = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let mut rows = vec![
            measure(
                "floor: bare axum `POST` — parse `{\"key\"}`, SHA-256, `HashMap` lookup, JSON answer",
                &[floor.child.id()],
                load,
                &[&floor_url],
                &single_h,
                Requests::PostEach(&single_bodies),
                scripts.path(),
            )?,
            measure(
                "SQLite + memory limiter, 1 node",
                &[one.pid()],
                load,
                &[&one_url],
                &single_h,
                Requests::PostEach(&single_bodies),
                scripts.path(),
            )?,
        ];
        let trips_before = redis_round_trips(&client, &[&a]).await?;
        rows.push(measure(
            "PostgreSQL + Redis, 1 node",
            &[a.pid()],
            load,
            &[&a_url],
            &shared_h,
            Requests::PostEach(&shared_bodies),
            scripts.path(),
        )?);
        let trips = redis_round_trips(&client, &[&a]).await? - trips_before;
        let verifies = rows[2].measured.rps * load.duration.as_secs_f64();
        let both_before = redis_round_trips(&client, &[&a, &b]).await?;
        rows.push(measure(
            "PostgreSQL + Redis, 2 nodes (one wrk each, half the connections)",
            &[a.pid(), b.pid()],
            load,
            &[&a_url, &b_url],
            &shared_h,
            Requests::PostEach(&shared_bodies),
            scripts.path(),
        )?);
        let both_trips = redis_round_trips(&client, &[&a, &b]).await? - both_before;
        let both_verifies = rows[3].measured.rps * load.duration.as_secs_f64();
        trips_per_verify.push((
            trips / verifies.max(1.0),
            both_trips / both_verifies.max(1.0),
        ));
        rounds.push(rows);
    }
    check_sample(
        &client,
        &one.origin(),
        &single_verifier,
        &single_keys,
        "VALID",
    )
    .await?;
    for node in [&a, &b] {
        check_sample(
            &client,
            &node.origin(),
            &shared_verifier,
            &shared_keys,
            "VALID",
        )
        .await?;
    }

    println!(
        "{} warm keys on each instance; wrk -t{} -c{} -d{}s (the two-node row: one wrk per node, started together, -c{} each); median of {} rounds\n",
        args.keys,
        args.threads,
        args.connections,
        args.seconds,
        (args.connections / 2).max(1),
        rounds.len()
    );
    let medians = median_rows(&rounds);
    print_table(&medians, 0, "POST floor");
    println!();
    print_table(&medians, 1, "SQLite + memory");
    println!("\nper round, PostgreSQL + Redis vs SQLite + memory (1 node, 2 nodes) and Redis round trips per verify:");
    for (rows, (one_trips, two_trips)) in rounds.iter().zip(&trips_per_verify) {
        println!(
            "- {:.1} %, {:.1} %; {one_trips:.4}, {two_trips:.4}",
            rows[2].measured.rps / rows[1].measured.rps * 100.0,
            rows[3].measured.rps / rows[1].measured.rps * 100.0,
        );
    }
    drop(floor);
    drop((one, a, b));
    single.remove().await?;
    shared.remove().await
}

/// Verifies each key once (eight at a time) and returns the latencies, sorted.
async fn first_verifies(
    client: &reqwest::Client,
    origin: &str,
    verifier: &str,
    keys: &[String],
) -> anyhow::Result<Vec<Duration>> {
    let chunks: Vec<Vec<String>> = keys
        .chunks(keys.len().div_ceil(8).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (client, origin, verifier) = (client.clone(), origin.to_owned(), verifier.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for key in chunk {
                let started = std::time::Instant::now();
                let answer: Value = client
                    .post(format!("{origin}/api/v1/keys/verify"))
                    .header("x-api-key", &verifier)
                    .json(&json!({ "key": key }))
                    .send()
                    .await?
                    .json()
                    .await?;
                latencies.push(started.elapsed());
                anyhow::ensure!(
                    answer["data"]["code"] == "VALID",
                    "cold key answered {answer}"
                );
            }
            Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// `--scale`: one fresh instance per key count.
async fn scale(args: &Args) -> anyhow::Result<()> {
    let load = Load {
        threads: args.threads,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
    };
    let database = args.database();
    println!(
        "{database}; {} warm keys cycled by wrk -t{} -c{} -d{}s, median of {} rounds; 1,000 cold keys verified once each by 8 clients",
        args.keys, args.threads, args.connections, args.seconds, args.rounds.max(1)
    );
    println!();
    println!("| keys stored | seeded in | start → ready | RSS ready | RSS after | cold first verify p50 / p99 | warm verify req/s | vs POST floor |");
    println!("|---|---|---|---|---|---|---|---|");
    for &stored in &args.scale {
        let instance = Instance::create(
            &args.fluxgate,
            args.postgres.as_deref(),
            args.redis.as_deref(),
            "",
        )
        .await?;
        let store = instance.open_store().await?;
        let org = store.operator_org_id().await?.context("operator org")?;
        let now = fluxgate_server::clock::now();
        fluxgate_bench::seed::set_plan(store.as_ref(), &org, BENCH_PLAN, now).await?;
        store.close().await;
        let seeding = std::time::Instant::now();
        let keys = fluxgate_bench::seed::insert_keys_in_bulk(
            &instance.database_url()?,
            &org,
            stored.max(args.keys + 1_000),
            now,
        )
        .await?;
        let seeded_in = seeding.elapsed();
        let node = instance.serve().await?;
        let rss_ready = node.rss_mib()?;
        let origin = node.origin();
        let client = reqwest::Client::new();
        let (_, verifier) = node::verifier(&client, &origin).await?;
        let cold = first_verifies(
            &client,
            &origin,
            &verifier,
            &keys[args.keys..args.keys + 1_000],
        )
        .await?;

        let scripts = tempfile::tempdir()?;
        let warm = &keys[..args.keys];
        let bodies = verify_bodies(scripts.path(), "warm.txt", warm)?;
        let key_list = scripts.path().join("keys.txt");
        std::fs::write(&key_list, warm.join("\n"))?;
        let floor = start_floor(&key_list)?;
        let verify_url = format!("{origin}/api/v1/keys/verify");
        let headers = verify_headers(&verifier);
        wrk::run(
            load.warm_up(),
            &verify_url,
            &headers,
            Requests::PostEach(&bodies),
            scripts.path(),
        )?;
        let (mut floors, mut verifies) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            floors.push(
                wrk::run(
                    load,
                    &format!("{}/verify", floor.origin),
                    &headers,
                    Requests::PostEach(&bodies),
                    scripts.path(),
                )?
                .rps,
            );
            let measured = wrk::run(
                load,
                &verify_url,
                &headers,
                Requests::PostEach(&bodies),
                scripts.path(),
            )?;
            anyhow::ensure!(
                measured.non_2xx == 0,
                "{} non-2xx answers",
                measured.non_2xx
            );
            verifies.push(measured.rps);
        }
        check_sample(&client, &origin, &verifier, warm, "VALID").await?;
        let rss_after = node.rss_mib()?;
        let (floor_rps, verify_rps) = (median(floors.into_iter()), median(verifies.into_iter()));
        println!(
            "| {stored} | {:.1} s | {:.2} s | {rss_ready:.0} MiB | {rss_after:.0} MiB | {} / {} | {verify_rps:.0} | {:.1} % |",
            seeded_in.as_secs_f64(),
            node.ready_after.as_secs_f64(),
            ms(percentile(&cold, 0.5)),
            ms(percentile(&cold, 0.99)),
            verify_rps / floor_rps * 100.0
        );
        drop(floor);
        drop(node);
        instance.remove().await?;
    }
    Ok(())
}

/// Signs the operator in `count` times and writes the sessions' refresh tokens to `path`, one
/// a line (refresh tokens are single-use: each refreshing connection follows its own chain).
async fn new_sessions(
    client: &reqwest::Client,
    origin: &str,
    count: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let mut tokens = String::new();
    for _ in 0..count {
        let login: Value = client
            .post(format!("{origin}/api/v1/auth/login"))
            .json(&json!({ "email": node::OPERATOR, "password": node::PASSWORD }))
            .send()
            .await?
            .json()
            .await?;
        tokens.push_str(
            login["data"]["refresh_token"]
                .as_str()
                .context("login without a refresh token")?,
        );
        tokens.push('\n');
    }
    std::fs::write(path, tokens)?;
    Ok(())
}

/// `--auth`: the session endpoints a browser or app calls, beside the `GET` floor. Login is
/// bound by Argon2id (by design), so it runs with as many connections as cores.
async fn auth(args: &Args) -> anyhow::Result<()> {
    let load = args.load();
    let instance = args.instance().await?;
    let node = instance.serve().await?;
    let origin = node.origin();
    let client = reqwest::Client::new();
    let (token, _) = node::operator(&client, &origin).await?;
    let scripts = tempfile::tempdir()?;
    let key_list = scripts.path().join("keys.txt");
    std::fs::write(&key_list, "")?;
    let floor = start_floor(&key_list)?;
    let login_body = scripts.path().join("login.txt");
    wrk::write_bodies(
        &login_body,
        std::iter::once(json!({ "email": node::OPERATOR, "password": node::PASSWORD }).to_string()),
    )?;
    let bearer = format!("Bearer {token}");
    let refresh_connections = 2;
    let refresh_list = scripts.path().join("refresh.txt");
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        new_sessions(&client, &origin, refresh_connections, &refresh_list).await?;
        rounds.push(vec![
            measure(
                "floor: bare axum `GET` returning a constant",
                &[floor.child.id()],
                load,
                &[&format!("{}/constant", floor.origin)],
                &[],
                Requests::Get,
                scripts.path(),
            )?,
            measure(
                "`GET /api/v1/auth/me` (bearer access token)",
                &[node.pid()],
                load,
                &[&format!("{origin}/api/v1/auth/me")],
                &[("authorization", bearer.as_str())],
                Requests::Get,
                scripts.path(),
            )?,
            measure(
                "`POST /api/v1/auth/refresh` (rotating: a write per call), 2 sessions, one connection each",
                &[node.pid()],
                Load {
                    connections: refresh_connections,
                    threads: refresh_connections,
                    ..load
                },
                &[&format!("{origin}/api/v1/auth/refresh")],
                &[("content-type", "application/json")],
                Requests::RefreshChains(&refresh_list),
                scripts.path(),
            )?,
            measure(
                "`POST /api/v1/auth/login` (Argon2id), 2 connections",
                &[node.pid()],
                Load {
                    connections: 2,
                    ..load
                },
                &[&format!("{origin}/api/v1/auth/login")],
                &[("content-type", "application/json")],
                Requests::PostEach(&login_body),
                scripts.path(),
            )?,
        ]);
    }
    println!(
        "{}; wrk -t{} -c{} -d{}s; median of {} rounds\n",
        args.database(),
        args.threads,
        args.connections,
        args.seconds,
        rounds.len()
    );
    print_table(&median_rows(&rounds), 0, "GET floor");
    two_step_sign_in(&client, &origin, TWO_STEP_ACCOUNTS).await?;
    drop(floor);
    drop(node);
    instance.remove().await
}

/// Accounts the two-step sign-in measurement enrols (one sign-in each: a TOTP step is
/// accepted once per account).
const TWO_STEP_ACCOUNTS: usize = 100;

/// Sign-in with a password and a TOTP code, one after another from this process: `count`
/// accounts with TOTP enabled each sign in once (`POST /auth/login`, then `POST
/// /auth/mfa/verify` with the app's code), timed leg by leg.
async fn two_step_sign_in(
    client: &reqwest::Client,
    origin: &str,
    count: usize,
) -> anyhow::Result<()> {
    use fluxgate_core::mfa::TotpFactor;
    let post = |path: &str, body: Value, bearer: Option<&str>| {
        let mut request = client.post(format!("{origin}/api/v1{path}")).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let path = path.to_owned();
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
            anyhow::Ok(body["data"].clone())
        }
    };
    let now = fluxgate_server::clock::now;
    let mut accounts = Vec::with_capacity(count);
    for i in 0..count {
        let email = format!("two-step-{i}@bench.example");
        let credentials = json!({ "email": email, "password": node::PASSWORD });
        post("/auth/signup", credentials.clone(), None).await?;
        let session = post("/auth/login", credentials.clone(), None).await?;
        let token = session["access_token"]
            .as_str()
            .context("access token")?
            .to_owned();
        let enrolment = post(
            "/auth/mfa/totp",
            json!({ "password": node::PASSWORD }),
            Some(&token),
        )
        .await?;
        let secret = enrolment["secret"].as_str().context("secret")?;
        let factor = TotpFactor::from_base32(secret, "Fluxgate", &email).context("factor")?;
        post(
            "/auth/mfa/totp/confirm",
            json!({ "code": factor.code_at(now()) }),
            Some(&token),
        )
        .await?;
        accounts.push((credentials, factor));
    }
    let (mut password_leg, mut code_leg, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for (credentials, factor) in &accounts {
        let started = std::time::Instant::now();
        let challenge = post("/auth/login", credentials.clone(), None).await?;
        let mid = std::time::Instant::now();
        let mfa_token = challenge["mfa_token"].as_str().context("a challenge")?;
        // the next step's code: the confirmation spent this one
        let code = factor.code_at(now() + 30);
        let tokens = post(
            "/auth/mfa/verify",
            json!({ "mfa_token": mfa_token, "code": code }),
            None,
        )
        .await?;
        anyhow::ensure!(tokens["access_token"].is_string(), "signed in");
        let done = std::time::Instant::now();
        password_leg.push(mid - started);
        code_leg.push(done - mid);
        whole.push(done - started);
    }
    println!(
        "\nTwo-step sign-in: {count} accounts with TOTP, each signing in once, one after another\n"
    );
    println!("| leg | p50 | p99 |\n|---|---|---|");
    for (name, samples) in [
        (
            "`POST /auth/login` (Argon2id; answers the challenge)",
            &mut password_leg,
        ),
        (
            "`POST /auth/mfa/verify` (TOTP code; creates the session)",
            &mut code_leg,
        ),
        ("both", &mut whole),
    ] {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        );
    }
    Ok(())
}
