//! What one verify takes from a key's rate limit and quota: its own `cost` and the calls a
//! client admitted from a cached verdict that this verify settles — range-checked so no request
//! number can overflow, wrap or leave calls unpaid.

use crate::validation::FieldErrors;
use std::collections::BTreeMap;

/// The most units one verify may take.
pub const MAX_COST: u64 = 10_000;
/// The most endpoints one verify may settle cached calls for.
pub const MAX_CACHED_ENDPOINTS: usize = 100;
/// The longest endpoint name, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 200;

/// The checked cost of a verify: `cost` (default 1) in `0..=MAX_COST`, and cached calls, each
/// below `MAX_COST`, whose sum plus this call is covered by `cost`. Errors name the field.
pub fn verify_cost(
    cost: Option<u64>,
    cached_calls: &BTreeMap<String, u64>,
) -> Result<u64, FieldErrors> {
    let cost = cost.unwrap_or(1);
    if cost > MAX_COST {
        return Err(FieldErrors::single(
            "cost",
            format!("must be between 0 and {MAX_COST}"),
        ));
    }
    if cached_calls.len() > MAX_CACHED_ENDPOINTS
        || cached_calls.keys().any(|e| e.len() > MAX_ENDPOINT_LEN)
    {
        return Err(FieldErrors::single(
            "cached_calls",
            format!("at most {MAX_CACHED_ENDPOINTS} endpoints of at most {MAX_ENDPOINT_LEN} bytes"),
        ));
    }
    // each count is below MAX_COST, so at most 100 of them cannot overflow; checked anyway
    let settled = cached_calls
        .values()
        .try_fold(0u64, |sum, &calls| {
            (calls < MAX_COST).then(|| sum.checked_add(calls)).flatten()
        })
        .and_then(|sum| sum.checked_add(1).map(|with_this| (sum, with_this)));
    match settled {
        Some((0, _)) => Ok(cost),
        Some((_, with_this)) if with_this <= cost => Ok(cost),
        _ => Err(FieldErrors::single(
            "cached_calls",
            "must be paid for in cost: their sum + 1 ≤ cost (each count below 10000)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn calls(counts: &[u64]) -> BTreeMap<String, u64> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("/e{i}"), n))
            .collect()
    }

    #[test]
    fn cached_calls_that_would_wrap_are_refused_not_summed() {
        let refused = verify_cost(Some(1), &calls(&[u64::MAX, 1])).err();
        assert_eq!(
            refused.map(|e| e
                .iter()
                .map(|(field, _)| field.to_owned())
                .collect::<Vec<_>>()),
            Some(vec!["cached_calls".to_owned()])
        );
    }

    #[test]
    fn the_default_and_the_edges() {
        assert_eq!(verify_cost(None, &BTreeMap::new()), Ok(1));
        assert_eq!(verify_cost(Some(0), &BTreeMap::new()), Ok(0));
        assert_eq!(verify_cost(Some(MAX_COST), &BTreeMap::new()), Ok(MAX_COST));
        assert!(verify_cost(Some(MAX_COST + 1), &BTreeMap::new()).is_err());
        assert_eq!(verify_cost(Some(5), &calls(&[2, 2])), Ok(5));
        assert!(verify_cost(Some(4), &calls(&[2, 2])).is_err());
        assert_eq!(verify_cost(Some(1), &calls(&[0, 0])), Ok(1));
    }

    proptest! {
        /// No input panics, and whatever is accepted is paid for, computed without wrapping.
        #[test]
        fn whatever_is_accepted_is_paid_for(
            cost in prop_oneof![any::<u64>(), 0..=MAX_COST + 1],
            counts in prop::collection::vec(prop_oneof![any::<u64>(), 0..MAX_COST, Just(u64::MAX)], 0..120),
        ) {
            let cached = calls(&counts);
            if let Ok(charged) = verify_cost(Some(cost), &cached) {
                let sum: u128 = cached.values().map(|&n| u128::from(n)).sum();
                prop_assert_eq!(charged, cost);
                prop_assert!(charged <= MAX_COST);
                prop_assert!(sum == 0 || sum < u128::from(charged));
                prop_assert!(cached.len() <= MAX_CACHED_ENDPOINTS);
            }
        }
    }
}
