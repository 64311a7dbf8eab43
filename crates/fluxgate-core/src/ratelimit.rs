//! The rate-limit arithmetic: GCRA (the generic cell rate algorithm), the same maths every
//! limiter store runs — in memory here, in Lua inside Redis (`fluxgate-server`'s `ratelimit`).
//!
//! A rate of `limit` per `window` has an emission interval `T = window / limit`. The only state
//! per key is the *theoretical arrival time* (TAT): when the key's allowance would be fully
//! restored. A call of `cost` is allowed when `max(TAT, now) + cost·T − now ≤ window`; it then
//! moves the TAT there. Consequences, all property-tested below:
//! - a burst of at most `limit` passes at once; over any span of length `L`, at most
//!   `limit + L/T` pass — so no short span ever sees the 2× burst a fixed window allows at its
//!   boundary, and in the long run at most `limit` per `window` pass;
//! - once exhausted, one call is allowed again every `T` (smooth refill, not a window reset);
//! - a key whose TAT is in the past is indistinguishable from a key never seen, so idle state
//!   can be dropped at any time (memory stays bounded).

use crate::units::Rate;

/// Nanoseconds, on whatever clock the store uses (monotonic in memory, Redis' `TIME` there).
pub type Nanos = u64;

/// A rate as GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Calls (units of cost) per window.
    pub limit: u64,
    /// The window, in nanoseconds.
    pub window: Nanos,
}

impl Quota {
    /// From a configured rate.
    pub fn from_rate(rate: Rate) -> Self {
        Self {
            limit: rate.limit.max(1),
            window: u64::try_from(rate.window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
        }
    }

    /// The emission interval `T`: how often one unit of allowance comes back.
    pub fn interval(&self) -> Nanos {
        (self.window / self.limit.max(1)).max(1)
    }
}

/// The outcome of one decision, with what the `X-RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// The limit (per window).
    pub limit: u64,
    /// Calls that could still pass right now, after this one.
    pub remaining: u64,
    /// Nanoseconds until the allowance is fully restored.
    pub reset_after: Nanos,
    /// When refused: nanoseconds until this call could pass. Zero when allowed.
    pub retry_after: Nanos,
}

impl Decision {
    /// Seconds to wait before retrying, rounded up (at least 1 when refused).
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            0
        } else {
            self.retry_after.div_ceil(1_000_000_000).max(1)
        }
    }

    /// Seconds until the allowance is fully restored, rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        self.reset_after.div_ceil(1_000_000_000)
    }
}

/// Decides a call of `cost` at `now` against a key whose stored TAT is `tat` (None: never seen
/// or idle). Returns the decision and the TAT to store (unchanged when refused).
pub fn decide(quota: Quota, tat: Option<Nanos>, now: Nanos, cost: u64) -> (Decision, Nanos) {
    let interval = u128::from(quota.interval());
    // limit·T rather than the configured window, so rounding T down never widens the burst
    let window = interval * u128::from(quota.limit);
    let now_wide = u128::from(now);
    let base = u128::from(tat.unwrap_or(now).max(now));
    let new_tat = base + u128::from(cost) * interval;
    let allow_at = new_tat.saturating_sub(window); // the earliest `now` at which this call fits
    let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    let remaining_after = |tat: u128| {
        let used = tat.saturating_sub(now_wide);
        clamp(window.saturating_sub(used) / interval).min(quota.limit)
    };
    if allow_at <= now_wide {
        let decision = Decision {
            allowed: true,
            limit: quota.limit,
            remaining: remaining_after(new_tat),
            reset_after: clamp(new_tat - now_wide),
            retry_after: 0,
        };
        (decision, clamp(new_tat))
    } else {
        let retry_after = if u128::from(cost) > u128::from(quota.limit) {
            clamp(window) // can never pass: a full window is the honest answer
        } else {
            clamp(allow_at - now_wide)
        };
        let decision = Decision {
            allowed: false,
            limit: quota.limit,
            remaining: remaining_after(base),
            reset_after: clamp(base - now_wide),
            retry_after,
        };
        (decision, clamp(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Nanos = 1_000_000_000;

    fn quota(limit: u64, window_secs: u64) -> Quota {
        Quota {
            limit,
            window: window_secs * SECOND,
        }
    }

    /// Runs calls (time, cost) in order through GCRA; the allowed ones.
    fn run(q: Quota, calls: &[(Nanos, u64)]) -> Vec<(Nanos, u64, bool)> {
        let mut tat = None;
        calls
            .iter()
            .map(|&(t, cost)| {
                let (d, next) = decide(q, tat, t, cost);
                tat = Some(next);
                (t, cost, d.allowed)
            })
            .collect()
    }

    /// The reference model: a token bucket of `limit·T` units, refilled one unit per
    /// nanosecond, a call of `cost` taking `cost·T` units. Different state, same contract.
    struct Bucket {
        level: u128,
        capacity: u128,
        at: u128,
        interval: u128,
    }

    impl Bucket {
        fn new(q: Quota) -> Self {
            let interval = u128::from(q.interval());
            let capacity = interval * u128::from(q.limit);
            Self {
                level: capacity,
                capacity,
                at: 0,
                interval,
            }
        }

        fn call(&mut self, now: u128, cost: u64) -> bool {
            self.level = (self.level + now.saturating_sub(self.at)).min(self.capacity);
            self.at = self.at.max(now);
            let need = u128::from(cost) * self.interval;
            if self.level >= need {
                self.level -= need;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn a_burst_of_limit_then_one_per_interval() {
        let q = quota(5, 10); // T = 2 s
        let calls: Vec<(Nanos, u64)> = (0..8).map(|_| (0, 1)).collect();
        let allowed = run(q, &calls).iter().filter(|c| c.2).count();
        assert_eq!(allowed, 5);
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(decide(q, tat, 0, 1).1);
        }
        let (refused, _) = decide(q, tat, SECOND, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, SECOND);
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(refused.remaining, 0);
        let (again, _) = decide(q, tat, 2 * SECOND, 1);
        assert!(again.allowed, "one call back after T");
        assert_eq!(again.remaining, 0);
    }

    #[test]
    fn headers_count_down_and_reset() {
        let q = quota(3, 60);
        let (first, tat) = decide(q, None, 0, 1);
        assert_eq!((first.remaining, first.reset_after), (2, 20 * SECOND));
        let (second, _) = decide(q, Some(tat), 0, 2);
        assert_eq!((second.allowed, second.remaining), (true, 0));
        assert_eq!(second.reset_after_secs(), 60);
    }

    #[test]
    fn a_cost_above_the_limit_never_passes() {
        let q = quota(3, 60);
        let (d, tat) = decide(q, None, 0, 4);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs(), 60);
        assert_eq!(tat, 0, "a refused call changes nothing");
    }

    #[test]
    fn a_fixed_window_boundary_burst_is_impossible() {
        // a fixed window would let 10 pass at 0:59.9 and 10 more at 1:00.0
        let q = quota(10, 60);
        let mut calls: Vec<(Nanos, u64)> =
            (0..10).map(|_| (59 * SECOND + 900_000_000, 1)).collect();
        calls.extend((0..10).map(|_| (60 * SECOND, 1)));
        let allowed = run(q, &calls).iter().filter(|c| c.2).count();
        assert_eq!(allowed, 10);
    }

    fn scenario() -> impl Strategy<Value = (u64, u64, Vec<(Nanos, u64)>)> {
        (1u64..20, 1u64..30).prop_flat_map(|(limit, window)| {
            let steps = prop::collection::vec((0u64..3 * SECOND, 1u64..4), 1..120);
            (Just(limit), Just(window), steps).prop_map(|(l, w, steps)| {
                let mut t = 0;
                let calls = steps
                    .into_iter()
                    .map(|(gap, cost)| {
                        t += gap;
                        (t, cost)
                    })
                    .collect();
                (l, w, calls)
            })
        })
    }

    proptest! {
        #[test]
        fn agrees_with_the_token_bucket_model((limit, window, calls) in scenario()) {
            let q = quota(limit, window);
            let mut bucket = Bucket::new(q);
            for (t, cost, allowed) in run(q, &calls) {
                prop_assert_eq!(allowed, bucket.call(u128::from(t), cost), "at {} cost {}", t, cost);
            }
        }

        #[test]
        fn no_span_sees_more_than_the_burst_plus_its_refill((limit, window, calls) in scenario()) {
            let q = quota(limit, window);
            let allowed: Vec<(Nanos, u64)> = run(q, &calls).into_iter().filter(|c| c.2).map(|c| (c.0, c.1)).collect();
            let interval = q.interval();
            for (i, &(start, _)) in allowed.iter().enumerate() {
                let mut passed = 0;
                for &(t, cost) in &allowed[i..] {
                    passed += cost;
                    let span = t - start;
                    // within any span of length L: at most limit + floor(L / T)
                    prop_assert!(passed <= limit + span / interval,
                        "{} passed within {} ns (limit {}, T {})", passed, span, limit, interval);
                }
            }
        }

        #[test]
        fn over_many_windows_the_rate_is_the_limit((limit, window, calls) in scenario()) {
            let q = quota(limit, window);
            let allowed: u64 = run(q, &calls).iter().filter(|c| c.2).map(|c| c.1).sum();
            let last = calls.last().map(|c| c.0).unwrap_or(0);
            prop_assert!(allowed <= limit + last / q.interval());
        }

        #[test]
        fn exhausted_keys_get_one_call_back_per_interval(limit in 1u64..50, window in 1u64..100, extra in 1u64..20) {
            let q = quota(limit, window);
            let mut tat = None;
            for _ in 0..limit {
                let (d, next) = decide(q, tat, 0, 1);
                prop_assert!(d.allowed);
                tat = Some(next);
            }
            let t = q.interval();
            for k in 1..=extra {
                let (early, _) = decide(q, tat, k * t - 1, 1);
                prop_assert!(!early.allowed);
                prop_assert_eq!(early.retry_after, 1);
                let (on_time, next) = decide(q, tat, k * t, 1);
                prop_assert!(on_time.allowed);
                tat = Some(next);
            }
        }

        /// Any numbers at all — limits, windows, costs, clocks at the ends of u64 — decide
        /// without panicking or wrapping: a call is allowed only if it fits in the limit, and
        /// what is left never exceeds it.
        #[test]
        fn extreme_numbers_never_wrap(
            limit in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64), 1u64..10],
            window in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64)],
            cost in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64), 0u64..10],
            tat in prop::option::of(prop_oneof![any::<u64>(), Just(u64::MAX)]),
            now in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64)],
        ) {
            let q = Quota { limit: limit.max(1), window: window.max(1) };
            let (decision, next) = decide(q, tat, now, cost);
            prop_assert!(decision.remaining <= q.limit);
            if decision.allowed {
                prop_assert!(cost <= q.limit);
                prop_assert!(next >= now);
            } else {
                prop_assert_eq!(Some(next), Some(tat.unwrap_or(now).max(now)));
            }
        }

        #[test]
        fn an_idle_key_is_a_new_key(limit in 1u64..50, window in 1u64..100, idle in 0u64..10, cost in 1u64..5) {
            // once its TAT has passed, dropping a key's state changes no decision
            let q = quota(limit, window);
            let (_, tat) = decide(q, None, 0, cost.min(limit));
            let later = tat + idle * SECOND;
            prop_assert_eq!(decide(q, Some(tat), later, cost), decide(q, None, later, cost));
        }
    }
}
