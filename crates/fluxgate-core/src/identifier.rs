//! Login identifiers besides the email address: a username, and a national document number
//! checked by the operator's rule (a pattern, and a checksum such as Brazil's CPF check digits).
//! Each is normalised the same way at signup and at login, so one account has one spelling.

/// How a username is written: 3–32 of `a-z 0-9 . _ -`, starting with a letter or digit, with
/// at least one letter (so it never looks like a document number or an email address).
pub fn normalise_username(input: &str) -> Result<String, &'static str> {
    let name = input.trim().to_lowercase();
    if !(3..=32).contains(&name.chars().count()) {
        return Err("must be 3 to 32 characters");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if !name.chars().all(allowed) {
        return Err("may hold only letters a-z, digits, dots, dashes and underscores");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit");
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must hold at least one letter");
    }
    Ok(name)
}

/// A check on a document number's digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The pattern alone.
    None,
    /// Brazil's CPF: eleven digits whose last two are mod-11 check digits (and not all equal).
    Cpf,
}

impl Checksum {
    /// From the configuration's word: `none` or `cpf`.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "none" => Some(Self::None),
            "cpf" => Some(Self::Cpf),
            _ => None,
        }
    }

    fn holds(self, number: &str) -> bool {
        match self {
            Self::None => true,
            Self::Cpf => cpf_valid(number),
        }
    }
}

/// The operator's rule for document numbers.
#[derive(Debug, Clone)]
pub struct DocumentRule {
    /// What the document is called (`CPF`), in messages and the portal.
    pub label: String,
    /// What a number must match once spaces, dots, dashes and slashes are removed.
    pub pattern: regex::Regex,
    /// The check on its digits.
    pub checksum: Checksum,
}

impl DocumentRule {
    /// The number as stored (separators removed), or why it is refused.
    pub fn normalise(&self, input: &str) -> Result<String, String> {
        let number: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && !".-/".contains(*c))
            .collect();
        if number.is_empty() || !self.pattern.is_match(&number) {
            return Err(format!("is not a valid {} number", self.label));
        }
        if !self.checksum.holds(&number) {
            return Err(format!(
                "is not a valid {} number (check digits)",
                self.label
            ));
        }
        Ok(number)
    }
}

/// Whether `number` is a CPF: eleven digits, not all the same, whose 10th and 11th digits are
/// the mod-11 check digits of the ones before.
pub fn cpf_valid(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 11 || number.chars().count() != 11 || digits.iter().all(|d| *d == digits[0])
    {
        return false;
    }
    let check = |len: usize| {
        let weighted: u32 = digits[..len]
            .iter()
            .zip((2..=u32::try_from(len).unwrap_or(0) + 1).rev())
            .map(|(d, w)| d * w)
            .sum();
        match weighted % 11 {
            0 | 1 => 0,
            r => 11 - r,
        }
    };
    check(9) == digits[9] && check(10) == digits[10]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lower_cased_and_checked() {
        assert_eq!(
            normalise_username("  Ada.Lovelace "),
            Ok("ada.lovelace".into())
        );
        assert_eq!(normalise_username("r2-d2"), Ok("r2-d2".into()));
        for bad in ["ab", "a@b.c", "_ada", "12345678901", "ádá", &"a".repeat(33)] {
            assert!(normalise_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpf_check_digits_are_verified() {
        // valid numbers, computed by hand with the mod-11 rule
        for good in ["52998224725", "11144477735", "39053344705"] {
            assert!(cpf_valid(good), "{good}");
        }
        for bad in [
            "52998224724",
            "11111111111",
            "1114447773",
            "111444777350",
            "1114447773a",
        ] {
            assert!(!cpf_valid(bad), "{bad}");
        }
    }

    #[test]
    fn documents_lose_their_separators_and_must_match() {
        let rule = DocumentRule {
            label: "CPF".into(),
            pattern: regex::Regex::new("^[0-9]{11}$").unwrap(),
            checksum: Checksum::Cpf,
        };
        assert_eq!(rule.normalise("529.982.247-25"), Ok("52998224725".into()));
        assert!(rule
            .normalise("529.982.247-24")
            .unwrap_err()
            .contains("check digits"));
        assert!(rule.normalise("ABC").is_err());
        assert!(rule.normalise("").is_err());
    }
}
