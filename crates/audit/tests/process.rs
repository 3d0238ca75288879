//! Several processes on one log: crashes mid-append (SIGKILL, and a torn
//! write) and concurrent appenders. The children are this test binary
//! itself, re-run with `AUDIT_TEST_CHILD` set to run `child_append` only.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use audit::log::{ENTRIES_FILE, RECOVERED_KIND};
use audit::{verify, AuditKey, AuditLog};
use serde_json::json;

const CHILD_ENV: &str = "AUDIT_TEST_CHILD";

/// The child: `<dir>|<keys dir>|<writer>|<threads>|<entries per thread, 0 = forever>|<batch>`.
#[test]
fn child_append() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (dir, keys, writer) = (Path::new(parts[0]), Path::new(parts[1]), parts[2]);
    let threads: u64 = parts[3].parse().expect("threads");
    let count: u64 = parts[4].parse().expect("count");
    let batch: u64 = parts[5].parse().expect("batch");
    let (key, _) = AuditKey::load_or_create(keys).expect("key");
    let (log, _) = AuditLog::open(dir, key).expect("open");
    let pad = "p".repeat(200);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (log, pad) = (log.clone(), &pad);
            s.spawn(move || {
                let mut seq = 0;
                while count == 0 || seq < count {
                    let entries = (seq..seq + batch)
                        .map(|i| json!({"kind": "test", "writer": writer, "thread": t, "seq": i, "pad": pad}))
                        .collect();
                    log.append(entries).expect("append");
                    seq += batch;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "appended {writer} {t} {seq}").expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
    log.checkpoint().expect("checkpoint");
}

fn spawn(dir: &Path, keys: &Path, writer: &str, threads: u64, count: u64, batch: u64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_append", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!(
                "{}|{}|{writer}|{threads}|{count}|{batch}",
                dir.display(),
                keys.display()
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Waits until the child reported `batches` appended batches.
fn wait_for_batches(child: &mut Child, batches: usize) {
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        if line.expect("line").starts_with("appended") {
            seen += 1;
            if seen == batches {
                return;
            }
        }
    }
    panic!("child stopped after {seen} batches");
}

fn crash_and_recover(torn: Option<&[u8]>) {
    let home = tempfile::tempdir().expect("tempdir");
    let (dir, keys) = (home.path().join("audit"), home.path().join("keys"));
    let mut child = spawn(&dir, &keys, "crasher", 2, 0, 500);
    wait_for_batches(&mut child, 20);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    if let Some(torn) = torn {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(ENTRIES_FILE))
            .expect("open entries");
        file.write_all(torn).expect("torn write");
    }
    let (key, _) = AuditKey::load_or_create(&keys).expect("key");
    let (log, recovery) = AuditLog::open(&dir, key.clone()).expect("open after crash");
    if let Some(torn) = torn {
        let recovery = recovery.expect("a torn tail is recovered");
        assert_eq!(recovery.dropped_bytes, torn.len() as u64);
        let last = audit::entries(&dir, None)
            .expect("entries")
            .last()
            .expect("an entry")
            .expect("json");
        assert_eq!(last.value["kind"], RECOVERED_KIND);
        assert_eq!(last.value["dropped_bytes"], torn.len() as u64);
    }
    log.append_one(json!({"kind": "after_crash"}))
        .expect("append");
    log.checkpoint().expect("checkpoint");
    let report = verify(&dir, &key.verifier()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert!(report.entries >= 20 * 500);
}

#[test]
fn sigkill_mid_append_then_recover() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    crash_and_recover(None);
}

#[test]
fn torn_write_is_cut_and_logged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    crash_and_recover(Some(b"{\"index\":99999999,\"kind\":\"te"));
}

#[test]
fn torn_checkpoint_line_is_cut() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate("test.audit/torn").expect("key");
    let (log, _) = AuditLog::open(dir.path(), key.clone()).expect("open");
    log.append_one(json!({"kind": "x"})).expect("append");
    log.checkpoint().expect("checkpoint");
    drop(log);
    let path = dir.path().join(audit::log::CHECKPOINTS_FILE);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    let torn = b"{\"note\":\"test.audit/torn\\n2\\n";
    file.write_all(torn).expect("torn");
    let (log, recovery) = AuditLog::open(dir.path(), key.clone()).expect("reopen");
    let recovery = recovery.expect("recovered");
    assert_eq!(recovery.dropped_checkpoint_bytes, torn.len() as u64);
    log.checkpoint().expect("checkpoint");
    let report = verify(dir.path(), &key.verifier()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn concurrent_processes_share_one_log() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let (dir, keys) = (home.path().join("audit"), home.path().join("keys"));
    let (writers, threads, count) = (4, 2, 300);
    let mut children: Vec<Child> = (0..writers)
        .map(|w| spawn(&dir, &keys, &format!("w{w}"), threads, count, 7))
        .collect();
    for child in &mut children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "child failed: {status}");
    }
    let (key, _) = AuditKey::load_or_create(&keys).expect("key");
    let report = verify(&dir, &key.verifier()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    let mut seen = HashSet::new();
    for entry in audit::entries(&dir, None).expect("entries") {
        let v = entry.expect("entry").value;
        assert_eq!(v["kind"], "test");
        assert!(seen.insert((
            v["writer"].as_str().expect("writer").to_owned(),
            v["thread"].as_u64().expect("thread"),
            v["seq"].as_u64().expect("seq"),
        )));
    }
    // Batches of 7 overshoot 300 to 301 per thread.
    let per_thread = count.div_ceil(7) * 7;
    assert_eq!(seen.len() as u64, writers * threads * per_thread);
    assert_eq!(report.entries, writers * threads * per_thread);
}
