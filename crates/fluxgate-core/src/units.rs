//! Human-written configuration values: durations (`15m`, `7d`) and rates (`100/min`, `10/s`).

use std::fmt;
use std::time::Duration;

/// Parses a duration such as `500ms`, `10s`, `15m`, `1h`, `7d` or `2w`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{input}` needs a unit (ms, s, m, h, d or w), e.g. `15m`"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{input}` is not a duration such as `15m` or `7d`"))?;
    let seconds = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        other => {
            return Err(format!(
                "`{input}` has an unknown unit `{other}` (use ms, s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{input}` is too long"))
}

/// Formats a duration the way [`parse_duration`] reads it, choosing the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// A rate: at most `limit` units of cost per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many calls (units of cost) a full window allows.
    pub limit: u64,
    /// The window over which `limit` applies.
    pub window: Duration,
}

impl Rate {
    /// Parses `100/min`, `10/s`, `5000/hour`, `1/day` or `30/10s`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (count, per) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{input}` is not a rate such as `100/min`"))?;
        let limit: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{input}` must start with a whole number, e.g. `100/min`"))?;
        if limit == 0 {
            return Err(format!("`{input}` must allow at least one call"));
        }
        let window = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => parse_duration(other)?,
        };
        if window.is_zero() {
            return Err(format!("`{input}` needs a window longer than zero"));
        }
        Ok(Self { limit, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.window.as_secs() {
            1 if self.window.subsec_nanos() == 0 => write!(f, "{}/s", self.limit),
            60 if self.window.subsec_nanos() == 0 => write!(f, "{}/min", self.limit),
            3600 if self.window.subsec_nanos() == 0 => write!(f, "{}/hour", self.limit),
            86_400 if self.window.subsec_nanos() == 0 => write!(f, "{}/day", self.limit),
            _ => write!(f, "{}/{}", self.limit, format_duration(self.window)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "15", "m", "15x", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["15m", "3d", "10s", "1h", "2w", "250ms", "90s"] {
            assert_eq!(format_duration(parse_duration(d).unwrap_or_default()), d);
        }
    }

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("100/min"),
            Ok(Rate {
                limit: 100,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(
            Rate::parse("10/s"),
            Ok(Rate {
                limit: 10,
                window: Duration::from_secs(1)
            })
        );
        assert_eq!(
            Rate::parse("30/10s"),
            Ok(Rate {
                limit: 30,
                window: Duration::from_secs(10)
            })
        );
        for bad in ["", "100", "0/min", "x/min", "10/", "10/fortnight", "10/0s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Rate::parse("1000/hour").map(|r| r.to_string()),
            Ok("1000/hour".into())
        );
    }
}
