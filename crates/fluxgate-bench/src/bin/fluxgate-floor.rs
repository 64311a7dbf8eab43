//! `fluxgate-floor`: the floors a Fluxgate figure is compared with, as their own server process —
//! `GET /constant` (bare axum answering a constant) and `POST /verify` (the least a key verify
//! can do: parse `{"key"}`, SHA-256 it, look the digest up in a `HashMap`, answer JSON). Same
//! allocator and runtime as the `fluxgate` binary; the keys come from a file, one per line.

use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Bare axum floors for the verify benchmark")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Keys the minimal verify knows, one per line.
    #[arg(long)]
    keys: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
struct VerifyBody {
    key: String,
}

#[derive(Serialize)]
struct Answer<'a> {
    valid: bool,
    key_id: Option<&'a str>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut known: HashMap<[u8; 32], String> = HashMap::new();
    if let Some(path) = &args.keys {
        for (i, key) in std::fs::read_to_string(path)?.lines().enumerate() {
            known.insert(Sha256::digest(key.as_bytes()).into(), format!("key_{i}"));
        }
    }
    let known = Arc::new(known);
    let app = Router::new()
        .route("/constant", get(|| async { "ok" }))
        .route(
            "/verify",
            post(move |Json(body): Json<VerifyBody>| {
                let known = known.clone();
                async move {
                    let digest: [u8; 32] = Sha256::digest(body.key.as_bytes()).into();
                    let key_id = known.get(&digest).map(String::as_str);
                    // serialised here: the answer borrows from the map
                    let answer = serde_json::to_vec(&Answer {
                        valid: key_id.is_some(),
                        key_id,
                    })
                    .unwrap_or_default();
                    ([("content-type", "application/json")], answer)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
