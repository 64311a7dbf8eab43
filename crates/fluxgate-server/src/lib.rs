//! The Fluxgate server: configuration, the HTTP API, background workers and admin commands.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod ratelimit;
pub mod revocation;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tokens;
