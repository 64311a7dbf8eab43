//! Who each session's user is — account, memberships, active org, permissions — kept per
//! session, so `GET /auth/me` reads no database for a session that has not changed. A change
//! to a user, their memberships or an org they belong to drops the views it touches on this
//! node at once and on the others through the invalidation bus; a view is never older than
//! `keys.cache_max_age`, so a lost announcement is healed within that bound. Authorisation
//! never reads these views: they only answer what the caller asked about themselves.

use crate::services::accounts::WhoAmI;
use fluxgate_core::ids::{SessionId, UserId};
use fluxgate_store::OrgId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct View {
    who: Arc<WhoAmI>,
    loaded: Instant,
}

/// The views by session, bounded in age and number.
pub struct SessionViews {
    views: Mutex<HashMap<SessionId, View>>,
    max_age: Duration,
    capacity: usize,
    /// Bumped by every change: a view read from the database before a change is not kept.
    generation: AtomicU64,
}

/// The generation a load started at; see [`SessionViews::keep`].
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl SessionViews {
    /// Views living at most `max_age`, at most `capacity` of them.
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        Self {
            views: Mutex::new(HashMap::new()),
            max_age,
            capacity: capacity.max(1),
            generation: AtomicU64::new(0),
        }
    }

    /// The session's view, if one is held and young enough.
    pub fn get(&self, session: &SessionId) -> Option<Arc<WhoAmI>> {
        let views = self.views.lock().ok()?;
        views
            .get(session)
            .filter(|view| view.loaded.elapsed() < self.max_age)
            .map(|view| view.who.clone())
    }

    /// Call before reading a view from the database; pass to [`Self::keep`].
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Keeps a view read since `read_at`, unless something changed meanwhile (it may then
    /// be stale already).
    pub fn keep(&self, session: &SessionId, who: Arc<WhoAmI>, read_at: Generation) {
        let Ok(mut views) = self.views.lock() else {
            return;
        };
        if self.generation.load(Ordering::Acquire) != read_at.0 {
            return;
        }
        if views.len() >= self.capacity && !views.contains_key(session) {
            let max_age = self.max_age;
            views.retain(|_, view| view.loaded.elapsed() < max_age);
            if views.len() >= self.capacity {
                views.clear(); // every view reloads on its next use: correct, just slower
            }
        }
        views.insert(
            session.clone(),
            View {
                who,
                loaded: Instant::now(),
            },
        );
    }

    /// Drops the views of `user`'s sessions.
    pub fn forget_user(&self, user: &UserId) {
        self.forget(|who| &who.user.id == user);
    }

    /// Drops the views that show `org` (renamed, deleted, its roles changed).
    pub fn forget_org(&self, org: &OrgId) {
        self.forget(|who| who.memberships.iter().any(|m| &m.org_id == org));
    }

    /// Drops every view (announcements may have been missed).
    pub fn forget_all(&self) {
        self.forget(|_| true);
    }

    fn forget(&self, touched: impl Fn(&WhoAmI) -> bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut views) = self.views.lock() {
            views.retain(|_, view| !touched(&view.who));
        }
    }
}
