//! The Fluxgate server: configuration, the HTTP API, background workers and admin commands.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod invalidation;
pub mod keycache;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod ratelimit;
pub mod redisconn;
pub mod revocation;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod services;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod usage;
pub mod widget;
