//! Egress patterns: `host:port` entries of `network: { egress: [...] }`.
//!
//! The host is a DNS name, optionally with a leading `*.` wildcard label
//! (which matches exactly one or more labels in front, as the proxy decides),
//! or an IP literal (`[v6]` in brackets). The port is 1-65535 or `*`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What an egress pattern looks like, for messages.
pub(crate) const EGRESS_HINT: &str =
    "expected host:port like example.org:443, *.example.org:443, 10.0.0.1:80 or [2001:db8::1]:443; port 1-65535 or *";

/// Checks an egress pattern and returns it normalised: DNS names
/// lowercased, IPv6 addresses in their canonical form.
pub(crate) fn pattern(text: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return Err(EGRESS_HINT.to_owned());
        };
        let addr: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("invalid IPv6 address {v6:?}"))?;
        (format!("[{addr}]"), port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("missing port ({EGRESS_HINT})"));
        };
        (self::host(host)?, port)
    };
    let port = self::port(port)?;
    Ok(format!("{host}:{port}"))
}

fn port(text: &str) -> Result<&str, String> {
    if text == "*" {
        return Ok(text);
    }
    let valid = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
        && text.parse::<u32>().is_ok_and(|p| p <= 65535);
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "invalid port {text:?} (expected a number from 1 to 65535, or *)"
        ))
    }
}

fn host(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err(format!("missing host ({EGRESS_HINT})"));
    }
    if text.contains(':') {
        return Err("IPv6 addresses must be in brackets, like [2001:db8::1]:443".to_owned());
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let all_digits_and_dots = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if all_digits_and_dots {
        if wildcard {
            return Err("a wildcard cannot be used with an IP address".to_owned());
        }
        return match name.parse::<Ipv4Addr>() {
            Ok(addr) => Ok(addr.to_string()),
            Err(_) => Err(format!("invalid IPv4 address {name:?}")),
        };
    }
    let name = name.to_ascii_lowercase();
    if name.len() > 253 {
        return Err("host name longer than 253 characters".to_owned());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "invalid host name {text:?} (expected labels of letters, digits and '-', separated by '.', with an optional leading '*.')"
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "invalid host name {text:?} (the last label cannot be a number)"
        ));
    }
    if wildcard && labels.len() < 2 {
        return Err(format!(
            "wildcard {text:?} is too broad (expected at least two labels after '*.', like *.example.org)"
        ));
    }
    Ok(if wildcard { format!("*.{name}") } else { name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        let cases = [
            ("example.org:443", "example.org:443"),
            ("Example.ORG:443", "example.org:443"),
            ("*.crates.io:443", "*.crates.io:443"),
            ("localhost:8080", "localhost:8080"),
            ("10.0.0.1:80", "10.0.0.1:80"),
            ("[2001:DB8:0::1]:443", "[2001:db8::1]:443"),
            ("[::1]:*", "[::1]:*"),
            ("a-b.c0:65535", "a-b.c0:65535"),
            ("x.y:1", "x.y:1"),
        ];
        for (input, want) in cases {
            assert_eq!(pattern(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "example.org",
            "example.org:",
            ":443",
            "example.org:0",
            "example.org:65536",
            "example.org:08",
            "example.org:+1",
            "example.org:http",
            "*:443",
            "*.org:443",
            "a.*.org:443",
            "**.org:443",
            "-a.org:443",
            "a-.org:443",
            "a..org:443",
            "a_b.org:443",
            "a b.org:443",
            "1.2.3:443",
            "1.2.3.256:80",
            "*.1.2.3.4:80",
            "::1:443",
            "[::1]443",
            "[not-v6]:443",
            "[1.2.3.4]:80",
            "ex ample.org:443",
            &format!("{}.org:443", "a".repeat(64)),
        ] {
            assert!(pattern(bad).is_err(), "{bad}");
        }
    }
}
