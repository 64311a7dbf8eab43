//! An org's API keys in the browser: the searchable list, creating a key (its secret shown
//! exactly once), a key's detail with its usage and credits, changing its credits, rotating and
//! revoking — each through the same service as the JSON API.

use crate::access::{KeysRead, KeysWrite, OrgAccess, Required, UsageRead};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::extract::{ApiQuery, ClientInfo, IdPath, Paging};
use crate::portal::account_pages::password_confirmation;
use crate::portal::charts::{bar_chart, BarChart};
use crate::portal::{
    render, render_no_store, render_status, see_other, Chrome, CsrfToken, FormErrors, OrgPage,
    Portal, PortalForm, PortalResult,
};
use crate::routes::keys::{key_view, secret_view};
use crate::services::keys::{self, KeyWithSecret};
use crate::services::usage;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use fluxgate_core::secret::ExposeSecret;
use fluxgate_core::validation::FieldErrors;
use fluxgate_proto::{
    CreditRefill, CreditsChange, Key, KeyChanges, KeySecret, NewCredits, NewKey, RateLimit,
};
use fluxgate_store::{KeyId, OrgId};
use serde::Deserialize;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org_id}/keys", get(list).post(create))
        .route("/orgs/{org_id}/keys/new", get(new_key))
        .route("/orgs/{org_id}/keys/{key_id}", get(detail))
        .route(
            "/orgs/{org_id}/keys/{key_id}/rotate",
            axum::routing::post(rotate),
        )
        .route(
            "/orgs/{org_id}/keys/{key_id}/credits",
            axum::routing::post(change_credits),
        )
        .route(
            "/orgs/{org_id}/keys/{key_id}/ratelimits",
            axum::routing::post(change_named_limits),
        )
        .route(
            "/orgs/{org_id}/keys/{key_id}/ip-allowlist",
            axum::routing::post(change_ip_allowlist),
        )
        .route(
            "/orgs/{org_id}/keys/{key_id}/revoke",
            get(confirm_revoke).post(revoke),
        )
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    org_id: String,
    keys: Vec<Key>,
    search: String,
    status: String,
    next: Option<String>,
    can_write: bool,
}

#[derive(Deserialize)]
struct ListQuery {
    search: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// The keys page: 50 a page by id, filtered by status and by a search in name and start.
async fn list(
    State(state): State<AppState>,
    page: OrgPage<KeysRead>,
    csrf: CsrfToken,
    Portal(ApiQuery(query)): Portal<ApiQuery<ListQuery>>,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let now = crate::clock::now();
    let status_text = query.status.unwrap_or_default();
    let status = keys::parse_status(Some(&status_text))?;
    let search = query.search.unwrap_or_default();
    let search = search.trim();
    let page = Paging::new(None, query.cursor)?;
    let found = keys::list(
        &state,
        &access,
        status,
        Some(search).filter(|s| !s.is_empty()),
        &page,
        now,
    )
    .await?;
    let body = page.body(found, |k| k.id.to_string(), |k| key_view(k, now));
    let next = body.next_cursor.map(|cursor| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("search", search)
            .append_pair("status", &status_text)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/orgs/{org_id}/keys?{query}")
    });
    Ok(render(&KeysPage {
        can_write: access.allows(&state, "keys:write"),
        chrome: Chrome::new(&state, &csrf, Some(&user), Some(&access.org), "keys").await?,
        org_id: org_id.to_string(),
        keys: body.data,
        search: search.to_owned(),
        status: status_text,
        next,
    }))
}

/// A scope the creator may give a key.
struct ScopeChoice {
    name: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage {
    chrome: Chrome,
    org_id: String,
    errors: FormErrors,
    name: String,
    scopes: Vec<ScopeChoice>,
    environment: String,
    expires_in_days: String,
    rate_limit: String,
    rate_window_seconds: String,
    rate_exact: bool,
    credits: CreditsForm,
}

/// What a credits form holds, as typed (kept when it comes back with errors).
#[derive(Default)]
struct CreditsForm {
    remaining: String,
    add: String,
    refill_amount: String,
    refill_interval: String,
    refill_day: String,
}

impl CreditsForm {
    fn of(form: &PortalForm) -> Self {
        Self {
            remaining: form.raw("credits.remaining").to_owned(),
            add: form.raw("credits.add").to_owned(),
            refill_amount: form.raw("credits.refill.amount").to_owned(),
            refill_interval: form.raw("credits.refill.interval").to_owned(),
            refill_day: form.raw("credits.refill.day_of_month").to_owned(),
        }
    }
}

/// The refill a form asks for: None when it has no refill fields, `Some(None)` for "never".
fn form_refill(errors: &mut FieldErrors, form: &PortalForm) -> Option<Option<CreditRefill>> {
    let interval = form.get("credits.refill.interval");
    let amount = form_number(
        errors,
        "credits.refill.amount",
        form.get("credits.refill.amount"),
    );
    let day_of_month = form_number(
        errors,
        "credits.refill.day_of_month",
        form.get("credits.refill.day_of_month"),
    );
    let interval = interval?;
    if interval == "never" {
        if amount.is_some() {
            errors.add("credits.refill.interval", "choose when to refill");
        }
        return Some(None);
    }
    let Some(amount) = amount else {
        errors.add(
            "credits.refill.amount",
            "give the count a refill goes back to",
        );
        return None;
    };
    Some(Some(CreditRefill {
        amount,
        interval: interval.to_owned(),
        day_of_month: day_of_month.filter(|_| interval == "monthly"),
    }))
}

/// The scopes the caller holds (a key can never hold more than its maker), with those already
/// chosen ticked.
fn scope_choices(
    state: &AppState,
    access: &OrgAccess<KeysWrite>,
    chosen: &[String],
) -> Vec<ScopeChoice> {
    access
        .grants
        .effective(&state.config.catalog)
        .into_iter()
        .map(|name| ScopeChoice {
            checked: chosen.contains(&name),
            name,
        })
        .collect()
}

async fn new_key(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let back = format!("/orgs/{org_id}/keys/new");
    if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
        return Ok(confirm);
    }
    Ok(render(&NewKeyPage {
        scopes: scope_choices(&state, &access, &[]),
        chrome: Chrome::new(&state, &csrf, Some(&user), Some(&access.org), "keys").await?,
        org_id: org_id.to_string(),
        errors: FormErrors::none(),
        name: String::new(),
        environment: "live".to_owned(),
        expires_in_days: "90".to_owned(),
        rate_limit: String::new(),
        rate_window_seconds: "60".to_owned(),
        rate_exact: false,
        credits: CreditsForm::default(),
    }))
}

#[derive(Template)]
#[template(path = "key_secret.html")]
struct SecretPage {
    chrome: Chrome,
    org_id: String,
    key: Key,
    secret: String,
    rotated_until: Option<String>,
}

/// The page that shows a new secret, once: never cached, never in a URL.
async fn secret_page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    access_org: &fluxgate_store::OrgRecord,
    issued: KeyWithSecret,
) -> PortalResult<Response> {
    let now = crate::clock::now();
    Ok(render_no_store(&SecretPage {
        chrome: Chrome::new(state, csrf, Some(user), Some(access_org), "keys").await?,
        org_id: access_org.id.to_string(),
        key: key_view(&issued.key, now),
        secret: issued.secret.expose_secret().to_owned(),
        rotated_until: issued.previous_secret_expires_at.map(rfc3339),
    }))
}

/// A whole number from a form field, or the error naming it.
fn form_number<T: std::str::FromStr>(
    errors: &mut fluxgate_core::validation::FieldErrors,
    field: &str,
    text: Option<&str>,
) -> Option<T> {
    let text = text?;
    match text.parse() {
        Ok(value) => Some(value),
        Err(_) => {
            errors.add(field, "must be a whole number");
            None
        }
    }
}

/// Issues the key through the same service as `POST /orgs/{org_id}/keys`, then shows its
/// secret once.
async fn create(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let back = format!("/orgs/{org_id}/keys/new");
    if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
        return Ok(confirm);
    }
    let chosen = form.all("scopes");
    let mut errors = fluxgate_core::validation::FieldErrors::new();
    let expires_in_days = form_number(&mut errors, "expires_in_days", form.get("expires_in_days"));
    let limit = form_number(&mut errors, "rate_limit.limit", form.get("rate_limit"));
    let window = form_number(
        &mut errors,
        "rate_limit.window_seconds",
        form.get("rate_window_seconds"),
    );
    let remaining = form_number(
        &mut errors,
        "credits.remaining",
        form.get("credits.remaining"),
    );
    let refill = form_refill(&mut errors, &form).flatten();
    let credits = match (remaining, refill) {
        (Some(remaining), refill) => Some(NewCredits { remaining, refill }),
        (None, Some(_)) => {
            errors.add("credits.remaining", "give the credits to start with");
            None
        }
        (None, None) => None,
    };
    let outcome = if errors.is_empty() {
        let input = NewKey {
            name: form.raw("name").to_owned(),
            scopes: chosen.clone(),
            environment: form.get("environment").map(str::to_owned),
            expires_at: None,
            expires_in_days,
            rate_limit: limit.map(|limit| RateLimit {
                limit,
                window_seconds: window.unwrap_or(60),
                exact: form.get("rate_exact").is_some(),
            }),
            metadata: None,
            credits,
            ratelimits: Vec::new(),
            ip_allowlist: Vec::new(),
        };
        keys::issue(&state, &access, &client, input, crate::clock::now()).await
    } else {
        Err(ApiError::Validation(errors))
    };
    match outcome {
        Ok(issued) => secret_page(&state, &csrf, &user, &access.org, issued).await,
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors = FormErrors::from_refusal(
                refusal,
                &[
                    "name",
                    "scopes",
                    "environment",
                    "expires_in_days",
                    "rate_limit",
                    "credits.remaining",
                    "credits.refill.amount",
                    "credits.refill.interval",
                    "credits.refill.day_of_month",
                ],
            )?;
            Ok(render_status(
                status,
                &NewKeyPage {
                    scopes: scope_choices(&state, &access, &chosen),
                    chrome: Chrome::new(&state, &csrf, Some(&user), Some(&access.org), "keys")
                        .await?,
                    org_id: org_id.to_string(),
                    errors,
                    name: form.raw("name").to_owned(),
                    environment: form.get("environment").unwrap_or("live").to_owned(),
                    expires_in_days: form.raw("expires_in_days").to_owned(),
                    rate_limit: form.raw("rate_limit").to_owned(),
                    rate_window_seconds: form.raw("rate_window_seconds").to_owned(),
                    rate_exact: form.get("rate_exact").is_some(),
                    credits: CreditsForm::of(&form),
                },
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "key_detail.html")]
struct KeyDetailPage {
    chrome: Chrome,
    org_id: String,
    key: Key,
    /// Shown when the key has more than its current secret (after a rotation).
    secrets: Vec<KeySecret>,
    calls: Option<BarChart>,
    breakdown: Vec<CallsBy>,
    can_write: bool,
    /// The credits form: its errors and what was typed.
    credit_errors: FormErrors,
    credits_form: CreditsForm,
    /// The named-limits form: its errors and its text (`name = rate` a line).
    limit_errors: FormErrors,
    limits_text: String,
    /// The IP allowlist form: its errors and its text (an entry a line).
    allowlist_errors: FormErrors,
    allowlist_text: String,
}

/// A key's named limits as the portal's form writes them: `tokens = 50000/hour`, a line each.
fn limits_text(limits: &[fluxgate_proto::NamedLimit]) -> String {
    limits
        .iter()
        .map(|l| {
            let rate = fluxgate_core::units::Rate {
                limit: l.limit,
                window: std::time::Duration::from_secs(l.window_seconds),
            };
            format!("{} = {rate}\n", l.name)
        })
        .collect()
}

/// Reads the form's `name = rate` lines; errors name the line.
fn parse_limits_text(errors: &mut FieldErrors, text: &str) -> Vec<fluxgate_proto::NamedLimit> {
    let mut limits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .split_once('=')
            .ok_or_else(|| "write `name = rate`, e.g. `tokens = 50000/hour`".to_owned());
        let parsed = parsed.and_then(|(name, rate)| {
            let rate = fluxgate_core::units::Rate::parse(rate)?;
            Ok(fluxgate_proto::NamedLimit {
                name: name.trim().to_owned(),
                limit: rate.limit,
                window_seconds: rate.window.as_secs(),
            })
        });
        match parsed {
            Ok(limit) => limits.push(limit),
            Err(reason) => errors.add("ratelimits", format!("line {}: {reason}", i + 1)),
        }
    }
    limits
}

/// Calls of one endpoint with one outcome.
struct CallsBy {
    endpoint: String,
    outcome: String,
    count: i64,
}

/// A key: what it may do, when it was used, its calls over the last day, its credits; rotate
/// and revoke.
async fn detail(
    State(state): State<AppState>,
    page: OrgPage<KeysRead>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
) -> PortalResult<Response> {
    let page = detail_page(&state, &page, &csrf, &key_id, Forms::default()).await?;
    Ok(render(&page))
}

/// The detail page's forms as they come back with errors (default: fresh).
#[derive(Default)]
struct Forms {
    credit_errors: FormErrors,
    credits: Option<CreditsForm>,
    limit_errors: FormErrors,
    limits: Option<String>,
    allowlist_errors: FormErrors,
    allowlist: Option<String>,
}

async fn detail_page<P: Required>(
    state: &AppState,
    page: &OrgPage<P>,
    csrf: &CsrfToken,
    key_id: &KeyId,
    forms: Forms,
) -> PortalResult<KeyDetailPage> {
    let typed = forms.credits;
    let (calls, breakdown) = match page.also::<UsageRead>(state).await? {
        Some(_) => {
            let now = crate::clock::now();
            let query = usage::SeriesQuery {
                key_id: Some(key_id.to_string()),
                ..usage::SeriesQuery::default()
            };
            let series = usage::series(state, Some(page.org_id().clone()), query, now).await?;
            let breakdown = usage::key_breakdown(state, page.org_id(), key_id, now)
                .await?
                .into_iter()
                .map(|(endpoint, outcome, count)| CallsBy {
                    endpoint,
                    outcome,
                    count,
                })
                .collect();
            (
                Some(bar_chart("key-calls", "Calls per hour", &series)),
                breakdown,
            )
        }
        None => (None, Vec::new()),
    };
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let record = keys::get(state, access, key_id).await?;
    let now = crate::clock::now();
    let secrets = keys::secrets(state, access, key_id).await?;
    let key = key_view(&record, now);
    // the refill form shows the key's refill, unless it was the form just sent back
    let refill = key.credits.as_ref().and_then(|c| c.refill.as_ref());
    let stored = CreditsForm {
        refill_amount: refill.map(|r| r.amount.to_string()).unwrap_or_default(),
        refill_interval: refill.map_or("never".into(), |r| r.interval.clone()),
        refill_day: refill
            .and_then(|r| r.day_of_month)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        ..CreditsForm::default()
    };
    let credits_form = match typed {
        Some(typed) if typed.refill_interval.is_empty() => CreditsForm {
            remaining: typed.remaining,
            add: typed.add,
            ..stored
        },
        Some(typed) => typed,
        None => stored,
    };
    Ok(KeyDetailPage {
        secrets: if secrets.len() > 1 {
            secrets.iter().map(|s| secret_view(s, now)).collect()
        } else {
            Vec::new()
        },
        can_write: access.allows(state, "keys:write"),
        chrome: Chrome::new(state, csrf, Some(user), Some(&access.org), "keys").await?,
        org_id: org_id.to_string(),
        limits_text: forms.limits.unwrap_or_else(|| limits_text(&key.ratelimits)),
        allowlist_text: forms
            .allowlist
            .unwrap_or_else(|| key.ip_allowlist.iter().map(|e| format!("{e}\n")).collect()),
        allowlist_errors: forms.allowlist_errors,
        key,
        calls,
        breakdown,
        credit_errors: forms.credit_errors,
        credits_form,
        limit_errors: forms.limit_errors,
    })
}

/// Changes the key's credits through the same service as `PATCH …/keys/{key_id}`: set, top up,
/// change the refill, or stop counting them. Errors come back next to their fields.
async fn change_credits(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let mut errors = FieldErrors::new();
    let change = match form.get("stop") {
        Some(_) => None,
        None => Some(CreditsChange {
            remaining: form_number(
                &mut errors,
                "credits.remaining",
                form.get("credits.remaining"),
            ),
            add: form_number(&mut errors, "credits.add", form.get("credits.add")),
            refill: form_refill(&mut errors, &form),
        }),
    };
    let change = KeyFormChange {
        order: &[
            "credits.remaining",
            "credits.add",
            "credits.refill.amount",
            "credits.refill.interval",
            "credits.refill.day_of_month",
        ],
        anchor: "credits-heading",
        errors,
        changes: KeyChanges {
            credits: Some(change),
            ..KeyChanges::default()
        },
    };
    let typed = CreditsForm::of(&form);
    apply_key_form(&state, &page, &client, &csrf, &key_id, change, |errors| {
        Forms {
            credit_errors: errors,
            credits: Some(typed),
            ..Forms::default()
        }
    })
    .await
}

/// Replaces the key's named limits through the same service as `PATCH …/keys/{key_id}`, from
/// the form's `name = rate` lines. Errors come back next to the field.
async fn change_named_limits(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let text = form.raw("ratelimits").to_owned();
    let mut errors = FieldErrors::new();
    let limits = parse_limits_text(&mut errors, &text);
    let change = KeyFormChange {
        order: &["ratelimits"],
        anchor: "limits-heading",
        errors,
        changes: KeyChanges {
            ratelimits: Some(limits),
            ..KeyChanges::default()
        },
    };
    apply_key_form(&state, &page, &client, &csrf, &key_id, change, |errors| {
        Forms {
            limit_errors: errors,
            limits: Some(text),
            ..Forms::default()
        }
    })
    .await
}

/// Replaces the key's IP allowlist through the same service as `PATCH …/keys/{key_id}`, from
/// the form's lines (an address or CIDR range each). Errors come back next to the field.
async fn change_ip_allowlist(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let text = form.raw("ip_allowlist").to_owned();
    let entries = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let change = KeyFormChange {
        order: &["ip_allowlist"],
        anchor: "allowlist-heading",
        errors: FieldErrors::new(),
        changes: KeyChanges {
            ip_allowlist: Some(entries),
            ..KeyChanges::default()
        },
    };
    apply_key_form(&state, &page, &client, &csrf, &key_id, change, |errors| {
        Forms {
            allowlist_errors: errors,
            allowlist: Some(text),
            ..Forms::default()
        }
    })
    .await
}

/// A change to a key that one of its page's forms asks for.
struct KeyFormChange {
    /// The form's fields, in order (the errors' order).
    order: &'static [&'static str],
    /// The section of the key's page to go back to.
    anchor: &'static str,
    /// Errors found reading the form.
    errors: FieldErrors,
    changes: KeyChanges,
}

/// Applies a form's change through the key service: back to the key's page at the form's
/// section, or the page again with the errors next to their fields and the form as it was
/// typed (`typed` puts them in their place).
async fn apply_key_form(
    state: &AppState,
    page: &OrgPage<KeysWrite>,
    client: &ClientInfo,
    csrf: &CsrfToken,
    key_id: &KeyId,
    change: KeyFormChange,
    typed: impl FnOnce(FormErrors) -> Forms,
) -> PortalResult<Response> {
    let KeyFormChange {
        order,
        anchor,
        errors,
        changes,
    } = change;
    let outcome = if errors.is_empty() {
        keys::update(
            state,
            &page.access,
            client,
            key_id,
            changes,
            crate::clock::now(),
        )
        .await
        .map(|_| ())
    } else {
        Err(ApiError::Validation(errors))
    };
    match outcome {
        Ok(()) => Ok(see_other(&format!(
            "/orgs/{}/keys/{key_id}#{anchor}",
            page.org_id()
        ))),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let forms = typed(FormErrors::from_refusal(refusal, order)?);
            let detail = detail_page(state, page, csrf, key_id, forms).await?;
            Ok(render_status(status, &detail))
        }
    }
}

/// Gives the key a new secret through the same service as `POST …/rotate`; the old one keeps
/// working for the chosen grace period.
async fn rotate(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let back = format!("/orgs/{}/keys/{key_id}", access.org.id);
    if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
        return Ok(confirm);
    }
    let grace = match form.get("grace_period_seconds").map(str::parse::<u64>) {
        None => None,
        Some(Ok(seconds)) => Some(seconds),
        Some(Err(_)) => {
            return Err(ApiError::field("grace_period_seconds", "must be a whole number").into())
        }
    };
    let rotated = keys::rotate(
        &state,
        &access,
        &client,
        &key_id,
        grace,
        crate::clock::now(),
    )
    .await?;
    secret_page(&state, &csrf, &user, &access.org, rotated).await
}

#[derive(Template)]
#[template(path = "key_revoke.html")]
struct RevokePage {
    chrome: Chrome,
    org_id: String,
    key: Key,
}

/// Asks before revoking (the page a browser without JavaScript gets).
async fn confirm_revoke(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    csrf: CsrfToken,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let record = keys::get(&state, &access, &key_id).await?;
    Ok(render(&RevokePage {
        chrome: Chrome::new(&state, &csrf, Some(&user), Some(&access.org), "keys").await?,
        org_id: org_id.to_string(),
        key: key_view(&record, crate::clock::now()),
    }))
}

/// Revokes the key at once through the same service as `DELETE …/keys/{key_id}`.
async fn revoke(
    State(state): State<AppState>,
    page: OrgPage<KeysWrite>,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath((_, key_id))): Portal<IdPath<(OrgId, KeyId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user: _, access } = page;
    let org_id = access.org.id.clone();
    match keys::revoke(&state, &access, &client, &key_id, crate::clock::now()).await {
        Ok(()) => {}
        // revoked already (a second click): the key's page says so
        Err(ApiError::NotFound) => {
            keys::get(&state, &access, &key_id).await?;
        }
        Err(other) => return Err(other.into()),
    }
    Ok(see_other(&format!("/orgs/{org_id}/keys/{key_id}")))
}
