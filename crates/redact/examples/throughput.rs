//! The redactor alone on the workload of `benches/output.sh`: a 1 MiB
//! build-log sample pushed `REPEAT` times (1 GiB by default) in 64 KiB
//! chunks, with `N` secrets shaped like that script's (24 to 40 random
//! bytes, base64), from a fixed seed. Made to be measured in CPU time,
//! which other work on the machine disturbs far less than wall time:
//!
//! ```sh
//! awk "/<<'PY'\$/{f=1;next}/^PY\$/{f=0}f" benches/output.sh | python3 - /tmp/sample.log
//! cargo build --release -p redact --example throughput
//! for n in 0 10 60; do
//!     perf stat -e task-clock,cycles,instructions,L1-dcache-load-misses \
//!         $CARGO_TARGET_DIR/release/examples/throughput /tmp/sample.log $n
//! done
//! ```
//!
//! Arguments: the sample's path, the number of secrets (0 for none: the
//! bytes are copied, as the engine does without secrets), and optionally
//! the number of times the sample is pushed (default 1024).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use redact::{Patterns, Redactor};

/// Size of the chunks the redactor gets (a pipe read).
const CHUNK: usize = 64 << 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(n)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: throughput SAMPLE SECRETS [REPEAT]");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("SECRETS is a number");
    let repeat: usize = args
        .get(3)
        .map_or(1024, |r| r.parse().expect("REPEAT is a number"));
    let sample = std::fs::read(path).expect("the sample is readable");

    let mut state = 0x2026_1127_u64;
    let secrets: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let len = 24 + usize::try_from(next(&mut state) % 17).expect("below 17");
            let raw: Vec<u8> = (0..len)
                .map(|_| next(&mut state).to_le_bytes()[0])
                .collect();
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .into_bytes()
        })
        .collect();
    let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    let patterns = Arc::new(Patterns::new(&refs).expect("valid secrets"));

    let started = Instant::now();
    let mut redactor = Redactor::new(patterns.clone());
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut written = 0usize;
    for _ in 0..repeat {
        for chunk in sample.chunks(CHUNK) {
            out.clear();
            if n == 0 {
                out.extend_from_slice(chunk);
            } else {
                redactor.push(chunk, &mut out);
            }
            written += std::hint::black_box(&out).len();
        }
    }
    out.clear();
    redactor.finish(&mut out);
    written += out.len();
    let secs = started.elapsed().as_secs_f64();
    let bytes = sample.len() * repeat;
    eprintln!(
        "{n} secrets, {} patterns, {} KiB of tables: {bytes} bytes in, {written} out, \
         {secs:.3} s, {:.2} GB/s",
        patterns.len(),
        patterns.memory_usage() / 1024,
        f64::from(u32::try_from(bytes >> 20).unwrap_or(u32::MAX)) * 1.048_576e-3 / secs,
    );
}

/// xorshift64*: the same secrets every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
