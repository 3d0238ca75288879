//! Address classification: which addresses a name may resolve to.
//!
//! The proxy resolves every name itself and refuses addresses that are not
//! ordinary public unicast, because a job (or whoever controls a listed
//! domain's DNS) could otherwise point a listed name at the host's loopback,
//! the LAN, or a cloud metadata service (DNS rebinding / SSRF). Such an
//! address is reachable only when it is listed literally in the allowlist.
//!
//! Addresses that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the embedded address.
//! Anything in IPv6 outside global unicast `2000::/3` is reserved.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address an IP is, for egress decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Ordinary public unicast: reachable when the name is listed.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), unique local
    /// `fc00::/7`, deprecated site-local `fec0::/10`, local-use NAT64
    /// `64:ff9b:1::/48`.
    Private,
    /// `169.254/16` (including cloud metadata `169.254.169.254`),
    /// `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT shared space `100.64/10`.
    SharedCgnat,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240/4`, IETF protocol assignments (`192.0.0/24`, `2001::/23`), the
    /// 6to4 relay anycast `192.88.99/24`, discard-only `100::/64`, and IPv6
    /// outside `2000::/3`.
    Reserved,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`,
    /// `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
}

impl Class {
    /// Whether this class is refused unless listed literally.
    pub fn is_special(self) -> bool {
        self != Class::Public
    }

    /// A short description for messages, e.g. "a private address (RFC 1918
    /// or fc00::/7)".
    pub fn describe(self) -> &'static str {
        match self {
            Class::Public => "a public address",
            Class::Loopback => "a loopback address",
            Class::Private => "a private address (RFC 1918 or fc00::/7)",
            Class::LinkLocal => "a link-local address (this includes cloud metadata services)",
            Class::SharedCgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Class::Unspecified => "the unspecified address",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Reserved => "a reserved address",
            Class::Documentation => "a documentation address",
            Class::Benchmarking => "a benchmarking address",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// IPv4 ranges other than public, most specific first where they overlap.
const V4_TABLE: &[([u8; 4], u32, Class)] = &[
    ([255, 255, 255, 255], 32, Class::Broadcast),
    ([0, 0, 0, 0], 8, Class::Unspecified),
    ([10, 0, 0, 0], 8, Class::Private),
    ([100, 64, 0, 0], 10, Class::SharedCgnat),
    ([127, 0, 0, 0], 8, Class::Loopback),
    ([169, 254, 0, 0], 16, Class::LinkLocal),
    ([172, 16, 0, 0], 12, Class::Private),
    ([192, 0, 0, 0], 24, Class::Reserved),
    ([192, 0, 2, 0], 24, Class::Documentation),
    ([192, 88, 99, 0], 24, Class::Reserved),
    ([192, 168, 0, 0], 16, Class::Private),
    ([198, 18, 0, 0], 15, Class::Benchmarking),
    ([198, 51, 100, 0], 24, Class::Documentation),
    ([203, 0, 113, 0], 24, Class::Documentation),
    ([224, 0, 0, 0], 4, Class::Multicast),
    ([240, 0, 0, 0], 4, Class::Reserved),
];

fn classify_v4(ip: Ipv4Addr) -> Class {
    V4_TABLE
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map_or(Class::Public, |(_, _, class)| *class)
}

/// IPv6 ranges other than public (and other than the ones that embed an
/// IPv4 address), most specific first.
const V6_TABLE: &[(Ipv6Addr, u32, Class)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, Class::Unspecified),
    (Ipv6Addr::LOCALHOST, 128, Class::Loopback),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        Class::Private,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        Class::Reserved,
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        Class::Benchmarking,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        Class::Documentation,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        Class::Reserved,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        Class::Documentation,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        Class::Private,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        Class::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        Class::Private,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        Class::Multicast,
    ),
];

const MAPPED: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
const SIX_TO_FOUR: Ipv6Addr = Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0);
const GLOBAL_UNICAST: Ipv6Addr = Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0);

fn classify_v6(ip: Ipv6Addr) -> Class {
    let o = ip.octets();
    if in_v6(ip, MAPPED, 96) || in_v6(ip, NAT64, 96) {
        return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if in_v6(ip, SIX_TO_FOUR, 16) {
        return classify_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if let Some((_, _, class)) = V6_TABLE.iter().find(|(net, len, _)| in_v6(ip, *net, *len)) {
        return *class;
    }
    if in_v6(ip, GLOBAL_UNICAST, 3) {
        Class::Public
    } else {
        Class::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Class)] = &[
            ("93.184.216.34", Class::Public),
            ("1.1.1.1", Class::Public),
            ("8.8.8.8", Class::Public),
            ("0.0.0.0", Class::Unspecified),
            ("0.1.2.3", Class::Unspecified),
            ("10.0.0.5", Class::Private),
            ("10.255.255.255", Class::Private),
            ("11.0.0.1", Class::Public),
            ("100.63.255.255", Class::Public),
            ("100.64.0.1", Class::SharedCgnat),
            ("100.127.255.255", Class::SharedCgnat),
            ("100.128.0.0", Class::Public),
            ("127.0.0.1", Class::Loopback),
            ("127.255.255.254", Class::Loopback),
            ("169.254.169.254", Class::LinkLocal),
            ("169.254.0.1", Class::LinkLocal),
            ("172.15.255.255", Class::Public),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("172.32.0.0", Class::Public),
            ("192.0.0.8", Class::Reserved),
            ("192.0.2.1", Class::Documentation),
            ("192.88.99.1", Class::Reserved),
            ("192.168.1.1", Class::Private),
            ("192.169.0.1", Class::Public),
            ("198.18.0.1", Class::Benchmarking),
            ("198.19.255.255", Class::Benchmarking),
            ("198.20.0.0", Class::Public),
            ("198.51.100.7", Class::Documentation),
            ("203.0.113.9", Class::Documentation),
            ("224.0.0.1", Class::Multicast),
            ("239.255.255.255", Class::Multicast),
            ("240.0.0.1", Class::Reserved),
            ("254.255.255.255", Class::Reserved),
            ("255.255.255.255", Class::Broadcast),
            ("2606:4700::1111", Class::Public),
            ("2a00:1450:4001::200e", Class::Public),
            ("::", Class::Unspecified),
            ("::1", Class::Loopback),
            ("::2", Class::Reserved),
            ("::ffff:10.0.0.5", Class::Private),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::ffff:169.254.169.254", Class::LinkLocal),
            ("::ffff:93.184.216.34", Class::Public),
            ("::ffff:0:10.0.0.5", Class::Reserved),
            ("::10.0.0.5", Class::Reserved),
            ("64:ff9b::a00:5", Class::Private),
            ("64:ff9b::7f00:1", Class::Loopback),
            ("64:ff9b::5db8:d822", Class::Public),
            ("64:ff9b:1::1", Class::Private),
            ("100::1", Class::Reserved),
            ("2001::1", Class::Reserved),
            ("2001:2::1", Class::Benchmarking),
            ("2001:db8::1", Class::Documentation),
            ("2002:a00:5::1", Class::Private),
            ("2002:a9fe:a9fe::1", Class::LinkLocal),
            ("2002:5db8:d822::1", Class::Public),
            ("3fff::1", Class::Documentation),
            ("fc00::1", Class::Private),
            ("fd12:3456::1", Class::Private),
            ("fe80::1", Class::LinkLocal),
            ("febf::1", Class::LinkLocal),
            ("fec0::1", Class::Private),
            ("ff02::1", Class::Multicast),
            ("4000::1", Class::Reserved),
            ("1234::1", Class::Reserved),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().expect("test address");
            assert_eq!(classify(ip), *want, "{text}");
            assert_eq!(classify(ip).is_special(), *want != Class::Public, "{text}");
        }
    }
}
