//! A worker thread's memory of the callers' keys it authenticated lately: a caller presenting
//! the same key on every request (a product backend's verifier key) is recognised by a
//! constant-time comparison with what it presented before, instead of a SHA-256 and a lookup in
//! a shard both cores write to. What is recalled is only what the cache itself would answer: it
//! is forgotten when anything in the cache changes (a revocation, an announcement from another
//! node, a fill, a trim), at the cache's maximum age, and looked up afresh at least every
//! [`RECHECK_EVERY`] (which also keeps the key's place in the least-recently-used order).

use super::{CachedKey, KeyCache, KeyHash, Slot};
use fluxgate_core::secret::{constant_time_eq, ExposeSecret, SecretString};
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a recalled key is answered before it is looked up again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Keys remembered per thread (a caller alternating between more keys than this only misses).
const REMEMBERED: usize = 2;

/// One remembered caller's key.
struct Remembered {
    /// The cache it came from.
    cache: u64,
    /// What the caller presented (wiped from memory when forgotten).
    text: SecretString,
    key: Arc<CachedKey>,
    /// The cache's generation before it was looked up.
    generation: u64,
    /// Until when it may be answered: the cache's maximum age, or the next recheck.
    until: Instant,
}

thread_local! {
    static THIS_THREAD: RefCell<[Option<Remembered>; REMEMBERED]> =
        const { RefCell::new([const { None }; REMEMBERED]) };
    /// Which slot the next key replaces when none is free.
    static NEXT_SLOT: Cell<usize> = const { Cell::new(0) };
}

impl Remembered {
    fn is_current(&self, cache: &KeyCache, generation: u64, now: Instant) -> bool {
        self.cache == cache.id && self.generation == generation && now < self.until
    }
}

impl KeyCache {
    /// `answer` on the context of `text` if this thread remembered it from this cache and
    /// nothing in the cache has changed since; None otherwise (look it up).
    pub fn recall<R>(&self, text: &str, answer: impl FnOnce(&Arc<CachedKey>) -> R) -> Option<R> {
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        THIS_THREAD.with_borrow(|slots| {
            slots
                .iter()
                .flatten()
                .find(|r| {
                    r.is_current(self, generation, now)
                        && constant_time_eq(r.text.expose_secret().as_bytes(), text.as_bytes())
                })
                .map(|r| answer(&r.key))
        })
    }

    /// Remembers, on this thread, that `text` (whose hash is `hash`) presents `key` — if `key`
    /// is what the cache holds for it now. A secret being rotated out is never remembered: each
    /// of its uses is noted for its owner.
    pub fn remember(&self, text: &str, hash: &KeyHash, key: &Arc<CachedKey>) {
        if key.secret_retires_at.is_some() {
            return;
        }
        // read before the lookup: a change after it moves the generation past this one
        let generation = self.generation.load(Ordering::Acquire);
        let loaded_at = {
            let Ok(shard) = self.shard(hash.short).read() else {
                return;
            };
            match shard.get(&hash.short) {
                Some(Slot::Loaded(loaded)) if Arc::ptr_eq(&loaded.key, key) => loaded.at,
                _ => return,
            }
        };
        let now = Instant::now();
        let (Some(aged), Some(recheck)) = (
            loaded_at.checked_add(self.max_age),
            now.checked_add(RECHECK_EVERY),
        ) else {
            return;
        };
        let remembered = Remembered {
            cache: self.id,
            text: SecretString::from(text.to_owned()),
            key: key.clone(),
            generation,
            until: aged.min(recheck),
        };
        THIS_THREAD.with_borrow_mut(|slots| {
            // the slot holding this text or a stale entry, else the next in turn
            let current = self.generation.load(Ordering::Acquire);
            let slot = slots
                .iter()
                .position(|slot| {
                    slot.as_ref().is_none_or(|r| {
                        !r.is_current(self, current, now)
                            || constant_time_eq(r.text.expose_secret().as_bytes(), text.as_bytes())
                    })
                })
                .unwrap_or_else(|| {
                    let next = NEXT_SLOT.get();
                    NEXT_SLOT.set((next + 1) % REMEMBERED);
                    next % REMEMBERED
                });
            slots[slot] = Some(remembered);
        });
    }
}
