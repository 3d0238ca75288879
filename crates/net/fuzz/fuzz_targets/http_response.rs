//! The response side of a kept upstream connection: the response-head
//! parser and the chunked-body framing, whole and byte by byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    net::fuzz::http_response(data);
});
