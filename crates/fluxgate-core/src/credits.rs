//! A key's usage credits: how many calls it may still make, and when they are refilled — daily
//! at 00:00 UTC or monthly on a day of the month — computed from the time alone, so no timer
//! per key is needed: the remaining count belongs to a refill period, and a count from an
//! earlier period reads as a full refill.

use crate::validation::FieldErrors;
use time::{Date, Month, OffsetDateTime, Time};

/// The most credits a key may hold or be refilled with.
pub const MAX_CREDITS: u64 = 1_000_000_000_000;
const DAY: i64 = 86_400;

/// When credits are refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every month at 00:00 UTC on this day (1–31; the month's last day when it is shorter).
    Monthly {
        /// The day of the month.
        day: u8,
    },
}

/// A refill: back to `amount` credits at every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The credits after a refill (not added: the count is set to it).
    pub amount: u64,
    /// When.
    pub interval: Interval,
}

impl Interval {
    /// `daily` or `monthly` (with the day of the month, 1 when absent) — errors name the field.
    pub fn parse(word: &str, day_of_month: Option<u32>) -> Result<Self, FieldErrors> {
        match (word, day_of_month) {
            ("daily", None) => Ok(Self::Daily),
            ("daily", Some(_)) => Err(FieldErrors::single(
                "credits.refill.day_of_month",
                "only for a monthly refill",
            )),
            ("monthly", day) => match u8::try_from(day.unwrap_or(1)) {
                Ok(day @ 1..=31) => Ok(Self::Monthly { day }),
                _ => Err(FieldErrors::single(
                    "credits.refill.day_of_month",
                    "must be between 1 and 31",
                )),
            },
            _ => Err(FieldErrors::single(
                "credits.refill.interval",
                "must be daily or monthly",
            )),
        }
    }

    /// `daily` or `monthly`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly { .. } => "monthly",
        }
    }

    /// The day of the month of a monthly refill.
    pub fn day_of_month(self) -> Option<u8> {
        match self {
            Self::Daily => None,
            Self::Monthly { day } => Some(day),
        }
    }

    /// The latest refill at or before `now` (Unix seconds).
    pub fn period_start(self, now: i64) -> i64 {
        match self {
            Self::Daily => now - now.rem_euclid(DAY),
            Self::Monthly { day } => {
                let Ok(at) = OffsetDateTime::from_unix_timestamp(now) else {
                    return now - now.rem_euclid(DAY);
                };
                let this_month = refill_in(at.year(), at.month(), day);
                if this_month <= now {
                    this_month
                } else {
                    let (year, month) = match at.month() {
                        Month::January => (at.year() - 1, Month::December),
                        month => (at.year(), month.previous()),
                    };
                    refill_in(year, month, day)
                }
            }
        }
    }

    /// The first refill after `now` (Unix seconds).
    pub fn next_refill(self, now: i64) -> i64 {
        match self {
            Self::Daily => self.period_start(now).saturating_add(DAY),
            Self::Monthly { day } => {
                let start = self.period_start(now);
                let Ok(at) = OffsetDateTime::from_unix_timestamp(start) else {
                    return start.saturating_add(28 * DAY);
                };
                // the period started in this month or the one before; the next starts a month on
                let (year, month) = match at.month() {
                    Month::December => (at.year() + 1, Month::January),
                    month => (at.year(), month.next()),
                };
                refill_in(year, month, day)
            }
        }
    }
}

/// 00:00 UTC on `day` of the month (its last day when it is shorter).
fn refill_in(year: i32, month: Month, day: u8) -> i64 {
    let day = day.min(month.length(year));
    Date::from_calendar_date(year, month, day)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
        .unwrap_or(0)
}

/// Checks a number of credits from a request: `0..=MAX_CREDITS`, the error naming `field`.
pub fn checked(field: &str, credits: u64) -> Result<u64, FieldErrors> {
    if credits > MAX_CREDITS {
        return Err(FieldErrors::single(
            field,
            format!("must be between 0 and {MAX_CREDITS}"),
        ));
    }
    Ok(credits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn unix(at: OffsetDateTime) -> i64 {
        at.unix_timestamp()
    }

    #[test]
    fn a_daily_refill_is_at_midnight_utc() {
        let now = unix(datetime!(2026-12-01 16:30 UTC));
        assert_eq!(
            Interval::Daily.period_start(now),
            unix(datetime!(2026-12-01 0:00 UTC))
        );
        assert_eq!(
            Interval::Daily.next_refill(now),
            unix(datetime!(2026-12-02 0:00 UTC))
        );
    }

    #[test]
    fn a_monthly_refill_falls_on_its_day_or_the_months_last() {
        let on_31 = Interval::Monthly { day: 31 };
        let now = unix(datetime!(2027-02-10 8:00 UTC));
        assert_eq!(
            on_31.period_start(now),
            unix(datetime!(2027-01-31 0:00 UTC))
        );
        assert_eq!(on_31.next_refill(now), unix(datetime!(2027-02-28 0:00 UTC)));
        let after = unix(datetime!(2027-02-28 0:00 UTC));
        assert_eq!(
            on_31.period_start(after),
            after,
            "a refill instant starts its period"
        );
        assert_eq!(
            on_31.next_refill(after),
            unix(datetime!(2027-03-31 0:00 UTC))
        );
        let on_15 = Interval::Monthly { day: 15 };
        let january = unix(datetime!(2027-01-03 0:00 UTC));
        assert_eq!(
            on_15.period_start(january),
            unix(datetime!(2026-12-15 0:00 UTC))
        );
        assert_eq!(
            on_15.next_refill(january),
            unix(datetime!(2027-01-15 0:00 UTC))
        );
        let december = unix(datetime!(2026-12-20 0:00 UTC));
        assert_eq!(
            on_15.next_refill(december),
            unix(datetime!(2027-01-15 0:00 UTC))
        );
    }

    #[test]
    fn intervals_are_checked_naming_the_field() {
        assert_eq!(
            Interval::parse("monthly", None).ok(),
            Some(Interval::Monthly { day: 1 })
        );
        for (word, day, field) in [
            ("weekly", None, "credits.refill.interval"),
            ("monthly", Some(0), "credits.refill.day_of_month"),
            ("monthly", Some(32), "credits.refill.day_of_month"),
            ("daily", Some(3), "credits.refill.day_of_month"),
        ] {
            let errors = Interval::parse(word, day).err().map(|e| format!("{e:?}"));
            assert!(errors.is_some_and(|e| e.contains(field)), "{word} {day:?}");
        }
        assert!(checked("credits.remaining", MAX_CREDITS + 1).is_err());
    }
}
