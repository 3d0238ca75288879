//! The allowlist: which `host:port` a job may reach.
//!
//! Patterns arrive already normalised by the pipeline parser (`spec`), but
//! they are parsed again here, strictly: this is the enforcement point, and it
//! must not depend on every caller having validated its input.
//!
//! Matching rules:
//! - `host:port` matches that name and port exactly;
//! - `*.domain:port` matches one or more labels in front of `domain`
//!   (`a.domain`, `a.b.domain`), never `domain` itself;
//! - an IP literal (`10.0.0.5:80`, `[::1]:443`) matches only requests for
//!   that same address written as a literal, and is also what admits a
//!   special address (loopback, private, ...) that a listed name resolves to;
//! - port `*` matches any port.
//!
//! Names compare case-insensitively and a trailing dot is ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Error;

/// The host part of a [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleHost {
    /// An exact DNS name, lowercase, without a trailing dot.
    Name(String),
    /// `*.domain`: any name with one or more labels in front of `domain`
    /// (stored without the `*.`).
    Wildcard(String),
    /// An IP address literal.
    Ip(IpAddr),
}

/// One allowlist entry, such as `*.crates.io:443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: RuleHost,
    /// `None` for `*`.
    port: Option<u16>,
    /// The normalised pattern, as reported in events.
    text: String,
}

impl Rule {
    /// Parses one pattern (`host:port`, `*.domain:port`, `1.2.3.4:80`,
    /// `[::1]:443`, port `*`).
    pub fn parse(pattern: &str) -> Result<Rule, Error> {
        let bad = |reason: &'static str| Error::Pattern {
            pattern: pattern.to_owned(),
            reason,
        };
        let (host, port) = if let Some(rest) = pattern.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            let addr: Ipv6Addr = v6.parse().map_err(|_| bad("invalid IPv6 address"))?;
            (RuleHost::Ip(IpAddr::V6(addr)), port)
        } else {
            let (host, port) = pattern
                .rsplit_once(':')
                .ok_or_else(|| bad("missing port (expected host:port)"))?;
            (parse_host(host).map_err(bad)?, port)
        };
        let port = if port == "*" {
            None
        } else {
            Some(parse_port(port).ok_or_else(|| bad("invalid port (expected 1-65535 or *)"))?)
        };
        let host_text = match &host {
            RuleHost::Name(name) => name.clone(),
            RuleHost::Wildcard(domain) => format!("*.{domain}"),
            RuleHost::Ip(IpAddr::V4(v4)) => v4.to_string(),
            RuleHost::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        };
        let port_text = port.map_or_else(|| "*".to_owned(), |p| p.to_string());
        Ok(Rule {
            host,
            port,
            text: format!("{host_text}:{port_text}"),
        })
    }

    /// The host part.
    pub fn host(&self) -> &RuleHost {
        &self.host
    }

    /// The port, or `None` when the rule allows any port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The normalised pattern, e.g. `*.crates.io:443`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether this rule names `name` (already normalised), ignoring ports.
    fn name_matches(&self, name: &str) -> bool {
        match &self.host {
            RuleHost::Name(exact) => exact == name,
            RuleHost::Wildcard(domain) => name
                .strip_suffix(domain.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty()),
            RuleHost::Ip(_) => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The set of rules one job's egress is checked against. Empty means
/// nothing is allowed.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<Rule>,
}

impl Allowlist {
    /// Parses every pattern; the first invalid one is an error.
    pub fn new(patterns: &[String]) -> Result<Allowlist, Error> {
        let rules = patterns
            .iter()
            .map(|p| Rule::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { rules })
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first name rule (exact or wildcard) allowing `name:port`. `name`
    /// is compared case-insensitively, a trailing dot ignored.
    pub fn match_name(&self, name: &str, port: u16) -> Option<&Rule> {
        let name = normalise_name(name);
        self.rules
            .iter()
            .find(|r| r.port_matches(port) && r.name_matches(&name))
    }

    /// The first name rule allowing `name` on any port (what the DNS
    /// responder asks).
    pub fn match_name_any_port(&self, name: &str) -> Option<&Rule> {
        let name = normalise_name(name);
        self.rules.iter().find(|r| r.name_matches(&name))
    }

    /// The first IP-literal rule listing exactly `ip` with `port`.
    pub fn match_ip(&self, ip: IpAddr, port: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.port_matches(port) && r.host == RuleHost::Ip(ip))
    }

    /// Whether some IP-literal rule lists exactly `ip`, on any port.
    pub fn lists_ip(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| r.host == RuleHost::Ip(ip))
    }
}

/// Lowercases a DNS name and drops one trailing dot.
pub(crate) fn normalise_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

fn parse_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.starts_with('0') {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_host(text: &str) -> Result<RuleHost, &'static str> {
    if text.contains(':') {
        return Err("IPv6 addresses must be in brackets, like [2001:db8::1]:443");
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if wildcard {
            return Err("a wildcard cannot be used with an IP address");
        }
        return name
            .parse::<Ipv4Addr>()
            .map(|v4| RuleHost::Ip(IpAddr::V4(v4)))
            .map_err(|_| "invalid IPv4 address");
    }
    let name = normalise_name(name);
    if !valid_name(&name) {
        return Err("invalid host name (expected labels of letters, digits and '-')");
    }
    if wildcard {
        if !name.contains('.') {
            return Err("wildcard too broad (expected at least two labels after '*.')");
        }
        Ok(RuleHost::Wildcard(name))
    } else {
        Ok(RuleHost::Name(name))
    }
}

/// Whether `name` (lowercase, no trailing dot) is a host name the proxy
/// will resolve: labels of letters, digits, '-' and '_', 1-63 bytes, at
/// most 253 bytes in all, and a last label that is not a number (so that
/// `127.1` or `2130706433` never reach the resolver as "names").
pub(crate) fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Allowlist {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Allowlist::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn parses_and_normalises() {
        for (input, want) in [
            ("example.org:443", "example.org:443"),
            ("Example.ORG.:443", "example.org:443"),
            ("*.crates.io:*", "*.crates.io:*"),
            ("10.0.0.5:80", "10.0.0.5:80"),
            ("[2001:DB8:0::1]:443", "[2001:db8::1]:443"),
            ("[::1]:*", "[::1]:*"),
            ("a_b.example:1", "a_b.example:1"),
        ] {
            let rule = Rule::parse(input).expect(input);
            assert_eq!(rule.as_str(), want, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_patterns() {
        for bad in [
            "",
            "example.org",
            "example.org:",
            ":443",
            "example.org:0",
            "example.org:65536",
            "example.org:08",
            "example.org:+1",
            "*:443",
            "*.org:443",
            "a.*.org:443",
            "-a.org:443",
            "a..org:443",
            "a b.org:443",
            "1.2.3:443",
            "127.1:80",
            "1.2.3.256:80",
            "*.1.2.3.4:80",
            "::1:443",
            "[::1]443",
            "[1.2.3.4]:80",
            "[fe80::1%eth0]:80",
            "x.2130706433:80",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn exact_names_and_ports() {
        let allow = list(&["example.com:443", "any.example:*"]);
        assert!(allow.match_name("example.com", 443).is_some());
        assert!(allow.match_name("EXAMPLE.com.", 443).is_some());
        assert!(allow.match_name("example.com", 8080).is_none());
        assert!(allow.match_name("www.example.com", 443).is_none());
        assert!(allow.match_name("example.co", 443).is_none());
        assert!(allow.match_name("xexample.com", 443).is_none());
        assert!(allow.match_name("any.example", 1).is_some());
        assert!(allow.match_name("any.example", 65535).is_some());
    }

    #[test]
    fn wildcards_need_a_label_in_front() {
        let allow = list(&["*.crates.io:443"]);
        assert!(allow.match_name("static.crates.io", 443).is_some());
        assert!(allow.match_name("a.b.crates.io", 443).is_some());
        assert!(allow.match_name("crates.io", 443).is_none());
        assert!(allow.match_name("evilcrates.io", 443).is_none());
        assert!(allow.match_name(".crates.io", 443).is_none());
        assert!(allow.match_name("static.crates.io", 80).is_none());
        assert!(allow.match_name_any_port("static.crates.io").is_some());
        assert!(allow.match_name_any_port("crates.io").is_none());
    }

    #[test]
    fn ip_literals_match_only_addresses() {
        let allow = list(&["10.0.0.5:80", "[::1]:*", "example.com:80"]);
        assert!(allow
            .match_ip("10.0.0.5".parse().expect("ip"), 80)
            .is_some());
        assert!(allow
            .match_ip("10.0.0.5".parse().expect("ip"), 81)
            .is_none());
        assert!(allow
            .match_ip("10.0.0.6".parse().expect("ip"), 80)
            .is_none());
        assert!(allow
            .match_ip("0:0:0:0:0:0:0:1".parse().expect("ip"), 9)
            .is_some());
        // A mapped address is a different address.
        assert!(allow
            .match_ip("::ffff:10.0.0.5".parse().expect("ip"), 80)
            .is_none());
        // Names never match literal rules, and literals never match names.
        assert!(allow.match_name("10.0.0.5", 80).is_none());
        assert!(allow
            .match_ip("93.184.216.34".parse().expect("ip"), 80)
            .is_none());
        assert!(allow.match_name_any_port("10.0.0.5").is_none());
    }

    #[test]
    fn request_names() {
        for good in ["a.b", "localhost", "x_y.example", "a-1.b2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "127.1",
            "2130706433",
            "a..b",
            "-a.b",
            "a b",
            "a.b:1",
            "a%2e.b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
