//! Fluxgate's pure domain: identifiers, credentials, permissions, token claims and config value
//! parsing. Nothing in this crate performs I/O; the server, the storage layer and the SDK share it.
#![warn(missing_docs)]

pub mod apikey;
pub mod claims;
pub mod cost;
pub mod credits;
pub mod email;
pub mod entitlements;
pub mod identifier;
pub mod ids;
pub mod ip_allowlist;
pub mod mfa;
pub mod named_limit;
pub mod password;
pub mod permission;
pub mod ratelimit;
pub mod refresh;
pub mod secret;
pub mod stored;
pub mod units;
pub mod validation;
