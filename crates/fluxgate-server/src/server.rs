//! Starting and stopping the server: build the state, migrate, start the background workers,
//! listen, and shut down gracefully (in-flight requests finish, queued mail goes out).

use crate::clock::now;
use crate::config::Config;
use crate::invalidation::{Caches, InvalidationBus};
use crate::keycache::KeyCache;
use crate::limiter::{Limiter, RedisLimiter};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::PasswordHasher;
use crate::revocation::SessionRevocations;
use crate::secrets::InstanceSecret;
use crate::session_views::SessionViews;
use crate::state::{AppInner, AppState};
use crate::tokens::{Keyring, RefreshTokenDeriver};
use crate::usage_recorder::UsageRecorder;
use anyhow::Context;
use fluxgate_store::{ConnectOptions, Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often each node re-reads the signing keys (a rotation elsewhere is picked up by then).
const KEYRING_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Opens the database the configuration names and applies migrations, waiting up to 30 s for a
/// database that is still starting.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    }
    let store = fluxgate_store::connect(&ConnectOptions {
        url: config.database_url.clone(),
        max_connections: config.database_max_connections,
        acquire_timeout: Duration::from_secs(3),
    })
    .await
    .context("opening the database")?;
    let mut attempt = 0;
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(store),
            Err(StoreError::Unavailable(e)) if attempt < 15 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e).context("migrating the database"),
        }
    }
}

/// Everything a running node needs, with its background workers started.
pub async fn build_state(config: Config, cancel: &CancellationToken) -> anyhow::Result<AppState> {
    let store = open_store(&config).await?;
    let secret = InstanceSecret::load_or_create(config.secret_key.as_ref(), &config.data_dir)?;
    let keyring = Arc::new(Keyring::new(
        store.clone(),
        secret.derive("signing-key-encryption"),
        config.public_url.clone(),
        config.auth.audience.clone(),
        config.auth.access_token_ttl,
    ));
    keyring
        .load_or_create()
        .await
        .context("loading signing keys")?;
    let revocations = Arc::new(SessionRevocations::new(config.auth.access_token_ttl));
    revocations
        .load(store.as_ref(), now())
        .await
        .context("loading revoked sessions")?;
    tokio::spawn(revocations.clone().run(store.clone(), cancel.clone()));
    tokio::spawn(reload_keys_periodically(keyring.clone(), cancel.clone()));
    let parallelism = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut limiter = Limiter::in_memory(config.rate_limits.max_tracked_keys);
    if let Some(url) = &config.redis_url {
        let redis = RedisLimiter::connect(url, config.rate_limits.redis_timeout, cancel.clone())
            .context("redis_url")?;
        limiter = limiter.with_redis(
            redis,
            config.rate_limits.redis_failure,
            config.rate_limits.redis_lease,
        );
    }
    let limiter = Arc::new(limiter);
    limiter.spawn_sweeper(cancel.clone());
    let mut metrics = Metrics::new();
    metrics.register_counter(
        "ratelimit_redis_fallbacks",
        "Rate-limit decisions taken without Redis although it is configured",
        limiter.fallback_counter(),
    );
    metrics.register_counter(
        "ratelimit_redis_round_trips",
        "Rate-limit round trips to Redis (exact decisions and leases)",
        limiter.round_trip_counter(),
    );
    let passwords = PasswordHasher::new(parallelism)?;
    metrics.register_counter(
        "password_verifications",
        "Password verifications run, whether or not the email has an account",
        passwords.verification_counter(),
    );
    let keys = Arc::new(KeyCache::new(
        config.keys.cache_max_age,
        config.keys.cache_capacity,
    ));
    // the live secrets are read in the background: a node with a million keys serves at once
    // (until the read is done, a hash not in the cache is looked up in the database)
    tokio::spawn(resync_keys_periodically(
        keys.clone(),
        store.clone(),
        config.keys.cache_max_age,
        config.keys.full_resync_every,
        cancel.clone(),
    ));
    let session_views = Arc::new(SessionViews::new(
        config.keys.cache_max_age,
        config.keys.cache_capacity,
    ));
    let flags = Arc::new(crate::flagbook::FlagBook::new());
    flags
        .reread(store.as_ref())
        .await
        .context("reading feature flags")?;
    flags.spawn_rereader(store.clone(), cancel.clone());
    let caches = Caches {
        keys: keys.clone(),
        sessions: session_views.clone(),
        flags: flags.clone(),
    };
    let invalidation = Arc::new(
        InvalidationBus::start(
            caches,
            config.redis_url.as_deref(),
            store.clone(),
            cancel.clone(),
        )
        .await
        .context("starting key invalidation")?,
    );
    let usage = Arc::new(UsageRecorder::new(store.clone(), config.usage.attribution));
    usage.spawn_flusher(cancel.clone());
    usage.spawn_roller(config.usage.clone(), cancel.clone());
    let credits = match &config.redis_url {
        Some(url) => crate::services::credits::CreditLedger::Redis(
            crate::services::redis_credits::RedisCredits::connect(
                url,
                store.clone(),
                cancel.clone(),
            )
            .context("redis_url")?,
        ),
        None => crate::services::credits::CreditLedger::Database(
            crate::services::credits::CreditSpender::spawn(store.clone(), cancel.clone()),
        ),
    };
    let state = AppState::new(AppInner {
        flags,
        credits,
        passwords,
        mailer: Mailer::new(config.smtp_url.as_deref(), &config.smtp_from)?,
        refresh: RefreshTokenDeriver::new(secret.derive("refresh-token-successor")),
        widget_tokens: crate::widget_tokens::WidgetTokens::new(secret.derive("usage-widget-token")),
        totp_sealer: crate::secrets::Sealer::new(secret.derive("totp-secret-sealing")),
        relying_party: crate::services::passkeys::RelyingParty::new(&config.public_url),
        flow_sealer: crate::secrets::Sealer::new(secret.derive("oidc-flow-sealing")),
        webhook_sealer: crate::secrets::Sealer::new(secret.derive("webhook-secret-sealing")),
        oidc: crate::services::oidc::Providers::new(&config.auth.oidc, &config.public_url)?,
        metrics: Arc::new(metrics),
        limiter,
        keys,
        session_views,
        invalidation,
        usage,
        keyring,
        revocations,
        store,
        config,
    });
    crate::services::webhooks::spawn_worker(state.clone(), cancel.clone());
    Ok(state)
}

/// How far back each partial resync reads past the previous one's start: covers secrets
/// committed late and other nodes' clocks running behind.
const RESYNC_OVERLAP: i64 = 120;

/// Reads the live secrets at start (again every second until that works); then, every
/// `every` (the key cache's maximum age), learns the secrets created since the last read —
/// those whose announcement this node may have missed — and every `full_every` rereads them all,
/// dropping those revoked meanwhile. (A revoked secret still known is harmless: verifying it
/// reads the key and answers `REVOKED`.)
async fn resync_keys_periodically(
    keys: Arc<KeyCache>,
    store: Arc<dyn Store>,
    every: Duration,
    full_every: Duration,
    cancel: CancellationToken,
) {
    let (mut wait, mut last_full, mut last_read) = (Duration::ZERO, None, 0i64);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let started = std::time::Instant::now();
        let read_at = crate::clock::now();
        let full = last_full.is_none_or(|at: std::time::Instant| at.elapsed() >= full_every);
        let read = if full {
            keys.sync_known(store.as_ref()).await
        } else {
            keys.learn_created_since(store.as_ref(), last_read.saturating_sub(RESYNC_OVERLAP))
                .await
        };
        match read {
            Ok(live) => {
                if last_full.is_none() {
                    tracing::info!(live, took = ?started.elapsed(), "key cache: live secrets read");
                }
                if full {
                    last_full = Some(started);
                }
                last_read = read_at;
                wait = every;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading API key hashes failed");
                if last_full.is_none() {
                    wait = Duration::from_secs(1);
                }
            }
        }
    }
}

async fn reload_keys_periodically(keyring: Arc<Keyring>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(KEYRING_RELOAD_EVERY) => {}
        }
        if let Err(e) = keyring.reload().await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}

/// A server listening in the background.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The shared state.
    pub state: AppState,
    /// Stops accepting connections (then drains them).
    cancel: CancellationToken,
    /// Stops the background work — usage writers, polls — once connections are done.
    workers: CancellationToken,
    task: JoinHandle<usize>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, sends queued mail, closes the database.
    /// Connections get `shutdown_timeout` to finish; usage keeps being written meanwhile, and the
    /// last write runs whether or not they did.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        let dropped = self.task.await.context("server task")?;
        if dropped > 0 {
            tracing::warn!(dropped, "stopped with connections still open");
        }
        self.workers.cancel();
        if let Err(e) = self.state.usage.flush().await {
            tracing::error!(error = %e, "writing the last usage batch failed");
        }
        if let Err(e) = self.state.credits.save().await {
            tracing::error!(error = %e, "writing the last credit counts failed");
        }
        self.state.mailer.drain(Duration::from_secs(5)).await;
        self.state.store.close().await;
        Ok(())
    }

    /// Resolves when the server should stop (for `serve`).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Builds the state and listens on `config.listen`.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let cancel = CancellationToken::new();
    let workers = CancellationToken::new();
    let listen = config.listen;
    let timeouts = crate::listener::Timeouts {
        header_read: config.header_read_timeout,
        drain: config.shutdown_timeout,
    };
    let state = build_state(config, &workers).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let app = crate::routes::app(state.clone());
    let task = tokio::spawn(crate::listener::serve(
        listener,
        app,
        timeouts,
        cancel.clone(),
    ));
    Ok(RunningServer {
        addr,
        state,
        cancel,
        workers,
        task,
    })
}

/// `fluxgate serve`: runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let public_url = config.public_url.clone();
    let server = start(config).await?;
    tracing::info!(addr = %server.addr, backend = server.state.store.backend(), public_url = %public_url, "fluxgate listening");
    if server.state.store.operator_org_id().await?.is_none() {
        tracing::info!(
            "first run: no operator yet. Create one with `fluxgate admin bootstrap --email you@example.com --password '…'`; \
             then log in at {public_url}/ or POST {public_url}/api/v1/auth/login"
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
