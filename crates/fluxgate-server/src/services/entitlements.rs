//! What orgs may do beyond their plans: an org's effective entitlements with their sources, the
//! operator's per-org overrides (grant or deny, possibly until a time), and the instance's
//! feature flags — each change written with its audit entry and announced, so every node's
//! verify answers it within a second without reading the database.

use crate::access::{AdminFlags, AdminPlans, OperatorAccess};
use crate::clock::{future_time, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::flagbook::flag_of;
use crate::invalidation::Change;
use crate::keycache::override_of;
use crate::state::AppState;
use fluxgate_core::entitlements::{self, checked_name, MAX_FLAGS, MAX_TARGETS};
use fluxgate_core::validation::{optional_line, FieldErrors};
use fluxgate_proto::{
    EntitlementOverride, EntitlementSource, Entitlements, Flag, FlagChanges, FlagDefinition,
    NewOverride, QuotaUse, RateLimit,
};
use fluxgate_store::{FlagRecord, OrgId, OrgRecord, OverrideRecord};
use serde_json::json;
use std::collections::BTreeMap;

/// What the org may do now — as verify answers it — with each entitlement's source, the
/// overrides, flag variants, the plan's rate limit and this month's quotas with what is used.
pub async fn of_org(state: &AppState, org: &OrgRecord, now: i64) -> ApiResult<Entitlements> {
    let plan = state.config.plan(&org.plan);
    let mut quotas = BTreeMap::new();
    if let Some(plan) = plan {
        for (meter, limit) in &plan.quotas {
            let used = state.usage.load(&org.id, meter, now).await?;
            quotas.insert(
                meter.clone(),
                QuotaUse {
                    limit: *limit,
                    used,
                    period: crate::usage_recorder::month_of(now),
                },
            );
        }
    }
    let plan_entitlements = plan.map(|p| p.entitlements.clone()).unwrap_or_default();
    let overrides = state.store.entitlement_overrides(&org.id).await?;
    let rules: Vec<_> = overrides.iter().map(override_of).collect();
    let flags = state.flags.current();
    let effective = entitlements::evaluate(
        org.id.as_str(),
        &org.plan,
        &plan_entitlements,
        &rules,
        &flags.flags,
        now,
    );
    Ok(Entitlements {
        plan: org.plan.clone(),
        entitlements: effective.names(),
        sources: effective
            .granted
            .iter()
            .map(|g| EntitlementSource {
                name: g.name.clone(),
                source: g.source.word().to_owned(),
                until: g.until.map(rfc3339),
            })
            .collect(),
        plan_entitlements,
        overrides: overrides.iter().map(|o| override_view(o, now)).collect(),
        flags: effective.flags,
        rate_limit: plan.map(|p| RateLimit {
            limit: p.rate_limit.limit,
            window_seconds: p.rate_limit.window.as_secs(),
            exact: false,
        }),
        quotas,
    })
}

/// An override as the API shows it.
pub fn override_view(record: &OverrideRecord, now: i64) -> EntitlementOverride {
    EntitlementOverride {
        entitlement: record.entitlement.clone(),
        effect: record.effect.clone(),
        expires_at: record.expires_at.map(rfc3339),
        active: override_of(record).live(now),
        note: record.note.clone(),
        created_by: record.created_by.clone(),
        created_at: rfc3339(record.created_at),
    }
}

/// Grants or denies an org one entitlement (replacing any override of it), until
/// `expires_at` if given; audited, and on every node's verify within a second.
pub async fn set_override(
    state: &AppState,
    operator: &OperatorAccess<AdminPlans>,
    client: &ClientInfo,
    org_id: &OrgId,
    entitlement: &str,
    input: &NewOverride,
    now: i64,
) -> ApiResult<OverrideRecord> {
    let mut errors = FieldErrors::new();
    let entitlement = errors.absorb(checked_name("entitlement", entitlement));
    if input.effect != "grant" && input.effect != "deny" {
        errors.add("effect", "must be `grant` or `deny`");
    }
    let expires_at = input
        .expires_at
        .as_deref()
        .and_then(|t| future_time(&mut errors, "expires_at", t, now));
    let note = errors
        .check(
            "note",
            optional_line(input.note.as_deref().unwrap_or(""), 500),
        )
        .unwrap_or_default();
    errors.into_result()?;
    let entitlement = entitlement.ok_or(ApiError::NotFound)?;
    state.store.org(org_id).await?.ok_or(ApiError::NotFound)?;
    let record = OverrideRecord {
        org_id: org_id.clone(),
        entitlement,
        effect: input.effect.clone(),
        expires_at,
        note,
        created_by: Some(operator.caller.actor().id),
        created_at: now,
    };
    let audit = operator
        .audit("org.entitlement_overridden", Some(org_id), client)
        .at(now)
        .target("org", org_id)
        .data(json!({
            "entitlement": record.entitlement,
            "effect": record.effect,
            "expires_at": record.expires_at.map(rfc3339),
            "note": record.note,
        }))
        .build();
    state
        .store
        .put_entitlement_override(&record, &audit)
        .await?;
    state
        .invalidation
        .publish(Change::Org(org_id.clone()))
        .await;
    Ok(record)
}

/// Removes an org's override of one entitlement (the plan and flags decide again); 404 if
/// there is none.
pub async fn remove_override(
    state: &AppState,
    operator: &OperatorAccess<AdminPlans>,
    client: &ClientInfo,
    org_id: &OrgId,
    entitlement: &str,
    now: i64,
) -> ApiResult<()> {
    let audit = operator
        .audit("org.entitlement_override_removed", Some(org_id), client)
        .at(now)
        .target("org", org_id)
        .data(json!({ "entitlement": entitlement }))
        .build();
    if !state
        .store
        .delete_entitlement_override(org_id, entitlement, &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state
        .invalidation
        .publish(Change::Org(org_id.clone()))
        .await;
    Ok(())
}

/// A flag as the API shows it.
pub fn flag_view(record: &FlagRecord) -> Flag {
    let flag = flag_of(record);
    Flag {
        name: flag.name,
        description: record.description.clone(),
        enabled: flag.enabled,
        variant: flag.variant,
        default_variant: flag.default_variant,
        orgs: flag.orgs,
        plans: flag.plans,
        rollout_percent: flag.rollout_percent,
        created_at: rfc3339(record.created_at),
        updated_at: rfc3339(record.updated_at),
    }
}

/// Every flag, by name.
pub async fn flags(state: &AppState) -> ApiResult<Vec<FlagRecord>> {
    Ok(state.store.flags().await?)
}

/// One flag; 404 if there is none of that name.
pub async fn flag(state: &AppState, name: &str) -> ApiResult<FlagRecord> {
    state.store.flag(name).await?.ok_or(ApiError::NotFound)
}

/// Checks a flag's targeting, variants and note; errors name the field.
fn check_flag(errors: &mut FieldErrors, record: &FlagRecord, state: &AppState) {
    let orgs: Vec<String> = serde_json::from_str(&record.orgs).unwrap_or_default();
    let plans: Vec<String> = serde_json::from_str(&record.plans).unwrap_or_default();
    if orgs.len() > MAX_TARGETS {
        errors.add("orgs", format!("at most {MAX_TARGETS} orgs"));
    }
    for (i, org) in orgs.iter().enumerate() {
        if org.parse::<OrgId>().is_err() {
            errors.add(format!("orgs[{i}]"), "must be an org id (org_…)");
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        if state.config.plan(plan).is_none() {
            errors.add(format!("plans[{i}]"), "no such plan in the configuration");
        }
    }
    if record.rollout_percent > 100 {
        errors.add("rollout_percent", "must be between 0 and 100");
    }
    for (field, variant) in [
        ("variant", &record.variant),
        ("default_variant", &record.default_variant),
    ] {
        if let Some(variant) = variant {
            errors.absorb(checked_name(field, variant));
        }
    }
    if record.variant.is_none() && record.default_variant.is_some() {
        errors.add("default_variant", "only a flag with a `variant` has one");
    }
    if let Err(e) = optional_line(&record.description, 500) {
        errors.add("description", e);
    }
}

/// Creates the flag `name` or replaces its definition; audited (`flag.created` or
/// `flag.updated`) and on every node's verify within a second. True when it was created.
pub async fn define_flag(
    state: &AppState,
    operator: &OperatorAccess<AdminFlags>,
    client: &ClientInfo,
    name: &str,
    definition: &FlagDefinition,
    now: i64,
) -> ApiResult<(FlagRecord, bool)> {
    let mut errors = FieldErrors::new();
    let name = errors.absorb(checked_name("name", name));
    let existing = state.store.flags().await?;
    let previous = existing.iter().find(|f| Some(&f.name) == name.as_ref());
    if previous.is_none() && existing.len() >= MAX_FLAGS {
        errors.add("name", format!("at most {MAX_FLAGS} flags"));
    }
    let record = FlagRecord {
        name: name.clone().unwrap_or_default(),
        description: definition.description.clone().unwrap_or_default(),
        enabled: definition.enabled.unwrap_or(true),
        variant: definition.variant.clone(),
        default_variant: definition.default_variant.clone(),
        orgs: json!(definition.orgs).to_string(),
        plans: json!(definition.plans).to_string(),
        rollout_percent: i64::from(definition.rollout_percent.unwrap_or(0)),
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: now,
    };
    check_flag(&mut errors, &record, state);
    errors.into_result()?;
    let created = previous.is_none();
    store_flag(
        state,
        operator,
        client,
        &record,
        if created {
            "flag.created"
        } else {
            "flag.updated"
        },
        now,
    )
    .await?;
    Ok((record, created))
}

/// Changes what is given of a flag (`enabled: false` is the kill switch); audited, and on every
/// node's verify within a second.
pub async fn change_flag(
    state: &AppState,
    operator: &OperatorAccess<AdminFlags>,
    client: &ClientInfo,
    name: &str,
    changes: &FlagChanges,
    now: i64,
) -> ApiResult<FlagRecord> {
    let mut record = flag(state, name).await?;
    if let Some(description) = &changes.description {
        record.description.clone_from(description);
    }
    if let Some(enabled) = changes.enabled {
        record.enabled = enabled;
    }
    if let Some(orgs) = &changes.orgs {
        record.orgs = json!(orgs).to_string();
    }
    if let Some(plans) = &changes.plans {
        record.plans = json!(plans).to_string();
    }
    if let Some(percent) = changes.rollout_percent {
        record.rollout_percent = i64::from(percent);
    }
    record.updated_at = now;
    let mut errors = FieldErrors::new();
    check_flag(&mut errors, &record, state);
    errors.into_result()?;
    store_flag(state, operator, client, &record, "flag.updated", now).await?;
    Ok(record)
}

async fn store_flag(
    state: &AppState,
    operator: &OperatorAccess<AdminFlags>,
    client: &ClientInfo,
    record: &FlagRecord,
    action: &str,
    now: i64,
) -> ApiResult<()> {
    let audit = operator
        .audit(action, None, client)
        .at(now)
        .target("flag", &record.name)
        .data(serde_json::to_value(flag_view(record)).unwrap_or_default())
        .build();
    state.store.put_flag(record, &audit).await?;
    announce_flags(state).await;
    Ok(())
}

/// Deletes a flag (its name is then only what plans and overrides make it); audited; 404 if
/// there is none.
pub async fn delete_flag(
    state: &AppState,
    operator: &OperatorAccess<AdminFlags>,
    client: &ClientInfo,
    name: &str,
    now: i64,
) -> ApiResult<()> {
    let audit = operator
        .audit("flag.deleted", None, client)
        .at(now)
        .target("flag", name)
        .build();
    if !state.store.delete_flag(name, &audit).await? {
        return Err(ApiError::NotFound);
    }
    announce_flags(state).await;
    Ok(())
}

/// This node rereads the flags before answering (so the caller's next verify here sees the
/// change), and the others are told to.
async fn announce_flags(state: &AppState) {
    if let Err(error) = state.flags.reread(state.store.as_ref()).await {
        tracing::warn!(%error, "rereading flags after a change failed; the next reread has it");
    }
    state.invalidation.publish(Change::Flags).await;
}
