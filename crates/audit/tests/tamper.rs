//! Tampering with a log on disk, and the first bad index the verifier
//! names for each kind of change.

use std::path::Path;

use audit::log::{CHECKPOINTS_FILE, ENTRIES_FILE};
use audit::{verify, AuditKey, AuditLog, BadReason, Options, Report};
use serde_json::json;

/// Entries in the test log; checkpoints every 7, and one at the end.
const N: u64 = 30;

fn make_log(dir: &Path) -> AuditKey {
    let key = AuditKey::generate("test.audit/tamper").expect("key");
    let (log, recovery) = AuditLog::open_with(
        dir,
        key.clone(),
        Options {
            checkpoint_every: 7,
            ..Options::default()
        },
    )
    .expect("open");
    assert!(recovery.is_none());
    for i in 0..N {
        let range = log
            .append(vec![json!({"kind": "test", "n": i, "msg": format!("event number {i}"), "run": format!("r{}", i % 3)})])
            .expect("append");
        assert_eq!(range, i..i + 1);
    }
    log.checkpoint().expect("checkpoint");
    key
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(ENTRIES_FILE))
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(ENTRIES_FILE), text).expect("write");
}

fn check(dir: &Path, key: &AuditKey) -> Report {
    verify(dir, &key.verifier()).expect("verify runs")
}

fn first_bad(report: &Report) -> (u64, BadReason) {
    let bad = report
        .first_bad
        .clone()
        .unwrap_or_else(|| panic!("no bad entry found: {report:?}"));
    (bad.index, bad.reason)
}

#[test]
fn intact_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let report = check(dir.path(), &key);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.entries, N);
    assert_eq!(report.verified_size, N);
    // Every line is canonical: sorted keys, log fields present.
    let first = &lines(dir.path())[0];
    assert!(
        first.starts_with("{\"index\":0,\"kind\":\"test\",\"msg\":"),
        "{first}"
    );
    assert!(first.contains("\"prev\":\"\""), "{first}");
}

/// Replaces the byte at `pos` of line `i` with another printable one.
fn edit_char(dir: &Path, i: usize, pos: usize) {
    let mut all = lines(dir);
    let mut bytes = all[i].clone().into_bytes();
    bytes[pos] = if bytes[pos] == b'x' { b'y' } else { b'x' };
    all[i] = String::from_utf8(bytes).expect("ascii");
    write_lines(dir, &all);
}

#[test]
fn any_single_character_edit_names_its_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let pristine = std::fs::read(dir.path().join(ENTRIES_FILE)).expect("read");
    let n = usize::try_from(N).expect("small");
    // A middle entry, the last entry of an automatic checkpoint (size 14),
    // the first and the very last entry.
    for i in [12, 13, 0, n - 1] {
        let len = lines(dir.path())[i].len();
        for pos in 0..len {
            edit_char(dir.path(), i, pos);
            let report = check(dir.path(), &key);
            let (index, reason) = first_bad(&report);
            assert_eq!(
                index, i as u64,
                "edit of byte {pos} of entry {i}: {reason:?} {report:?}"
            );
            std::fs::write(dir.path().join(ENTRIES_FILE), &pristine).expect("restore");
        }
    }
}

#[test]
fn edits_report_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let pristine = lines(dir.path());
    let restore = || write_lines(dir.path(), &pristine);
    let edit = |i: usize, from: &str, to: &str| {
        let mut all = pristine.clone();
        assert!(all[i].contains(from), "{from} in {}", all[i]);
        all[i] = all[i].replacen(from, to, 1);
        write_lines(dir.path(), &all);
        first_bad(&check(dir.path(), &key))
    };
    assert_eq!(
        edit(5, "event number 5", "event number 6"),
        (5, BadReason::Altered)
    );
    restore();
    assert_eq!(
        edit(29, "event number 29", "event number 28"),
        (
            29,
            BadReason::AlteredLast {
                checkpoint_size: 30
            }
        )
    );
    restore();
    assert_eq!(
        edit(5, "\"index\":5", "\"index\":7"),
        (5, BadReason::WrongIndex { found: 7 })
    );
    restore();
    let prev5 = pristine[5].split("\"prev\":\"").nth(1).expect("prev")[..64].to_owned();
    let other = prev5.replacen(&prev5[..1], if &prev5[..1] == "0" { "1" } else { "0" }, 1);
    assert_eq!(edit(5, &prev5, &other), (5, BadReason::WrongPrev));
    restore();
    let prev29 = pristine[29].split("\"prev\":\"").nth(1).expect("prev")[..64].to_owned();
    let other = prev29.replacen(&prev29[..1], if &prev29[..1] == "0" { "1" } else { "0" }, 1);
    assert_eq!(edit(29, &prev29, &other), (29, BadReason::WrongPrev));
    restore();
    let (index, reason) = edit(9, "{", "[");
    assert_eq!(index, 9);
    assert!(matches!(reason, BadReason::Malformed { .. }), "{reason:?}");
}

#[test]
fn deleted_swapped_inserted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let pristine = lines(dir.path());
    for i in [0_usize, 10, 13, 28, 29] {
        let mut all = pristine.clone();
        all.remove(i);
        write_lines(dir.path(), &all);
        let (index, reason) = first_bad(&check(dir.path(), &key));
        assert_eq!(index, i as u64, "deleted {i}: {reason:?}");
    }
    let mut all = pristine.clone();
    all.remove(10);
    write_lines(dir.path(), &all);
    assert_eq!(
        first_bad(&check(dir.path(), &key)),
        (10, BadReason::Missing { found: 11 })
    );
    for i in [0_usize, 10, 13, 28] {
        let mut all = pristine.clone();
        all.swap(i, i + 1);
        write_lines(dir.path(), &all);
        let (index, reason) = first_bad(&check(dir.path(), &key));
        assert_eq!(index, i as u64, "swapped {i}: {reason:?}");
    }
    // A forged entry that fits its place: right index, right prev.
    for i in [1_usize, 10, 14, 29] {
        let mut all = pristine.clone();
        let prev = audit::hex::encode(&audit::merkle::leaf_hash(all[i - 1].as_bytes()));
        let forged = format!(
            "{{\"index\":{i},\"kind\":\"forged\",\"prev\":\"{prev}\",\"time\":\"2020-01-01T00:00:00.000Z\"}}"
        );
        all.insert(i, forged);
        write_lines(dir.path(), &all);
        let (index, reason) = first_bad(&check(dir.path(), &key));
        assert_eq!(
            (index, reason),
            (i as u64, BadReason::Inserted),
            "inserted at {i}"
        );
    }
}

#[test]
fn truncated_log_names_the_first_missing_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let pristine = lines(dir.path());
    for keep in [25_usize, 21, 3] {
        write_lines(dir.path(), &pristine[..keep]);
        let (index, reason) = first_bad(&check(dir.path(), &key));
        assert_eq!(index, keep as u64);
        let next = (keep as u64 / 7 + 1) * 7;
        assert_eq!(
            reason,
            BadReason::Truncated {
                checkpoint_size: next
            }
        );
    }
    // Everything gone.
    std::fs::write(dir.path().join(ENTRIES_FILE), "").expect("empty");
    assert_eq!(first_bad(&check(dir.path(), &key)).0, 0);
}

#[test]
fn forged_logs_are_bad_from_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    // A consistent forgery: the same shape, signed by another key.
    let forged = tempfile::tempdir().expect("tempdir");
    let _other = make_log(forged.path());
    for name in [ENTRIES_FILE, CHECKPOINTS_FILE] {
        std::fs::copy(forged.path().join(name), dir.path().join(name)).expect("copy");
    }
    let report = check(dir.path(), &key);
    assert_eq!(first_bad(&report), (0, BadReason::Unsigned));
    assert_eq!(report.checkpoints, 0);
    assert!(!report.problems.is_empty());
    // Unsigned: no checkpoints at all.
    std::fs::write(dir.path().join(CHECKPOINTS_FILE), "").expect("empty");
    assert_eq!(
        first_bad(&check(dir.path(), &key)),
        (0, BadReason::Unsigned)
    );
}

#[test]
fn uncovered_tail_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let mut all = lines(dir.path());
    let prev = audit::hex::encode(&audit::merkle::leaf_hash(all[29].as_bytes()));
    all.push(format!(
        "{{\"index\":30,\"kind\":\"late\",\"prev\":\"{prev}\",\"time\":\"2020-01-01T00:00:00.000Z\"}}"
    ));
    write_lines(dir.path(), &all);
    assert_eq!(
        first_bad(&check(dir.path(), &key)),
        (30, BadReason::Unsigned)
    );
}

#[test]
fn witness_copy_exposes_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    let (log, _) = AuditLog::open(dir.path(), key.clone()).expect("open");
    let witness = log.checkpoint().expect("checkpoint").note;
    // Roll back both files to the checkpoint of size 21.
    let all = lines(dir.path());
    write_lines(dir.path(), &all[..21]);
    let cps: Vec<String> = std::fs::read_to_string(dir.path().join(CHECKPOINTS_FILE))
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    let keep: Vec<String> = cps
        .into_iter()
        .filter(|l| {
            let note: serde_json::Value = serde_json::from_str(l).expect("json");
            let text = note["note"].as_str().expect("note").to_owned();
            text.lines()
                .nth(1)
                .expect("size")
                .parse::<u64>()
                .expect("num")
                <= 21
        })
        .collect();
    std::fs::write(dir.path().join(CHECKPOINTS_FILE), keep.join("\n") + "\n").expect("write");
    // Alone, the rolled-back log is a valid older log...
    assert!(check(dir.path(), &key).is_ok());
    // ...but not against the witness's copy.
    let report =
        audit::verify_with_witnesses(dir.path(), &key.verifier(), &[witness]).expect("verify");
    assert_eq!(
        first_bad(&report),
        (
            21,
            BadReason::Truncated {
                checkpoint_size: 30
            }
        )
    );
}

#[test]
fn proofs_bundles_and_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = make_log(dir.path());
    for i in [0, 7, 29] {
        let bundle = audit::prove(dir.path(), i).expect("prove");
        let json = serde_json::to_string(&bundle).expect("json");
        let back: audit::InclusionBundle = serde_json::from_str(&json).expect("parse");
        let cp = audit::verify_bundle(&back, &key.verifier()).expect("bundle verifies");
        assert_eq!(cp.size, N);
        let mut bad = back.clone();
        bad.entry = bad.entry.replacen("event", "Event", 1);
        assert!(audit::verify_bundle(&bad, &key.verifier()).is_err());
        let other = AuditKey::generate("test.audit/tamper").expect("key");
        assert!(audit::verify_bundle(&back, &other.verifier()).is_err());
    }
    assert!(audit::prove(dir.path(), N).is_err());
    // Consistency between the first automatic checkpoint and the last.
    let notes: Vec<String> = std::fs::read_to_string(dir.path().join(CHECKPOINTS_FILE))
        .expect("read")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["note"].as_str().expect("note").to_owned()
        })
        .collect();
    let (old, new) = (&notes[1], &notes[notes.len() - 1]);
    let proof = audit::consistency(dir.path(), old, new, &key.verifier()).expect("consistency");
    assert_eq!((proof.old_size, proof.new_size), (7, N));
    audit::verify_consistency(&proof).expect("verifies");
    let mut bad = proof.clone();
    bad.old_root = bad.new_root.clone();
    assert!(audit::verify_consistency(&bad).is_err());
    // Show, filtered by run.
    let shown: Vec<u64> = audit::entries(dir.path(), Some("r1"))
        .expect("entries")
        .map(|e| e.expect("entry").index)
        .collect();
    assert_eq!(shown, (0..N).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    assert_eq!(
        audit::entries(dir.path(), None).expect("entries").count(),
        30
    );
}

#[test]
fn bad_entries_are_refused_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate("test.audit/refuse").expect("key");
    let (log, _) = AuditLog::open(dir.path(), key).expect("open");
    for bad in [
        json!([1, 2]),
        json!({"no_kind": 1}),
        json!({"kind": ""}),
        json!({"kind": "x", "index": 3}),
        json!({"kind": "x", "prev": ""}),
        json!({"kind": "x", "nested": {"f": 1.5}}),
    ] {
        let err = log.append(vec![json!({"kind": "ok"}), bad.clone()]);
        assert!(
            matches!(
                err,
                Err(audit::AuditError::InvalidEntry { position: 1, .. })
            ),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(log.size().expect("size"), 0);
}
