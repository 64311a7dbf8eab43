//! Reading the audit log: `/orgs/{org_id}/audit-log` for an org's members holding
//! `audit:read`, and `/admin/audit-log` (every entry, including the org-less account events such
//! as logins) for operators holding `admin:users`. Newest first, with cursor pagination.

use crate::access::{AdminUsers, AuditRead, OperatorAccess, OrgAccess};
use crate::clock::{parse_rfc3339, rfc3339, RFC3339_HINT};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Paging};
use crate::services::audit_log;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use fluxgate_proto::{AuditEntry, Page, Party};
use fluxgate_store::{AuditFilter, AuditRecord, OrgId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(org_audit_log))
        .routes(routes!(instance_audit_log))
}

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `member.invited`.
    action: Option<String>,
    /// Only this actor's entries (`usr_…` or `key_…`).
    actor: Option<String>,
    /// At or after this time (RFC 3339).
    from: Option<String>,
    /// Before this time (RFC 3339).
    to: Option<String>,
    /// Only this org's entries (instance log only).
    #[param(required = false)]
    org_id: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// An optional time filter (empty counts as absent, as a form sends it).
fn parse_time(field: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| parse_rfc3339(v).ok_or_else(|| ApiError::field(field, RFC3339_HINT)))
        .transpose()
}

impl AuditQuery {
    /// The store's filter and the page it asks for (422 naming a malformed time or limit).
    pub fn filter(self, org_id: Option<OrgId>) -> ApiResult<(AuditFilter, Paging)> {
        let page = Paging::new(self.limit, self.cursor)?;
        let filter = AuditFilter {
            org_id,
            actor_id: self.actor.filter(|a| !a.is_empty()),
            action: self.action.filter(|a| !a.is_empty()),
            from: parse_time("from", self.from.as_deref())?,
            to: parse_time("to", self.to.as_deref())?,
            before_id: page.cursor.clone(),
            limit: page.fetch(),
        };
        Ok((filter, page))
    }
}

/// An entry as the API (and the portal's audit page) shows it.
pub fn entry_json(entry: &AuditRecord) -> AuditEntry {
    AuditEntry {
        id: entry.id.to_string(),
        org_id: entry.org_id.as_ref().map(OrgId::to_string),
        action: entry.action.clone(),
        actor: Party {
            kind: entry.actor_type.as_str().to_owned(),
            id: entry.actor_id.clone(),
        },
        target: entry.target_type.as_ref().map(|kind| Party {
            kind: kind.clone(),
            id: entry.target_id.clone(),
        }),
        ip: entry.ip.clone(),
        user_agent: entry.user_agent.clone(),
        data: entry.data_json(),
        created_at: rfc3339(entry.created_at),
    }
}

/// The org's audit log, newest first.
#[utoipa::path(get, path = "/orgs/{org_id}/audit-log", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), AuditQuery),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "entries, newest first", body = Page<AuditEntry>)))]
async fn org_audit_log(
    State(state): State<AppState>,
    access: OrgAccess<AuditRead>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    if query.org_id.is_some() {
        return Err(ApiError::field("org_id", "is given by the path here"));
    }
    let (filter, page) = query.filter(Some(access.org.id.clone()))?;
    let entries = audit_log::of_org(&state, &access, filter).await?;
    Ok(Json(page.body(entries, |e| e.id.to_string(), entry_json)))
}

/// Every audit entry of the instance, newest first (operators).
#[utoipa::path(get, path = "/admin/audit-log", tag = "admin", params(AuditQuery),
    security(("bearer" = ["admin:users"])),
    responses((status = 200, description = "entries, newest first", body = Page<AuditEntry>)))]
async fn instance_audit_log(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminUsers>,
    ApiQuery(mut query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let org_id = query
        .org_id
        .take()
        .filter(|o| !o.is_empty())
        .map(|o| o.parse::<OrgId>())
        .transpose()
        .map_err(|e| ApiError::field("org_id", e.to_string()))?;
    let (filter, page) = query.filter(org_id)?;
    let entries = audit_log::of_instance(&state, &operator, filter).await?;
    Ok(Json(page.body(entries, |e| e.id.to_string(), entry_json)))
}
