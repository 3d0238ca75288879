//! The DNS query path: header and message decoding, the allowlist decision,
//! and building REFUSED/FORMERR/NOERROR answers with vetted addresses.
#![no_main]

use std::sync::OnceLock;

fn allow() -> &'static net::Allowlist {
    static ALLOW: OnceLock<net::Allowlist> = OnceLock::new();
    ALLOW.get_or_init(|| {
        let patterns: Vec<String> = ["pub.test:443", "*.ok.test:*", "10.0.0.5:80", "[::1]:*"]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        net::Allowlist::new(&patterns).expect("valid patterns")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    net::fuzz::dns_query(data, allow());
});
