//! The operations Fluxgate performs, each owning its whole rule: validate the input, check the
//! caller may (no escalation), write the change with its audit entry in one transaction, and
//! announce what every node's key cache must forget. The JSON handlers in
//! [`routes`](crate::routes) (and the portal's pages) only extract, call one of these and
//! serialise. Each takes the current time as `now`, so its rules are testable without a clock.

pub mod accounts;
pub mod audit_log;
pub mod credits;
pub mod entitlements;
pub mod invitations;
pub mod keys;
pub mod leaked;
pub mod mfa;
pub mod oidc;
pub mod orgs;
pub mod passkeys;
pub mod redis_credits;
pub mod roles;
pub mod sessions;
pub mod usage;
pub mod verify;
pub mod webhooks;
