//! Rate limiting: the same semantics suite against the in-memory and the Redis store; the
//! limits over real HTTP (per IP, per user, headers, the 429 body, trusted proxies) on SQLite
//! and PostgreSQL; counters shared between two nodes through Redis, exactly or from leases
//! within their stated bound; Redis going away mid-run and coming back, under both failure
//! policies.

use fluxgate_core::ratelimit::Quota;
use fluxgate_server::config::RedisFailure;
use fluxgate_server::limiter::{Limiter, RedisLimiter, Sharing};
use fluxgate_testkit::redis::RedisServer;
use fluxgate_testkit::{eventually, expect_error, Backend, TestApp, PASSWORD};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

both_backends!(
    auth_endpoints_are_limited_per_ip_with_headers,
    jwt_calls_are_limited_per_user,
    forwarded_addresses_count_only_from_trusted_proxies,
);

fn per_second(limit: u64, millis: u64) -> Quota {
    Quota {
        limit,
        window: millis * 1_000_000,
    }
}

/// What every store must do alike.
async fn store_semantics(limiter: &Limiter) {
    let key = format!("suite:{}", ulid::Ulid::new());
    // a burst of `limit` passes, counting down; the next is refused with the wait
    let quota = per_second(5, 1000); // one back every 200 ms
    for expected_remaining in (0..5).rev() {
        let d = limiter.check(&key, quota, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, expected_remaining);
        assert_eq!(d.limit, 5);
    }
    let refused = limiter.check(&key, quota, 1).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > 0 && refused.retry_after <= 200_000_000,
        "{refused:?}"
    );
    assert_eq!(refused.retry_after_secs(), 1);
    assert!(refused.reset_after <= 1_000_000_000);
    // peeking takes nothing
    assert!(!limiter.peek(&key, quota, 1).await.unwrap().allowed);
    // smooth refill: one call back per interval, never the whole window at once
    tokio::time::sleep(Duration::from_millis(230)).await;
    assert!(limiter.check(&key, quota, 1).await.unwrap().allowed);
    assert!(!limiter.check(&key, quota, 1).await.unwrap().allowed);
    // cost counts, and a cost above the limit never passes
    let other = format!("{key}:cost");
    assert!(limiter.check(&other, quota, 3).await.unwrap().allowed);
    assert!(!limiter.check(&other, quota, 3).await.unwrap().allowed);
    assert!(limiter.check(&other, quota, 2).await.unwrap().allowed);
    assert!(
        !limiter
            .check(&format!("{key}:huge"), quota, 6)
            .await
            .unwrap()
            .allowed
    );
    // reset forgets
    limiter.reset(&key).await;
    assert_eq!(limiter.check(&key, quota, 1).await.unwrap().remaining, 4);

    // over real time the rate holds: hammering for 1.2 s passes the burst plus the refill
    let steady = format!("{key}:steady");
    let quota = per_second(10, 500); // one back every 50 ms
    let started = Instant::now();
    let mut passed = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        if limiter.check(&steady, quota, 1).await.unwrap().allowed {
            passed += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ceiling = 10 + started.elapsed().as_millis() as u64 / 50;
    assert!(
        passed <= ceiling,
        "{passed} passed, at most {ceiling} allowed"
    );
    assert!(
        passed >= 10 + 1000 / 50 - 3,
        "{passed} passed: refill too slow"
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    store_semantics(&Limiter::in_memory(10_000)).await;
}

async fn redis_limiter(url: &str, policy: RedisFailure) -> Limiter {
    leasing_limiter(url, policy, Duration::ZERO).await
}

/// A limiter on Redis whose leased decisions take leases living `lease`.
async fn leasing_limiter(url: &str, policy: RedisFailure, lease: Duration) -> Limiter {
    let redis =
        RedisLimiter::connect(url, Duration::from_millis(100), CancellationToken::new()).unwrap();
    let limiter = Limiter::in_memory(10_000).with_redis(redis, policy, lease);
    assert!(
        eventually(Duration::from_secs(5), || async {
            limiter.redis_connected()
        })
        .await
    );
    limiter
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let limiter = redis_limiter(&redis.url(), RedisFailure::FailClosed).await;
    store_semantics(&limiter).await;
    // and it was Redis that decided: the fallback never ran
    assert_eq!(limiter.fallback_counter().get(), 0);
}

#[tokio::test]
async fn two_limiters_on_one_redis_share_their_counters() {
    let redis = RedisServer::start().await;
    let a = redis_limiter(&redis.url(), RedisFailure::FailClosed).await;
    let b = redis_limiter(&redis.url(), RedisFailure::FailClosed).await;
    let quota = Quota {
        limit: 6,
        window: 3_600_000_000_000,
    };
    let mut passed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if limiter.check("shared", quota, 1).await.unwrap().allowed {
            passed += 1;
        }
    }
    assert_eq!(passed, 6);
}

#[tokio::test]
async fn a_key_that_asks_for_exactness_is_exact_beside_leases() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_secs(1);
    let a = leasing_limiter(&redis.url(), RedisFailure::FailClosed, lease).await;
    let b = leasing_limiter(&redis.url(), RedisFailure::FailClosed, lease).await;
    let quota = per_second(100, 3_600_000);
    let mut passed = 0;
    for i in 0..300 {
        let limiter = if i % 3 == 0 { &a } else { &b };
        if limiter
            .spend("exact", quota, 1, Sharing::Exact)
            .await
            .unwrap()
            .allowed
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 100);
    let trips = a.round_trip_counter().get() + b.round_trip_counter().get();
    assert_eq!(trips, 300, "an exact key asks Redis on every call");
}

/// Hammers `quota` on `key` from `tasks` concurrent callers on each limiter for `span`;
/// (calls admitted, calls made, elapsed).
async fn hammer(
    limiters: &[std::sync::Arc<Limiter>],
    key: &str,
    quota: Quota,
    tasks: usize,
    span: Duration,
) -> (u64, u64, Duration) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for limiter in limiters {
        for _ in 0..tasks {
            let limiter = limiter.clone();
            let key = key.to_owned();
            handles.push(tokio::spawn(async move {
                let (mut admitted, mut made) = (0u64, 0u64);
                while started.elapsed() < span {
                    made += 1;
                    if limiter
                        .spend(&key, quota, 1, Sharing::Leased)
                        .await
                        .unwrap()
                        .allowed
                    {
                        admitted += 1;
                    }
                    tokio::task::yield_now().await;
                }
                (admitted, made)
            }));
        }
    }
    let (mut admitted, mut made) = (0, 0);
    for handle in handles {
        let (a, m) = handle.await.unwrap();
        admitted += a;
        made += m;
    }
    (admitted, made, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_limiters_admit_at_most_the_limit_plus_one_lease_of_allowance() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_secs(1);
    let nodes = [
        std::sync::Arc::new(leasing_limiter(&redis.url(), RedisFailure::FailClosed, lease).await),
        std::sync::Arc::new(leasing_limiter(&redis.url(), RedisFailure::FailClosed, lease).await),
    ];
    // 100 per minute: one call back every 600 ms
    let quota = per_second(100, 60_000);
    let (admitted, made, elapsed) =
        hammer(&nodes, "leased", quota, 4, Duration::from_secs(2)).await;
    let exact_ceiling = 100 + elapsed.as_millis() as u64 / 600;
    let bound = (lease.as_millis() as u64).div_ceil(600); // ceil(lease × limit / window)
    assert!(
        admitted <= exact_ceiling + bound,
        "{admitted} admitted; the exact limit allows {exact_ceiling}, the lease bound {bound} more"
    );
    // leases never hold back more than a tenth of the limit per node
    assert!(
        admitted >= 100 - 2 * 10,
        "{admitted} admitted: leases starved the key"
    );
    let trips: u64 = nodes.iter().map(|n| n.round_trip_counter().get()).sum();
    assert!(made > 1000, "{made} calls made");
    assert!(
        trips * 10 < made,
        "{trips} Redis round trips for {made} calls: leases and refusals should be local"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_leased_key_costs_a_fraction_of_a_round_trip_per_call() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_secs(1);
    let node =
        std::sync::Arc::new(leasing_limiter(&redis.url(), RedisFailure::FailClosed, lease).await);
    // a limit far above what the test can spend, refilling a unit a second: every call
    // passes, and what Redis counts as taken is what the leases took
    let quota = per_second(1_000_000_000, 1_000_000_000_000);
    let (admitted, made, _) = hammer(
        std::slice::from_ref(&node),
        "busy",
        quota,
        4,
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(admitted, made);
    let trips = node.round_trip_counter().get();
    assert!(
        trips * 20 < made,
        "{trips} Redis round trips for {made} calls"
    );
    // and the shared counter saw every unit a lease took: a second node finds them spent
    let probe = leasing_limiter(&redis.url(), RedisFailure::FailClosed, Duration::ZERO).await;
    let left = probe.peek("busy", quota, 1).await.unwrap().remaining;
    let taken = 1_000_000_000 - left;
    assert!(
        taken + 2 >= admitted,
        "Redis counts {taken} units taken for {admitted} admitted"
    );
}

#[tokio::test]
async fn redis_going_away_fails_open_or_closed_as_configured_and_recovers() {
    let mut redis = RedisServer::start().await;
    let open = redis_limiter(&redis.url(), RedisFailure::FailOpen).await;
    let closed = redis_limiter(&redis.url(), RedisFailure::FailClosed).await;
    let quota = per_second(1000, 60_000);
    assert!(open.check("k", quota, 1).await.unwrap().allowed);

    redis.stop();
    // never a hang: each decision returns within the timeout (plus slack), by the policy
    for _ in 0..5 {
        let started = Instant::now();
        assert!(
            open.check("k", quota, 1).await.unwrap().allowed,
            "fail_open decides in memory"
        );
        assert!(
            closed.check("k", quota, 1).await.is_err(),
            "fail_closed refuses"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(open.fallback_counter().get() >= 5);

    redis.restart().await;
    // back: within a few seconds Redis decides again (the counter stops growing)
    let recovered = eventually(Duration::from_secs(10), || async {
        let before = closed.fallback_counter().get();
        closed.check("k", quota, 1).await.is_ok() && closed.fallback_counter().get() == before
    })
    .await;
    assert!(recovered, "the Redis limiter did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_redis_going_away_is_a_503_or_a_local_decision_never_a_500() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let closed = TestApp::spawn_with(Backend::Sqlite, |t| {
        t.insert("redis_url".into(), url.clone().into());
        fluxgate_testkit::set_config(t, "rate_limits.redis_failure", "fail_closed");
    })
    .await;
    let open = TestApp::spawn_with(Backend::Sqlite, |t| {
        t.insert("redis_url".into(), url.clone().into());
    })
    .await;
    let token = closed.user("ada@example.com").await;
    let other = open.user("bob@example.com").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            closed.state().limiter.redis_connected()
        })
        .await
    );
    assert_eq!(
        closed.get_auth("/api/v1/auth/me", &token).await.status(),
        200
    );

    redis.stop();
    let started = Instant::now();
    expect_error(
        closed.get_auth("/api/v1/auth/me", &token).await,
        503,
        "UNAVAILABLE",
    )
    .await;
    assert_eq!(
        open.get_auth("/api/v1/auth/me", &other).await.status(),
        200,
        "fail_open decides locally"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no hang: {:?}",
        started.elapsed()
    );
    let metrics = open
        .client
        .get(open.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fluxgate_ratelimit_redis_fallbacks_total"),
        "{metrics}"
    );

    redis.restart().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            closed.get_auth("/api/v1/auth/me", &token).await.status() == 200
        })
        .await,
        "service resumes when Redis is back"
    );
    closed.stop().await;
    open.stop().await;
}

async fn auth_endpoints_are_limited_per_ip_with_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "rate_limits.ip", "3/min");
    })
    .await;
    let wrong = json!({ "email": "nobody@example.com", "password": "wrong password here" });
    for remaining in ["2", "1", "0"] {
        let response = app.post("/api/v1/auth/login", wrong.clone()).await;
        assert_eq!(response.status(), 401);
        let h = response.headers();
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(reset >= now && reset <= now + 61, "reset {reset} now {now}");
    }
    // the fourth, on any unauthenticated auth endpoint: 429 with the envelope and headers
    let limited = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "x@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "one call back every 20 s: {retry_after}"
    );
    let error = expect_error(limited, 429, "RATE_LIMITED").await;
    assert_eq!(error["retry_after"], retry_after);
    // operational routes are not limited
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.status(),
        200
    );
    app.stop().await;
}

async fn jwt_calls_are_limited_per_user(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "rate_limits.user", "2/min");
    })
    .await;
    let ada = app.user("ada@example.com").await;
    let bob = app.user("bob@example.com").await;
    for remaining in ["1", "0"] {
        let response = app.get_auth("/api/v1/auth/me", &ada).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-remaining"], remaining);
    }
    expect_error(
        app.get_auth("/api/v1/auth/me", &ada).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    expect_error(
        app.get_auth("/api/v1/orgs", &ada).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    // another user has their own allowance
    assert_eq!(app.get_auth("/api/v1/auth/me", &bob).await.status(), 200);
    app.stop().await;
}

async fn forgot(app: &TestApp, forwarded: &str) -> u16 {
    app.client
        .post(app.url("/api/v1/auth/password/forgot"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "email": "someone@example.com" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn forwarded_addresses_count_only_from_trusted_proxies(backend: Backend) {
    // nobody trusted: a client cannot dodge its limit by inventing addresses
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "rate_limits.ip", "2/min");
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(forgot(&app, &format!("198.51.100.{i}")).await);
    }
    assert_eq!(statuses, [202, 202, 429]);
    app.stop().await;

    // loopback trusted (a proxy on this host): each forwarded client has its own allowance,
    // and a client prepending fake hops is still counted as itself
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "rate_limits.ip", "2/min");
        t.insert(
            "trusted_proxies".into(),
            toml::Value::Array(vec!["127.0.0.1".into()]),
        );
    })
    .await;
    for i in 0..3 {
        assert_eq!(forgot(&app, &format!("198.51.100.{i}")).await, 202);
    }
    for _ in 0..2 {
        assert_eq!(forgot(&app, "9.9.9.9").await, 202);
    }
    assert_eq!(forgot(&app, "1.1.1.1, 9.9.9.9").await, 429);
    app.stop().await;
}
