//! The server's tests over real HTTP, compiled as one binary: each module exercises one part
//! of the API against the real server (booted by `fluxgate-testkit`) on SQLite and on
//! PostgreSQL; `cli` and `cluster` run the real `fluxgate` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[macro_use]
extern crate fluxgate_testkit;

mod auth_attacks;
mod auth_flows;
mod browser;
mod cli;
mod cluster;
mod credits;
mod faults;
mod flags;
mod fresh_context;
mod fuzz;
mod hostile_input;
mod http_conventions;
mod input_arithmetic;
mod ip_allowlist;
mod keys;
mod leaked_keys;
mod login_identifiers;
mod mfa;
mod named_limits;
mod oidc;
mod orgs;
mod passkeys;
mod portal;
mod rate_limits;
mod usage;
mod webhooks;
