//! Fluxgate's Rust client: verify the API keys your customers present — one call returns the
//! key's org, scopes, plan, entitlements and rate-limit state — issue, rotate and revoke keys,
//! and report metered usage.
//!
//! ```no_run
//! # async fn example() -> Result<(), fluxgate_sdk::Error> {
//! use fluxgate_sdk::Flux;
//!
//! let flux = Flux::init("fg_live_…your operator key…");
//! let ctx = flux.keys().verify("fg_live_…the key your caller sent…").await?;
//! println!("org {} with scopes {:?}", ctx.org.id, ctx.scopes);
//! if flux.entitlements().check_for_key(&ctx, "bulk_export") {
//!     // the customer's plan includes bulk export
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The key given to [`Flux::init`] is an operator key: `keys:verify` to verify, `keys:write` and
//! `admin:orgs` to issue keys for your customers' orgs, `usage:write` to report usage.
//!
//! To protect your own API, wrap its routes in [`KeyAuthLayer`]; synchronous code uses
//! [`blocking::Flux`]; users' access tokens are verified offline with
//! [`Flux::tokens`].
#![warn(missing_docs)]

pub mod blocking;
mod client;
mod gate;
mod keys;
mod layer;
mod tokens;
mod usage;

pub use client::{Error, Flux, FluxBuilder};
pub use fluxgate_proto::{CreditRefill, Credits, CreditsChange, VerifyRequest};
pub use keys::{
    CreateKey, Entitlements, Flags, IssuedKey, KeyContext, KeyInfo, Keys, OrgRef, RateLimitState,
};
pub use layer::{KeyAuth, KeyAuthLayer};
pub use tokens::{AccessClaims, Tokens};
pub use usage::{TrackEvent, TrackOutcome, Usage};
