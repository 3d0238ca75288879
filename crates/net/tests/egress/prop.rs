//! Arbitrary bytes never panic the head parser, the DNS planner, or the
//! live server, and the live server always stays up.

use std::io::Write;

use proptest::prelude::*;

use crate::support::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn head_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        net::fuzz::http_head(&data);
    }

    #[test]
    fn head_parser_never_panics_on_near_misses(
        method in "(GET|CONNECT|POST|get)",
        target in "[a-z0-9:/\\[\\]%@.?#*-]{0,40}",
        headers in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..6),
    ) {
        let head = format!("{method} {target} HTTP/1.1\r\n{}\r\n\r\n", headers.join("\r\n"));
        net::fuzz::http_head(head.as_bytes());
    }

    #[test]
    fn dns_planner_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let allow = net::Allowlist::new(&patterns(&["pub.test:443", "*.ok.test:*", "10.0.0.5:80"]))
            .expect("valid");
        net::fuzz::dns_query(&data, &allow);
    }
}

#[test]
fn live_server_answers_arbitrary_heads_and_keeps_serving() {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let proxy = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let strategy = proptest::collection::vec(any::<u8>(), 1..512);
    runner
        .run(&strategy, |mut data| {
            // End every input like a head, so the proxy decides at once
            // instead of waiting for more.
            data.extend_from_slice(b"\r\n\r\n");
            let mut s = proxy.connect();
            let _ = s.write_all(&data);
            let answer = read_all(&mut s);
            drop(s);
            if !answer.is_empty() {
                let code = status(&answer);
                prop_assert!([400, 403, 431, 502].contains(&code), "{code}: {answer}");
            }
            let _ = proxy.event();
            Ok(())
        })
        .expect("no failing input");
    let answer = proxy.get(&format!("ok.test:{p}"));
    assert_eq!(status(&answer), 200, "{answer}");
}
