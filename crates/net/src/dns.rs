//! The DNS responder on the job's `127.0.0.1:53`.
//!
//! Only names some rule allows (on any port) are resolved, upstream and by
//! the host; every other name is answered REFUSED without being forwarded
//! anywhere, so DNS cannot carry data out of the job. A and AAAA answers
//! hold the vetted addresses only (special addresses are dropped unless
//! listed literally); other record types for allowed names get an empty
//! NOERROR. Parsing and answering are pure functions ([`plan`],
//! [`answer`]) so they can be fuzzed; [`serve`] is the socket loop.
//!
//! Memory stays bounded under a flood: one receive buffer, and at most
//! [`MAX_IN_FLIGHT`] upstream lookups at a time; a query arriving when all
//! are busy is answered SERVFAIL at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::allow::{valid_name, Allowlist};
use crate::policy::vet;
use crate::resolve::{resolve, ResolveError, Want};
use crate::server::{stopped, Shared};
use crate::{Connection, Decision, Kind};

/// Upstream lookups in flight at once, per server.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// TTL of the answers, in seconds: short, the proxy resolves again anyway.
const TTL: u32 = 30;
/// Most address records in one answer (keeps it under 512 bytes).
const MAX_ANSWERS: usize = 8;

/// What to do with one packet.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Not a query we can even address an answer to: ignore it.
    Drop,
    /// Answer at once with `packet`.
    Reply {
        packet: Vec<u8>,
        host: String,
        decision: Decision,
    },
    /// An allowed A/AAAA query: resolve `name`, then [`answer`].
    Resolve {
        request: Box<Message>,
        name: String,
        want: Want,
        rule: String,
    },
}

fn reply(packet: Vec<u8>, host: String, decision: Decision) -> Plan {
    Plan::Reply {
        packet,
        host,
        decision,
    }
}

fn denied(reason: &str) -> Decision {
    Decision::Denied {
        reason: reason.to_owned(),
    }
}

/// Decides what to answer to `packet`, given the allowlist.
pub(crate) fn plan(packet: &[u8], allow: &Allowlist) -> Plan {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Plan::Drop;
    };
    if header.metadata.message_type != MessageType::Query {
        // Never answer answers: that is how reflection loops start.
        return Plan::Drop;
    }
    let Ok(request) = Message::from_vec(packet) else {
        return reply(
            error(&header, ResponseCode::FormErr),
            String::new(),
            denied("malformed dns query"),
        );
    };
    if request.metadata.op_code != OpCode::Query {
        return reply(
            error(&header, ResponseCode::NotImp),
            String::new(),
            denied("unsupported dns opcode"),
        );
    }
    let [query] = request.queries.as_slice() else {
        return reply(
            error(&header, ResponseCode::FormErr),
            String::new(),
            denied("dns query must hold exactly one question"),
        );
    };
    let name = query_name(query);
    let rule = match &name {
        Some(name) if query.query_class() == DNSClass::IN => allow.match_name_any_port(name),
        _ => None,
    };
    let name = name.unwrap_or_else(|| query.name().to_ascii());
    let Some(rule) = rule else {
        return reply(
            respond(&request, ResponseCode::Refused, &[]),
            name,
            denied("not in allowlist"),
        );
    };
    let rule = rule.as_str().to_owned();
    let want = match query.query_type() {
        RecordType::A => Want::V4,
        RecordType::AAAA => Want::V6,
        _ => {
            let decision = Decision::Allowed { rule };
            return reply(
                respond(&request, ResponseCode::NoError, &[]),
                name,
                decision,
            );
        }
    };
    Plan::Resolve {
        request: Box::new(request),
        name,
        want,
        rule,
    }
}

/// The query name as a host name (lowercase, no trailing dot), if every
/// label is made of letters, digits, '-' and '_' (anything else can never
/// match a rule, and must not be able to fake a '.' inside a label).
fn query_name(query: &Query) -> Option<String> {
    let mut name = String::new();
    for label in query.name().iter() {
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            name.push(char::from(b.to_ascii_lowercase()));
        }
    }
    valid_name(&name).then_some(name)
}

/// A response to `request` with `rcode` and `addrs` as A/AAAA records.
pub(crate) fn respond(request: &Message, rcode: ResponseCode, addrs: &[IpAddr]) -> Vec<u8> {
    let mut msg = Message::response(request.metadata.id, request.metadata.op_code);
    msg.metadata.recursion_desired = request.metadata.recursion_desired;
    msg.metadata.recursion_available = true;
    msg.metadata.response_code = rcode;
    if let Some(query) = request.queries.first() {
        msg.add_query(query.clone());
        for ip in addrs.iter().take(MAX_ANSWERS) {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            msg.add_answer(Record::from_rdata(query.name().clone(), TTL, data));
        }
    }
    // A message built from a parsed query always encodes; an empty packet
    // (never sent) is the safe fallback.
    msg.to_vec().unwrap_or_default()
}

/// A bare error response carrying only the request's header fields.
fn error(header: &Header, rcode: ResponseCode) -> Vec<u8> {
    let mut msg = Message::error_msg(header.metadata.id, header.metadata.op_code, rcode);
    msg.metadata.recursion_desired = header.metadata.recursion_desired;
    msg.to_vec().unwrap_or_default()
}

/// The answer to an allowed A/AAAA query once `name` resolved to `ips`.
pub(crate) fn answer(
    request: &Message,
    allow: &Allowlist,
    name: &str,
    rule: String,
    ips: &[IpAddr],
) -> (Vec<u8>, Decision, Option<IpAddr>) {
    let vetted = vet(allow, ips, None);
    let packet = respond(request, ResponseCode::NoError, &vetted.kept);
    let decision = if vetted.kept.is_empty() && !vetted.refused.is_empty() {
        let list: Vec<String> = vetted
            .refused
            .iter()
            .map(|(ip, class)| format!("{ip} ({})", class.describe()))
            .collect();
        Decision::Denied {
            reason: format!(
                "{name} resolves only to special addresses: {}",
                list.join(", ")
            ),
        }
    } else {
        Decision::Allowed { rule }
    };
    (packet, decision, vetted.kept.first().copied())
}

/// Serves DNS on `socket` until `stop`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    socket: UdpSocket,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let socket = Arc::new(socket);
    let lookups = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(got) => got,
                // ICMP errors from earlier sends and the like: keep serving.
                Err(_) => continue,
            },
        };
        let started = Instant::now();
        let packet = &buf[..n];
        match plan(packet, &shared.config.allow) {
            Plan::Drop => {
                let decision = denied("undecodable dns packet dropped");
                shared.emit(dns_event(String::new(), decision, None, n, 0, started));
            }
            Plan::Reply {
                packet: out,
                host,
                decision,
            } => {
                let sent = send(&socket, &out, peer).await;
                shared.emit(dns_event(host, decision, None, n, sent, started));
            }
            Plan::Resolve {
                request,
                name,
                want,
                rule,
            } => {
                let Ok(permit) = lookups.clone().try_acquire_owned() else {
                    let out = respond(&request, ResponseCode::ServFail, &[]);
                    let sent = send(&socket, &out, peer).await;
                    let decision = denied("dns responder busy (too many lookups in flight)");
                    shared.emit(dns_event(name, decision, None, n, sent, started));
                    continue;
                };
                let (shared, socket, done) = (shared.clone(), socket.clone(), done.clone());
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _done = done;
                    let resolver = &shared.config.resolver;
                    let resolved = tokio::select! {
                        r = resolve(resolver, &name, want) => Some(r),
                        () = stopped(&mut stop) => None,
                    };
                    let (out, decision, addr) = match resolved {
                        Some(Ok(ips)) => answer(&request, &shared.config.allow, &name, rule, &ips),
                        // No record of this type: NODATA, as upstream said.
                        Some(Err(ResolveError::NoAddresses)) => {
                            let out = respond(&request, ResponseCode::NoError, &[]);
                            (out, Decision::Allowed { rule }, None)
                        }
                        Some(Err(e)) => {
                            let rcode = match e {
                                ResolveError::NotFound => ResponseCode::NXDomain,
                                _ => ResponseCode::ServFail,
                            };
                            let reason = format!("cannot resolve {name}: {e}");
                            (
                                respond(&request, rcode, &[]),
                                Decision::Denied { reason },
                                None,
                            )
                        }
                        None => {
                            let out = respond(&request, ResponseCode::ServFail, &[]);
                            (out, denied("proxy shut down"), None)
                        }
                    };
                    let sent = send(&socket, &out, peer).await;
                    shared.emit(dns_event(name, decision, addr, n, sent, started));
                });
            }
        }
    }
}

/// Sends `packet` to `peer`; returns the bytes sent (0 on failure: the
/// job's resolver will retry).
async fn send(socket: &UdpSocket, packet: &[u8], peer: SocketAddr) -> usize {
    if packet.is_empty() {
        return 0;
    }
    socket.send_to(packet, peer).await.unwrap_or(0)
}

fn dns_event(
    host: String,
    decision: Decision,
    addr: Option<IpAddr>,
    up: usize,
    down: usize,
    started: Instant,
) -> Connection {
    Connection {
        kind: Kind::Dns,
        host,
        port: 53,
        addr: addr.map(|ip| SocketAddr::new(ip, 0)),
        decision,
        bytes_up: up as u64,
        bytes_down: down as u64,
        duration: started.elapsed(),
    }
}
