//! Reading the audit log: one org's entries (`audit:read` there) or the whole instance's
//! (operators holding `admin:users`), newest first. Entries are written by the operation they
//! record, in its own transaction; nothing here writes.

use crate::access::{AdminUsers, AuditRead, OperatorAccess, OrgAccess};
use crate::error::ApiResult;
use crate::state::AppState;
use fluxgate_store::{AuditFilter, AuditRecord};

/// The org's entries matching `filter` (its org is forced to the caller's org).
pub async fn of_org(
    state: &AppState,
    access: &OrgAccess<AuditRead>,
    mut filter: AuditFilter,
) -> ApiResult<Vec<AuditRecord>> {
    filter.org_id = Some(access.org.id.clone());
    Ok(state.store.audit_entries(&filter).await?)
}

/// Every entry of the instance matching `filter`.
pub async fn of_instance(
    state: &AppState,
    _operator: &OperatorAccess<AdminUsers>,
    filter: AuditFilter,
) -> ApiResult<Vec<AuditRecord>> {
    Ok(state.store.audit_entries(&filter).await?)
}
