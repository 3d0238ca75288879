//! The DNS responder, end to end over loopback.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use net::Kind;

use crate::support::*;

pub fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    socket
}

pub fn ask(
    socket: &UdpSocket,
    server: SocketAddr,
    id: u16,
    name: &str,
    rtype: RecordType,
) -> Message {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    socket
        .send_to(&msg.to_vec().expect("encode"), server)
        .expect("send");
    receive(socket)
}

pub fn receive(socket: &UdpSocket) -> Message {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("an answer");
    Message::from_vec(&buf[..n]).expect("decodable answer")
}

fn addrs(msg: &Message) -> Vec<IpAddr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn listed_names_are_answered_with_vetted_addresses() {
    let dns = standard_dns();
    let proxy = Proxy::start(
        &patterns(&[
            "pub.test:443",
            "*.ok.test:80",
            "mixed.test:443",
            "private.test:443",
        ]),
        dns.addr,
    );
    let server = proxy.dns.expect("dns socket");
    let c = client();

    let a = ask(&c, server, 1, "PUB.test.", RecordType::A);
    assert_eq!(a.metadata.id, 1);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addrs(&a),
        vec!["93.184.216.34".parse::<IpAddr>().expect("ip")]
    );
    let event = proxy.event();
    assert_eq!(event.kind, Kind::Dns);
    assert_eq!(event.host, "pub.test");
    assert_eq!(event.port, 53);
    assert_eq!(rule(&event), "pub.test:443");
    assert!(event.bytes_up > 0 && event.bytes_down > 0);

    let aaaa = ask(&c, server, 2, "pub.test", RecordType::AAAA);
    assert_eq!(
        addrs(&aaaa),
        vec!["2606:4700::1111".parse::<IpAddr>().expect("ip")]
    );
    proxy.event();

    // Special addresses are dropped from answers.
    let mixed = ask(&c, server, 3, "mixed.test", RecordType::A);
    assert_eq!(
        addrs(&mixed),
        vec!["93.184.216.34".parse::<IpAddr>().expect("ip")]
    );
    proxy.event();
    let private = ask(&c, server, 4, "private.test", RecordType::A);
    assert_eq!(private.metadata.response_code, ResponseCode::NoError);
    assert!(addrs(&private).is_empty());
    let event = proxy.event();
    assert!(
        reason(&event).contains("10.0.0.5 (a private address"),
        "{event:?}"
    );

    // Wildcards match names in front, not the domain itself.
    let wild = ask(&c, server, 5, "a.b.ok.test", RecordType::A);
    assert_eq!(wild.metadata.response_code, ResponseCode::NoError);
    proxy.event();
    let apex = ask(&c, server, 6, "ok.test", RecordType::A);
    assert_eq!(apex.metadata.response_code, ResponseCode::Refused);
    proxy.event();
}

#[test]
fn unlisted_names_are_refused_and_never_forwarded() {
    let dns = standard_dns();
    let proxy = Proxy::start(&patterns(&["pub.test:443"]), dns.addr);
    let server = proxy.dns.expect("dns socket");
    let c = client();
    for (id, name) in [
        (10, "other.test"),
        (11, "secret-data.exfil.test"),
        (12, "test"),
    ] {
        let answer = ask(&c, server, id, name, RecordType::A);
        assert_eq!(answer.metadata.id, id);
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(answer.answers.is_empty());
        let event = proxy.event();
        assert_eq!(event.kind, Kind::Dns);
        assert_eq!(event.host, name);
        assert_eq!(reason(&event), "not in allowlist");
    }
    assert_eq!(
        dns.count(),
        0,
        "refused names must not reach the upstream server"
    );
}

#[test]
fn other_types_for_listed_names_get_an_empty_noerror() {
    let dns = standard_dns();
    let proxy = Proxy::start(&patterns(&["pub.test:443"]), dns.addr);
    let server = proxy.dns.expect("dns socket");
    let c = client();
    for rtype in [RecordType::TXT, RecordType::MX, RecordType::ANY] {
        let answer = ask(&c, server, 20, "pub.test", rtype);
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{rtype}"
        );
        assert!(answer.answers.is_empty(), "{rtype}");
        assert_eq!(rule(&proxy.event()), "pub.test:443");
    }
    let txt = ask(&c, server, 21, "other.test", RecordType::TXT);
    assert_eq!(txt.metadata.response_code, ResponseCode::Refused);
    assert_eq!(reason(&proxy.event()), "not in allowlist");
    assert_eq!(dns.count(), 0, "TXT is never forwarded");
}
