//! The refresh-token rotation rule: what presenting a refresh token does, from the token's
//! state and the time alone. Rotation with reuse detection: an unspent token is exchanged for
//! its successor; a token spent by rotation a moment ago (two tabs refreshing at once) gets the
//! same successor again; a spent token presented later means someone holds a copy, and the
//! whole session ends.

crate::stored::text_enum!(
    /// Why a refresh token was spent.
    SpentReason {
        /// Exchanged for its successor.
        Rotated = "rotated",
        /// Replaced by a token for another active org (switching orgs).
        Superseded = "superseded",
    }
);

/// The state of a presented refresh token that the rule needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
    /// When and why it was spent, if it was.
    pub spent: Option<(i64, SpentReason)>,
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStep {
    /// Unspent and unexpired: spend it and issue its successor.
    Rotate,
    /// Spent by rotation within the reuse interval: answer with the successor it was exchanged
    /// for (the same pair the first request got).
    ReplaySuccessor,
    /// Spent by rotation longer ago: a copy is in someone else's hands — end the session.
    EndSession,
    /// Expired, or superseded: refuse.
    Refuse,
}

/// The step for a token in `state` presented at `now`, given the reuse interval (seconds).
pub fn step(state: TokenState, now: i64, reuse_interval: i64) -> RefreshStep {
    match state.spent {
        None if state.expires_at > now => RefreshStep::Rotate,
        None => RefreshStep::Refuse,
        Some((at, SpentReason::Rotated)) if now.saturating_sub(at) <= reuse_interval => {
            RefreshStep::ReplaySuccessor
        }
        Some((_, SpentReason::Rotated)) => RefreshStep::EndSession,
        Some((_, SpentReason::Superseded)) => RefreshStep::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn unspent(expires_at: i64) -> TokenState {
        TokenState {
            expires_at,
            spent: None,
        }
    }

    fn spent(at: i64, reason: SpentReason) -> TokenState {
        TokenState {
            expires_at: NOW + 3600,
            spent: Some((at, reason)),
        }
    }

    #[test]
    fn an_unspent_live_token_rotates_and_an_expired_one_is_refused() {
        assert_eq!(step(unspent(NOW + 1), NOW, 10), RefreshStep::Rotate);
        assert_eq!(step(unspent(NOW), NOW, 10), RefreshStep::Refuse);
    }

    #[test]
    fn a_duplicate_within_the_interval_replays_and_later_ends_the_session() {
        let rotated = |ago| spent(NOW - ago, SpentReason::Rotated);
        assert_eq!(step(rotated(0), NOW, 10), RefreshStep::ReplaySuccessor);
        assert_eq!(step(rotated(10), NOW, 10), RefreshStep::ReplaySuccessor);
        assert_eq!(step(rotated(11), NOW, 10), RefreshStep::EndSession);
        assert_eq!(step(rotated(5), NOW, 0), RefreshStep::EndSession);
    }

    #[test]
    fn a_superseded_token_is_refused_without_ending_the_session() {
        assert_eq!(
            step(spent(NOW, SpentReason::Superseded), NOW, 10),
            RefreshStep::Refuse
        );
    }

    #[test]
    fn extreme_clocks_do_not_wrap() {
        let far = spent(i64::MIN, SpentReason::Rotated);
        assert_eq!(step(far, i64::MAX, 10), RefreshStep::EndSession);
    }

    #[test]
    fn reasons_round_trip() {
        for reason in [SpentReason::Rotated, SpentReason::Superseded] {
            assert_eq!(SpentReason::parse(reason.as_str()), Some(reason));
        }
    }
}
