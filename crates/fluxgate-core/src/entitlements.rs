//! What an org may do: its plan's entitlements, the operator's overrides for it (grant or deny,
//! possibly until a time) and the feature flags that are on for it, evaluated with the
//! precedence deny override > grant override > flag > plan; and feature flags' targeting,
//! including a percentage rollout that is the same for an org on every node and restart.

use crate::validation::FieldErrors;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The most flags an instance may define.
pub const MAX_FLAGS: usize = 500;
/// The most orgs or plans a flag may name.
pub const MAX_TARGETS: usize = 1000;

/// An operator's decision about one entitlement of one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The entitlement, e.g. `bulk_export`.
    pub entitlement: String,
    /// True to grant it, false to deny it.
    pub grant: bool,
    /// When it ends by itself (Unix seconds), if it does: a trial.
    pub until: Option<i64>,
    /// Why, for the people reading the list.
    pub note: String,
}

impl Override {
    /// Whether it still applies at `now`.
    pub fn live(&self, now: i64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// A feature flag and whom it is on for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Its name; a flag that is on for an org also entitles it to this name.
    pub name: String,
    /// False: off for every org (the kill switch), whatever the targeting says.
    pub enabled: bool,
    /// The variant orgs it is on for get; `None` for a boolean flag (`on`).
    pub variant: Option<String>,
    /// The variant the others get, if any (`off` for a boolean flag).
    pub default_variant: Option<String>,
    /// Orgs it is on for, whatever the rollout (org ids).
    pub orgs: Vec<String>,
    /// Plans the rollout is among (empty: every plan).
    pub plans: Vec<String>,
    /// The share of those plans' orgs it is on for, in percent (0–100), chosen by a stable hash
    /// of flag and org.
    pub rollout_percent: u8,
}

/// How a flag came out for one org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagState {
    /// On, by the org list or the rollout.
    On,
    /// Killed: off for everyone, and its entitlement taken away from plans that include it.
    Killed,
    /// Not targeted: the plan decides its entitlement.
    Off,
}

impl Flag {
    /// How the flag comes out for an org on `plan`.
    pub fn state_for(&self, org_id: &str, plan: &str) -> FlagState {
        if !self.enabled {
            return FlagState::Killed;
        }
        let listed = self.orgs.iter().any(|o| o == org_id);
        let on_plan = self.plans.is_empty() || self.plans.iter().any(|p| p == plan);
        if listed
            || (on_plan
                && rollout_bucket(&self.name, org_id) < u32::from(self.rollout_percent) * 100)
        {
            FlagState::On
        } else {
            FlagState::Off
        }
    }

    /// The variant an org gets in the `flags` map, if any: the flag's variant (`on` for a
    /// boolean flag) when it is on for the org, else the default variant of a flag that has
    /// one. A boolean flag that is off is absent, so an answer grows with what the org has,
    /// not with how many flags the instance defines.
    pub fn variant_for(&self, state: FlagState) -> Option<String> {
        match (state, &self.variant) {
            (FlagState::On, Some(variant)) => Some(variant.clone()),
            (FlagState::On, None) => Some("on".to_owned()),
            (_, Some(_)) => self.default_variant.clone(),
            (_, None) => None,
        }
    }
}

/// Where an org's `0..10_000` rollout position for a flag lies: the first bytes of
/// SHA-256(`flag:org`), so every node and every restart agrees, and each flag spreads orgs
/// independently of the others.
pub fn rollout_bucket(flag: &str, org_id: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(flag.as_bytes())
        .chain_update(b":")
        .chain_update(org_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// Where one effective entitlement comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The org's plan.
    Plan,
    /// A grant override.
    Override,
    /// A flag that is on for the org.
    Flag,
}

impl Source {
    /// `plan`, `override` or `flag`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Override => "override",
            Self::Flag => "flag",
        }
    }
}

/// One entitlement an org has, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The entitlement.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// When it ends by itself (a grant override's end).
    pub until: Option<i64>,
}

/// What an org may do at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// Its entitlements, by name, with their source.
    pub granted: Vec<Granted>,
    /// The variant of every flag that has one for the org, by flag.
    pub flags: BTreeMap<String, String>,
    /// When this answer may change by itself (the next override to end), if ever.
    pub changes_at: Option<i64>,
}

impl Effective {
    /// The entitlements' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.granted.iter().map(|g| g.name.clone()).collect()
    }
}

/// Evaluates an org's entitlements at `now`: the plan's, changed by the flags (one that is on
/// adds its name; a killed one takes it away), then by the overrides that still apply (a grant
/// adds, a deny takes away — deny over grant over flag over plan).
pub fn evaluate(
    org_id: &str,
    plan: &str,
    plan_entitlements: &[String],
    overrides: &[Override],
    flags: &[Flag],
    now: i64,
) -> Effective {
    let mut granted: BTreeMap<String, (Source, Option<i64>)> = plan_entitlements
        .iter()
        .map(|e| (e.clone(), (Source::Plan, None)))
        .collect();
    let mut variants = BTreeMap::new();
    for flag in flags {
        let state = flag.state_for(org_id, plan);
        match state {
            FlagState::On => {
                granted.insert(flag.name.clone(), (Source::Flag, None));
            }
            FlagState::Killed => {
                granted.remove(&flag.name);
            }
            FlagState::Off => {}
        }
        if let Some(variant) = flag.variant_for(state) {
            variants.insert(flag.name.clone(), variant);
        }
    }
    let live: Vec<&Override> = overrides.iter().filter(|o| o.live(now)).collect();
    for o in live.iter().filter(|o| o.grant) {
        granted.insert(o.entitlement.clone(), (Source::Override, o.until));
    }
    for o in live.iter().filter(|o| !o.grant) {
        granted.remove(&o.entitlement);
    }
    Effective {
        granted: granted
            .into_iter()
            .map(|(name, (source, until))| Granted {
                name,
                source,
                until,
            })
            .collect(),
        flags: variants,
        changes_at: live.iter().filter_map(|o| o.until).min(),
    }
}

/// Checks an entitlement or flag name: 1–64 of `a-z 0-9 _ . -`, starting with a letter.
pub fn checked_name(field: &str, name: &str) -> Result<String, FieldErrors> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(FieldErrors::single(
            field,
            "must be 1-64 of a-z, 0-9, `_`, `.`, `-`, starting with a letter",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &str) -> Flag {
        Flag {
            name: name.into(),
            enabled: true,
            variant: None,
            default_variant: None,
            orgs: vec![],
            plans: vec![],
            rollout_percent: 0,
        }
    }

    fn names(e: &Effective) -> Vec<&str> {
        e.granted.iter().map(|g| g.name.as_str()).collect()
    }

    #[test]
    fn deny_beats_grant_beats_flag_beats_plan() {
        let plan = vec!["sso".to_string(), "export".to_string()];
        let killed = Flag {
            enabled: false,
            ..flag("export")
        };
        let beta = Flag {
            rollout_percent: 100,
            ..flag("beta")
        };
        let overrides = vec![
            Override {
                entitlement: "sso".into(),
                grant: false,
                until: None,
                note: String::new(),
            },
            Override {
                entitlement: "audit".into(),
                grant: true,
                until: Some(100),
                note: "trial".into(),
            },
        ];
        let e = evaluate("org_a", "pro", &plan, &overrides, &[killed, beta], 50);
        assert_eq!(names(&e), ["audit", "beta"]);
        assert_eq!(e.changes_at, Some(100));
        assert_eq!(e.flags["beta"], "on");
        assert!(
            !e.flags.contains_key("export"),
            "a flag that is off is absent"
        );
        // the trial ends by itself
        let later = evaluate("org_a", "pro", &plan, &overrides, &[], 100);
        assert_eq!(names(&later), ["export"]);
        assert_eq!(later.changes_at, None);
    }

    #[test]
    fn a_grant_override_wins_over_a_killed_flag_and_a_deny_over_a_flag() {
        let killed = Flag {
            enabled: false,
            ..flag("export")
        };
        let on = Flag {
            rollout_percent: 100,
            ..flag("beta")
        };
        let overrides = [
            Override {
                entitlement: "export".into(),
                grant: true,
                until: None,
                note: String::new(),
            },
            Override {
                entitlement: "beta".into(),
                grant: false,
                until: None,
                note: String::new(),
            },
        ];
        let e = evaluate("org_a", "free", &[], &overrides, &[killed, on], 0);
        assert_eq!(names(&e), ["export"]);
        assert_eq!(e.granted[0].source, Source::Override);
    }

    #[test]
    fn targeting_lists_plans_and_a_stable_share() {
        let f = Flag {
            orgs: vec!["org_listed".into()],
            plans: vec!["pro".into()],
            rollout_percent: 30,
            variant: Some("v2".into()),
            default_variant: Some("v1".into()),
            ..flag("new_billing")
        };
        assert_eq!(f.state_for("org_listed", "free"), FlagState::On);
        let on = (0..10_000)
            .filter(|i| f.state_for(&format!("org_{i}"), "pro") == FlagState::On)
            .count();
        assert!((2_800..=3_200).contains(&on), "{on} of 10,000");
        assert!((0..1000).all(|i| f.state_for(&format!("org_{i}"), "free") == FlagState::Off));
        assert_eq!(f.variant_for(FlagState::On).as_deref(), Some("v2"));
        assert_eq!(f.variant_for(FlagState::Off).as_deref(), Some("v1"));
        // the same org lands the same way every time; another flag spreads orgs differently
        assert_eq!(
            rollout_bucket("new_billing", "org_1"),
            rollout_bucket("new_billing", "org_1")
        );
        let differ = (0..100)
            .filter(|i| {
                let org = format!("org_{i}");
                rollout_bucket("a", &org) != rollout_bucket("b", &org)
            })
            .count();
        assert!(differ > 90);
    }

    #[test]
    fn names_are_checked() {
        assert!(checked_name("name", "bulk_export").is_ok());
        assert!(checked_name("name", "new-billing.v2").is_ok());
        for bad in ["", "Bulk", "1x", "a b", &"a".repeat(65)] {
            assert!(checked_name("name", bad).is_err(), "{bad}");
        }
    }
}
