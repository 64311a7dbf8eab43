//! Prefixed ULID identifiers (`usr_01H…`, `org_…`): one newtype per kind of resource.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not an identifier of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an identifier starting with `{expected}_`")]
pub struct IdParseError {
    /// The prefix that was expected.
    pub expected: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every identifier of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh identifier: the prefix and a new ULID.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, ulid::Ulid::new()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or(IdParseError { expected: $prefix })?;
                ulid::Ulid::from_string(rest).map_err(|_| IdParseError { expected: $prefix })?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdParseError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $crate::stored::StoredText for $name {
            fn as_stored(&self) -> &str {
                &self.0
            }

            fn from_stored(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A user account (`usr_…`).
    UserId, "usr"
);
prefixed_id!(
    /// An organization (`org_…`).
    OrgId, "org"
);
prefixed_id!(
    /// A login session (`ses_…`).
    SessionId, "ses"
);
prefixed_id!(
    /// A custom role (`rol_…`).
    RoleId, "rol"
);
prefixed_id!(
    /// An invitation (`inv_…`).
    InvitationId, "inv"
);
prefixed_id!(
    /// An audit event (`evt_…`).
    EventId, "evt"
);
prefixed_id!(
    /// An API key (`key_…`).
    KeyId, "key"
);
prefixed_id!(
    /// A user's passkey (`psk_…`).
    PasskeyId, "psk"
);
prefixed_id!(
    /// A user's identity at an OpenID provider (`idn_…`).
    IdentityId, "idn"
);
prefixed_id!(
    /// An org's webhook endpoint (`whk_…`).
    WebhookId, "whk"
);
prefixed_id!(
    /// One delivery of an event to a webhook endpoint (`whd_…`).
    DeliveryId, "whd"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_wrong_prefixes_are_refused() {
        let id = UserId::generate();
        assert!(id.as_str().starts_with("usr_"));
        assert_eq!(id.as_str().parse::<UserId>(), Ok(id.clone()));
        assert!(id.as_str().parse::<OrgId>().is_err());
        assert!("usr_nope".parse::<UserId>().is_err());
        assert!("".parse::<UserId>().is_err());
    }
}
