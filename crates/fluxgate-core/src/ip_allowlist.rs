//! A key's IP allowlist: the addresses and CIDR ranges (IPv4 and IPv6) it may be used from.
//! An empty list allows any address.

use crate::validation::FieldErrors;
use ipnet::IpNet;
use std::net::IpAddr;

/// The most entries one key's list holds.
pub const MAX_ENTRIES: usize = 100;

/// Where a key may be used from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Parses entries — `203.0.113.7`, `198.51.100.0/24`, `2001:db8::/32` — recording an error
    /// under `field[i]` for each that is not one, and under `field` for more than
    /// [`MAX_ENTRIES`]. A range is kept as written but for its host bits (`10.1.2.3/8` is
    /// `10.0.0.0/8`).
    pub fn parse(errors: &mut FieldErrors, field: &str, entries: &[String]) -> Self {
        if entries.len() > MAX_ENTRIES {
            errors.add(field, format!("at most {MAX_ENTRIES} entries"));
        }
        let mut nets = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            let net = entry
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(net) => nets.push(net),
                Err(_) => errors.add(
                    format!("{field}[{i}]"),
                    "must be an IP address or a CIDR range, e.g. 203.0.113.0/24 or 2001:db8::/32",
                ),
            }
        }
        Self(nets)
    }

    /// The stored entries, read back (entries that no longer parse are dropped).
    pub fn stored<S: AsRef<str>>(entries: &[S]) -> Self {
        Self(
            entries
                .iter()
                .filter_map(|e| e.as_ref().parse::<IpNet>().ok())
                .collect(),
        )
    }

    /// Whether any address may use the key (the list is empty).
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` may use the key. An IPv4 address written as IPv6 (`::ffff:203.0.113.7`)
    /// counts as the IPv4 one.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.is_open() || self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether a caller from `ip` may use the key: any caller when the list is open, else one
    /// whose address is known and inside it (an unknown address fails closed).
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        self.is_open() || ip.is_some_and(|ip| self.allows(ip))
    }

    /// The entries as stored and shown: `203.0.113.7/32`, `2001:db8::/32`.
    pub fn entries(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> (IpAllowlist, FieldErrors) {
        let mut errors = FieldErrors::new();
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        (
            IpAllowlist::parse(&mut errors, "ip_allowlist", &entries),
            errors,
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn addresses_and_ranges_of_both_families_are_matched() {
        let (allowed, errors) = list(&["203.0.113.7", "198.51.100.9/24", "2001:db8::/32"]);
        assert!(errors.is_empty());
        assert_eq!(
            allowed.entries(),
            ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"]
        );
        for yes in [
            "203.0.113.7",
            "198.51.100.200",
            "2001:db8:1::5",
            "::ffff:203.0.113.7",
        ] {
            assert!(allowed.allows(ip(yes)), "{yes}");
        }
        for no in [
            "203.0.113.8",
            "198.51.101.1",
            "2001:db9::1",
            "127.0.0.1",
            "::1",
        ] {
            assert!(!allowed.allows(ip(no)), "{no}");
        }
        assert!(IpAllowlist::default().allows(ip("127.0.0.1")), "empty: any");
        assert!(
            IpAllowlist::default().admits(None),
            "empty: even an unknown address"
        );
        assert!(!allowed.admits(None), "a list and no address: refused");
        assert!(allowed.admits(Some(ip("203.0.113.7"))));
        assert_eq!(IpAllowlist::stored(&allowed.entries()), allowed);
    }

    #[test]
    fn entries_that_are_not_addresses_are_named() {
        let (_, errors) = list(&["10.0.0.1", "10.0.0.0/33", "example.com", ""]);
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["ip_allowlist[1]", "ip_allowlist[2]", "ip_allowlist[3]"]
        );
        let many: Vec<String> = (0..101).map(|i| format!("10.0.0.{}", i % 250)).collect();
        let mut errors = FieldErrors::new();
        IpAllowlist::parse(&mut errors, "ip_allowlist", &many);
        assert!(errors.iter().any(|(f, _)| f == "ip_allowlist"));
    }
}
