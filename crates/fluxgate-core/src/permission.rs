//! Permissions (`resource:action`), patterns with `*` segments, the catalog with its
//! implications, built-in roles, and the one question that matters: does this set grant that?

use std::collections::{BTreeMap, BTreeSet};

/// Permissions every organization's roles may hold.
pub const PLATFORM_PERMISSIONS: &[&str] = &[
    "org:read",
    "org:write",
    "org:delete",
    "members:read",
    "members:write",
    "roles:read",
    "roles:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "usage:write",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
];

/// Instance-wide permissions that only members and keys of the operator org can ever hold.
pub const OPERATOR_PERMISSIONS: &[&str] = &[
    "keys:verify",
    "admin:orgs",
    "admin:plans",
    "admin:flags",
    "admin:users",
];

/// True for a permission only the operator org may hold.
pub fn is_operator_only(permission: &str) -> bool {
    OPERATOR_PERMISSIONS.contains(&permission)
}

/// Why a string is not a permission or pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// Empty, or an empty segment (`keys:`, `:read`).
    #[error("`{0}` has an empty segment")]
    EmptySegment(String),
    /// A character outside `a-z 0-9 _ . -` (and `*` as a whole segment in patterns).
    #[error("`{0}` may only use a-z, 0-9, `_`, `.`, `-` in segments separated by `:`")]
    BadCharacter(String),
    /// `*` inside a segment (`key*`) rather than as a whole segment.
    #[error("`{0}` may use `*` only as a whole segment")]
    PartialWildcard(String),
    /// A wildcard where a concrete permission was needed.
    #[error("`{0}` must be a concrete permission, not a pattern")]
    Wildcard(String),
}

/// A permission pattern: segments separated by `:`, where a segment may be `*`. A `*` in the
/// middle matches exactly one segment; a trailing `*` matches one or more; `*` alone matches
/// everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PermissionPattern(String);

impl PermissionPattern {
    /// Parses a pattern such as `keys:read`, `keys:*`, `*` or `read`.
    pub fn parse(input: &str) -> Result<Self, PermissionError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(PermissionError::EmptySegment(input.to_owned()));
        }
        for segment in text.split(':') {
            if segment.is_empty() {
                return Err(PermissionError::EmptySegment(input.to_owned()));
            }
            if segment == "*" {
                continue;
            }
            if segment.contains('*') {
                return Err(PermissionError::PartialWildcard(input.to_owned()));
            }
            if !segment.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
            }) {
                return Err(PermissionError::BadCharacter(input.to_owned()));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// Parses a concrete permission: a pattern without any `*`.
    pub fn parse_concrete(input: &str) -> Result<Self, PermissionError> {
        let pattern = Self::parse(input)?;
        if pattern.is_wildcard() {
            return Err(PermissionError::Wildcard(input.to_owned()));
        }
        Ok(pattern)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when any segment is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.split(':').any(|s| s == "*")
    }

    /// Does this pattern match the concrete permission `permission`?
    pub fn matches(&self, permission: &str) -> bool {
        segments_match(&self.0, permission, false)
    }

    /// Does this pattern match everything `other` matches (now and for any future permission)?
    pub fn subsumes(&self, other: &PermissionPattern) -> bool {
        segments_match(&self.0, &other.0, true)
    }
}

/// Segment-wise matching. With `pattern_target`, a `*` in the target is only matched by `*`.
fn segments_match(pattern: &str, target: &str, pattern_target: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern: Vec<&str> = pattern.split(':').collect();
    let target: Vec<&str> = target.split(':').collect();
    for (i, segment) in pattern.iter().enumerate() {
        let last = i + 1 == pattern.len();
        let Some(candidate) = target.get(i) else {
            return false;
        };
        if *segment == "*" {
            if last {
                return true;
            }
            continue;
        }
        if *segment != *candidate || (pattern_target && *candidate == "*") {
            return false;
        }
    }
    pattern.len() == target.len()
}

/// Every permission this instance knows — the platform's, the operator's and the product's own
/// — with the product's implications (`admin ⇒ write ⇒ read`), closed transitively.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    product: Vec<String>,
    implied: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    /// Builds a catalog from the product's scopes and implications, naming every bad entry.
    pub fn new(
        product: &[String],
        implies: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut names = Vec::new();
        for name in product {
            match PermissionPattern::parse_concrete(name) {
                Ok(p)
                    if is_operator_only(p.as_str())
                        || PLATFORM_PERMISSIONS.contains(&p.as_str()) =>
                {
                    errors.push(format!("scope `{name}` is a built-in permission already"))
                }
                Ok(p) => names.push(p.0),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let known = |n: &str| names.iter().any(|x| x == n) || PLATFORM_PERMISSIONS.contains(&n);
        for (from, tos) in implies {
            if !known(from) {
                errors.push(format!(
                    "implication from `{from}`, which is not in the catalog"
                ));
            }
            for to in tos {
                if !known(to) {
                    errors.push(format!(
                        "`{from}` implies `{to}`, which is not in the catalog"
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut implied: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for from in implies.keys() {
            let mut closure = BTreeSet::new();
            let mut stack: Vec<&String> = implies.get(from).into_iter().flatten().collect();
            while let Some(next) = stack.pop() {
                if closure.insert(next.clone()) {
                    stack.extend(implies.get(next).into_iter().flatten());
                }
            }
            closure.remove(from);
            implied.insert(from.clone(), closure);
        }
        Ok(Self {
            product: names,
            implied,
        })
    }

    /// Every known concrete permission: platform, operator and product.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        PLATFORM_PERMISSIONS
            .iter()
            .copied()
            .chain(OPERATOR_PERMISSIONS.iter().copied())
            .chain(self.product.iter().map(String::as_str))
    }

    /// The product's own permissions, as configured.
    pub fn product(&self) -> impl Iterator<Item = &str> {
        self.product.iter().map(String::as_str)
    }

    /// True when `permission` is a known concrete permission.
    pub fn contains(&self, permission: &str) -> bool {
        self.all().any(|p| p == permission)
    }

    /// Checks that a pattern names something this instance knows: a concrete permission must be
    /// in the catalog; a wildcard must match at least one catalog permission.
    pub fn check_known(&self, pattern: &PermissionPattern) -> Result<(), String> {
        if pattern.is_wildcard() {
            if self.all().any(|p| pattern.matches(p)) {
                Ok(())
            } else {
                Err(format!(
                    "`{}` matches no known permission",
                    pattern.as_str()
                ))
            }
        } else if self.contains(pattern.as_str()) {
            Ok(())
        } else {
            Err(format!("`{}` is not a known permission", pattern.as_str()))
        }
    }

    /// The permissions that holding `permission` implies (not including itself).
    pub fn implied_by(&self, permission: &str) -> impl Iterator<Item = &str> {
        self.implied
            .get(permission)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// What a role or a key holds in one org: its patterns, and whether that org is the operator org
/// (the only place operator-only permissions can be granted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    patterns: Vec<PermissionPattern>,
    operator_org: bool,
}

impl Grants {
    /// Grants of `patterns` within an org that is (or is not) the operator org.
    pub fn new(patterns: Vec<PermissionPattern>, operator_org: bool) -> Self {
        Self {
            patterns,
            operator_org,
        }
    }

    /// Everything (`*`) within an org that is (or is not) the operator org.
    pub fn everything(operator_org: bool) -> Self {
        Self::new(vec![PermissionPattern("*".into())], operator_org)
    }

    /// The patterns as held.
    pub fn patterns(&self) -> &[PermissionPattern] {
        &self.patterns
    }

    /// Does this set grant the concrete `permission`, directly, by pattern or by implication?
    pub fn allows(&self, permission: &str, catalog: &Catalog) -> bool {
        if is_operator_only(permission) && !self.operator_org {
            return false;
        }
        self.patterns.iter().any(|p| {
            p.matches(permission)
                || (!p.is_wildcard() && catalog.implied_by(p.as_str()).any(|i| i == permission))
        })
    }

    /// Does this set hold everything `pattern` would grant? Used to stop escalation: nobody may
    /// grant a role or a key scope that they do not hold themselves. Outside the operator org a
    /// wildcard matching nothing but operator-only permissions (`admin:*`) is held by nobody,
    /// like those permissions themselves: it would grant nothing, yet read as if it did.
    pub fn covers(&self, pattern: &PermissionPattern, catalog: &Catalog) -> bool {
        if pattern.is_wildcard() {
            let grants_here = self.operator_org
                || catalog
                    .all()
                    .any(|perm| pattern.matches(perm) && !is_operator_only(perm));
            grants_here
                && self.patterns.iter().any(|p| p.subsumes(pattern))
                && catalog
                    .all()
                    .filter(|perm| pattern.matches(perm))
                    .all(|perm| {
                        self.allows(perm, catalog) || (is_operator_only(perm) && !self.operator_org)
                    })
        } else {
            self.allows(pattern.as_str(), catalog)
        }
    }

    /// Does this set cover every one of `patterns`? (See [`Grants::covers`].)
    pub fn covers_all<'a>(
        &self,
        patterns: impl IntoIterator<Item = &'a PermissionPattern>,
        catalog: &Catalog,
    ) -> bool {
        patterns.into_iter().all(|p| self.covers(p, catalog))
    }

    /// Every catalog permission this set grants, sorted: what goes into a token's `perms`.
    pub fn effective(&self, catalog: &Catalog) -> Vec<String> {
        let set: BTreeSet<&str> = catalog.all().filter(|p| self.allows(p, catalog)).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

/// The four roles every organization has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinRole {
    /// Everything in the org (`*`), including deleting it.
    Owner,
    /// Everything but deleting the org.
    Admin,
    /// Keys and usage, and reading the org.
    Developer,
    /// Read-only.
    Viewer,
}

impl BuiltinRole {
    /// All built-in roles, most powerful first.
    pub const ALL: [BuiltinRole; 4] = [Self::Owner, Self::Admin, Self::Developer, Self::Viewer];

    /// The role's name as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Developer => "developer",
            Self::Viewer => "viewer",
        }
    }

    /// The built-in role of that name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The role's platform permissions (the owner's `*` stands for everything).
    pub fn permissions(self) -> &'static [&'static str] {
        match self {
            Self::Owner => &["*"],
            Self::Admin => &[
                "org:read",
                "org:write",
                "members:read",
                "members:write",
                "roles:read",
                "roles:write",
                "keys:read",
                "keys:write",
                "usage:read",
                "usage:write",
                "audit:read",
                "webhooks:read",
                "webhooks:write",
            ],
            Self::Developer => &[
                "org:read",
                "members:read",
                "roles:read",
                "keys:read",
                "keys:write",
                "usage:read",
                "usage:write",
                "webhooks:read",
                "webhooks:write",
            ],
            Self::Viewer => &[
                "org:read",
                "members:read",
                "roles:read",
                "keys:read",
                "usage:read",
            ],
        }
    }

    /// True when the role also holds every product scope of the catalog: admins and developers
    /// do, so that they can issue keys carrying them; viewers do not.
    pub fn holds_product_scopes(self) -> bool {
        matches!(self, Self::Admin | Self::Developer)
    }

    /// The role's patterns in an instance with this catalog.
    pub fn patterns(self, catalog: &Catalog) -> Vec<PermissionPattern> {
        let mut patterns: Vec<PermissionPattern> = self
            .permissions()
            .iter()
            .map(|p| PermissionPattern(String::from(*p)))
            .collect();
        if self.holds_product_scopes() {
            patterns.extend(catalog.product().map(|p| PermissionPattern(p.to_owned())));
        }
        patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pat(s: &str) -> PermissionPattern {
        PermissionPattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn catalog() -> Catalog {
        let implies = BTreeMap::from([
            ("admin".to_string(), vec!["write".to_string()]),
            ("write".to_string(), vec!["read".to_string()]),
        ]);
        Catalog::new(
            &[
                "read".into(),
                "write".into(),
                "admin".into(),
                "pix:write".into(),
            ],
            &implies,
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn parsing() {
        for ok in [
            "keys:read",
            "keys:*",
            "*",
            "read",
            "a:*:c",
            "accounts.v2:read-all",
        ] {
            assert!(PermissionPattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "keys:",
            ":read",
            "Keys:read",
            "keys:re*",
            "keys read",
            "keys::read",
        ] {
            assert!(PermissionPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(PermissionPattern::parse_concrete("keys:*").is_err());
    }

    #[test]
    fn matching() {
        assert!(pat("*").matches("keys:read"));
        assert!(pat("keys:*").matches("keys:read"));
        assert!(!pat("keys:*").matches("keys"));
        assert!(!pat("keys:*").matches("usage:read"));
        assert!(pat("*:read").matches("keys:read"));
        assert!(!pat("*:read").matches("keys:write"));
        assert!(pat("keys:read").matches("keys:read"));
        assert!(!pat("keys:read").matches("keys:read:extra"));
        assert!(!pat("keys").matches("keys:read"));
    }

    #[test]
    fn implications_are_transitive() {
        let c = catalog();
        let admin = Grants::new(vec![pat("admin")], false);
        assert!(admin.allows("write", &c));
        assert!(admin.allows("read", &c));
        let read = Grants::new(vec![pat("read")], false);
        assert!(!read.allows("write", &c));
    }

    #[test]
    fn operator_permissions_stay_in_the_operator_org() {
        let c = catalog();
        let customer_owner = Grants::new(BuiltinRole::Owner.patterns(&c), false);
        assert!(customer_owner.allows("keys:write", &c));
        assert!(!customer_owner.allows("admin:orgs", &c));
        assert!(!customer_owner
            .effective(&c)
            .iter()
            .any(|p| p == "keys:verify"));
        let operator_owner = Grants::new(BuiltinRole::Owner.patterns(&c), true);
        assert!(operator_owner.allows("admin:orgs", &c));
    }

    #[test]
    fn covers_stops_escalation() {
        let c = catalog();
        let admin = Grants::new(BuiltinRole::Admin.patterns(&c), false);
        assert!(admin.covers(&pat("keys:read"), &c));
        // admin holds keys:read and keys:write, not keys:* (which would cover future keys:… too)
        assert!(!admin.covers(&pat("keys:*"), &c));
        assert!(!admin.covers(&pat("*"), &c));
        assert!(!admin.covers(&pat("org:delete"), &c));
        let owner = Grants::new(BuiltinRole::Owner.patterns(&c), false);
        assert!(owner.covers(&pat("*"), &c));
        assert!(owner.covers(&pat("keys:*"), &c));
        // operator permissions by wildcard: only in the operator org
        for operator_only in ["admin:*", "admin:orgs", "keys:verify"] {
            assert!(!owner.covers(&pat(operator_only), &c), "{operator_only}");
        }
        let operator_owner = Grants::new(BuiltinRole::Owner.patterns(&c), true);
        for operator_only in ["admin:*", "admin:orgs", "keys:verify"] {
            assert!(
                operator_owner.covers(&pat(operator_only), &c),
                "{operator_only}"
            );
        }
    }

    #[test]
    fn builtin_roles_and_product_scopes() {
        let c = catalog();
        let grants = |r: BuiltinRole| Grants::new(r.patterns(&c), false);
        assert!(grants(BuiltinRole::Developer).allows("pix:write", &c));
        assert!(grants(BuiltinRole::Admin).allows("read", &c));
        assert!(!grants(BuiltinRole::Viewer).allows("read", &c));
        assert!(!grants(BuiltinRole::Viewer).allows("keys:write", &c));
        assert!(!grants(BuiltinRole::Admin).allows("org:delete", &c));
        assert!(grants(BuiltinRole::Owner).allows("org:delete", &c));
        // each role covers the ones below it, never the ones above
        let order = BuiltinRole::ALL;
        for (i, higher) in order.iter().enumerate() {
            for (j, lower) in order.iter().enumerate() {
                let covered = grants(*higher).covers_all(&lower.patterns(&c), &c);
                assert_eq!(covered, i <= j, "{} covers {}", higher.name(), lower.name());
            }
        }
    }

    #[test]
    fn patterns_must_name_known_permissions() {
        let c = catalog();
        assert!(c.check_known(&pat("keys:read")).is_ok());
        assert!(c.check_known(&pat("pix:*")).is_ok());
        assert!(c.check_known(&pat("*")).is_ok());
        assert!(c.check_known(&pat("keys:frobnicate")).is_err());
        assert!(c.check_known(&pat("nothing:*")).is_err());
    }

    #[test]
    fn catalog_rejects_unknown_names() {
        let implies = BTreeMap::from([("admin".to_string(), vec!["nope".to_string()])]);
        let errors = Catalog::new(
            &["admin".into(), "Bad".into(), "keys:read".into()],
            &implies,
        )
        .err()
        .unwrap_or_default();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("keys".to_string()),
            Just("read".to_string()),
            "[a-z]{1,4}"
        ]
    }

    fn permission() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..4).prop_map(|s| s.join(":"))
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![segment(), Just("*".to_string())], 1..4)
            .prop_map(|s| s.join(":"))
    }

    proptest! {
        #[test]
        fn a_concrete_pattern_matches_exactly_itself(a in permission(), b in permission()) {
            prop_assert_eq!(pat(&a).matches(&b), a == b);
        }

        #[test]
        fn star_matches_everything(a in permission()) {
            prop_assert!(pat("*").matches(&a));
        }

        #[test]
        fn subsumption_implies_matching(p in pattern(), q in pattern(), x in permission()) {
            // if p subsumes q, whatever q matches p matches too
            if pat(&p).subsumes(&pat(&q)) && pat(&q).matches(&x) {
                prop_assert!(pat(&p).matches(&x));
            }
        }

        #[test]
        fn covering_a_set_means_holding_all_it_grants(
            held in prop::collection::vec(pattern(), 0..4),
            granted in prop::collection::vec(pattern(), 0..4),
            operator in any::<bool>(),
        ) {
            // the anti-escalation rule: whoever covers a role can already do all the role can
            let c = catalog();
            let parse = |v: &[String]| v.iter().map(|p| pat(p)).collect::<Vec<_>>();
            let held = Grants::new(parse(&held), operator);
            let granted_patterns = parse(&granted);
            let role = Grants::new(granted_patterns.clone(), operator);
            if held.covers_all(&granted_patterns, &c) {
                for permission in c.all() {
                    prop_assert!(!role.allows(permission, &c) || held.allows(permission, &c),
                        "role grants {} which the holder lacks", permission);
                }
            }
        }

        #[test]
        fn grants_never_exceed_their_patterns(p in pattern(), x in permission()) {
            let c = Catalog::default();
            let g = Grants::new(vec![pat(&p)], false);
            prop_assert_eq!(g.allows(&x, &c), pat(&p).matches(&x) && !is_operator_only(&x));
        }
    }
}
