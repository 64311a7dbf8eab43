//! Configuration: one typed struct read from a TOML file and `FLUXGATE_*` variables (the
//! environment wins; `__` nests), with every default in one place and every bad value named.

use fluxgate_core::permission::Catalog;
use fluxgate_core::secret::SecretString;
use fluxgate_core::units::{format_duration, parse_duration, Rate};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL people and mail links use; also the allowed Origin for cookie requests.
    pub public_url: String,
    /// Where the SQLite file and the generated instance secret live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Shared counters and invalidation across nodes.
    pub redis_url: Option<String>,
    /// Outgoing mail; unset: mail is written to the log.
    pub smtp_url: Option<String>,
    /// The From header of outgoing mail.
    pub smtp_from: String,
    /// API key prefix (`fg` → `fg_live_…`).
    pub key_prefix: String,
    /// The instance secret (64 hex characters); unset: generated into `data_dir`.
    pub secret_key: Option<SecretString>,
    /// `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `fluxgate=debug,info`.
    pub log_level: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// A connection on which no request starts and nothing is written for this long (a client
    /// that never finishes its headers, an idle keep-alive) is closed.
    pub header_read_timeout: Duration,
    /// On stop, open connections get this long to finish before they are dropped; the last
    /// usage write happens after it either way.
    pub shutdown_timeout: Duration,
    /// Database pool size.
    pub database_max_connections: u32,
    /// Sessions, tokens, passwords.
    pub auth: AuthConfig,
    /// Default rate limits.
    pub rate_limits: RateLimits,
    /// `[usage]`
    pub usage: UsageConfig,
    /// `[keys]`
    pub keys: KeysConfig,
    /// `[webhooks]`
    pub webhooks: WebhooksConfig,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[leaked_keys.public_keys]`: secret scanners whose signed reports of keys found in public
    /// `POST /keys/leaked` believes.
    pub scanner_keys: Vec<ScannerKey>,
    /// The product's scopes and their implications.
    pub catalog: Catalog,
    /// The product's scopes as configured (for display).
    pub scopes: ScopesConfig,
    /// Plans; the first is given to new orgs.
    pub plans: Vec<Plan>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[webhooks]`
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// Whether this node sends deliveries (off: it only queues events, for API-only nodes).
    pub deliver: bool,
    /// Whether endpoints may be on loopback, private or link-local addresses (off: refused, so
    /// a customer cannot point deliveries at the operator's own network).
    pub allow_private: bool,
    /// The wait before the first retry; each next one waits twice as long (at most an hour).
    pub first_retry: Duration,
    /// How long a delivery is retried before it is given up.
    pub give_up_after: Duration,
    /// How long an endpoint has to answer.
    pub timeout: Duration,
    /// How often a node looks for keys about to expire and quota thresholds crossed.
    pub scan_every: Duration,
}

/// `[usage]`
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// How old a tracked event's `timestamp` may be.
    pub track_max_age: Duration,
    /// Lifetime of usage-widget tokens.
    pub widget_token_ttl: Duration,
    /// Origins allowed to read usage with a widget token (`*`: any).
    pub widget_origins: Vec<String>,
    /// Whether calls are attributed per key, endpoint and outcome (monthly quotas count anyway).
    pub attribution: bool,
    /// How long per-minute call counts are kept (zero: forever).
    pub minute_retention: Duration,
    /// How long hourly roll-ups are kept (zero: forever).
    pub hour_retention: Duration,
    /// How long daily roll-ups are kept (zero: forever).
    pub day_retention: Duration,
}

/// `[keys]`
#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// The longest a node answers verify from a cached key without rereading it (also how
    /// often it rereads the list of live secrets): the bound on staleness when a change
    /// announcement is lost.
    pub cache_max_age: Duration,
    /// How many keys' contexts a node keeps loaded; past it, the least recently used are
    /// dropped (and reread on their next verify). Secrets are still known by hash.
    pub cache_capacity: usize,
    /// How often a node rereads every live secret (dropping those no longer live); between,
    /// every `cache_max_age`, it reads only the secrets created lately.
    pub full_resync_every: Duration,
}

/// What rate limiting does when Redis is configured but cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// Decide with this node's in-memory limiter (limits become per node meanwhile).
    FailOpen,
    /// Answer 503 `UNAVAILABLE`.
    FailClosed,
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl: Duration,
    /// How long a just-spent refresh token still returns the pair it was exchanged for.
    pub refresh_reuse_interval: Duration,
    /// Refuse login until the email is verified.
    pub require_email_verification: bool,
    /// Mark cookies `Secure`.
    pub cookie_secure: bool,
    /// The `aud` of access tokens.
    pub audience: String,
    /// Lifetime of email verification links.
    pub verification_ttl: Duration,
    /// How long an invitation to an org stays valid.
    pub invitation_ttl: Duration,
    /// How long after its last password entry a portal session may make sensitive changes
    /// (create keys, manage members) without confirming the password again.
    pub reauthenticate_after: Duration,
    /// Lifetime of password reset links.
    pub reset_ttl: Duration,
    /// Failed logins that lock an address.
    pub lockout_threshold: u32,
    /// `lockout_threshold` failures per this window lock an address; a locked address gets one
    /// more attempt every `lockout_window / lockout_threshold`.
    pub lockout_window: Duration,
    /// Every user must have signed in with a second factor to act in any org or as an operator
    /// (the `/auth/*` endpoints, where they set one up, stay open).
    pub require_mfa: bool,
    /// Whether accounts carry a username (to log in with).
    pub username: IdentifierUse,
    /// Document numbers accounts carry (to log in with), when the operator uses them.
    pub document: Option<DocumentConfig>,
    /// `[auth.oidc.<id>]`: OpenID providers people sign in with.
    pub oidc: Vec<OidcProviderConfig>,
}

/// `[auth.oidc.<id>]`: a provider people sign in with — OpenID Connect, plain OAuth 2.0 with a
/// userinfo endpoint, or GitHub.
#[derive(Debug, Clone)]
pub struct OidcProviderConfig {
    /// The table's name: in URLs (`/login/oidc/<id>`) and stored with each linked identity.
    pub id: String,
    /// What the buttons say: "Sign in with `name`".
    pub name: String,
    /// How the provider is spoken to, and where.
    pub protocol: ProviderProtocol,
    /// The client registered at the provider.
    pub client_id: String,
    /// Its secret.
    pub client_secret: SecretString,
    /// Scopes asked for (besides `openid` for an OpenID provider).
    pub scopes: Vec<String>,
}

/// How a provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderProtocol {
    /// OpenID Connect: endpoints and keys from `{issuer}/.well-known/openid-configuration`; the
    /// person is the verified ID token.
    OpenId {
        /// The issuer URL.
        issuer: String,
    },
    /// OAuth 2.0 without OpenID: fixed endpoints; the person is read with the access token.
    OAuth2 {
        /// The authorisation endpoint (where the browser goes).
        authorization_url: String,
        /// The token endpoint.
        token_url: String,
        /// Where the person is read from.
        profile: ProfileApi,
    },
}

/// Where an OAuth 2.0 provider tells who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileApi {
    /// An OpenID-style userinfo endpoint answering `sub`, `email`, `email_verified`, `name`.
    Userinfo(String),
    /// GitHub's REST API at this base URL: `/user` (the stable numeric id) and `/user/emails`.
    GitHub(String),
}

impl ProviderProtocol {
    /// The URL whose origin the browser is sent to (the portal's CSP `form-action` names it).
    pub fn browser_url(&self) -> &str {
        match self {
            Self::OpenId { issuer } => issuer,
            Self::OAuth2 {
                authorization_url, ..
            } => authorization_url,
        }
    }
}

/// A secret scanner's public key (ECDSA P-256), by the identifier its reports name.
#[derive(Debug, Clone)]
pub struct ScannerKey {
    /// What the report's `Github-Public-Key-Identifier` header says.
    pub id: String,
    /// The key its signature is checked against.
    pub key: p256::ecdsa::VerifyingKey,
}

/// Every `[leaked_keys.public_keys]` entry: identifier = PEM public key (P-256).
fn scanner_keys(r: &mut Reader<'_>) -> Vec<ScannerKey> {
    use p256::pkcs8::DecodePublicKey;
    let ids: Vec<String> = match r
        .table
        .get("leaked_keys")
        .and_then(|t| t.get("public_keys"))
    {
        None => return Vec::new(),
        Some(Value::Table(t)) => t.keys().cloned().collect(),
        Some(other) => {
            let message = format!("expected a table of id = PEM, found {}", other.type_str());
            r.error("leaked_keys.public_keys", message);
            return Vec::new();
        }
    };
    let mut keys = Vec::new();
    for id in ids {
        let path = format!("leaked_keys.public_keys.{id}");
        let Some(pem) = r.optional_string(&path) else {
            continue;
        };
        match p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()) {
            Ok(key) => keys.push(ScannerKey { id, key }),
            Err(_) => r.error(
                &path,
                "must be a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----)".into(),
            ),
        }
    }
    keys
}

/// Whether accounts carry an identifier besides the email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierUse {
    /// Not used.
    Off,
    /// An account may have one.
    Optional,
    /// Every new account must have one.
    Required,
}

/// `[auth.document]`: the document number accounts log in with.
#[derive(Debug, Clone)]
pub struct DocumentConfig {
    /// The number's rule: label, pattern, checksum.
    pub rule: fluxgate_core::identifier::DocumentRule,
    /// Whether every new account must have one.
    pub required: bool,
}

/// `[rate_limits]`
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Per API key when neither the key nor its plan says.
    pub api_key: Rate,
    /// Per user on JWT-authenticated calls.
    pub user: Rate,
    /// Per IP on unauthenticated endpoints.
    pub ip: Rate,
    /// What to do when Redis cannot answer.
    pub redis_failure: RedisFailure,
    /// How long a decision waits for Redis before the failure policy applies.
    pub redis_timeout: Duration,
    /// How long a node's lease on a key's shared allowance lives (zero: every key decision
    /// is a Redis round trip); the overshoot across nodes is at most this span's allowance.
    pub redis_lease: Duration,
    /// Upper bound on keys the in-memory limiter tracks.
    pub max_tracked_keys: usize,
}

/// `[scopes]`
#[derive(Debug, Clone, Default)]
pub struct ScopesConfig {
    /// The product's own scopes.
    pub catalog: Vec<String>,
    /// `scope → scopes it implies`.
    pub implies: BTreeMap<String, Vec<String>>,
}

/// One `[[plans]]` entry.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Unique name.
    pub name: String,
    /// Rate limit of the org's keys.
    pub rate_limit: Rate,
    /// Feature flags.
    pub entitlements: Vec<String>,
    /// Monthly quota per meter.
    pub quotas: BTreeMap<String, u64>,
    /// Named limits shared by all keys of an org on this plan (`ratelimits = { tokens =
    /// "50000/hour" }`); a key's own limit of the same name takes its place.
    pub named_limits: BTreeMap<String, Rate>,
}

/// Everything wrong with a configuration, one line per bad value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

const ENV_PREFIX: &str = "FLUXGATE_";
/// Variables that steer loading rather than name a key.
const ENV_NOT_KEYS: &[&str] = &["FLUXGATE_CONFIG", "FLUXGATE_TEST_POSTGRES_URL"];

impl Config {
    /// Reads the file (if any) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let env_file = std::env::var_os("FLUXGATE_CONFIG").map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        let mut table = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
                text.parse::<Table>()
                    .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?
            }
            None => Table::new(),
        };
        overlay_env(&mut table, std::env::vars())?;
        Self::from_table(&table)
    }

    /// Builds a configuration from an already merged table.
    pub fn from_table(table: &Table) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(table);
        let data_dir = PathBuf::from(r.string("data_dir", "./data"));
        let default_db = format!("sqlite://{}/fluxgate.db", data_dir.display());
        let listen_text = r.string("listen", "127.0.0.1:8080");
        let listen = r.check(
            "listen",
            listen_text
                .parse::<SocketAddr>()
                .map_err(|_| format!("`{listen_text}` is not an address such as 127.0.0.1:8080")),
        );
        let public_url = r.string("public_url", "http://localhost:8080");
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            r.error(
                "public_url",
                format!("`{public_url}` must start with http:// or https://"),
            );
        }
        let database_url = r.string("database_url", &default_db);
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            r.error(
                "database_url",
                "must start with sqlite:// or postgres://".to_string(),
            );
        }
        let redis_url = r.optional_string("redis_url");
        let smtp_url = r.optional_string("smtp_url");
        if let Some(url) = &smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                r.error(
                    "smtp_url",
                    "must start with smtp:// or smtps://".to_string(),
                );
            }
        }
        let smtp_from = r.string("smtp_from", "Fluxgate <no-reply@localhost>");
        let key_prefix = r.string("key_prefix", "fg");
        if key_prefix.is_empty()
            || key_prefix.len() > 16
            || !key_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            r.error(
                "key_prefix",
                format!("`{key_prefix}` must be 1-16 characters of a-z and 0-9"),
            );
        }
        let secret_key = r.optional_string("secret_key");
        if let Some(key) = &secret_key {
            if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                r.error(
                    "secret_key",
                    "must be 64 hexadecimal characters (32 bytes)".to_string(),
                );
            }
        }
        let log_format = match r.string("log_format", "json").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                r.error(
                    "log_format",
                    format!("`{other}` must be `json` or `pretty`"),
                );
                LogFormat::Json
            }
        };
        let log_level = r.string("log_level", "info");
        let max_body_bytes =
            r.integer("max_body_bytes", 64 * 1024, 1024, 16 * 1024 * 1024) as usize;
        let database_max_connections = r.integer("database_max_connections", 16, 1, 1000) as u32;
        let header_read_timeout = r.duration("header_read_timeout", "10s");
        if header_read_timeout < Duration::from_secs(1) {
            r.error("header_read_timeout", "must be at least 1s".into());
        }
        let shutdown_timeout = r.duration("shutdown_timeout", "10s");

        let auth = AuthConfig {
            access_token_ttl: r.duration("auth.access_token_ttl", "15m"),
            refresh_token_ttl: r.duration("auth.refresh_token_ttl", "7d"),
            refresh_reuse_interval: r.duration("auth.refresh_reuse_interval", "10s"),
            require_email_verification: r.bool("auth.require_email_verification", true),
            cookie_secure: r.bool("auth.cookie_secure", true),
            audience: r.string("auth.audience", "fluxgate"),
            verification_ttl: r.duration("auth.verification_ttl", "24h"),
            invitation_ttl: r.duration("auth.invitation_ttl", "7d"),
            reset_ttl: r.duration("auth.reset_ttl", "1h"),
            reauthenticate_after: r.duration("auth.reauthenticate_after", "15m"),
            lockout_threshold: r.integer("auth.lockout_threshold", 5, 1, 1000) as u32,
            lockout_window: r.duration("auth.lockout_window", "15m"),
            require_mfa: r.bool("auth.require_mfa", false),
            username: match r.string("auth.username", "off").as_str() {
                "off" => IdentifierUse::Off,
                "optional" => IdentifierUse::Optional,
                "required" => IdentifierUse::Required,
                other => {
                    let message = format!("expected off, optional or required, found {other:?}");
                    r.error("auth.username", message);
                    IdentifierUse::Off
                }
            },
            document: document_config(&mut r),
            oidc: oidc_providers(&mut r),
        };
        if auth.access_token_ttl < Duration::from_secs(1) {
            r.error("auth.access_token_ttl", "must be at least 1s".into());
        }
        if auth.refresh_token_ttl < auth.access_token_ttl {
            r.error(
                "auth.refresh_token_ttl",
                "must not be shorter than auth.access_token_ttl".into(),
            );
        }
        let rate_limits = RateLimits {
            api_key: r.rate("rate_limits.api_key", "1000/min"),
            user: r.rate("rate_limits.user", "100/min"),
            ip: r.rate("rate_limits.ip", "10/min"),
            redis_failure: match r.string("rate_limits.redis_failure", "fail_open").as_str() {
                "fail_open" => RedisFailure::FailOpen,
                "fail_closed" => RedisFailure::FailClosed,
                other => {
                    r.error(
                        "rate_limits.redis_failure",
                        format!("`{other}` must be `fail_open` or `fail_closed`"),
                    );
                    RedisFailure::FailOpen
                }
            },
            redis_timeout: r.duration("rate_limits.redis_timeout", "100ms"),
            redis_lease: r.duration("rate_limits.redis_lease", "1s"),
            max_tracked_keys: r.integer(
                "rate_limits.max_tracked_keys",
                1_000_000,
                1_000,
                100_000_000,
            ) as usize,
        };
        let webhooks = WebhooksConfig {
            deliver: r.bool("webhooks.deliver", true),
            allow_private: r.bool("webhooks.allow_private", false),
            first_retry: r.duration("webhooks.first_retry", "10s"),
            give_up_after: r.duration("webhooks.give_up_after", "24h"),
            timeout: r.duration("webhooks.timeout", "10s"),
            scan_every: r.duration("webhooks.scan_every", "60s"),
        };
        if webhooks.timeout.is_zero() || webhooks.first_retry.is_zero() {
            r.error(
                "webhooks",
                "timeout and first_retry must be longer than zero".into(),
            );
        }
        let usage = UsageConfig {
            track_max_age: r.duration("usage.track_max_age", "35d"),
            widget_token_ttl: r.duration("usage.widget_token_ttl", "15m"),
            attribution: r.bool("usage.attribution", true),
            minute_retention: r.duration("usage.minute_retention", "7d"),
            hour_retention: r.duration("usage.hour_retention", "400d"),
            day_retention: r.duration("usage.day_retention", "0s"),
            widget_origins: {
                let origins = r.string_list("usage.widget_origins");
                if origins.is_empty() {
                    vec!["*".to_owned()]
                } else {
                    origins
                }
            },
        };
        let keys = KeysConfig {
            cache_max_age: r.duration("keys.cache_max_age", "60s"),
            cache_capacity: r.integer("keys.cache_capacity", 100_000, 100, 100_000_000) as usize,
            full_resync_every: r.duration("keys.full_resync_every", "10m"),
        };
        if keys.full_resync_every < Duration::from_secs(1)
            || keys.full_resync_every > Duration::from_secs(86_400)
        {
            r.error(
                "keys.full_resync_every",
                "must be between 1s and 24h".into(),
            );
        }
        if rate_limits.redis_lease > Duration::from_secs(60) {
            r.error("rate_limits.redis_lease", "must be at most 60s".into());
        }
        if keys.cache_max_age < Duration::from_secs(1)
            || keys.cache_max_age > Duration::from_secs(3600)
        {
            r.error("keys.cache_max_age", "must be between 1s and 1h".into());
        }
        let trusted_proxies: Vec<ipnet::IpNet> = r
            .string_list("trusted_proxies")
            .iter()
            .filter_map(|entry| {
                let parsed = entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(net) => Some(net),
                    Err(_) => {
                        r.error(
                            "trusted_proxies",
                            format!(
                                "`{entry}` is not an IP address or CIDR range such as 10.0.0.0/8"
                            ),
                        );
                        None
                    }
                }
            })
            .collect();
        let scopes = ScopesConfig {
            catalog: r.string_list("scopes.catalog"),
            implies: r.string_list_map("scopes.implies"),
        };
        let catalog = match Catalog::new(&scopes.catalog, &scopes.implies) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors {
                    r.error("scopes", e);
                }
                Catalog::default()
            }
        };
        let plans = r.plans();
        let scanner_keys = scanner_keys(&mut r);
        r.report_unknown(table);
        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        Ok(Self {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: public_url.trim_end_matches('/').to_owned(),
            data_dir,
            database_url,
            redis_url,
            smtp_url,
            smtp_from,
            key_prefix,
            secret_key: secret_key.map(SecretString::from),
            log_format,
            log_level,
            max_body_bytes,
            header_read_timeout,
            shutdown_timeout,
            database_max_connections,
            auth,
            rate_limits,
            usage,
            keys,
            webhooks,
            trusted_proxies,
            scanner_keys,
            catalog,
            scopes,
            plans,
        })
    }

    /// The plan of this name.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The plan new orgs get.
    pub fn default_plan(&self) -> &str {
        self.plans
            .first()
            .map(|p| p.name.as_str())
            .unwrap_or("free")
    }

    /// The configuration as `config check` prints it: every key, its value, secrets redacted.
    pub fn describe(&self) -> String {
        let d = format_duration;
        let mut lines = vec![
            format!("listen = \"{}\"", self.listen),
            format!("public_url = \"{}\"", self.public_url),
            format!("data_dir = \"{}\"", self.data_dir.display()),
            format!("database_url = \"{}\"", redact_url(&self.database_url)),
            format!(
                "redis_url = {}",
                opt(self.redis_url.as_deref().map(redact_url))
            ),
            format!(
                "smtp_url = {}",
                opt(self.smtp_url.as_deref().map(redact_url))
            ),
            format!("smtp_from = \"{}\"", self.smtp_from),
            format!("key_prefix = \"{}\"", self.key_prefix),
            format!(
                "trusted_proxies = {:?}",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            format!(
                "secret_key = {}",
                if self.secret_key.is_some() {
                    "\"[set]\""
                } else {
                    "(generated in data_dir)"
                }
            ),
            format!(
                "log_format = \"{}\"",
                if self.log_format == LogFormat::Json {
                    "json"
                } else {
                    "pretty"
                }
            ),
            format!("log_level = \"{}\"", self.log_level),
            format!("max_body_bytes = {}", self.max_body_bytes),
            format!("header_read_timeout = \"{}\"", d(self.header_read_timeout)),
            format!("shutdown_timeout = \"{}\"", d(self.shutdown_timeout)),
            format!(
                "database_max_connections = {}",
                self.database_max_connections
            ),
            "[auth]".into(),
            format!("access_token_ttl = \"{}\"", d(self.auth.access_token_ttl)),
            format!("refresh_token_ttl = \"{}\"", d(self.auth.refresh_token_ttl)),
            format!(
                "refresh_reuse_interval = \"{}\"",
                d(self.auth.refresh_reuse_interval)
            ),
            format!(
                "require_email_verification = {}",
                self.auth.require_email_verification
            ),
            format!("cookie_secure = {}", self.auth.cookie_secure),
            format!("audience = \"{}\"", self.auth.audience),
            format!("verification_ttl = \"{}\"", d(self.auth.verification_ttl)),
            format!("invitation_ttl = \"{}\"", d(self.auth.invitation_ttl)),
            format!("reset_ttl = \"{}\"", d(self.auth.reset_ttl)),
            format!("lockout_threshold = {}", self.auth.lockout_threshold),
            format!("lockout_window = \"{}\"", d(self.auth.lockout_window)),
            format!("require_mfa = {}", self.auth.require_mfa),
            format!(
                "username = \"{}\"",
                match self.auth.username {
                    IdentifierUse::Off => "off",
                    IdentifierUse::Optional => "optional",
                    IdentifierUse::Required => "required",
                }
            ),
            match &self.auth.document {
                Some(doc) => format!(
                    "[auth.document]\nlabel = {:?}\npattern = {:?}\nchecksum = \"{}\"\nrequired = {}",
                    doc.rule.label,
                    doc.rule.pattern.as_str(),
                    match doc.rule.checksum {
                        fluxgate_core::identifier::Checksum::None => "none",
                        fluxgate_core::identifier::Checksum::Cpf => "cpf",
                    },
                    doc.required
                ),
                None => "# no [auth.document]: accounts log in by email (or username)".into(),
            },
            self.auth
                .oidc
                .iter()
                .map(|p| {
                    let endpoints = match &p.protocol {
                        ProviderProtocol::OpenId { issuer } => format!("issuer = {issuer:?}"),
                        ProviderProtocol::OAuth2 {
                            authorization_url,
                            token_url,
                            profile,
                        } => {
                            let profile = match profile {
                                ProfileApi::Userinfo(url) => format!("userinfo_url = {url:?}"),
                                ProfileApi::GitHub(api) => {
                                    format!("preset = \"github\"\napi_url = {api:?}")
                                }
                            };
                            format!("authorization_url = {authorization_url:?}\ntoken_url = {token_url:?}\n{profile}")
                        }
                    };
                    format!(
                        "[auth.oidc.{}]\nname = {:?}\n{endpoints}\nclient_id = {:?}\nclient_secret = \"[set]\"\nscopes = {:?}",
                        p.id, p.name, p.client_id, p.scopes
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            match self.scanner_keys.is_empty() {
                true => "# no [leaked_keys.public_keys]: POST /keys/leaked believes no report".into(),
                false => format!(
                    "[leaked_keys.public_keys]\n{}",
                    self.scanner_keys
                        .iter()
                        .map(|k| format!("{:?} = \"[P-256 public key]\"", k.id))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            },
            "[webhooks]".into(),
            format!("deliver = {}", self.webhooks.deliver),
            format!("allow_private = {}", self.webhooks.allow_private),
            format!("first_retry = \"{}\"", d(self.webhooks.first_retry)),
            format!("give_up_after = \"{}\"", d(self.webhooks.give_up_after)),
            format!("timeout = \"{}\"", d(self.webhooks.timeout)),
            format!("scan_every = \"{}\"", d(self.webhooks.scan_every)),
            "[rate_limits]".into(),
            format!("api_key = \"{}\"", self.rate_limits.api_key),
            format!("user = \"{}\"", self.rate_limits.user),
            format!("ip = \"{}\"", self.rate_limits.ip),
            format!(
                "redis_failure = \"{}\"",
                match self.rate_limits.redis_failure {
                    RedisFailure::FailOpen => "fail_open",
                    RedisFailure::FailClosed => "fail_closed",
                }
            ),
            format!("redis_timeout = \"{}\"", d(self.rate_limits.redis_timeout)),
            format!("redis_lease = \"{}\"", d(self.rate_limits.redis_lease)),
            format!("max_tracked_keys = {}", self.rate_limits.max_tracked_keys),
            "[usage]".into(),
            format!("track_max_age = \"{}\"", d(self.usage.track_max_age)),
            format!("widget_token_ttl = \"{}\"", d(self.usage.widget_token_ttl)),
            format!("widget_origins = {:?}", self.usage.widget_origins),
            format!("attribution = {}", self.usage.attribution),
            format!("minute_retention = \"{}\"", d(self.usage.minute_retention)),
            format!("hour_retention = \"{}\"", d(self.usage.hour_retention)),
            format!("day_retention = \"{}\"", d(self.usage.day_retention)),
            "[keys]".into(),
            format!("cache_max_age = \"{}\"", d(self.keys.cache_max_age)),
            format!("cache_capacity = {}", self.keys.cache_capacity),
            format!("full_resync_every = \"{}\"", d(self.keys.full_resync_every)),
            "[scopes]".into(),
            format!("catalog = {:?}", self.scopes.catalog),
            format!("implies = {:?}", self.scopes.implies),
        ];
        for plan in &self.plans {
            lines.push("[[plans]]".into());
            lines.push(format!("name = \"{}\"", plan.name));
            lines.push(format!("rate_limit = \"{}\"", plan.rate_limit));
            lines.push(format!("entitlements = {:?}", plan.entitlements));
            lines.push(format!("quotas = {:?}", plan.quotas));
            if !plan.named_limits.is_empty() {
                let limits: Vec<String> = plan
                    .named_limits
                    .iter()
                    .map(|(name, rate)| format!("{name:?} = \"{rate}\""))
                    .collect();
                lines.push(format!("ratelimits = {{ {} }}", limits.join(", ")));
            }
        }
        lines.join("\n")
    }
}

fn opt(value: Option<String>) -> String {
    value
        .map(|v| format!("\"{v}\""))
        .unwrap_or_else(|| "(unset)".into())
}

/// Hides the password part of a URL.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:[redacted]{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The environment variable that overrides a dotted key.
pub fn env_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "__").to_uppercase())
}

/// Writes `FLUXGATE_*` variables over the file's table. A value that reads as TOML (`true`,
/// `42`, `["a", "b"]`) is taken as such; anything else is a string.
pub fn overlay_env(
    table: &mut Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.clone()));
        let mut node = &mut *table;
        for (i, segment) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(segment.clone(), value.clone());
                break;
            }
            let entry = node
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            match entry {
                Value::Table(t) => node = t,
                _ => {
                    errors.push(format!("{name}: `{}` is not a table", path[..=i].join(".")));
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads typed values from the merged table, recording which keys it used and every error.
struct Reader<'a> {
    table: &'a Table,
    seen: BTreeSet<String>,
    errors: Vec<String>,
}

impl<'a> Reader<'a> {
    fn new(table: &'a Table) -> Self {
        Self {
            table,
            seen: BTreeSet::new(),
            errors: Vec::new(),
        }
    }

    fn error(&mut self, path: &str, message: String) {
        self.errors
            .push(format!("{path} ({}): {message}", env_name(path)));
    }

    fn check<T>(&mut self, path: &str, value: Result<T, String>) -> Option<T> {
        value.map_err(|e| self.error(path, e)).ok()
    }

    fn get(&mut self, path: &str) -> Option<&'a Value> {
        self.seen.insert(path.to_owned());
        let mut node = self.table;
        let segments: Vec<&str> = path.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let value = node.get(*segment)?;
            if i + 1 == segments.len() {
                return Some(value);
            }
            node = value.as_table()?;
        }
        None
    }

    fn optional_string(&mut self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Integer(i) => Some(i.to_string()),
            other => {
                self.error(
                    path,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, path: &str, default: &str) -> String {
        self.optional_string(path)
            .unwrap_or_else(|| default.to_owned())
    }

    fn bool(&mut self, path: &str, default: bool) -> bool {
        match self.get(path) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" => false,
            Some(other) => {
                self.error(path, format!("`{other}` must be true or false"));
                default
            }
        }
    }

    fn integer(&mut self, path: &str, default: i64, min: i64, max: i64) -> i64 {
        let value = match self.get(path) {
            None => return default,
            Some(Value::Integer(i)) => Some(*i),
            Some(Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        match value {
            Some(v) if (min..=max).contains(&v) => v,
            _ => {
                let shown = self.get(path).map(|v| v.to_string()).unwrap_or_default();
                self.error(
                    path,
                    format!("`{shown}` must be a whole number from {min} to {max}"),
                );
                default
            }
        }
    }

    fn duration(&mut self, path: &str, default: &str) -> Duration {
        let text = self.string(path, default);
        self.check(path, parse_duration(&text))
            .unwrap_or_else(|| parse_duration(default).unwrap_or_default())
    }

    fn rate(&mut self, path: &str, default: &str) -> Rate {
        let text = self.string(path, default);
        let fallback = Rate {
            limit: 1,
            window: Duration::from_secs(1),
        };
        self.check(path, Rate::parse(&text))
            .unwrap_or_else(|| Rate::parse(default).unwrap_or(fallback))
    }

    fn string_list(&mut self, path: &str) -> Vec<String> {
        match self.get(path) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) => out.push(s.to_owned()),
                        None => self.error(path, format!("`{item}` must be a string")),
                    }
                }
                out
            }
            Some(Value::String(s)) => s
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            Some(other) => {
                self.error(
                    path,
                    format!("expected a list of strings, found {}", other.type_str()),
                );
                Vec::new()
            }
        }
    }

    fn string_list_map(&mut self, path: &str) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        match self.get(path) {
            None => {}
            Some(Value::Table(t)) => {
                for key in t.keys() {
                    let list = self.string_list(&format!("{path}.{key}"));
                    out.insert(key.clone(), list);
                }
            }
            Some(other) => self.error(
                path,
                format!("expected a table, found {}", other.type_str()),
            ),
        }
        out
    }

    fn plans(&mut self) -> Vec<Plan> {
        let entries = match self.get("plans") {
            None => return default_plans(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.error(
                    "plans",
                    format!("expected [[plans]] tables, found {}", other.type_str()),
                );
                return default_plans();
            }
        };
        let mut plans: Vec<Plan> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("plans[{i}]");
            let Some(t) = entry.as_table() else {
                self.error(&at, "must be a table".into());
                continue;
            };
            let mut sub = Reader::new(t);
            let name = sub.string("name", "");
            if name.is_empty() {
                sub.error("name", "every plan needs a name".into());
            } else if plans.iter().any(|p| p.name == name) {
                sub.error("name", format!("`{name}` is declared twice"));
            }
            let rate_limit = sub.rate("rate_limit", "1000/min");
            let entitlements = sub.string_list("entitlements");
            let mut quotas = BTreeMap::new();
            if let Some(q) = sub.get("quotas") {
                match q.as_table() {
                    Some(q) => {
                        for (meter, limit) in q {
                            match limit.as_integer() {
                                Some(n) if n >= 0 => {
                                    quotas.insert(meter.clone(), n as u64);
                                }
                                _ => sub.error(
                                    &format!("quotas.{meter}"),
                                    format!("`{limit}` must be a whole number ≥ 0"),
                                ),
                            }
                        }
                    }
                    None => sub.error("quotas", "must be a table of meter = limit".into()),
                }
            }
            let mut named_limits = BTreeMap::new();
            if let Some(limits) = sub.get("ratelimits") {
                match limits.as_table() {
                    Some(limits) => {
                        for (limit_name, rate) in limits {
                            let field = format!("ratelimits.{limit_name}");
                            if !fluxgate_core::named_limit::is_name(limit_name) {
                                sub.error(
                                    &field,
                                    "a name is 1–64 of a-z, 0-9, _, -, . and :".into(),
                                );
                            }
                            match rate.as_str().map(Rate::parse) {
                                Some(Ok(rate)) => {
                                    named_limits.insert(limit_name.clone(), rate);
                                }
                                Some(Err(e)) => sub.error(&field, e),
                                None => sub
                                    .error(&field, "must be a rate such as \"50000/hour\"".into()),
                            }
                        }
                    }
                    None => sub.error("ratelimits", "must be a table of name = rate".into()),
                }
            }
            for key in t.keys() {
                if !["name", "rate_limit", "entitlements", "quotas", "ratelimits"]
                    .contains(&key.as_str())
                {
                    sub.errors.push(format!("{key}: unknown key"));
                }
            }
            for e in sub.errors {
                self.errors.push(format!("{at}.{e}"));
            }
            plans.push(Plan {
                name,
                rate_limit,
                entitlements,
                quotas,
                named_limits,
            });
        }
        if plans.is_empty() {
            self.error("plans", "declare at least one plan".into());
        }
        plans
    }

    /// Names every key in the table that no reader asked for (typos, stale keys).
    fn report_unknown(&mut self, table: &Table) {
        let mut unknown = Vec::new();
        collect_leaves(table, "", &mut unknown);
        for path in unknown {
            let known = self
                .seen
                .iter()
                .any(|s| path == *s || path.starts_with(&format!("{s}.")));
            if !known && !path.starts_with("plans") {
                self.error(&path, "unknown key".into());
            }
        }
    }
}

/// Every `[auth.oidc.<id>]` table, each with an issuer, a client id and a secret.
fn oidc_providers(r: &mut Reader<'_>) -> Vec<OidcProviderConfig> {
    // read without marking the whole table seen, so a misspelt key inside it is still reported
    let table = r.table.get("auth").and_then(|auth| auth.get("oidc"));
    let ids: Vec<String> = match table {
        None => return Vec::new(),
        Some(Value::Table(t)) => t.keys().cloned().collect(),
        Some(other) => {
            let message = format!(
                "expected [auth.oidc.<id>] tables, found {}",
                other.type_str()
            );
            r.error("auth.oidc", message);
            return Vec::new();
        }
    };
    let mut providers = Vec::new();
    for id in ids {
        let at = |key: &str| format!("auth.oidc.{id}.{key}");
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            r.error(
                &format!("auth.oidc.{id}"),
                "the id must be letters, digits, - or _".into(),
            );
            continue;
        }
        let preset = r.optional_string(&at("preset"));
        let github = match preset.as_deref() {
            None => false,
            Some("github") => true,
            Some(other) => {
                r.error(&at("preset"), format!("`{other}` is not a preset (github)"));
                continue;
            }
        };
        let name = r.string(&at("name"), if github { "GitHub" } else { &id });
        let mut required = |key: &str| {
            let value = r.optional_string(&at(key));
            if value.is_none() {
                r.error(&at(key), "is required".into());
            }
            value
        };
        let (client_id, client_secret) = (required("client_id"), required("client_secret"));
        // (not read for a preset, so a stray issuer next to one is reported as unknown)
        let given = !github
            && ["issuer", "authorization_url", "token_url", "userinfo_url"]
                .iter()
                .any(|key| r.optional_string(&at(key)).is_some());
        let mut url = |key: &str, default: Option<&str>| {
            let value = r.optional_string(&at(key)).or(default.map(str::to_owned))?;
            if value.starts_with("https://") || value.starts_with("http://") {
                Some(value.trim_end_matches('/').to_owned())
            } else {
                r.error(&at(key), format!("`{value}` must be an http(s) URL"));
                None
            }
        };
        let protocol = if github {
            // GitHub Enterprise Server: web_url = "https://HOST", api_url = "https://HOST/api/v3"
            match (
                url("web_url", Some("https://github.com")),
                url("api_url", Some("https://api.github.com")),
            ) {
                (Some(web), Some(api)) => Some(ProviderProtocol::OAuth2 {
                    authorization_url: format!("{web}/login/oauth/authorize"),
                    token_url: format!("{web}/login/oauth/access_token"),
                    profile: ProfileApi::GitHub(api),
                }),
                _ => None,
            }
        } else {
            let issuer = url("issuer", None);
            let endpoints = (
                url("authorization_url", None),
                url("token_url", None),
                url("userinfo_url", None),
            );
            match (issuer, endpoints) {
                (Some(issuer), (None, None, None)) => Some(ProviderProtocol::OpenId { issuer }),
                (None, (Some(authorization_url), Some(token_url), Some(userinfo))) => {
                    Some(ProviderProtocol::OAuth2 {
                        authorization_url,
                        token_url,
                        profile: ProfileApi::Userinfo(userinfo),
                    })
                }
                // a URL that was given but is not one has its own error already
                (None, (None, None, None)) if given => None,
                _ => {
                    r.error(
                        &at("issuer"),
                        "is required (an OpenID provider), or else authorization_url, token_url \
                         and userinfo_url (plain OAuth 2.0), or preset = \"github\""
                            .into(),
                    );
                    None
                }
            }
        };
        let (Some(protocol), Some(client_id), Some(client_secret)) =
            (protocol, client_id, client_secret)
        else {
            continue;
        };
        let mut scopes = r.string_list(&at("scopes"));
        if scopes.is_empty() {
            scopes = match (&protocol, github) {
                (_, true) => vec!["read:user".into(), "user:email".into()],
                (ProviderProtocol::OpenId { .. }, _) => vec!["email".into(), "profile".into()],
                (ProviderProtocol::OAuth2 { .. }, _) => Vec::new(),
            };
        }
        if matches!(protocol, ProviderProtocol::OpenId { .. }) {
            scopes.retain(|s| s != "openid");
        }
        providers.push(OidcProviderConfig {
            id,
            name,
            protocol,
            client_id,
            client_secret: SecretString::from(client_secret),
            scopes,
        });
    }
    providers
}

/// `[auth.document]`, used when it has a `pattern`.
fn document_config(r: &mut Reader<'_>) -> Option<DocumentConfig> {
    use fluxgate_core::identifier::{Checksum, DocumentRule};
    let label = r.string("auth.document.label", "document");
    let checksum_word = r.string("auth.document.checksum", "none");
    let required = r.bool("auth.document.required", false);
    let pattern = r.optional_string("auth.document.pattern")?;
    let checksum = Checksum::parse(&checksum_word);
    if checksum.is_none() {
        let message = format!("expected none or cpf, found {checksum_word:?}");
        r.error("auth.document.checksum", message);
    }
    let pattern = regex::Regex::new(&pattern)
        .map_err(|e| {
            r.error(
                "auth.document.pattern",
                format!("not a regular expression: {e}"),
            )
        })
        .ok()?;
    Some(DocumentConfig {
        rule: DocumentRule {
            label,
            pattern,
            checksum: checksum?,
        },
        required,
    })
}

fn collect_leaves(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(t) => collect_leaves(t, &path, out),
            _ => out.push(path),
        }
    }
}

fn default_plans() -> Vec<Plan> {
    let rate = |s: &str| {
        Rate::parse(s).unwrap_or(Rate {
            limit: 100,
            window: Duration::from_secs(60),
        })
    };
    vec![
        Plan {
            name: "free".into(),
            rate_limit: rate("100/min"),
            entitlements: vec![],
            quotas: BTreeMap::from([("requests".to_string(), 10_000)]),
            named_limits: BTreeMap::new(),
        },
        Plan {
            name: "pro".into(),
            rate_limit: rate("1000/min"),
            entitlements: vec!["bulk_export".into(), "sso".into()],
            quotas: BTreeMap::from([("requests".to_string(), 1_000_000)]),
            named_limits: BTreeMap::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let mut table: Table = toml_text
            .parse()
            .map_err(|e| ConfigErrors(vec![format!("{e}")]))?;
        overlay_env(
            &mut table,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        Config::from_table(&table)
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = load("", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://./data/fluxgate.db");
        assert_eq!(c.auth.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.auth.refresh_token_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.rate_limits.ip.to_string(), "10/min");
        assert_eq!(c.default_plan(), "free");
        assert!(c.auth.require_email_verification && c.auth.cookie_secure);
    }

    #[test]
    fn environment_wins_and_nests_with_double_underscores() {
        let c = load(
            "[rate_limits]\nip = \"20/min\"\n[auth]\ncookie_secure = true\n",
            &[
                ("FLUXGATE_RATE_LIMITS__IP", "50/min"),
                ("FLUXGATE_AUTH__COOKIE_SECURE", "false"),
                ("FLUXGATE_KEY_PREFIX", "sk"),
                ("FLUXGATE_CONFIG", "/ignored"),
                ("OTHER", "x"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.rate_limits.ip.to_string(), "50/min");
        assert!(!c.auth.cookie_secure);
        assert_eq!(c.key_prefix, "sk");
    }

    #[test]
    fn every_bad_value_is_named_with_its_variable() {
        let errors = load(
            "listen = \"nowhere\"\nbogus = 1\n[auth]\naccess_token_ttl = \"15x\"\n[rate_limits]\nuser = \"fast\"\n",
            &[("FLUXGATE_AUTH__COOKIE_SECURE", "maybe")],
        )
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        let all = errors.join("\n");
        for needle in [
            "listen (FLUXGATE_LISTEN)",
            "auth.access_token_ttl (FLUXGATE_AUTH__ACCESS_TOKEN_TTL): `15x`",
            "rate_limits.user (FLUXGATE_RATE_LIMITS__USER): `fast`",
            "auth.cookie_secure (FLUXGATE_AUTH__COOKIE_SECURE)",
            "bogus (FLUXGATE_BOGUS): unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 5, "{all}");
    }

    #[test]
    fn openid_providers_need_an_issuer_a_client_and_a_secret() {
        let c = load(
            "[auth.oidc.google]\nname = \"Google\"\nissuer = \"https://accounts.google.com/\"\nclient_id = \"id\"\nclient_secret = \"s3cret\"\n",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let google = &c.auth.oidc[0];
        assert_eq!(
            google.protocol,
            ProviderProtocol::OpenId {
                issuer: "https://accounts.google.com".into()
            }
        );
        assert_eq!(google.scopes, ["email", "profile"]);
        assert!(!c.describe().contains("s3cret"), "the secret is redacted");
        let errors = load(
            "[auth.oidc.acme]\nissuer = \"ftp://acme\"\nclient_id = \"id\"\nclient_secret = \"s\"\nnmae = \"Acme\"\n[auth.oidc.half]\nclient_id = \"id\"\n",
            &[],
        )
        .err()
        .map(|e| e.0)
        .unwrap_or_default()
        .join("\n");
        for needle in [
            "auth.oidc.acme.issuer",
            "auth.oidc.acme.nmae (FLUXGATE_AUTH__OIDC__ACME__NMAE): unknown key",
            "auth.oidc.half.issuer",
            "auth.oidc.half.client_secret",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }

    #[test]
    fn github_is_a_preset_and_plain_oauth2_names_its_three_endpoints() {
        let c = load(
            "[auth.oidc.github]\npreset = \"github\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             [auth.oidc.ghes]\npreset = \"github\"\nname = \"Corp GitHub\"\nweb_url = \"https://git.corp/\"\napi_url = \"https://git.corp/api/v3\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             [auth.oidc.plain]\nauthorization_url = \"https://idp/authorize\"\ntoken_url = \"https://idp/token\"\nuserinfo_url = \"https://idp/me\"\nscopes = [\"openid\", \"email\"]\nclient_id = \"id\"\nclient_secret = \"s\"\n",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let by_id = |id: &str| c.auth.oidc.iter().find(|p| p.id == id).cloned();
        let github = by_id("github").unwrap_or_else(|| panic!("github"));
        assert_eq!(github.name, "GitHub");
        assert_eq!(github.scopes, ["read:user", "user:email"]);
        assert_eq!(
            github.protocol,
            ProviderProtocol::OAuth2 {
                authorization_url: "https://github.com/login/oauth/authorize".into(),
                token_url: "https://github.com/login/oauth/access_token".into(),
                profile: ProfileApi::GitHub("https://api.github.com".into()),
            }
        );
        let ghes = by_id("ghes").unwrap_or_else(|| panic!("ghes"));
        assert_eq!(
            ghes.protocol.browser_url(),
            "https://git.corp/login/oauth/authorize"
        );
        let plain = by_id("plain").unwrap_or_else(|| panic!("plain"));
        assert_eq!(plain.scopes, ["openid", "email"], "kept as given");
        assert!(matches!(
            plain.protocol,
            ProviderProtocol::OAuth2 { profile: ProfileApi::Userinfo(ref u), .. } if u == "https://idp/me"
        ));
        let errors = load(
            "[auth.oidc.both]\nissuer = \"https://idp\"\ntoken_url = \"https://idp/token\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             [auth.oidc.gitlab]\npreset = \"gitlab\"\nclient_id = \"id\"\nclient_secret = \"s\"\n",
            &[],
        )
        .err()
        .map(|e| e.0)
        .unwrap_or_default()
        .join("\n");
        for needle in ["auth.oidc.both.issuer", "auth.oidc.gitlab.preset"] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }

    #[test]
    fn plans_and_scopes_are_validated() {
        let errors = load(
            "[scopes]\ncatalog = [\"read\"]\nimplies = { admin = [\"read\"] }\n[[plans]]\nname = \"a\"\nrate_limit = \"x\"\n[[plans]]\nname = \"a\"\n",
            &[],
        )
        .err()
        .map(|e| e.0.join("\n"))
        .unwrap_or_default();
        assert!(errors.contains("`admin`"), "{errors}");
        assert!(errors.contains("plans[0].rate_limit"), "{errors}");
        assert!(errors.contains("declared twice"), "{errors}");
    }

    #[test]
    fn urls_are_redacted_when_described() {
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://u:[redacted]@h/db"
        );
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        /// Any value, of any type, under any known key (and unknown ones): a config or errors
        /// (each naming its key), never a panic.
        #[test]
        fn arbitrary_values_give_a_config_or_errors_never_a_panic(
            entries in proptest::collection::vec((
                proptest::sample::select(vec![
                    "listen", "public_url", "database_url", "max_body_bytes", "header_read_timeout",
                    "shutdown_timeout", "auth.access_token_ttl", "auth.lockout_threshold",
                    "rate_limits.ip", "rate_limits.api_key", "rate_limits.max_tracked_keys",
                    "keys.cache_max_age", "keys.cache_capacity", "keys.full_resync_every",
                    "usage.minute_retention",
                    "log_format", "trusted_proxies", "key_prefix", "plans", "scopes.catalog",
                    "no.such.key",
                ]),
                proptest::prop_oneof![
                    proptest::prelude::any::<i64>().prop_map(toml::Value::Integer),
                    "[ -~]{0,20}".prop_map(toml::Value::String),
                    proptest::prelude::any::<bool>().prop_map(toml::Value::Boolean),
                    proptest::prelude::any::<f64>().prop_map(toml::Value::Float),
                    proptest::collection::vec("[ -~]{0,8}".prop_map(toml::Value::String), 0..3)
                        .prop_map(toml::Value::Array),
                ],
            ), 0..6),
        ) {
            let mut table = Table::new();
            for (path, value) in entries {
                match path.split_once('.') {
                    None => {
                        table.insert(path.to_owned(), value);
                    }
                    Some((section, key)) => {
                        let entry = table
                            .entry(section.to_owned())
                            .or_insert_with(|| toml::Value::Table(Table::new()));
                        if let toml::Value::Table(inner) = entry {
                            inner.insert(key.to_owned(), value);
                        }
                    }
                }
            }
            let _ = Config::from_table(&table);
        }
    }
}
