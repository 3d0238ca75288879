//! The job's network namespace: loopback only, and, for a job that declared
//! egress, the two sockets the runner serves its proxy on.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::net::{bind, listen, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::SandboxError;

/// Where a job's HTTP proxy listens, inside its network namespace.
pub const PROXY_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3128);

/// Where a job's DNS responder listens, inside its network namespace.
pub const DNS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53);

/// Connections the proxy's listener queues before it accepts them.
const BACKLOG: i32 = 1024;

/// Brings `lo` up in the current network namespace (a fresh namespace has it
/// down, so even 127.0.0.1 would not work).
pub(crate) fn loopback_up() -> std::io::Result<()> {
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req`
    // into `req`; the fd is a valid socket and `req` a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = i16::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: as above; SIOCSIFFLAGS applies the flags in `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates, in the init (so in the job's network namespace, before the
/// capabilities are dropped: port 53 is privileged), the proxy's listener
/// at [`PROXY_ADDR`] and the DNS responder's socket at [`DNS_ADDR`]. Both
/// go to the runner, which serves them from the host's namespace: a socket
/// keeps the namespace it was made in. No address is reused, so nothing in
/// the job can bind these ports after or before the runner holds them.
pub(crate) fn egress_sockets() -> std::io::Result<[OwnedFd; 2]> {
    let proxy = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&proxy, &SocketAddr::V4(PROXY_ADDR))?;
    listen(&proxy, BACKLOG)?;
    let dns = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&dns, &SocketAddr::V4(DNS_ADDR))?;
    Ok([proxy, dns])
}

/// The sockets a job's egress proxy is served on, checked on arrival: the
/// init that sends them runs as the job's user, so the runner trusts
/// nothing it has not verified.
#[derive(Debug)]
pub struct EgressSockets {
    /// The HTTP proxy's listener (plain HTTP and CONNECT), at [`PROXY_ADDR`]
    /// in the job's namespace.
    pub proxy: TcpListener,
    /// The DNS responder's socket, at [`DNS_ADDR`] in the job's namespace.
    pub dns: UdpSocket,
}

impl EgressSockets {
    /// Takes the two fds the init sent with `Ready`, in order.
    pub(crate) fn from_init(fds: Vec<OwnedFd>) -> Result<EgressSockets, SandboxError> {
        let mut fds = fds.into_iter();
        let (Some(proxy), Some(dns), None) = (fds.next(), fds.next(), fds.next()) else {
            return Err(SandboxError::Protocol(
                "the sandbox init did not send the two egress sockets".into(),
            ));
        };
        expect_socket(&proxy, SocketType::STREAM, PROXY_ADDR, true)?;
        expect_socket(&dns, SocketType::DGRAM, DNS_ADDR, false)?;
        Ok(EgressSockets {
            proxy: TcpListener::from(proxy),
            dns: UdpSocket::from(dns),
        })
    }
}

fn expect_socket(
    fd: &OwnedFd,
    kind: SocketType,
    addr: SocketAddrV4,
    listening: bool,
) -> Result<(), SandboxError> {
    let bad = |what: String| {
        SandboxError::Protocol(format!(
            "the sandbox init sent a bad egress socket for {addr}: {what}"
        ))
    };
    let fd = fd.as_fd();
    let got_kind = sockopt::socket_type(fd).map_err(|e| bad(e.to_string()))?;
    if got_kind != kind {
        return Err(bad(format!("type {got_kind:?}")));
    }
    let local = rustix::net::getsockname(fd).map_err(|e| bad(e.to_string()))?;
    let local = SocketAddr::try_from(local).map_err(|_| bad("not an inet socket".into()))?;
    if local != SocketAddr::V4(addr) {
        return Err(bad(format!("bound to {local}")));
    }
    let accepting = sockopt::socket_acceptconn(fd).map_err(|e| bad(e.to_string()))?;
    if accepting != listening {
        return Err(bad(format!("listening: {accepting}")));
    }
    Ok(())
}
