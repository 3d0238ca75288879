//! Name resolution on the host side: `getaddrinfo`, or a DNS server over
//! UDP. The job never resolves for the proxy; whatever it resolved itself is
//! ignored.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};

use crate::Resolver;

/// How long one DNS attempt waits for its answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per query (UDP can lose packets).
const ATTEMPTS: usize = 2;
/// The most addresses kept per name.
const MAX_ADDRS: usize = 16;

/// Which address families are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// IPv4 and IPv6.
    Both,
    /// A records only.
    V4,
    /// AAAA records only.
    V6,
}

/// Why a name has no usable address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The name does not exist (NXDOMAIN, or getaddrinfo found nothing).
    #[error("no such host")]
    NotFound,
    /// The name exists but has no address of the wanted family.
    #[error("the name has no addresses")]
    NoAddresses,
    /// The nameserver did not answer in time.
    #[error("dns server {0} did not answer")]
    Timeout(SocketAddr),
    /// The nameserver answered with an error code.
    #[error("dns server {server} answered {code}")]
    Server {
        /// The server asked.
        server: SocketAddr,
        /// Its response code.
        code: ResponseCode,
    },
    /// A socket or getaddrinfo error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Resolves `name` (a valid, lowercase host name) to its addresses, in the
/// resolver's order, without duplicates.
pub(crate) async fn resolve(
    resolver: &Resolver,
    name: &str,
    want: Want,
) -> Result<Vec<IpAddr>, ResolveError> {
    let mut addrs = match resolver {
        Resolver::System => system(name).await?,
        Resolver::Nameserver(server) => {
            let (v4, v6) = match want {
                Want::Both => tokio::join!(
                    query(*server, name, RecordType::A),
                    query(*server, name, RecordType::AAAA)
                ),
                Want::V4 => (query(*server, name, RecordType::A).await, Ok(Vec::new())),
                Want::V6 => (Ok(Vec::new()), query(*server, name, RecordType::AAAA).await),
            };
            match (v4, v6) {
                (Ok(mut a), Ok(b)) => {
                    a.extend(b);
                    a
                }
                // One family answering is enough.
                (Ok(a), Err(_)) if !a.is_empty() => a,
                (Err(_), Ok(b)) if !b.is_empty() => b,
                (Err(e), _) | (_, Err(e)) => return Err(e),
            }
        }
    };
    addrs.retain(|ip| match want {
        Want::Both => true,
        Want::V4 => ip.is_ipv4(),
        Want::V6 => ip.is_ipv6(),
    });
    let mut unique = Vec::with_capacity(addrs.len().min(MAX_ADDRS));
    for ip in addrs {
        if !unique.contains(&ip) && unique.len() < MAX_ADDRS {
            unique.push(ip);
        }
    }
    if unique.is_empty() {
        return Err(ResolveError::NoAddresses);
    }
    Ok(unique)
}

/// `getaddrinfo` on tokio's blocking pool (honours `/etc/hosts` and
/// nsswitch).
async fn system(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => Ok(found.map(|sa| sa.ip()).collect()),
        Err(source) => Err(ResolveError::Io {
            context: "getaddrinfo",
            source,
        }),
    }
}

/// Asks `server` for `name`'s records of type `rtype`.
async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<IpAddr>, ResolveError> {
    let io = |context| move |source| ResolveError::Io { context, source };
    let fqdn = Name::from_ascii(name).map_err(|_| ResolveError::NotFound)?;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(io("cannot bind a udp socket for dns"))?;
    socket
        .connect(server)
        .await
        .map_err(io("cannot connect the dns socket"))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..ATTEMPTS {
        let id = random_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(fqdn.clone(), rtype));
        let packet = msg.to_vec().map_err(|e| ResolveError::Io {
            context: "cannot encode a dns query",
            source: io::Error::other(e.to_string()),
        })?;
        socket
            .send(&packet)
            .await
            .map_err(io("cannot send a dns query"))?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            let Ok(received) = timeout_at(deadline, socket.recv(&mut buf)).await else {
                break;
            };
            let n = received.map_err(io("cannot receive a dns answer"))?;
            let Some(reply) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
                continue;
            };
            let matches = reply.metadata.id == id
                && reply.metadata.message_type == MessageType::Response
                && reply.queries.len() == 1
                && reply.queries[0].query_type() == rtype
                && reply.queries[0].name().eq_ignore_root(&fqdn);
            if !matches {
                continue;
            }
            return match reply.metadata.response_code {
                ResponseCode::NoError => Ok(reply
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect()),
                ResponseCode::NXDomain => Err(ResolveError::NotFound),
                code => Err(ResolveError::Server { server, code }),
            };
        }
    }
    Err(ResolveError::Timeout(server))
}

/// A random query id (RFC 5452); a constant if the kernel's generator
/// fails, which only weakens spoofing protection, never correctness.
fn random_id() -> u16 {
    let mut bytes = [0u8; 2];
    if getrandom::fill(&mut bytes).is_err() {
        return 0x5a5a;
    }
    u16::from_ne_bytes(bytes)
}
