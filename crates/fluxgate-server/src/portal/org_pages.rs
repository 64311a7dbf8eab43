//! An org's pages: its overview (plan, this month's quotas, the last day's calls, keys about to
//! expire, whether members must use two-step sign-in) and creating an org.

use crate::access::{KeysRead, OrgRead, OrgWrite, UsageRead};
use crate::clock::rfc3339;
use crate::extract::ClientInfo;
use crate::portal::account_pages::WelcomePage;
use crate::portal::charts::{bar_chart, BarChart};
use crate::portal::{
    render, render_status, see_other, Chrome, CsrfToken, FormErrors, OrgPage, Portal, PortalForm,
    PortalResult, SignedIn,
};
use crate::services::{self, orgs, usage};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs", post(create_org))
        .route("/orgs/{org_id}", get(overview))
        .route("/orgs/{org_id}/require-mfa", post(require_mfa))
        .route("/orgs/{org_id}/leaked-keys", post(leaked_key_action))
}

/// A quota as the overview draws it.
struct QuotaView {
    meter: String,
    used: i64,
    limit: u64,
    left: u64,
    percent: u64,
    /// The bar's width out of 100.
    width: u64,
    over: bool,
    period: String,
}

/// A key about to expire.
pub struct ExpiringKey {
    id: String,
    name: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    org_id: String,
    org_name: String,
    disabled: bool,
    plan: String,
    rate_limit: Option<String>,
    entitlements: Vec<String>,
    quotas: Vec<QuotaView>,
    calls: Option<BarChart>,
    expiring: Option<Vec<ExpiringKey>>,
    /// Whether members must sign in with a second factor.
    require_mfa: bool,
    /// `revoke` or `flag`: what a scanner's report of one of the org's keys does.
    leaked_key_action: String,
    /// Whether the viewer may change that.
    may_write: bool,
}

/// A rate in words: `100 calls per 60 s`.
fn rate_words(limit: u64, window_seconds: u64) -> String {
    format!("{limit} calls per {window_seconds} s")
}

/// The org's overview; the chart and the expiring keys only for those who may read them.
async fn overview(
    State(state): State<AppState>,
    page: OrgPage<OrgRead>,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    let now = crate::clock::now();
    let access = &page.access;
    let entitlements = crate::services::entitlements::of_org(&state, &access.org, now).await?;
    let quotas = entitlements
        .quotas
        .iter()
        .map(|(meter, quota)| {
            let used = u64::try_from(quota.used).unwrap_or(0);
            let percent = used
                .saturating_mul(100)
                .checked_div(quota.limit)
                .unwrap_or(100);
            QuotaView {
                meter: meter.clone(),
                used: quota.used,
                limit: quota.limit,
                left: quota.limit.saturating_sub(used),
                percent,
                width: percent.min(100),
                over: used > quota.limit,
                period: quota.period.clone(),
            }
        })
        .collect();
    let calls = match page.also::<UsageRead>(&state).await? {
        Some(_) => {
            let series = usage::series(
                &state,
                Some(page.org_id().clone()),
                usage::SeriesQuery::default(),
                now,
            )
            .await?;
            Some(bar_chart("calls", "Calls per hour", &series))
        }
        None => None,
    };
    let expiring = match page.also::<KeysRead>(&state).await? {
        Some(keys_access) => Some(
            services::keys::expiring(&state, &keys_access, 7 * 86_400, 20, now)
                .await?
                .into_iter()
                .map(|k| ExpiringKey {
                    id: k.id.to_string(),
                    name: k.name,
                    expires: k.expires_at.map(rfc3339).unwrap_or_default(),
                })
                .collect(),
        ),
        None => None,
    };
    Ok(render(&OverviewPage {
        chrome: Chrome::new(
            &state,
            &csrf,
            Some(&page.user),
            Some(&access.org),
            "overview",
        )
        .await?,
        org_id: access.org.id.to_string(),
        org_name: access.org.name.clone(),
        disabled: access.org.disabled_at.is_some(),
        plan: entitlements.plan,
        rate_limit: entitlements
            .rate_limit
            .map(|r| rate_words(r.limit, r.window_seconds)),
        entitlements: entitlements.entitlements,
        quotas,
        calls,
        expiring,
        require_mfa: access.org.require_mfa,
        leaked_key_action: access.org.leaked_key_action.clone(),
        may_write: page.also::<OrgWrite>(&state).await?.is_some(),
    }))
}

/// Sets whether members must sign in with a second factor (as `PATCH /orgs/{id}`
/// `{require_mfa}`).
async fn require_mfa(
    State(state): State<AppState>,
    page: OrgPage<OrgWrite>,
    Portal(client): Portal<ClientInfo>,
    form: PortalForm,
) -> PortalResult<Response> {
    let input = orgs::OrgUpdate {
        require_mfa: Some(form.get("require_mfa") == Some("on")),
        ..orgs::OrgUpdate::default()
    };
    update_org(&state, &page, &client, input).await
}

/// Changes the org through the same service as `PATCH /orgs/{id}`; back to its overview.
async fn update_org(
    state: &AppState,
    page: &OrgPage<OrgWrite>,
    client: &ClientInfo,
    input: orgs::OrgUpdate,
) -> PortalResult<Response> {
    let org = orgs::update(state, &page.access, client, input, crate::clock::now()).await?;
    Ok(see_other(&format!("/orgs/{}", org.id)))
}

/// Sets what a secret scanner's report of one of the org's keys does (as `PATCH /orgs/{id}`
/// `{leaked_key_action}`): revoke it, or flag it.
async fn leaked_key_action(
    State(state): State<AppState>,
    page: OrgPage<OrgWrite>,
    Portal(client): Portal<ClientInfo>,
    form: PortalForm,
) -> PortalResult<Response> {
    let input = orgs::OrgUpdate {
        leaked_key_action: Some(form.raw("leaked_key_action").to_owned()),
        ..orgs::OrgUpdate::default()
    };
    update_org(&state, &page, &client, input).await
}

/// Creates an org owned by the user (as `POST /orgs`) and opens it.
async fn create_org(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let name = form.get("name").unwrap_or_default().to_owned();
    let input = orgs::NewOrg {
        name: name.clone(),
        external_id: None,
    };
    match orgs::create(&state, &user, &client, input, crate::clock::now()).await {
        Ok(org) => Ok(see_other(&format!("/orgs/{}", org.id))),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            Ok(render_status(
                status,
                &WelcomePage {
                    chrome: Chrome::new(&state, &csrf, Some(&user), None, "").await?,
                    errors: FormErrors::from_refusal(refusal, &["name"])?,
                    name,
                },
            ))
        }
    }
}
