//! `fluxgate-soak`: the memory of a real `fluxgate serve` process (its resident set, from
//! `/proc`) while it verifies a million distinct unknown keys and half a million distinct real
//! ones, sampled every 100,000 verifies. The server is the binary given, run as its own process
//! on a SQLite database seeded directly; this process only sends requests.

use anyhow::Context;
use clap::Parser;
use fluxgate_bench::node::{self, Instance, BENCH_PLAN};
use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::secret::ExposeSecret;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let instance = Instance::create(&args.fluxgate, None, None, "").await?;

    // the real keys, straight into the database, in the operator org
    let seeding = Instant::now();
    let store = instance.open_store().await?;
    let org = store.operator_org_id().await?.context("operator org")?;
    let now = fluxgate_server::clock::now();
    let real = fluxgate_bench::seed::insert_keys(
        store.as_ref(),
        &org,
        args.real,
        &fluxgate_bench::seed::Extras::default(),
        now,
    )
    .await?;
    fluxgate_bench::seed::set_plan(store.as_ref(), &org, BENCH_PLAN, now).await?;
    store.close().await;
    eprintln!("seeded {} keys in {:.0?}", real.len(), seeding.elapsed());
    let unknown: Vec<String> = (0..args.unknown)
        .map(|_| {
            apikey::generate("fg", Environment::Live)
                .expose_secret()
                .to_owned()
        })
        .collect();

    let server = instance.serve().await?;
    let base = format!("{}/api/v1", server.origin());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let (_, verifier) = node::verifier(&client, &server.origin()).await?;
    let root = Arc::new(verifier);

    println!("| phase | verifies so far | answers | server RSS (MiB) | verifies/s |");
    println!("|---|---|---|---|---|");
    println!("| started | 0 | — | {:.1} | — |", server.rss_mib()?);
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
                server.rss_mib()?,
                count as f64 / chunk_started.elapsed().as_secs_f64()
            );
        }
    }
    drop(server);
    instance.remove().await
}
