//! Named rate limits: besides its own limit, a key (or, through its plan, all keys of an org
//! together) may carry limits with names — `tokens`, `exports` — that a verify spends by name
//! and cost. This module checks their names and sizes.

use crate::validation::FieldErrors;

/// The most named limits one key carries, and one verify spends.
pub const MAX_NAMED_LIMITS: usize = 10;
/// The largest limit.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// The longest window: 31 days.
pub const MAX_WINDOW_SECONDS: u64 = 31 * 86_400;

/// Whether `name` may name a limit: 1–64 of `a-z`, `0-9`, `_`, `-`, `.`, `:`.
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.:".contains(&b))
}

/// Checks one limit at `field` (`ratelimits[2]`): its name, `limit` and `window_seconds`.
pub fn check(errors: &mut FieldErrors, field: &str, name: &str, limit: u64, window_seconds: u64) {
    if !is_name(name) {
        errors.add(
            format!("{field}.name"),
            "must be 1–64 of a-z, 0-9, _, -, . and :",
        );
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.add(
            format!("{field}.limit"),
            format!("must be between 1 and {MAX_LIMIT}"),
        );
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&window_seconds) {
        errors.add(
            format!("{field}.window_seconds"),
            format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
        );
    }
}

/// Checks that a list holds at most [`MAX_NAMED_LIMITS`] names, each once, recording errors
/// under `field`.
pub fn check_list<'a>(errors: &mut FieldErrors, field: &str, names: impl Iterator<Item = &'a str>) {
    let names: Vec<&str> = names.collect();
    if names.len() > MAX_NAMED_LIMITS {
        errors.add(field, format!("at most {MAX_NAMED_LIMITS}"));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            errors.add(
                format!("{field}[{i}].name"),
                format!("`{name}` is named twice"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sizes_and_repeats_are_checked_naming_the_field() {
        assert!(is_name("tokens") && is_name("llm:tokens.in") && !is_name("Tokens"));
        assert!(!is_name("") && !is_name(&"x".repeat(65)) && !is_name("a b"));
        let mut errors = FieldErrors::new();
        check(
            &mut errors,
            "ratelimits[0]",
            "tokens",
            0,
            MAX_WINDOW_SECONDS + 1,
        );
        check_list(&mut errors, "ratelimits", ["a", "b", "a"].into_iter());
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "ratelimits[0].limit",
                "ratelimits[0].window_seconds",
                "ratelimits[2].name"
            ]
        );
    }
}
