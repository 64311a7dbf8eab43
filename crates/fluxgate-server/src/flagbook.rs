//! Every node's copy of the feature flags, and what a cached key's org may do with them: flags
//! are read at start, again when a change is announced and every second besides (a lost
//! announcement costs at most a second); a key's effective entitlements and flag variants are
//! derived from its plan, its org's overrides and the flags once, and again only when the flags
//! changed or an override ended — never a database read on verify.

use crate::keycache::CachedKey;
use crate::services::verify::PreparedValid;
use arc_swap::ArcSwap;
use fluxgate_core::entitlements::{self, Flag};
use fluxgate_store::{FlagRecord, Store, StoreResult};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node rereads the flags without being told.
const REREAD_EVERY: Duration = Duration::from_millis(500);

/// The flags as one node knows them.
#[derive(Debug, Default)]
pub struct FlagSet {
    /// Bumped by each reread that found a change (this node's count).
    pub version: u64,
    /// The flags, ready to evaluate.
    pub flags: Vec<Flag>,
    /// The flags as stored (to tell whether a reread changed anything).
    records: Vec<FlagRecord>,
}

/// A flag as evaluation needs it, from its stored form.
pub fn flag_of(record: &FlagRecord) -> Flag {
    Flag {
        name: record.name.clone(),
        enabled: record.enabled,
        variant: record.variant.clone(),
        default_variant: record.default_variant.clone(),
        orgs: serde_json::from_str(&record.orgs).unwrap_or_default(),
        plans: serde_json::from_str(&record.plans).unwrap_or_default(),
        rollout_percent: u8::try_from(record.rollout_percent.clamp(0, 100)).unwrap_or(0),
    }
}

/// What a cached key's org may do, as of a flag version, until an override ends.
#[derive(Debug)]
pub struct KeyEntitlements {
    /// The flags' version it was derived from.
    flags_version: u64,
    /// When it must be derived again (an override ends), if ever.
    until: Option<i64>,
    /// The effective entitlements, sorted.
    pub entitlements: Vec<String>,
    /// Flag variants, by flag.
    pub flags: BTreeMap<String, String>,
    /// The key's `VALID` answer with these, serialised on the first valid verify.
    pub valid_answer: OnceLock<Option<PreparedValid>>,
}

/// The node's flags, swapped whole when a reread finds a change.
pub struct FlagBook {
    current: ArcSwap<FlagSet>,
    reread: tokio::sync::Notify,
    versions: AtomicU64,
}

impl Default for FlagBook {
    fn default() -> Self {
        Self::new()
    }
}

impl FlagBook {
    /// No flags yet (read them with [`reread`](Self::reread)).
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(FlagSet::default()),
            reread: tokio::sync::Notify::new(),
            versions: AtomicU64::new(0),
        }
    }

    /// The flags as this node knows them.
    pub fn current(&self) -> Arc<FlagSet> {
        self.current.load_full()
    }

    /// Reads the flags from the database; a change makes a new version.
    pub async fn reread(&self, store: &dyn Store) -> StoreResult<()> {
        let records = store.flags().await?;
        if records == self.current.load().records {
            return Ok(());
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Arc::new(FlagSet {
            version,
            flags: records.iter().map(flag_of).collect(),
            records,
        }));
        Ok(())
    }

    /// Asks for a reread soon (a change was announced).
    pub fn changed(&self) {
        self.reread.notify_one();
    }

    /// Rereads the flags when told and every second, until `cancel`.
    pub fn spawn_rereader(self: &Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        let book = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(current) = book.upgrade() else {
                    return;
                };
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = current.reread.notified() => {}
                    () = tokio::time::sleep(REREAD_EVERY) => {}
                }
                if let Err(error) = current.reread(store.as_ref()).await {
                    tracing::warn!(%error, "feature flags could not be reread; retrying");
                }
            }
        });
    }

    /// What `key`'s org may do at `now`: derived once per flag version, and again when an
    /// override it depends on ends.
    pub fn entitlements_of(&self, key: &CachedKey, now: i64) -> Arc<KeyEntitlements> {
        let flags = self.current.load();
        if let Some(known) = key.entitlements.load().as_ref() {
            if known.flags_version == flags.version && known.until.is_none_or(|u| now < u) {
                return known.clone();
            }
        }
        let effective = entitlements::evaluate(
            key.org_id.as_str(),
            &key.plan,
            &key.plan_entitlements,
            &key.overrides,
            &flags.flags,
            now,
        );
        let derived = Arc::new(KeyEntitlements {
            flags_version: flags.version,
            until: effective.changes_at,
            entitlements: effective.names(),
            flags: effective.flags,
            valid_answer: OnceLock::new(),
        });
        key.entitlements.store(Some(derived.clone()));
        derived
    }
}
