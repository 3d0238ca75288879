//! Redaction throughput on build-log text, with 10, 100 and 1,000 secrets
//! (every form of each), side by side with the kind of masker other
//! runners use: for each line, for each pattern, replace every occurrence.
//!
//! ```sh
//! CARGO_TARGET_DIR=/tmp/target-redact cargo bench -p redact --bench redact
//! ```
//!
//! The redactor gets 16 MiB of log in 64 KiB chunks, as read from a pipe.
//! The baseline gets a prefix of the same log (it is too slow for the whole
//! of it at 1,000 secrets; throughput is per byte either way), line by
//! line, with a prebuilt `memchr::memmem::Finder` per pattern: the most
//! favourable form of that design. It also misses every secret split across
//! two writes, which the redactor does not.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memchr::memmem::Finder;
use redact::{Patterns, Redactor, MASK};

/// Size of the generated log.
const LOG_SIZE: usize = 16 << 20;
/// Size of the chunks the redactor gets.
const CHUNK: usize = 64 << 10;
/// One line in this many prints a secret in one of its forms.
const SECRET_EVERY: usize = 2_000;

/// The per-line, per-pattern masker.
struct Baseline {
    finders: Vec<Finder<'static>>,
}

impl Baseline {
    fn new(secrets: &[Vec<u8>]) -> Baseline {
        let mut patterns: Vec<Vec<u8>> = secrets
            .iter()
            .flat_map(|s| redact::variants(s))
            .map(|v| v.bytes().to_vec())
            .collect();
        patterns.sort();
        patterns.dedup();
        // Longest first, as maskers do so that a longer form is not cut by
        // a shorter one.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Baseline {
            finders: patterns
                .into_iter()
                .map(|p| Finder::new(&p).into_owned())
                .collect(),
        }
    }

    fn mask(&self, text: &[u8], out: &mut Vec<u8>) {
        for line in text.split_inclusive(|&b| b == b'\n') {
            let mut current: Option<Vec<u8>> = None;
            for finder in &self.finders {
                let hay = current.as_deref().unwrap_or(line);
                if finder.find(hay).is_none() {
                    continue;
                }
                let mut replaced = Vec::with_capacity(hay.len());
                let mut last = 0;
                for at in finder.find_iter(hay) {
                    if at < last {
                        continue;
                    }
                    replaced.extend_from_slice(&hay[last..at]);
                    replaced.extend_from_slice(MASK);
                    last = at + finder.needle().len();
                }
                replaced.extend_from_slice(&hay[last..]);
                current = Some(replaced);
            }
            out.extend_from_slice(current.as_deref().unwrap_or(line));
        }
    }
}

fn redact_all(patterns: &Arc<Patterns>, log: &[u8], out: &mut Vec<u8>) -> usize {
    let mut redactor = Redactor::new(patterns.clone());
    let mut written = 0;
    for chunk in log.chunks(CHUNK) {
        out.clear();
        redactor.push(chunk, out);
        written += out.len();
    }
    out.clear();
    redactor.finish(out);
    written + out.len()
}

/// The first `size` bytes of `log`, cut after a line.
fn prefix(log: &[u8], size: usize) -> &[u8] {
    let cut = log[..size.min(log.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    &log[..cut]
}

fn bench(c: &mut Criterion) {
    let all_secrets = support::secrets(1_000, 0x5eed);
    let log = support::build_log(LOG_SIZE, 0x10c, &all_secrets[..10], SECRET_EVERY);
    let mut group = c.benchmark_group("redact");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (n, baseline_size) in [(10, 2 << 20), (100, 256 << 10), (1_000, 64 << 10)] {
        let secrets = &all_secrets[..n];
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let started = Instant::now();
        let patterns = Arc::new(Patterns::new(&refs).expect("valid secrets"));
        eprintln!(
            "{n} secrets: {} patterns, longest {} bytes, built in {:.1} ms, {} KiB",
            patterns.len(),
            patterns.longest(),
            started.elapsed().as_secs_f64() * 1e3,
            patterns.memory_usage() / 1024
        );
        let mut out = Vec::with_capacity(2 * CHUNK);
        // The secrets printed in the log are masked.
        assert!(redact_all(&patterns, &log, &mut out) < log.len());

        group.throughput(Throughput::BytesDecimal(log.len() as u64));
        group.bench_function(BenchmarkId::new("redactor", n), |b| {
            b.iter(|| redact_all(&patterns, black_box(&log), &mut out))
        });

        let baseline = Baseline::new(secrets);
        let text = prefix(&log, baseline_size);
        let mut masked = Vec::with_capacity(text.len());
        group.throughput(Throughput::BytesDecimal(text.len() as u64));
        group.bench_function(BenchmarkId::new("per-line-replace", n), |b| {
            b.iter(|| {
                masked.clear();
                baseline.mask(black_box(text), &mut masked);
                masked.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
