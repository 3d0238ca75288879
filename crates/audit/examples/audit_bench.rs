//! Audit log benchmark: durable append throughput with group commit,
//! verification speed, and proof sizes. Run in release (`benches/audit.sh`).
//!
//! ```text
//! audit_bench [--dir DIR] [--threads 8] [--batch 32] [--events 400000]
//!             [--verify-entries 1000000]
//! ```
//!
//! Events are ~300-byte JSON objects; every append returns only after its
//! batch is written and fdatasynced. DIR must be on a real disk (fsync on
//! tmpfs is free); default: a temporary directory under the current one.

use std::path::Path;
use std::time::Instant;

use audit::{AuditKey, AuditLog, Options};
use serde_json::{json, Value};

struct Args {
    dir: Option<String>,
    threads: u64,
    batch: u64,
    events: u64,
    verify_entries: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: None,
        threads: 8,
        batch: 32,
        events: 400_000,
        verify_entries: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--dir" => args.dir = Some(value.clone()),
            "--threads" => args.threads = num(),
            "--batch" => args.batch = num(),
            "--events" => args.events = num(),
            "--verify-entries" => args.verify_entries = num(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A realistic event: about 300 bytes once the log adds its fields.
fn event(thread: u64, seq: u64) -> Value {
    json!({
        "kind": "exec",
        "run": "01J9Z8Q6X4T2V0R3M5N7P9K1BC",
        "job": "build",
        "pid": 4000 + seq % 1000,
        "thread": thread,
        "seq": seq,
        "argv": ["/usr/bin/gcc", "-O2", "-c", "/src/unit.c", "-o", "/workspace/unit.o"],
        "cwd": "/workspace",
    })
}

fn append_bench(dir: &Path, key: &AuditKey, threads: u64, batch: u64, events: u64) -> f64 {
    let (log, _) = AuditLog::open(dir, key.clone()).expect("open");
    let per_thread = events / threads;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                let mut seq = 0;
                while seq < per_thread {
                    let n = batch.min(per_thread - seq);
                    let entries = (seq..seq + n).map(|i| event(t, i)).collect();
                    log.append(entries).expect("append");
                    seq += n;
                }
            });
        }
    });
    log.checkpoint().expect("checkpoint");
    let secs = start.elapsed().as_secs_f64();
    (per_thread * threads) as f64 / secs
}

fn main() {
    let args = parse_args();
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir_in("."),
    }
    .expect("bench directory");
    let key = AuditKey::generate("airlock.audit/bench").expect("key");

    // 1. Durable appends, several batch sizes, `threads` threads.
    println!(
        "append: {} threads, ~300-byte events, fdatasync per group commit",
        args.threads
    );
    for batch in [1, args.batch] {
        let events = if batch == 1 {
            args.events / 10
        } else {
            args.events
        };
        let dir = base.path().join(format!("append-{batch}"));
        let rate = append_bench(&dir, &key, args.threads, batch, events);
        let size = std::fs::metadata(dir.join(audit::log::ENTRIES_FILE))
            .expect("size")
            .len();
        println!(
            "  batch {batch:>3}/call: {rate:>10.0} events/s  ({events} events, {:.0} bytes/event)",
            size as f64 / events as f64
        );
    }

    // 2. Verification over a big log.
    let dir = base.path().join("verify");
    {
        let (log, _) = AuditLog::open_with(&dir, key.clone(), Options::default()).expect("open");
        let mut seq = 0;
        while seq < args.verify_entries {
            let n = 10_000.min(args.verify_entries - seq);
            log.append((seq..seq + n).map(|i| event(0, i)).collect())
                .expect("append");
            seq += n;
        }
        log.checkpoint().expect("checkpoint");
    }
    let start = Instant::now();
    let report = audit::verify(&dir, &key.verifier()).expect("verify");
    let secs = start.elapsed().as_secs_f64();
    assert!(report.is_ok(), "{report:?}");
    println!(
        "verify: {} entries, {} checkpoints in {secs:.3} s = {:.0} entries/s",
        report.entries,
        report.checkpoints,
        report.entries as f64 / secs
    );
    let start = Instant::now();
    let (_log, _) = AuditLog::open(&dir, key.clone()).expect("reopen");
    println!(
        "open (scan to build the frontier): {:.3} s",
        start.elapsed().as_secs_f64()
    );

    // 3. Proof sizes.
    let n = report.entries;
    let start = Instant::now();
    let bundle = audit::prove(&dir, n / 2).expect("prove");
    let prove_secs = start.elapsed().as_secs_f64();
    let json = serde_json::to_string(&bundle).expect("json");
    audit::verify_bundle(&bundle, &key.verifier()).expect("bundle verifies");
    println!(
        "inclusion proof of entry {} in {n}: {} hashes, bundle {} bytes JSON (made in {prove_secs:.3} s)",
        n / 2,
        bundle.proof.len(),
        json.len()
    );
    let notes: Vec<String> = std::fs::read_to_string(dir.join(audit::log::CHECKPOINTS_FILE))
        .expect("checkpoints")
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["note"]
                .as_str()
                .expect("note")
                .to_owned()
        })
        .collect();
    let old = &notes[notes.len() / 3];
    let new = &notes[notes.len() - 1];
    let proof = audit::consistency(&dir, old, new, &key.verifier()).expect("consistency");
    audit::verify_consistency(&proof).expect("verifies");
    println!(
        "consistency proof {} -> {}: {} hashes, {} bytes JSON",
        proof.old_size,
        proof.new_size,
        proof.proof.len(),
        serde_json::to_string(&proof).expect("json").len()
    );
}
