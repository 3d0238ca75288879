//! The egress decision: allowlist, then resolution, then address vetting.
//!
//! A name must match a name rule. Its addresses are resolved here and each
//! one is classified; special addresses (loopback, private, link-local, ...)
//! are dropped unless that exact address is listed literally with a matching
//! port. The proxy connects only to what survives, so a second lookup can
//! never swap the address (no DNS rebinding window). An IP literal must
//! match an IP-literal rule, which is an explicit decision to reach it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::addr::{classify, Class};
use crate::allow::Allowlist;
use crate::http::Host;
use crate::resolve::{resolve, ResolveError, Want};
use crate::Resolver;

/// An allowed destination: the rule that allowed it and the vetted
/// addresses to try, in order.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub rule: String,
    pub addrs: Vec<SocketAddr>,
}

/// Why egress is refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No rule lists this host and port (403).
    NotListed { target: String },
    /// Every address the name resolves to is special (403).
    Special {
        target: String,
        name: String,
        port: u16,
        refused: Vec<(IpAddr, Class)>,
    },
    /// The name does not resolve (502).
    Unresolvable { name: String, error: ResolveError },
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotListed { .. } | Refusal::Special { .. } => 403,
            Refusal::Unresolvable { .. } => 502,
        }
    }

    /// The short reason recorded in the event.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NotListed { .. } => "not in allowlist".to_owned(),
            Refusal::Special { name, refused, .. } => {
                let mut out = format!("{name} resolves only to special addresses:");
                for (i, (ip, class)) in refused.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    let _ = write!(out, "{sep}{ip} ({})", class.describe());
                }
                out
            }
            Refusal::Unresolvable { name, error } => format!("cannot resolve {name}: {error}"),
        }
    }

    /// The text answered to the job: what was refused and how to allow it.
    pub fn message(&self) -> String {
        match self {
            Refusal::NotListed { target } => format!(
                "airlock: egress to {target} is not in this job's allowlist; \
                 add \"{target}\" to network.egress to allow it"
            ),
            Refusal::Special {
                target,
                name,
                port,
                refused,
            } => {
                let mut out = format!("airlock: egress to {target} refused:");
                for (ip, class) in refused {
                    let _ = write!(out, " {name} resolves to {ip}, {};", class.describe());
                }
                let (ip, _) = refused[0];
                let literal = literal(ip, *port);
                let _ = write!(
                    out,
                    " such addresses are refused so that a name cannot point into the host or \
                     its network; listing \"{literal}\" literally in network.egress allows it"
                );
                out
            }
            Refusal::Unresolvable { name, error } => {
                format!("airlock: cannot resolve {name}: {error}")
            }
        }
    }
}

/// `ip:port` as an allowlist pattern (`[v6]:port`).
pub(crate) fn literal(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `host:port` as an allowlist pattern.
fn target(host: &Host, port: u16) -> String {
    match host {
        Host::Name(name) => format!("{name}:{port}"),
        Host::Ip(ip) => literal(*ip, port),
    }
}

/// Decides whether `host:port` may be reached, resolving names with
/// `resolver`.
pub(crate) async fn decide(
    allow: &Allowlist,
    resolver: &Resolver,
    host: &Host,
    port: u16,
) -> Result<Allowed, Refusal> {
    match host {
        Host::Ip(ip) => match allow.match_ip(*ip, port) {
            Some(rule) => Ok(Allowed {
                rule: rule.as_str().to_owned(),
                addrs: vec![SocketAddr::new(*ip, port)],
            }),
            None => Err(Refusal::NotListed {
                target: target(host, port),
            }),
        },
        Host::Name(name) => {
            let Some(rule) = allow.match_name(name, port) else {
                return Err(Refusal::NotListed {
                    target: target(host, port),
                });
            };
            let ips = resolve(resolver, name, Want::Both).await.map_err(|error| {
                Refusal::Unresolvable {
                    name: name.clone(),
                    error,
                }
            })?;
            let vetted = vet(allow, &ips, Some(port));
            if vetted.kept.is_empty() {
                return Err(Refusal::Special {
                    target: target(host, port),
                    name: name.clone(),
                    port,
                    refused: vetted.refused,
                });
            }
            let mut rule = rule.as_str().to_owned();
            for literal in vetted.literal_rules {
                let _ = write!(rule, " + {literal}");
            }
            Ok(Allowed {
                rule,
                addrs: vetted
                    .kept
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
            })
        }
    }
}

/// Resolved addresses split into the usable and the refused.
#[derive(Debug, Default)]
pub(crate) struct Vetted {
    pub kept: Vec<IpAddr>,
    pub refused: Vec<(IpAddr, Class)>,
    /// The literal rules that admitted special addresses.
    pub literal_rules: Vec<String>,
}

/// Keeps public addresses, and special ones listed literally (with `port`,
/// or on any port when `port` is `None`, as for DNS answers).
pub(crate) fn vet(allow: &Allowlist, ips: &[IpAddr], port: Option<u16>) -> Vetted {
    let mut out = Vetted::default();
    for &ip in ips {
        let class = classify(ip);
        if !class.is_special() {
            out.kept.push(ip);
            continue;
        }
        let listed = match port {
            Some(port) => allow.match_ip(ip, port).map(|r| r.as_str().to_owned()),
            None => allow.lists_ip(ip).then(|| ip.to_string()),
        };
        match listed {
            Some(rule) => {
                out.kept.push(ip);
                if !out.literal_rules.contains(&rule) {
                    out.literal_rules.push(rule);
                }
            }
            None => out.refused.push((ip, class)),
        }
    }
    out
}
