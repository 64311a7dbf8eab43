//! The operator's console: every org of the instance (searchable), instance-wide usage, and one
//! org's page where its plan is changed, its entitlements are overridden (grant or deny, maybe
//! until a date) and it is disabled or enabled.

use crate::access::{AdminOrgs, AdminPlans, OperatorAccess};
use crate::error::ApiError;
use crate::extract::{ApiQuery, ClientInfo, IdPath, Paging};
use crate::portal::charts::{bar_chart, BarChart};
use crate::portal::{
    caller, render, render_status, see_other, Chrome, CsrfToken, FormErrors, Portal, PortalForm,
    PortalResult, SignedIn,
};
use crate::routes::orgs::org_json;
use crate::services::{entitlements, orgs, usage};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_proto::Org;
use fluxgate_store::OrgId;
use serde::Deserialize;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/orgs", get(list))
        .route("/admin/orgs/{org_id}", get(detail))
        .route("/admin/orgs/{org_id}/plan", post(assign_plan))
        .route("/admin/orgs/{org_id}/entitlements", post(set_override))
        .route(
            "/admin/orgs/{org_id}/entitlements/{name}/remove",
            post(remove_override),
        )
        .route("/admin/orgs/{org_id}/disable", post(disable))
        .route("/admin/orgs/{org_id}/enable", post(enable))
}

#[derive(Template)]
#[template(path = "admin_orgs.html")]
struct OrgsPage {
    chrome: Chrome,
    orgs: Vec<Org>,
    search: String,
    next: Option<String>,
    calls: BarChart,
}

#[derive(Deserialize)]
struct ListQuery {
    search: Option<String>,
    cursor: Option<String>,
}

/// Every org, 50 a page, searchable by name, external id or id; the instance's calls above.
async fn list(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
    Portal(ApiQuery(query)): Portal<ApiQuery<ListQuery>>,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminOrgs>::check(&state, caller(&user)).await?;
    let search = query.search.unwrap_or_default();
    let search = search.trim();
    let page = Paging::new(None, query.cursor)?;
    let found = orgs::list_all(
        &state,
        &operator,
        Some(search).filter(|s| !s.is_empty()),
        &page,
    )
    .await?;
    let body = page.body(found, |o| o.id.to_string(), |o| org_json(o, None));
    let next = body.next_cursor.map(|cursor| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("search", search)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/admin/orgs?{query}")
    });
    let series = usage::series(
        &state,
        None,
        usage::SeriesQuery::default(),
        crate::clock::now(),
    )
    .await?;
    Ok(render(&OrgsPage {
        chrome: Chrome::new(&state, &csrf, Some(&user), None, "admin").await?,
        orgs: body.data,
        search: search.to_owned(),
        next,
        calls: bar_chart("instance-calls", "Calls per hour, every org", &series),
    }))
}

#[derive(Template)]
#[template(path = "admin_org.html")]
struct AdminOrgPage {
    chrome: Chrome,
    org: Org,
    plans: Vec<String>,
    entitled: fluxgate_proto::Entitlements,
    errors: FormErrors,
    notice: Option<String>,
    /// The override form as it was posted (kept when it had errors).
    draft: OverrideDraft,
}

/// The override form's fields.
#[derive(Default)]
struct OverrideDraft {
    entitlement: String,
    effect: String,
    ends_on: String,
    note: String,
}

/// What the org page shows above its sections: nothing, a change made, or the refused form's
/// errors (then the override form keeps what was posted).
enum Outcome {
    Shown,
    Done(String),
    Refused(FormErrors, OverrideDraft),
}

impl Outcome {
    /// A service's answer to a form: its notice when done, else its errors named by `fields`
    /// (a refusal no field explains is the page's error).
    fn of<T>(
        done: Result<T, ApiError>,
        fields: &[&str],
        draft: OverrideDraft,
        notice: impl FnOnce(T) -> String,
    ) -> PortalResult<Self> {
        Ok(match done {
            Ok(value) => Self::Done(notice(value)),
            Err(refusal) => Self::Refused(FormErrors::from_refusal(refusal, fields)?, draft),
        })
    }
}

/// The org page, with what the last form did.
async fn org_page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    org_id: &OrgId,
    outcome: Outcome,
) -> PortalResult<Response> {
    OperatorAccess::<AdminOrgs>::check(state, caller(user)).await?;
    let org = state
        .store
        .org(org_id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound)?;
    let (errors, notice, draft) = match outcome {
        Outcome::Shown => (FormErrors::none(), None, OverrideDraft::default()),
        Outcome::Done(notice) => (FormErrors::none(), Some(notice), OverrideDraft::default()),
        Outcome::Refused(errors, draft) => (errors, None, draft),
    };
    let entitled = entitlements::of_org(state, &org, crate::clock::now()).await?;
    Ok(render_status(
        errors.status(),
        &AdminOrgPage {
            chrome: Chrome::new(state, csrf, Some(user), None, "admin").await?,
            org: org_json(&org, None),
            plans: state.config.plans.iter().map(|p| p.name.clone()).collect(),
            entitled,
            errors,
            notice,
            draft,
        },
    ))
}

/// One org as the operator sees it.
async fn detail(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
) -> PortalResult<Response> {
    org_page(&state, &csrf, &user, &org_id, Outcome::Shown).await
}

/// Puts the org on a plan (the same service as `PUT /admin/orgs/{org_id}/plan`).
async fn assign_plan(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminPlans>::check(&state, caller(&user)).await?;
    let plan = form.get("plan").unwrap_or_default();
    let done = orgs::assign_plan(
        &state,
        &operator,
        &client,
        &org_id,
        plan,
        crate::clock::now(),
    )
    .await;
    let outcome = Outcome::of(done, &["plan"], OverrideDraft::default(), |org| {
        format!("{} is on the {} plan now.", org.name, org.plan)
    })?;
    org_page(&state, &csrf, &user, &org_id, outcome).await
}

async fn set_disabled(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    org_id: &OrgId,
    disabled: bool,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminOrgs>::check(state, caller(user)).await?;
    orgs::set_disabled(
        state,
        &operator,
        client,
        org_id,
        disabled,
        crate::clock::now(),
    )
    .await?;
    Ok(see_other(&format!("/admin/orgs/{org_id}")))
}

/// Disables the org (as `POST /admin/orgs/{org_id}/disable`).
async fn disable(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    set_disabled(&state, &user, &client, &org_id, true).await
}

/// Enables the org again (as `POST /admin/orgs/{org_id}/enable`).
async fn enable(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    set_disabled(&state, &user, &client, &org_id, false).await
}

/// The override form's end date (`YYYY-MM-DD`, the end of that day UTC) as the service takes
/// it; anything else is passed on for the service to refuse, naming the field.
fn end_of_day(ends_on: &str) -> Option<String> {
    let ends_on = ends_on.trim();
    if ends_on.is_empty() {
        return None;
    }
    let is_date = ends_on.len() == 10 && ends_on.chars().filter(|c| *c == '-').count() == 2;
    Some(if is_date {
        format!("{ends_on}T23:59:59Z")
    } else {
        ends_on.to_owned()
    })
}

/// Grants or denies the org an entitlement (the same service as
/// `PUT /admin/orgs/{org_id}/entitlements/{name}`); errors stand next to their fields.
async fn set_override(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminPlans>::check(&state, caller(&user)).await?;
    let draft = OverrideDraft {
        entitlement: form.get("entitlement").unwrap_or_default().to_owned(),
        effect: form.get("effect").unwrap_or_default().to_owned(),
        ends_on: form.get("ends_on").unwrap_or_default().to_owned(),
        note: form.raw("note").to_owned(),
    };
    let input = fluxgate_proto::NewOverride {
        effect: draft.effect.clone(),
        expires_at: end_of_day(&draft.ends_on),
        note: Some(draft.note.clone()),
    };
    let now = crate::clock::now();
    let done = entitlements::set_override(
        &state,
        &operator,
        &client,
        &org_id,
        &draft.entitlement,
        &input,
        now,
    )
    .await;
    let fields = ["entitlement", "effect", "expires_at", "note"];
    let mut outcome = Outcome::of(done, &fields, draft, |record| {
        format!(
            "{} is {} for this org{}.",
            record.entitlement,
            if record.effect == "grant" {
                "granted"
            } else {
                "denied"
            },
            record
                .expires_at
                .map(|at| format!(" until {}", crate::clock::rfc3339(at)))
                .unwrap_or_default()
        )
    })?;
    if let Outcome::Refused(errors, _) = &mut outcome {
        errors.rename("expires_at", "ends_on");
    }
    org_page(&state, &csrf, &user, &org_id, outcome).await
}

/// Removes the org's override of an entitlement.
async fn remove_override(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath((org_id, name))): Portal<IdPath<(OrgId, String)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminPlans>::check(&state, caller(&user)).await?;
    entitlements::remove_override(
        &state,
        &operator,
        &client,
        &org_id,
        &name,
        crate::clock::now(),
    )
    .await?;
    Ok(see_other(&format!("/admin/orgs/{org_id}")))
}
