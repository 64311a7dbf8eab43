//! Field-level validation errors: which input field was wrong and why.

use std::collections::BTreeMap;

/// A set of `field → reason` pairs, reported to clients as `422 VALIDATION_FAILED`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one error.
    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, reason);
        errors
    }

    /// Records `reason` for `field`, keeping the first reason given for a field.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| reason.into());
    }

    /// Runs a parser and records its error under `field`, returning the parsed value if any.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    /// True when no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when empty, else the errors themselves.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The recorded pairs, ordered by field name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join("; "))
    }
}
