//! The request-head path: httparse, target and authority parsing, and the
//! origin-form head sent upstream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    net::fuzz::http_head(data);
});
