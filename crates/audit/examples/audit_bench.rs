//! Audit log benchmark: durable append throughput with group commit,
//! verification speed, and proof sizes. Run in release (`benches/audit.sh`).
//!
//! ```text
//! audit_bench [--dir DIR] [--threads 8] [--batch 32] [--events 400000]
//!             [--verify-entries 1000000] [--verify-runs 5]
//!             [--parts append1,append,pipeline,verify,proof]
//! ```
//!
//! Events are ~300-byte JSON objects; every append returns only after its
//! batch is written and fdatasynced. DIR must be on a real disk (fsync on
//! tmpfs is free); default: a temporary directory under the current one.
//!
//! - `append1`, `append`: `--threads` threads each appending batches of 1
//!   (of `--batch`) events, sharing the group commit;
//! - `pipeline`: the engine's shape: one producer thread queues events as
//!   fast as it can and one writer thread appends whatever is queued;
//! - `verify`: verification of a `--verify-entries` log, `--verify-runs`
//!   times (each rate and the median);
//! - `proof`: inclusion and consistency proof sizes (needs `verify`).
//!
//! Besides wall-clock rates, each part prints the CPU time the process
//! spent (user + system), which a busy machine disturbs less.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use audit::{AuditKey, AuditLog, Options};
use serde_json::{json, Value};

struct Args {
    dir: Option<String>,
    threads: u64,
    batch: u64,
    events: u64,
    verify_entries: u64,
    verify_runs: u64,
    parts: Vec<String>,
}

impl Args {
    fn part(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: None,
        threads: 8,
        batch: 32,
        events: 400_000,
        verify_entries: 1_000_000,
        verify_runs: 5,
        parts: ["append1", "append", "pipeline", "verify", "proof"]
            .map(String::from)
            .to_vec(),
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
            "--verify-runs" => args.verify_runs = num(),
            "--parts" => args.parts = value.split(',').map(String::from).collect(),
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

/// CPU time (user + system) this process has used, in seconds, from
/// `/proc/self/stat` (clock ticks, assumed 100 per second).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses; utime and
    // stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall-clock and CPU seconds since it was started.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: cpu_secs(),
        }
    }

    /// (wall seconds, CPU seconds).
    fn read(&self) -> (f64, f64) {
        (self.wall.elapsed().as_secs_f64(), cpu_secs() - self.cpu)
    }
}

/// `threads` threads each append `events / threads` events in calls of
/// `batch`; returns (events/s, CPU µs per event).
fn append_bench(dir: &Path, key: &AuditKey, threads: u64, batch: u64, events: u64) -> (f64, f64) {
    let (log, _) = AuditLog::open(dir, key.clone()).expect("open");
    let per_thread = events / threads;
    let clock = Clock::start();
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
    let (secs, cpu) = clock.read();
    let total = (per_thread * threads) as f64;
    (total / secs, cpu / total * 1e6)
}

/// One producer queues `events` events as fast as it can; one writer
/// appends whatever is queued each time, as the engine's writer thread
/// does. Returns (events/s, CPU µs per event, appends made).
fn pipeline_bench(dir: &Path, key: &AuditKey, events: u64) -> (f64, f64, u64) {
    let (log, _) = AuditLog::open(dir, key.clone()).expect("open");
    let clock = Clock::start();
    let (tx, rx) = mpsc::channel::<Value>();
    let appends = std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..events {
                tx.send(event(0, i)).expect("writer is alive");
            }
        });
        let writer = s.spawn(move || {
            let mut appends = 0;
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                log.append(batch).expect("append");
                appends += 1;
            }
            log.checkpoint().expect("checkpoint");
            appends
        });
        writer.join().expect("writer")
    });
    let (secs, cpu) = clock.read();
    (events as f64 / secs, cpu / events as f64 * 1e6, appends)
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
    let batches: Vec<u64> = [("append1", 1), ("append", args.batch)]
        .into_iter()
        .filter(|(part, _)| args.part(part))
        .map(|(_, batch)| batch)
        .collect();
    if !batches.is_empty() {
        println!(
            "append: {} threads, ~300-byte events, fdatasync per group commit",
            args.threads
        );
        for batch in batches {
            let events = if batch == 1 {
                args.events / 10
            } else {
                args.events
            };
            let dir = base.path().join(format!("append-{batch}"));
            let (rate, cpu) = append_bench(&dir, &key, args.threads, batch, events);
            let size = std::fs::metadata(dir.join(audit::log::ENTRIES_FILE))
                .expect("size")
                .len();
            println!(
                "  batch {batch:>3}/call: {rate:>10.0} events/s  ({events} events, {:.0} bytes/event, cpu {cpu:.2} us/event)",
                size as f64 / events as f64
            );
        }
    }

    // 2. The engine's shape: one writer thread.
    if args.part("pipeline") {
        let dir = base.path().join("pipeline");
        let (rate, cpu, appends) = pipeline_bench(&dir, &key, args.events);
        println!(
            "pipeline: 1 producer, 1 writer appending what is queued: {rate:>10.0} events/s  ({} events in {appends} appends, {:.0} events/append, cpu {cpu:.2} us/event)",
            args.events,
            args.events as f64 / appends.max(1) as f64
        );
    }

    // 3. Verification over a big log.
    if !args.part("verify") {
        return;
    }
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
    // Several runs, as the machine may be busy: each run and the median.
    let mut runs = Vec::new();
    let mut report = None;
    for _ in 0..args.verify_runs.max(1) {
        let clock = Clock::start();
        let r = audit::verify(&dir, &key.verifier()).expect("verify");
        let (secs, cpu) = clock.read();
        assert!(r.is_ok(), "{r:?}");
        let n = r.entries as f64;
        runs.push((n / secs, cpu / n * 1e6));
        report = Some(r);
    }
    let report = report.expect("at least one run");
    let rates: Vec<String> = runs.iter().map(|(r, _)| format!("{r:.0}")).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rate, _) = runs[runs.len() / 2];
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (_, cpu) = runs[runs.len() / 2];
    println!(
        "verify: {} entries, {} checkpoints: median {rate:.0} entries/s, cpu {cpu:.2} us/entry (runs: {})",
        report.entries,
        report.checkpoints,
        rates.join(" ")
    );
    let start = Instant::now();
    let (_log, _) = AuditLog::open(&dir, key.clone()).expect("reopen");
    println!(
        "open (scan to build the frontier): {:.3} s",
        start.elapsed().as_secs_f64()
    );

    // 4. Proof sizes.
    if !args.part("proof") {
        return;
    }
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
