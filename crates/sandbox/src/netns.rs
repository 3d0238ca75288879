//! The job's network namespace: loopback only.

use std::os::fd::AsRawFd;

use rustix::net::{socket, AddressFamily, SocketType};

/// Brings `lo` up in the current network namespace (a fresh namespace has it
/// down, so even 127.0.0.1 would not work).
pub(crate) fn loopback_up() -> std::io::Result<()> {
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None)?;
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
