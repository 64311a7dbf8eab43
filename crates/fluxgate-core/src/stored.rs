//! How the domain's closed sets and identifiers are stored: as text columns, through sqlx on
//! any database (only with the `sqlx` feature, which the storage crate enables; the domain
//! itself does no I/O). A stored value that is not one of the set fails to decode rather than
//! passing as a string.

/// A value kept in a text column: written as [`as_stored`](Self::as_stored), read back with
/// [`from_stored`](Self::from_stored).
pub trait StoredText: Sized {
    /// What is written.
    fn as_stored(&self) -> &str;
    /// What was written, or `None` when the text is not one of ours.
    fn from_stored(text: &str) -> Option<Self>;
}

/// Implements sqlx's `Type`, `Decode` and `Encode` for a [`StoredText`] type, on every
/// database whose text type can carry it.
#[cfg(feature = "sqlx")]
#[macro_export]
macro_rules! stored_as_text {
    ($($ty:ty),* $(,)?) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                <$ty as $crate::stored::StoredText>::from_stored(text).ok_or_else(|| {
                    format!("`{text}` is not a stored {}", stringify!($ty)).into()
                })
            }
        }

        // through an owned `String`: every backend encodes one (SQLite only borrows `&'q str`)
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(
                    <$ty as $crate::stored::StoredText>::as_stored(self).to_owned(),
                    buf,
                )
            }
        }
    )*};
}

/// Declares a closed set stored as text: the enum, its wire/stored names, and parsing.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            /// As stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),*
                }
            }

            /// From its stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl $crate::stored::StoredText for $name {
            fn as_stored(&self) -> &str {
                self.as_str()
            }

            fn from_stored(text: &str) -> Option<Self> {
                Self::parse(text)
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// Who did something recorded in the audit log.
    ActorKind {
        /// A signed-in user.
        User = "user",
        /// An API key.
        Key = "key",
        /// Nobody authenticated (a failed login, a reuse of a stolen refresh token).
        Anonymous = "anonymous",
        /// Fluxgate itself or its admin commands.
        System = "system",
    }
);

text_enum!(
    /// Why a session ended.
    EndReason {
        /// The user logged out.
        Logout = "logout",
        /// The user ended it from another session.
        Revoked = "revoked",
        /// A spent refresh token came back: someone holds a copy.
        RefreshReuse = "refresh_reuse",
        /// The password was reset, which ends every session.
        PasswordReset = "password_reset",
        /// The user changed their password, which ends their other sessions.
        PasswordChanged = "password_changed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        for kind in [
            ActorKind::User,
            ActorKind::Key,
            ActorKind::Anonymous,
            ActorKind::System,
        ] {
            assert_eq!(ActorKind::from_stored(kind.as_stored()), Some(kind));
        }
        for reason in [
            EndReason::Logout,
            EndReason::Revoked,
            EndReason::RefreshReuse,
            EndReason::PasswordReset,
        ] {
            assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(ActorKind::parse("admin"), None);
    }

    #[test]
    fn stored_ids_decode_only_as_their_own_kind() {
        use crate::ids::{OrgId, UserId};
        let user = UserId::generate();
        assert_eq!(UserId::from_stored(user.as_stored()), Some(user.clone()));
        assert_eq!(OrgId::from_stored(user.as_stored()), None);
        assert_eq!(UserId::from_stored("usr_not-a-ulid"), None);
    }
}

#[cfg(feature = "sqlx")]
stored_as_text!(
    ActorKind,
    EndReason,
    crate::refresh::SpentReason,
    crate::apikey::Environment,
    crate::ids::UserId,
    crate::ids::OrgId,
    crate::ids::SessionId,
    crate::ids::RoleId,
    crate::ids::InvitationId,
    crate::ids::EventId,
    crate::ids::KeyId,
    crate::ids::PasskeyId,
    crate::ids::IdentityId,
    crate::ids::WebhookId,
    crate::ids::DeliveryId,
);
