//! Building audit entries: who did what to which target, from where. Never a secret.

use crate::clock::now;
use crate::extract::ClientInfo;
use fluxgate_core::ids::{EventId, OrgId, UserId};
use fluxgate_core::stored::ActorKind;
use fluxgate_store::AuditRecord;
use serde_json::Value;

/// Who did something, for audit entries and `created_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `user` or `key`.
    pub kind: ActorKind,
    /// `usr_…` or `key_…`.
    pub id: String,
}

/// An audit entry under construction.
pub struct AuditEvent(AuditRecord);

impl AuditEvent {
    /// `action` done by the user `actor` (or anonymously), from `client`.
    pub fn new(action: &str, actor: Option<&UserId>, client: &ClientInfo) -> Self {
        Self::with_actor(action, actor.map(UserId::as_str), client)
    }

    fn with_actor(action: &str, actor: Option<&str>, client: &ClientInfo) -> Self {
        Self(AuditRecord {
            id: EventId::generate(),
            org_id: None,
            actor_type: if actor.is_some() {
                ActorKind::User
            } else {
                ActorKind::Anonymous
            },
            actor_id: actor.map(str::to_owned),
            action: action.into(),
            target_type: None,
            target_id: None,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            data: "{}".into(),
            created_at: now(),
        })
    }

    /// `action` done by `actor` (a user or a key), from `client`.
    pub fn by(action: &str, actor: &Actor, client: &ClientInfo) -> Self {
        let mut event = Self::with_actor(action, Some(&actor.id), client);
        event.0.actor_type = actor.kind;
        event
    }

    /// When it happened (the operation's clock, for services that take the time as input).
    pub fn at(mut self, now: i64) -> Self {
        self.0.created_at = now;
        self
    }

    /// The org the event belongs to.
    pub fn org(mut self, org_id: Option<&OrgId>) -> Self {
        self.0.org_id = org_id.cloned();
        self
    }

    /// What was acted on.
    pub fn target(mut self, kind: &str, id: impl AsRef<str>) -> Self {
        self.0.target_type = Some(kind.into());
        self.0.target_id = Some(id.as_ref().to_owned());
        self
    }

    /// Extra non-secret details.
    pub fn data(mut self, data: Value) -> Self {
        self.0.data = data.to_string();
        self
    }

    /// The finished record.
    pub fn build(self) -> AuditRecord {
        self.0
    }
}
