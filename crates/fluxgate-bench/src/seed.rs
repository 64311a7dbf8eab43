//! Keys written straight into a database, as the API would store them, for benchmarks that
//! need more keys than issuing them one request at a time allows.

use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::ids::{KeyId, OrgId};
use fluxgate_core::secret::ExposeSecret;
use fluxgate_store::{ApiKeyRecord, AuditRecord, Store};

/// What seeded keys carry besides their secret.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Usage credits.
    pub credits: Option<i64>,
    /// Named limits, as stored (a JSON array of `{name, limit, window_seconds}`).
    pub named_limits: Option<String>,
}

/// Stores `count` live keys without scopes in `org`, with `extras`; their secrets, in order.
pub async fn insert_keys(
    store: &dyn Store,
    org: &OrgId,
    count: usize,
    extras: &Extras,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    let mut secrets = Vec::with_capacity(count);
    for i in 0..count {
        let secret = apikey::generate("fg", Environment::Live);
        let parsed = apikey::parse(secret.expose_secret()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut record = ApiKeyRecord::unscoped(
            org.clone(),
            format!("bench {i}"),
            parsed.start().to_owned(),
            now,
        );
        if extras.credits.is_some() {
            record.credits_remaining = extras.credits;
            record.credits_refilled_at = Some(now);
        }
        if let Some(limits) = &extras.named_limits {
            record.named_limits = limits.clone();
        }
        let audit = AuditRecord::by_system(
            Some(org.clone()),
            "key.created",
            Some(("key", record.id.to_string())),
            now,
        );
        store.create_key(&record, &parsed.hash(), &audit).await?;
        secrets.push(secret.expose_secret().to_owned());
    }
    Ok(secrets)
}

/// Puts an org on `plan` (one the server's config declares), as an operator would.
pub async fn set_plan(store: &dyn Store, org: &OrgId, plan: &str, now: i64) -> anyhow::Result<()> {
    let audit = AuditRecord::by_system(Some(org.clone()), "org.plan_changed", None, now);
    store.set_org_plan(org, plan, now, &audit).await?;
    Ok(())
}

/// Stores `count` live keys without scopes in `org` straight through SQL — a few hundred rows a
/// statement, no audit entries — for the scale benchmarks (a million keys in seconds, where
/// [`insert_keys`] takes a transaction each); their secrets, in order. `database_url` is the
/// instance's (SQLite or PostgreSQL).
pub async fn insert_keys_in_bulk(
    database_url: &str,
    org: &OrgId,
    count: usize,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    const ROWS: usize = 500;
    let mut secrets = Vec::with_capacity(count);
    let mut rows = Vec::with_capacity(ROWS);
    macro_rules! write_rows {
        ($pool:expr, $rows:expr) => {{
            let mut tx = $pool.begin().await?;
            let mut keys = sqlx::QueryBuilder::new(
                "INSERT INTO api_keys (id, org_id, name, environment, start, scopes, metadata, \
                 created_at, updated_at) ",
            );
            keys.push_values(
                $rows.iter(),
                |mut row, (id, start, _): &(String, String, String)| {
                    row.push_bind(id.clone())
                        .push_bind(org.as_str().to_owned())
                        .push_bind(format!("bench {id}"))
                        .push_bind("live")
                        .push_bind(start.clone())
                        .push_bind("[]")
                        .push_bind("{}")
                        .push_bind(now)
                        .push_bind(now);
                },
            );
            keys.build().execute(&mut *tx).await?;
            let mut hashes = sqlx::QueryBuilder::new(
                "INSERT INTO api_key_secrets (hash, key_id, start, created_at) ",
            );
            hashes.push_values(
                $rows.iter(),
                |mut row, (id, start, hash): &(String, String, String)| {
                    row.push_bind(hash.clone())
                        .push_bind(id.clone())
                        .push_bind(start.clone())
                        .push_bind(now);
                },
            );
            hashes.build().execute(&mut *tx).await?;
            tx.commit().await?;
        }};
    }
    enum Pool {
        Sqlite(sqlx::SqlitePool),
        Postgres(sqlx::PgPool),
    }
    let pool = if database_url.starts_with("sqlite:") {
        Pool::Sqlite(sqlx::SqlitePool::connect(database_url).await?)
    } else {
        Pool::Postgres(sqlx::PgPool::connect(database_url).await?)
    };
    for i in 0..count {
        let secret = apikey::generate("fg", Environment::Live);
        let parsed = apikey::parse(secret.expose_secret()).map_err(|e| anyhow::anyhow!("{e}"))?;
        rows.push((
            KeyId::generate().to_string(),
            parsed.start().to_owned(),
            parsed.hash(),
        ));
        secrets.push(secret.expose_secret().to_owned());
        if rows.len() == ROWS || i + 1 == count {
            match &pool {
                Pool::Sqlite(pool) => write_rows!(pool, rows),
                Pool::Postgres(pool) => write_rows!(pool, rows),
            }
            rows.clear();
        }
    }
    match pool {
        Pool::Sqlite(pool) => pool.close().await,
        Pool::Postgres(pool) => pool.close().await,
    }
    Ok(secrets)
}

/// Seeds `count` keys of the operator org and puts it on `plan` with plain SQL against any
/// migrated version of the schema — for comparing two builds whose migrations differ (this
/// crate's store would try to migrate the other build's database); their secrets.
pub async fn seed_by_sql(
    database_url: &str,
    count: usize,
    plan: &str,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    const OPERATOR: &str = "SELECT id FROM orgs WHERE is_operator";
    const PLAN: &str = "UPDATE orgs SET plan = $1 WHERE id = $2";
    let org: String = if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await?;
        let org: String = sqlx::query_scalar(OPERATOR).fetch_one(&pool).await?;
        sqlx::query(PLAN)
            .bind(plan)
            .bind(&org)
            .execute(&pool)
            .await?;
        pool.close().await;
        org
    } else {
        let pool = sqlx::PgPool::connect(database_url).await?;
        let org: String = sqlx::query_scalar(OPERATOR).fetch_one(&pool).await?;
        sqlx::query(PLAN)
            .bind(plan)
            .bind(&org)
            .execute(&pool)
            .await?;
        pool.close().await;
        org
    };
    let org: OrgId = org
        .parse()
        .map_err(|e| anyhow::anyhow!("operator org id: {e:?}"))?;
    insert_keys_in_bulk(database_url, &org, count, now).await
}

/// Defines `count` feature flags of every kind — listing orgs, targeting plans by share,
/// variants, killed — of which the first `on_for_org` are on for `org` (listed) and the others
/// concern other orgs and plans, as most of an instance's flags do for any one org.
pub async fn define_flags(
    store: &dyn Store,
    org: &OrgId,
    count: usize,
    on_for_org: usize,
    now: i64,
) -> anyhow::Result<()> {
    for i in 0..count {
        let mine = i < on_for_org;
        let (variant, default_variant) = match i % 5 {
            4 => (Some(format!("v{i}")), None),
            _ => (None, None),
        };
        let listed = if mine { org.clone() } else { OrgId::generate() };
        let record = fluxgate_store::FlagRecord {
            name: format!("bench_flag_{i}"),
            description: "benchmark".into(),
            enabled: mine || i % 7 != 0,
            variant,
            default_variant,
            orgs: serde_json::json!([listed.to_string()]).to_string(),
            plans: if mine {
                "[]".into()
            } else {
                r#"["enterprise"]"#.into()
            },
            rollout_percent: if mine { 0 } else { (i as i64 * 13) % 101 },
            created_at: now,
            updated_at: now,
        };
        let audit = AuditRecord::by_system(
            None,
            "flag.created",
            Some(("flag", record.name.clone())),
            now,
        );
        store.put_flag(&record, &audit).await?;
    }
    Ok(())
}

/// Deletes the flags [`define_flags`] made.
pub async fn delete_flags(store: &dyn Store, count: usize, now: i64) -> anyhow::Result<()> {
    for i in 0..count {
        let name = format!("bench_flag_{i}");
        let audit = AuditRecord::by_system(None, "flag.deleted", Some(("flag", name.clone())), now);
        store.delete_flag(&name, &audit).await?;
    }
    Ok(())
}
