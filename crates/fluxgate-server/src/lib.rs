//! The Fluxgate server: configuration, the HTTP API, background workers and admin commands.

pub mod access;
pub mod admin;
pub mod audit;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod invalidation;
pub mod keycache;
pub mod limiter;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod redisconn;
pub mod request_limits;
pub mod revocation;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod services;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod usage_recorder;
pub mod user_auth;
pub mod widget_tokens;
