//! The runner's side of the `watch_net` seccomp filter (see
//! [`crate::seccomp`]): every `connect`, `sendto` with an address,
//! `sendmsg` and `sendmmsg` of the job waits here until the runner has read
//! its destination. Destinations other than loopback are reported as
//! [`Attempt`]s — they are how a tool that ignores the egress proxy tries to
//! get out. Every call then continues unchanged: this is observation, not
//! enforcement (a job can change the memory after it was read). Enforcement
//! is the job's network namespace, which has no route but loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::SandboxError;

/// How often [`NetWatch::serve`] checks its stop flag.
const TICK: Duration = Duration::from_millis(100);

/// The longest socket address read from the job (`sockaddr_storage`).
const ADDR_MAX: usize = 128;

/// Messages of one `sendmmsg` whose destinations are read.
const MMSG_MAX: usize = 64;

/// A call of the job that named a destination other than loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The system call (`connect`, `sendto`, `sendmsg`, `sendmmsg`).
    pub syscall: &'static str,
    /// The destination.
    pub addr: SocketAddr,
    /// The calling process, in the runner's pid namespace.
    pub pid: u32,
}

/// The listener of a sandbox's `watch_net` filter, taken from its init.
#[derive(Debug)]
pub struct NetWatch {
    fd: OwnedFd,
}

impl NetWatch {
    /// Takes `fd` (already in the runner) if it is a seccomp notification
    /// listener; the init is not trusted to send anything else.
    pub(crate) fn new(fd: OwnedFd) -> Result<NetWatch, SandboxError> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| SandboxError::io("inspect the network watch listener", e))?;
        if link.as_os_str() != "anon_inode:seccomp notify" {
            return Err(SandboxError::Protocol(format!(
                "the sandbox init sent {} as its network watch listener",
                link.display()
            )));
        }
        Ok(NetWatch { fd })
    }

    /// Answers the job's calls until every process of the sandbox is gone
    /// or `stop` is set, passing each [`Attempt`] to `on_attempt`. Every
    /// call continues as the job made it. Run it on a thread of its own:
    /// the job's network calls wait for it.
    pub fn serve(&self, stop: &AtomicBool, on_attempt: &mut dyn FnMut(Attempt)) {
        let tick = Timespec::try_from(TICK).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&tick)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return,
            }
            let revents = fds[0].revents();
            if revents.contains(PollFlags::IN) {
                self.answer_one(on_attempt);
            } else if revents.intersects(PollFlags::HUP | PollFlags::ERR) {
                // No process uses the filter any more.
                return;
            }
        }
    }

    fn answer_one(&self, on_attempt: &mut dyn FnMut(Attempt)) {
        // SAFETY: seccomp_notif is plain data; all-zero is valid, and the
        // kernel requires the buffer zeroed.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: SECCOMP_IOCTL_NOTIF_RECV writes one seccomp_notif into
        // `notif`, a valid, writable buffer of that type.
        let got = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif,
            )
        };
        if got < 0 {
            // The caller died meanwhile (ENOENT), or another reader won.
            return;
        }
        let destinations = destinations(&notif);
        // Only now is it certain the memory read was the caller's: its
        // pid cannot have been reused while the notification is alive.
        let mut id = notif.id;
        // SAFETY: SECCOMP_IOCTL_NOTIF_ID_VALID reads one u64 from `id`.
        let valid = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &mut id,
            )
        } == 0;
        if valid {
            let syscall = syscall_name(notif.data.nr);
            for addr in destinations.into_iter().filter(|a| !is_local(a.ip())) {
                on_attempt(Attempt {
                    syscall,
                    addr,
                    pid: notif.pid,
                });
            }
        }
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap_or(1),
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads one seccomp_notif_resp
        // from `resp`. A failure means the caller is gone; nothing waits.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            );
        }
    }
}

impl AsFd for NetWatch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn syscall_name(nr: i32) -> &'static str {
    match i64::from(nr) {
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        _ => "unknown",
    }
}

/// The inet destinations the call names, read from the caller's memory.
fn destinations(notif: &libc::seccomp_notif) -> Vec<SocketAddr> {
    let pid = notif.pid;
    let args = notif.data.args;
    let addr_at = |ptr: u64, len: u64| -> Option<SocketAddr> {
        let len = usize::try_from(len).ok()?.min(ADDR_MAX);
        if ptr == 0 || len < 2 {
            return None;
        }
        parse_sockaddr(&read_memory(pid, ptr, len)?)
    };
    match i64::from(notif.data.nr) {
        libc::SYS_connect => addr_at(args[1], args[2]).into_iter().collect(),
        libc::SYS_sendto => addr_at(args[4], args[5]).into_iter().collect(),
        libc::SYS_sendmsg => msghdr_name(pid, args[1])
            .and_then(|(p, l)| addr_at(p, l))
            .into_iter()
            .collect(),
        libc::SYS_sendmmsg => {
            let count = usize::try_from(args[2]).unwrap_or(0).min(MMSG_MAX);
            let size = std::mem::size_of::<libc::mmsghdr>() as u64;
            (0..count as u64)
                .filter_map(|i| msghdr_name(pid, args[1].checked_add(i.checked_mul(size)?)?))
                .filter_map(|(p, l)| addr_at(p, l))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// `msg_name` and `msg_namelen` of the `msghdr` at `ptr` in `pid`.
fn msghdr_name(pid: u32, ptr: u64) -> Option<(u64, u64)> {
    let bytes = read_memory(pid, ptr, std::mem::size_of::<libc::msghdr>())?;
    let name = u64::from_ne_bytes(bytes.get(0..8)?.try_into().ok()?);
    let len = u32::from_ne_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some((name, u64::from(len)))
}

/// Reads `len` bytes at `addr` of process `pid` (one `process_vm_readv`,
/// cheaper than opening `/proc/PID/mem` on every call).
fn read_memory(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: usize::try_from(addr).ok()? as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, writable for `len` bytes and alive
    // across the call; `remote` is only an address in the other process,
    // which the kernel checks (a bad one is an error, not a fault here).
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

/// An AF_INET or AF_INET6 socket address; `None` for other families
/// (unix sockets, netlink, AF_UNSPEC) and short buffers.
fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Addresses that stay inside the job's namespace: loopback, and the
/// unspecified address (which Linux takes as the local host).
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback() || v4.is_unspecified(),
            None => v6.is_loopback() || v6.is_unspecified(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&u16::try_from(libc::AF_INET).expect("fits").to_ne_bytes());
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(&ip);
        b.extend_from_slice(&[0; 8]);
        b
    }

    #[test]
    fn parses_inet_addresses_and_ignores_other_families() {
        assert_eq!(
            parse_sockaddr(&sockaddr_in([198, 51, 100, 7], 443)),
            Some("198.51.100.7:443".parse().expect("addr"))
        );
        let mut v6 = Vec::new();
        v6.extend_from_slice(&u16::try_from(libc::AF_INET6).expect("fits").to_ne_bytes());
        v6.extend_from_slice(&53u16.to_be_bytes());
        v6.extend_from_slice(&[0; 4]);
        v6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().expect("ip").octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[2001:db8::7]:53".parse().expect("addr"))
        );
        let mut unix = u16::try_from(libc::AF_UNIX)
            .expect("fits")
            .to_ne_bytes()
            .to_vec();
        unix.extend_from_slice(b"/run/socket\0");
        assert_eq!(parse_sockaddr(&unix), None);
        assert_eq!(parse_sockaddr(&sockaddr_in([1, 2, 3, 4], 80)[..6]), None);
    }

    #[test]
    fn loopback_and_unspecified_are_local() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "169.254.169.254",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_local(ip.parse().expect("ip")), "{ip}");
        }
    }
}
