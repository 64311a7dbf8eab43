//! An org's roles in the browser: the built-in ones with what they grant, the custom ones, and
//! creating or deleting a custom role — with every permission of the catalog shown, and the ones
//! the caller does not hold shown disabled, so the rule against escalation is visible before
//! the service enforces it.

use crate::access::{RolesRead, RolesWrite};
use crate::extract::{ClientInfo, IdPath};
use crate::portal::{
    render_status, see_other, Chrome, CsrfToken, FormErrors, OrgPage, Portal, PortalForm,
    PortalResult,
};
use crate::services::roles;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_core::permission::BuiltinRole;
use fluxgate_store::{OrgId, RoleId, RoleRecord};

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org_id}/roles", get(list).post(create))
        .route(
            "/orgs/{org_id}/roles/{role_id}",
            get(edit_page).post(update),
        )
        .route("/orgs/{org_id}/roles/{role_id}/delete", post(delete))
}

/// A role as the page lists it.
struct RoleRow {
    id: Option<String>,
    name: String,
    description: String,
    permissions: Vec<String>,
}

/// A permission of the catalog, as a checkbox.
struct PermissionChoice {
    name: String,
    held: bool,
    checked: bool,
}

#[derive(Template)]
#[template(path = "roles.html")]
struct RolesPage {
    chrome: Chrome,
    org_id: String,
    builtin: Vec<RoleRow>,
    custom: Vec<RoleRow>,
    can_write: bool,
    choices: Vec<PermissionChoice>,
    errors: FormErrors,
    name: String,
    description: String,
}

/// What the form showed when it was posted (empty for a fresh page).
#[derive(Default)]
struct Typed {
    name: String,
    description: String,
    permissions: Vec<String>,
}

/// Every permission of the catalog an org role can grant, those the caller lacks disabled, those
/// in `chosen` ticked.
fn permission_choices<P: crate::access::Required>(
    state: &AppState,
    page: &OrgPage<P>,
    chosen: &[String],
) -> Vec<PermissionChoice> {
    state
        .config
        .catalog
        .all()
        .filter(|p| !fluxgate_core::permission::is_operator_only(p))
        .map(|p| PermissionChoice {
            held: page.access.allows(state, p),
            checked: chosen.iter().any(|t| t == p),
            name: p.to_owned(),
        })
        .collect()
}

async fn roles_page<P: crate::access::Required>(
    state: &AppState,
    csrf: &CsrfToken,
    page: &OrgPage<P>,
    errors: FormErrors,
    status: StatusCode,
    typed: Typed,
) -> PortalResult<Response> {
    let Some(reader) = page.also::<RolesRead>(state).await? else {
        return Err(crate::error::ApiError::Forbidden("roles:read".into()).into());
    };
    let catalog = &state.config.catalog;
    let builtin = BuiltinRole::ALL
        .iter()
        .map(|role| RoleRow {
            id: None,
            name: role.name().to_owned(),
            description: String::new(),
            permissions: role
                .patterns(catalog)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        })
        .collect();
    let custom = roles::list(state, &reader)
        .await?
        .into_iter()
        .map(|role| RoleRow {
            id: Some(role.id.to_string()),
            permissions: role.permission_list(),
            name: role.name,
            description: role.description.unwrap_or_default(),
        })
        .collect();
    let choices = permission_choices(state, page, &typed.permissions);
    Ok(render_status(
        status,
        &RolesPage {
            chrome: Chrome::new(
                state,
                csrf,
                Some(&page.user),
                Some(&page.access.org),
                "roles",
            )
            .await?,
            org_id: page.org_id().to_string(),
            builtin,
            custom,
            can_write: page.access.allows(state, "roles:write"),
            choices,
            errors,
            name: typed.name,
            description: typed.description,
        },
    ))
}

async fn list(
    State(state): State<AppState>,
    page: OrgPage<RolesRead>,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    roles_page(
        &state,
        &csrf,
        &page,
        FormErrors::none(),
        StatusCode::OK,
        Typed::default(),
    )
    .await
}

/// Creates a custom role through the same service as `POST /orgs/{org_id}/roles`.
async fn create(
    State(state): State<AppState>,
    page: OrgPage<RolesWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let typed = Typed {
        name: form.raw("name").to_owned(),
        description: form.raw("description").to_owned(),
        permissions: form.all("permissions"),
    };
    let input = roles::NewRole {
        name: typed.name.clone(),
        description: form.get("description").map(str::to_owned),
        permissions: typed.permissions.clone(),
    };
    match roles::create(&state, &page.access, &client, input, crate::clock::now()).await {
        Ok(_) => Ok(see_other(&format!("/orgs/{}/roles", page.org_id()))),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors =
                FormErrors::from_refusal(refusal, &["name", "description", "permissions"])?;
            roles_page(&state, &csrf, &page, errors, status, typed).await
        }
    }
}

/// Deletes a custom role (409 while someone holds it), as `DELETE …/roles/{role_id}`.
async fn delete(
    State(state): State<AppState>,
    page: OrgPage<RolesWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, role_id))): Portal<IdPath<(OrgId, RoleId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    match roles::delete(&state, &page.access, &client, &role_id, crate::clock::now()).await {
        Ok(()) => Ok(see_other(&format!("/orgs/{}/roles", page.org_id()))),
        Err(refusal @ crate::error::ApiError::Conflict(_)) => {
            let errors = FormErrors::from_refusal(refusal, &[])?;
            roles_page(
                &state,
                &csrf,
                &page,
                errors,
                StatusCode::CONFLICT,
                Typed::default(),
            )
            .await
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Template)]
#[template(path = "role_edit.html")]
struct RoleEditPage {
    chrome: Chrome,
    org_id: String,
    role_id: String,
    original_name: String,
    choices: Vec<PermissionChoice>,
    errors: FormErrors,
    name: String,
    description: String,
}

/// What the edit form shows: the role's values, or what was posted.
struct RoleFormValues {
    name: String,
    description: String,
    permissions: Vec<String>,
}

/// The edit form of the custom role `role` (as stored) showing `values`.
async fn edit_form(
    state: &AppState,
    page: &OrgPage<RolesWrite>,
    csrf: &CsrfToken,
    role: &RoleRecord,
    values: RoleFormValues,
    errors: FormErrors,
    status: StatusCode,
) -> PortalResult<Response> {
    let chrome = Chrome::new(
        state,
        csrf,
        Some(&page.user),
        Some(&page.access.org),
        "roles",
    )
    .await?;
    Ok(render_status(
        status,
        &RoleEditPage {
            chrome,
            org_id: page.org_id().to_string(),
            role_id: role.id.to_string(),
            original_name: role.name.clone(),
            choices: permission_choices(state, page, &values.permissions),
            errors,
            name: values.name,
            description: values.description,
        },
    ))
}

/// A custom role's form, filled in (only for a role granting nothing the caller lacks).
async fn edit_page(
    State(state): State<AppState>,
    page: OrgPage<RolesWrite>,
    csrf: CsrfToken,
    Portal(IdPath((_, role_id))): Portal<IdPath<(OrgId, RoleId)>>,
) -> PortalResult<Response> {
    let role = roles::editable(&state, &page.access, &role_id).await?;
    let values = RoleFormValues {
        permissions: role.permission_list(),
        name: role.name.clone(),
        description: role.description.clone().unwrap_or_default(),
    };
    edit_form(
        &state,
        &page,
        &csrf,
        &role,
        values,
        FormErrors::none(),
        StatusCode::OK,
    )
    .await
}

/// Saves a custom role through the same service as `PATCH …/roles/{role_id}`.
async fn update(
    State(state): State<AppState>,
    page: OrgPage<RolesWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, role_id))): Portal<IdPath<(OrgId, RoleId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let original = roles::editable(&state, &page.access, &role_id).await?;
    let permissions = form.all("permissions");
    let changes = roles::RoleChanges {
        name: Some(form.raw("name").to_owned()),
        description: form.get("description").map(str::to_owned),
        permissions: Some(permissions.clone()),
    };
    match roles::update(
        &state,
        &page.access,
        &client,
        &role_id,
        changes,
        crate::clock::now(),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!("/orgs/{}/roles", page.org_id()))),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors =
                FormErrors::from_refusal(refusal, &["name", "description", "permissions"])?;
            let values = RoleFormValues {
                name: form.raw("name").to_owned(),
                description: form.raw("description").to_owned(),
                permissions,
            };
            edit_form(&state, &page, &csrf, &original, values, errors, status).await
        }
    }
}
