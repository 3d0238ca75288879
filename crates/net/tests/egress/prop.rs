//! Arbitrary bytes never panic the head parser, the response framing, the
//! DNS planner, or the live server, and the live server always stays up.

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
    fn response_framing_never_panics_and_agrees_with_itself(
        data in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        net::fuzz::http_response(&data);
    }

    #[test]
    fn response_framing_on_near_misses(
        status in "(HTTP/1\\.[01] [0-9]{3} OK|HTTP/1\\.1 1[0-9]{2} X)",
        headers in proptest::collection::vec(
            "(Content-Length|Transfer-Encoding|Connection): [ -~]{0,12}", 0..4),
        body in "([0-9a-fA-F]{1,3}(;[a-z=]{0,5})?\r\n[a-z]{0,20}\r\n){0,3}0\r\n([A-Za-z-]{1,5}: [a-z]{0,5}\r\n)?\r\n",
    ) {
        let text = format!("{status}\r\n{}\r\n\r\n{body}", headers.join("\r\n"));
        net::fuzz::http_response(text.as_bytes());
        net::fuzz::http_response(body.as_bytes());
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
