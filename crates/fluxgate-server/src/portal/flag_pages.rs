//! The operator's feature flags: every flag with its targeting and a kill switch each, a form
//! that defines or replaces one, and deletion — the same services as `/api/v1/admin/flags…`.

use crate::access::{AdminFlags, OperatorAccess};
use crate::extract::{ClientInfo, IdPath};
use crate::portal::{
    caller, render_status, see_other, Chrome, CsrfToken, FormErrors, Portal, PortalForm,
    PortalResult, SignedIn,
};
use crate::services::entitlements::{self, flag_view};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_proto::{Flag, FlagChanges, FlagDefinition};

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/flags", get(list).post(define))
        .route("/admin/flags/{name}/enabled", post(switch))
        .route("/admin/flags/{name}/delete", post(delete))
}

/// The definition form's fields, as typed.
#[derive(Default)]
struct FlagDraft {
    name: String,
    description: String,
    variant: String,
    default_variant: String,
    orgs: String,
    plans: Vec<String>,
    rollout_percent: String,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "flags.html")]
struct FlagsPage {
    chrome: Chrome,
    flags: Vec<Flag>,
    plans: Vec<String>,
    draft: FlagDraft,
    errors: FormErrors,
    notice: Option<String>,
}

async fn page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    draft: FlagDraft,
    errors: FormErrors,
    notice: Option<String>,
) -> PortalResult<Response> {
    OperatorAccess::<AdminFlags>::check(state, caller(user)).await?;
    let flags = entitlements::flags(state).await?;
    let status = errors.status();
    Ok(render_status(
        status,
        &FlagsPage {
            chrome: Chrome::new(state, csrf, Some(user), None, "admin").await?,
            flags: flags.iter().map(flag_view).collect(),
            plans: state.config.plans.iter().map(|p| p.name.clone()).collect(),
            draft,
            errors,
            notice,
        },
    ))
}

/// Every flag, and the form for a new one.
async fn list(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    let draft = FlagDraft {
        enabled: true,
        rollout_percent: "0".into(),
        ..FlagDraft::default()
    };
    page(&state, &csrf, &user, draft, FormErrors::none(), None).await
}

/// Defines a flag or replaces the one of that name; errors stand next to their fields.
async fn define(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminFlags>::check(&state, caller(&user)).await?;
    let draft = FlagDraft {
        name: form.get("name").unwrap_or_default().to_owned(),
        description: form.raw("description").to_owned(),
        variant: form.get("variant").unwrap_or_default().to_owned(),
        default_variant: form.get("default_variant").unwrap_or_default().to_owned(),
        orgs: form.raw("orgs").to_owned(),
        plans: form.all("plans"),
        rollout_percent: form.get("rollout_percent").unwrap_or("0").to_owned(),
        enabled: form.get("enabled").is_some(),
    };
    let rollout = draft.rollout_percent.parse::<u8>();
    let definition = FlagDefinition {
        description: Some(draft.description.clone()),
        enabled: Some(draft.enabled),
        variant: Some(draft.variant.clone()).filter(|v| !v.is_empty()),
        default_variant: Some(draft.default_variant.clone()).filter(|v| !v.is_empty()),
        orgs: draft
            .orgs
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        plans: draft.plans.clone(),
        rollout_percent: Some(*rollout.as_ref().unwrap_or(&0)),
    };
    let order = [
        "name",
        "description",
        "variant",
        "default_variant",
        "orgs",
        "plans",
        "rollout_percent",
    ];
    if rollout.is_err() {
        let errors = FormErrors::from_refusal(
            crate::error::ApiError::field(
                "rollout_percent",
                "must be a whole number from 0 to 100",
            ),
            &order,
        )?;
        return page(&state, &csrf, &user, draft, errors, None).await;
    }
    let now = crate::clock::now();
    match entitlements::define_flag(&state, &operator, &client, &draft.name, &definition, now).await
    {
        Ok((flag, created)) => {
            let notice = format!(
                "The flag {} is {}.",
                flag.name,
                if created { "created" } else { "replaced" }
            );
            let fresh = FlagDraft {
                enabled: true,
                rollout_percent: "0".into(),
                ..FlagDraft::default()
            };
            page(
                &state,
                &csrf,
                &user,
                fresh,
                FormErrors::none(),
                Some(notice),
            )
            .await
        }
        Err(refusal) => {
            let errors = FormErrors::from_refusal(refusal, &order)?;
            page(&state, &csrf, &user, draft, errors, None).await
        }
    }
}

/// The kill switch (`enabled=false`), or on again (`enabled=true`).
async fn switch(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(name)): Portal<IdPath<String>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminFlags>::check(&state, caller(&user)).await?;
    let changes = FlagChanges {
        enabled: Some(form.get("enabled") == Some("true")),
        ..FlagChanges::default()
    };
    entitlements::change_flag(
        &state,
        &operator,
        &client,
        &name,
        &changes,
        crate::clock::now(),
    )
    .await?;
    Ok(see_other("/admin/flags"))
}

/// Deletes a flag.
async fn delete(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath(name)): Portal<IdPath<String>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let operator = OperatorAccess::<AdminFlags>::check(&state, caller(&user)).await?;
    entitlements::delete_flag(&state, &operator, &client, &name, crate::clock::now()).await?;
    Ok(see_other("/admin/flags"))
}
